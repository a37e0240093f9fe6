-- Schema version 3 of fusion-storage-postgres: session retention (issue #16).
--
-- Upgrades version 2 in place, in the one transaction that runs it (with the advisory lock
-- of `crate::migrate`): both new columns are NULL, which adding them writes into no row,
-- so every session keeps its id, count, generation, timestamps and metadata and reads as
-- never expiring; the index starts empty. `messages` is not touched.
--
-- Both columns are `fusion_core::StoredExpiry`, in microseconds, on the server's clock:
-- the clock of `now()`, which every write already stores in `updated_at`. For an idle
-- expiry every write sets `expires_at` to its new `updated_at` (in microseconds) plus
-- `expiry_idle`, in the same statement, so the two agree exactly.
--
-- What an append pays for this: its upsert's `ON CONFLICT DO UPDATE` sets `expires_at`
-- too (unchanged unless `expiry_idle` is set) and refuses an expired row; a session
-- without an expiry has no entry in `sessions_expiry`, so its appends write no more index
-- entries than before.

ALTER TABLE sessions
    -- When the session expires, in microseconds since the Unix epoch; NULL: never. From
    -- this instant on every read treats the session as absent and every write removes it
    -- first.
    ADD COLUMN expires_at bigint NULL,
    -- For an idle expiry (`Expiry::Idle`), the span in microseconds each write adds to its
    -- `updated_at` to give the new `expires_at`; NULL for a fixed expiry or none.
    ADD COLUMN expiry_idle bigint NULL;

-- The expired sessions, oldest expiry first: `purge_expired` reads this index from its
-- start for `batch` entries (`expires_at <= now ORDER BY expires_at LIMIT batch`),
-- O(batch) however many sessions are stored. Partial: a session that never expires has
-- no entry, so its writes add none here. (Appends are not HOT updates anyway: they move
-- `updated_at`, which `sessions_updated` indexes; an expiring session's appends write one
-- entry here too.)
CREATE INDEX sessions_expiry ON sessions (expires_at) WHERE expires_at IS NOT NULL;
