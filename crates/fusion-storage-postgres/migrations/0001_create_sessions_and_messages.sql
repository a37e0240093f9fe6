-- Schema version 1 of fusion-storage-postgres: one row per session, one row per message.
--
-- Every table lives in the schema named by `PostgresOptions::schema` (default `fusion`):
-- the connections' `search_path` is that schema alone, so these names are unqualified.
-- Released migrations are never edited (sqlx records a checksum of each one); a schema
-- change is a new file `000N_....sql` that upgrades version N-1 in place.

-- One row per stored session. A session with no messages has no row.
CREATE TABLE sessions (
    id            text        NOT NULL PRIMARY KEY,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    -- Rows in `messages` for this session; their `seq`s are exactly 0..message_count, so
    -- an append numbers its rows from this count, read and bumped under the row's lock.
    message_count bigint      NOT NULL CHECK (message_count > 0),
    -- The session's generation (see `fusion_core::Revision`): a fresh random value below
    -- 2^53 (`fusion_core::new_generation`) stored by every write that creates or rewrites
    -- the history; appends to an existing row keep it. No row: generation 0.
    generation    bigint      NOT NULL CHECK (generation > 0)
);

-- One row per message, in the OpenAI chat-completions JSON shape, stored as `text`
-- rather than `jsonb`: the text `serde_json` wrote comes back byte for byte with no
-- server-side parse on insert or re-serialization on load. Measured (crate docs,
-- tests/body_type.rs): appends cost the same, loads of 2,000 messages took ~40% less
-- time than with jsonb, and the table is ~15% smaller.
-- The primary key's index gives the ordered per-session scan that `load` needs.
CREATE TABLE messages (
    session_id text   NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        bigint NOT NULL CHECK (seq >= 0),
    body       text   NOT NULL,
    PRIMARY KEY (session_id, seq)
);
