-- Schema version 3 of fusion-storage-sqlite: session metadata and paged listing (issue #16).
--
-- Every statement here upgrades a version-2 database in place. The new column has no
-- default but NULL (SQLite adds it without rewriting a row) and the new tables start
-- empty, so each existing session reads as no owner, no title, no tags and an empty data
-- map, and keeps its id, messages, count, timestamps and generation. The indexes are
-- built once over the existing rows.
--
-- What an append pays for all this: the one index entry of `sessions_by_updated` that
-- moves with `updated_at` (and, for an owned session, the one of
-- `sessions_by_owner_updated`). Nothing else here is written by an append; the crate
-- README has the measurements behind each choice.

-- Who the session belongs to (`fusion_core::SessionMeta::owner`, checked like a session
-- id); NULL: nobody. On the session's own row because the owner's listing index needs it
-- next to `updated_at`.
ALTER TABLE sessions ADD COLUMN owner TEXT;

-- A page of every session, newest first: the keyset query
-- `(updated_at, id) < (?, ?) ORDER BY updated_at DESC, id DESC LIMIT n + 1` walks this
-- index backwards from the cursor and reads n + 1 entries, however many sessions exist.
-- (`sessions` is WITHOUT ROWID, so an index entry ends with the primary key `id` anyway;
-- naming it makes the sort key explicit.) Every write that moves `updated_at`, an append
-- included, moves the session's entry.
CREATE INDEX sessions_by_updated ON sessions (updated_at, id);

-- A page of one owner's sessions, newest first: the same walk within `owner = ?`.
-- Partial: a session nobody owns has no entry, so its appends do not pay for this index.
-- A query's `owner = ?` implies `owner IS NOT NULL`, which lets SQLite use it.
CREATE INDEX sessions_by_owner_updated ON sessions (owner, updated_at, id)
    WHERE owner IS NOT NULL;

-- A page of one owner's sessions by id (`owner = ? AND id > ? ORDER BY id`). Neither
-- column changes when messages are written, so no append touches it. A page of every
-- session by id walks the primary key.
CREATE INDEX sessions_by_owner_id ON sessions (owner, id) WHERE owner IS NOT NULL;

-- Title, tags and data (`SessionMeta`), one row per session that has any; a session that
-- never had them has no row and reads the defaults. Beside `sessions` rather than on it:
-- an append rewrites its session's `sessions` row, and SQLite rebuilds the whole record
-- to do so, so a data map of several KB there made every append of that session several
-- times slower; here no append reads or writes it. Each value is checked in Rust
-- (`SessionMeta::validate`) before it is written; a cell damaged by hand reads as
-- `Error::Corrupt` naming the session, so no CHECK re-parses the JSON on every write.
-- WITHOUT ROWID: always reached by `session_id`, in one lookup.
CREATE TABLE session_meta (
    session_id TEXT NOT NULL PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    -- A title to show in a list; NULL: none.
    title      TEXT,
    -- The tags as a JSON array of strings, sorted, without duplicates
    -- (`SessionMeta::tags_json`): what `session_info` and a page return, without a join
    -- on `session_tags`.
    tags       TEXT NOT NULL DEFAULT '[]',
    -- The application's own small map, as a JSON object (`SessionMeta::data_json`).
    data       TEXT NOT NULL DEFAULT '{}'
) WITHOUT ROWID;

-- One row per tag of a session: what a tag filter reads instead of every session's tags.
-- The primary key gives a tag's sessions in id order (a page by id is a walk of it) and
-- answers "does this session carry the tag" in one probe (an owner's page with a tag).
-- A tag's page newest first reads all of the tag's rows and keeps the newest n + 1
-- (SQLite's top-n sort): O(the tag's sessions), never all sessions. Keeping `updated_at`
-- here too would make that O(n + 1), but every append of a tagged session would then
-- move one index entry per tag; appends are the hot path, tag pages are not.
-- WITHOUT ROWID: the rows are a few dozen bytes, always reached by their key.
CREATE TABLE session_tags (
    tag        TEXT NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    PRIMARY KEY (tag, session_id)
) WITHOUT ROWID;

-- A session's tag rows, for the writes that replace or delete them (and for the cascade).
CREATE INDEX session_tags_by_session ON session_tags (session_id);
