-- Schema version 1 of fusion-storage-sqlite: one row per session, one row per message.
--
-- Released migrations are never edited (sqlx records a checksum of each one); a schema
-- change is a new file `000N_....sql` that upgrades version N-1 in place.

-- One row per stored session. A session with no messages has no row.
-- WITHOUT ROWID: rows are small and always looked up by `id`, so keying the table's
-- b-tree on `id` saves a second index.
CREATE TABLE sessions (
    id            TEXT    NOT NULL PRIMARY KEY,
    -- Unix time in milliseconds.
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    -- Rows in `messages` for this session; their `seq`s are exactly 0..message_count,
    -- so the next append starts at `message_count` without scanning messages.
    message_count INTEGER NOT NULL CHECK (message_count > 0)
) WITHOUT ROWID;

-- One row per message, in the OpenAI chat-completions JSON shape.
-- A rowid table (not WITHOUT ROWID) on purpose: messages are often kilobytes of tool
-- output, and SQLite advises WITHOUT ROWID only for rows well under 1/20 of a page.
-- The primary key's index gives the ordered per-session scan that `load` needs.
CREATE TABLE messages (
    session_id TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL CHECK (seq >= 0),
    message    TEXT    NOT NULL,
    PRIMARY KEY (session_id, seq)
);
