-- Schema version 5 of fusion-storage-sqlite: message ids, for exactly-once appends (issue #18).
--
-- Every statement here upgrades a version-4 database in place. The new column has no
-- default but NULL (SQLite adds it without rewriting a row), and every message stored
-- before this version has no id (releases before it wrote none), so the new index starts
-- empty and each existing session keeps its messages, count, generation, metadata and
-- expiry. Nothing is backfilled: there is nothing to find.
--
-- What an append pays for this (figures in the crate README): a batch without ids, none of
-- it. A batch with ids: one probe of `messages_by_id` per message inside the write
-- transaction (which ids are stored already), and one more index entry per message stored.

-- The message's id (`fusion_core::MessageId`, 1 to 64 characters of `A-Za-z0-9_.:-`), as
-- it is also in the `message` JSON, or NULL for a message without one. Filled by every
-- insert of messages that carry ids, from the JSON text itself (the id is serialised
-- first, so the insert reads it from the text's first bytes).
ALTER TABLE messages ADD COLUMN message_id TEXT;

-- What an append probes for each id of its batch, inside its write transaction: is this
-- id stored in this session? Unique, so no write can store one id twice in a session
-- even by mistake. Partial: a message without an id has no entry, so messages without
-- ids cost no more to store than before. A truncate or delete removes the rows, and with
-- them their ids: appended again, those messages are stored again.
CREATE UNIQUE INDEX messages_by_id ON messages (session_id, message_id)
    WHERE message_id IS NOT NULL;
