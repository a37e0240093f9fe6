-- Schema version 2 of fusion-storage-postgres: session metadata (owner, title, tags, data)
-- and the indexes that make a page of the listing cost O(page).
--
-- Upgrades version 1 in place, in the one transaction that runs it (with the advisory lock
-- of `crate::migrate`): every row keeps its id, count, generation and timestamps and gets
-- no owner, no title, no tags and an empty data map. The new columns default to NULL or
-- a constant, so adding them rewrites no row; building the indexes and the primary key's
-- new collation reads `sessions` once, O(sessions); `messages` is not touched.

-- Ids compare byte by byte (collation "C"), the order of `fusion_core::SessionOrder::Id`
-- and of the ids in listing cursors, whatever the database's default collation: under
-- en_US.UTF-8, say, "apple" sorts before "Zebra", bytes put "Zebra" first, and pages
-- cut by one order and resumed by the other would repeat or skip sessions. Equality is the same in every deterministic collation, so keys and the
-- foreign key of `messages` (which keeps the default collation) are unchanged; only the
-- primary key's index is rebuilt. "C" also compares faster than a locale.
ALTER TABLE sessions ALTER COLUMN id TYPE text COLLATE "C";

ALTER TABLE sessions
    -- Who the session belongs to; follows the session id rule (`SessionMeta::validate`).
    ADD COLUMN owner text NULL,
    ADD COLUMN title text NULL,
    -- Sorted, without duplicates; NULL when the session has none (see `sessions_tags`).
    -- `text[]` rather than `jsonb`: a list of strings is what PostgreSQL's array type is
    -- for; `tags @> ARRAY[$tag]` is indexable with GIN and the binary protocol decodes it
    -- straight into strings, with no JSON on either side.
    ADD COLUMN tags text[] NULL,
    -- The application's own map, as the JSON object `serde_json` wrote
    -- (`SessionMeta::data_json`). `text` rather than `jsonb`, for the reasons the message
    -- bodies are `text` (0001) and one more: `jsonb` refuses the escape `\u0000`, which
    -- `serde_json` writes for a NUL character in a string, so some maps the rules accept
    -- could not be stored. Nothing here queries into it; `psql` can cast `data::jsonb`.
    ADD COLUMN data text NOT NULL DEFAULT '{}';

-- Every session newest first: a page walks this index from the cursor's
-- `(updated_at, id)` on and stops after `limit + 1` rows. Any write moves `updated_at`,
-- so appends no longer update the row in place (a HOT update): each writes a new entry
-- here and in the primary key's index (measured: docs/storage-backends.md, PostgreSQL).
CREATE INDEX sessions_updated ON sessions (updated_at DESC, id DESC);

-- One owner's sessions newest first. Partial: sessions without an owner (all of them in
-- a schema written before version 2) cost nothing here, on any write.
CREATE INDEX sessions_owner_updated ON sessions (owner, updated_at DESC, id DESC)
    WHERE owner IS NOT NULL;

-- Sessions carrying a tag. For a rare tag PostgreSQL reads that tag's sessions here and
-- sorts them, instead of walking `sessions_updated` past every session without it; for a
-- common one it walks `sessions_updated` and skips the others (its statistics tell which).
-- Partial, so untagged sessions (NULL) cost nothing here on any write. The listing's
-- condition `tags @> ARRAY[$tag]` uses a strict operator, which implies `tags IS NOT
-- NULL`, so the planner uses this index with no extra condition. (An extra `tags <> '{}'`
-- with an empty array for "no tags" would make it multiply two dependent selectivities:
-- measured on 1,000,000 sessions, 2% of them tagged, it then expected 412 rows instead of
-- 20,000 and sorted all 20,000 for each page.)
CREATE INDEX sessions_tags ON sessions USING gin (tags) WHERE tags IS NOT NULL;
