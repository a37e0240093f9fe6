-- Schema version 4 of fusion-storage-sqlite: session retention (issue #16).
--
-- Every statement here upgrades a version-3 database in place. Both new columns have no
-- default but NULL (SQLite adds them without rewriting a row), so every existing session
-- reads as never expiring and keeps its id, messages, count, timestamps, generation and
-- metadata. The index starts empty: no existing session has an expiry.
--
-- Both columns are `fusion_core::StoredExpiry`, in microseconds, written from the same
-- clock reading as the write's `updated_at` (milliseconds): for an idle expiry,
-- `expires_at = updated_at * 1000 + expiry_idle` after every write, exactly.
--
-- What an append pays for this: the UPDATE of the session's row it already runs sets
-- `expires_at` too (unchanged unless `expiry_idle` is set) and refuses a row whose
-- `expires_at` has passed; a session without an expiry has no entry in
-- `sessions_by_expiry`, so its appends move no more index entries than before.

-- When the session expires, in microseconds since the Unix epoch; NULL: never. From this
-- instant on every reader treats the session as absent and every writer removes it first.
ALTER TABLE sessions ADD COLUMN expires_at INTEGER;

-- For an idle expiry (`Expiry::Idle`), the span in microseconds that every write adds to
-- its time to give the new `expires_at`; NULL for a fixed expiry or none.
ALTER TABLE sessions ADD COLUMN expiry_idle INTEGER;

-- The expired sessions, oldest expiry first: `purge_expired` walks this index from its
-- start for `batch` entries (`expires_at <= now ORDER BY expires_at, id LIMIT batch`),
-- O(batch) however many sessions are stored. Partial: a session that never expires has
-- no entry, so its writes do not touch this index; an idle session's entry moves with
-- every write, like its `sessions_by_updated` one.
CREATE INDEX sessions_by_expiry ON sessions (expires_at, id) WHERE expires_at IS NOT NULL;
