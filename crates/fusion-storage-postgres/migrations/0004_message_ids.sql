-- Schema version 4 of fusion-storage-postgres: exactly-once appends by message id (issue #18).
--
-- Upgrades version 3 in place, in the one transaction that runs it (with the advisory lock
-- of `crate::migrate`): the new column's default is a constant, which PostgreSQL (11 and
-- later) records once in the catalog instead of writing it into every row, so every
-- session keeps every row and column as it was and reads '{}': no id stored, exact for
-- every upgraded session, since no stored message has an id yet (ids came with this
-- version). `messages` is not touched.
--
-- Why the window lives on the session's row rather than in a unique index on `messages`
-- (the module docs of `src/sql.rs` say it in full): an append is one statement, and under
-- READ COMMITTED its reads of `messages` see the statement's snapshot, which misses the
-- rows of an appender that committed while this one waited for the row lock (a retry
-- racing its first attempt). The `ON CONFLICT DO UPDATE` of that statement sees the latest
-- version of the locked `sessions` row, so the check against `recent_ids` there is atomic
-- with the write whatever the interleaving.

ALTER TABLE sessions
    -- The 32-bit fingerprints (`fusion_core::MessageId::fingerprint`, read as signed) of
    -- the ids of the session's last stored messages that have one, at most
    -- `fusion_core::DEDUP_WINDOW` (64), oldest first: at most 280 bytes, kept in the row.
    -- '{}' when none has; NULL when not known (after a truncate). An append none of whose
    -- fingerprints is here stores its batch at once and adds them, dropping the oldest
    -- beyond 64; one that finds a fingerprint here (a retry, or another id with the same
    -- fingerprint) or finds it NULL reads the ids of the last 64 messages under the row's
    -- lock, stores only what they lack and rebuilds it. A save sets it from the saved
    -- history.
    ADD COLUMN recent_ids int4[] NULL DEFAULT '{}';
