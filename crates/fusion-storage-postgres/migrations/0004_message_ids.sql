-- Schema version 4 of fusion-storage-postgres: exactly-once appends by message id (issue #18).
--
-- Upgrades version 3 in place, in the one transaction that runs it (with the advisory lock
-- of `crate::migrate`): both new columns are NULL, which adding them writes into no row,
-- so every session keeps every row and column as it was. No stored message has an id yet
-- (ids came with this version), so an empty window is exact for every upgraded session.
-- `messages` is not touched.
--
-- Why the ids live on the session's row rather than in a unique index on `messages` (the
-- module docs of `src/sql.rs` say it in full): an append is one statement, and under READ
-- COMMITTED its reads of `messages` see the statement's snapshot, which misses the rows of
-- an appender that committed while this one waited for the row lock (a retry racing its
-- first attempt). The `ON CONFLICT DO UPDATE` of that statement sees the latest version
-- of the locked `sessions` row, so the check against `recent_ids` there is atomic with
-- the write whatever the interleaving.

ALTER TABLE sessions
    -- The ids of the session's last stored messages that have one (at most
    -- `fusion_core::DEDUP_WINDOW`, 64), oldest first; NULL when none has. An append
    -- stores no message whose id is here, and adds the ids it stores, dropping the
    -- oldest beyond 64; a save sets it from the saved history; a truncate recomputes it
    -- from the last 64 messages it keeps. Only ever ids of messages still stored.
    ADD COLUMN recent_ids text[] NULL,
    -- The positions (1-based) in the batch of the latest append that found their ids in
    -- `recent_ids` and were not stored; NULL when it stored its whole batch. Written by
    -- the append's upsert and read only by its own `RETURNING`, in the same statement, to
    -- insert the other messages: an upsert returns the row as it leaves it, and before
    -- PostgreSQL 18 cannot return what it computed from the row it found.
    ADD COLUMN append_skipped bigint[] NULL;

-- Out of line and uncompressed once the row outgrows a quarter page (about 45 UUIDs): ids
-- barely compress, so trying is wasted work on every append, and kept out of the row the
-- window does not widen what the listing's index scans read.
ALTER TABLE sessions ALTER COLUMN recent_ids SET STORAGE EXTERNAL;
