//! The SQL of every operation, and how stored rows become messages again (session facts
//! and the listing's query are `crate::meta`'s).
//!
//! Every write locks the session's `sessions` row before it touches `messages` (an
//! append in the same statement, the others in their first statement), so writers of one
//! session queue on that one row lock and can never deadlock each other. Statements that
//! take messages bind them as one `text[]` of their JSON (`serde_json`, minified),
//! numbered by `unnest(...) WITH ORDINALITY`, so the round trips of a write do not grow
//! with the number of messages.
//!
//! Every statement reads a session that has expired as absent, and every write that
//! stores `updated_at` also moves an idle expiry with it (`crate::expiry`).
//!
//! # Exactly once: fingerprints on the session's row, ids confirmed under its lock
//!
//! An append stores no message whose id is among the ids of the session's last
//! [`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW) messages, and the check must be atomic with
//! the write, because a retry may race its own first attempt. The append is one
//! statement, and under READ COMMITTED every table it reads, `messages` included, is read
//! at the statement's snapshot, taken before it waits for the row lock: a `NOT EXISTS` on
//! `messages` misses the rows of an appender that held the lock and committed meanwhile,
//! and would store them a second time. What the statement does see as it is now is the
//! row its `ON CONFLICT DO UPDATE` locked: `SET` and `WHERE` read the latest version of
//! the `sessions` row. So what the check needs lives on that row, in `recent_ids`: the
//! 32-bit fingerprints of the session's last ids (`crate::batch`, 4 bytes an id where
//! the ids themselves took about 37), which every write of the history keeps true under
//! the same lock: an append adds the fingerprints of the ids it stores
//! ([`APPEND_WITH_IDS`], [`APPEND_CHECKED`]), a save sets those of the saved history
//! ([`SAVE_SESSION`]), a truncate makes them unknown, NULL ([`TRUNCATE_SESSION`]), a
//! delete or a purge removes the row. The window holds the last 64 ids, whatever number
//! of id-less messages sits between them, so it covers every id among the last 64
//! messages; the exact check looks at those messages only, which is what
//! [`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW) promises.
//!
//! A fingerprint says "not stored" for certain and "stored" only maybe (another id may
//! share it, about 64 in 2^32 per id, or the id may be older than the last
//! `DEDUP_WINDOW` messages), so the statement acts only on the certain answer: when no
//! fingerprint of the batch is on the row, the usual case, it stores the batch and adds
//! them; when one is, or the row's are unknown, its `WHERE` refuses and it writes nothing.
//! The append then takes a transaction that locks the row ([`LOCK_REVISION`]) and reads
//! the ids of the last `DEDUP_WINDOW` messages in a statement of its own ([`LAST_IDS`],
//! whose snapshot, taken after the lock, holds every message an appender committed
//! before), keeps the messages whose ids are not among those and stores them, with the
//! window rebuilt from the ids, in a statement guarded by that revision
//! ([`APPEND_CHECKED`]; under the lock the guard holds: `crate::write::append_locked`).
//! The refusing statement does not read those ids itself, though that would save the
//! retry a round trip: a `UNION ALL` branch that runs only when nothing was stored still
//! costs every append the executor's start and end of its plan (the relations and indexes
//! it would scan are opened), 6–8 µs of the server's time per append measured with
//! `pg_stat_statements`, for a path only a retry takes. Whatever the interleaving, each check reads what the
//! writers before it left, so any number of instances appending one batch at once store
//! it once by construction: the first to take the lock stores it, each later one finds
//! all of its fingerprints and then all of its ids. `crate::races` forces each
//! interleaving (behind a first attempt, a creation, a truncate, a save, a delete, a
//! first attempt that took the exact path, a retry on the exact path held at its lock).
//!
//! A unique index on `messages (session_id, message_id)`, the other way, is not used,
//! not even as a backstop. A statement that hits it can only fail (`ON CONFLICT DO
//! NOTHING` would leave a gap in the seqs the upsert already counted), so the append
//! would need a retry loop, and its `NOT EXISTS` would still read the snapshot in the
//! other direction too: a message a concurrent truncate or save removed would look
//! stored, and be skipped and lost. It would also cost a `message_id` column and an index
//! entry per message (about 90 bytes measured) and, on upgrade, a pass over all of
//! `messages` with writes blocked; `recent_ids` is one column, added without a rewrite.
//!
//! What the window costs is measured in the crate docs (`lib.rs`, "Exactly once"). A
//! batch without ids runs [`APPEND`], which reads and writes nothing of it.

use crate::expiry::{expired, expires_at, given_or_now, micros, now_us, times_hold, unexpired};

mod rows;

pub(crate) use rows::{decode_revision, decode_rows};

/// SQL: the one-statement append, the row a creation inserts created at `$created` and
/// last written at `$updated` (`timestamptz` expressions), with `$column` and `$value`
/// added to it, `$set` to the update of an existing row, `$check` to the conditions of
/// that update and `$returns` after its `SELECT ... FROM bumped` ([`APPEND`],
/// [`APPEND_WITH_IDS`], [`CREATE`], [`CREATE_WITH_IDS`]). `$only_create` is `"false AND
/// "` for a creation, whose update of an existing row then locks it and changes nothing,
/// and `""` for an append.
macro_rules! append {
    (
        $only_create:literal, $created:expr, $updated:expr,
        $column:literal, $value:literal, $set:literal, $check:literal, $returns:expr
    ) => {
        concat!(
            "WITH bumped AS ( \
                INSERT INTO sessions AS cur \
                    (id, created_at, updated_at, message_count, generation, owner, title, \
                     tags, data, expires_at, expiry_idle",
            $column,
            ") VALUES ($1, ",
            $created,
            ", ",
            $updated,
            ", $2, $3, $5, $6, $7, $8, ",
            expires_at!($updated, "$9::int8", "$10::int8"),
            ", $10",
            $value,
            ") ON CONFLICT (id) DO UPDATE SET \
                    updated_at = greatest(cur.updated_at, now()), \
                    message_count = cur.message_count + excluded.message_count, \
                    expires_at = ",
            expires_at!(
                "greatest(cur.updated_at, now())",
                "cur.expires_at",
                "cur.expiry_idle"
            ),
            $set,
            " WHERE ",
            $only_create,
            unexpired!("cur."),
            " AND ",
            times_hold!("cur."),
            $check,
            " RETURNING message_count, generation \
            ), inserted AS ( \
                INSERT INTO messages (session_id, seq, body) \
                SELECT $1, bumped.message_count - $2 + m.ord - 1, m.body \
                FROM bumped, unnest($4::text[]) WITH ORDINALITY AS m (body, ord) \
            ) \
            SELECT ",
            $returns
        )
    };
}

/// An append of messages without ids in one statement, so one round trip whatever the
/// history length: upsert the session row, bumping `message_count` by the number of
/// messages under the row's lock, and insert the messages numbered from the count before
/// the bump. A concurrent appender (in any process) blocks on that row lock until this
/// statement's transaction ends, then reads the bumped count: nothing collides and each
/// writer's messages stay contiguous and in order. Messages without ids are always
/// stored and never enter `recent_ids`, so this statement reads and writes nothing of
/// the window: it is the append of schema version 3, less the "only create" switch that
/// [`CREATE`] now is.
///
/// $1 session id, $2 number of messages, $3 a fresh generation (stored only when the
/// statement creates the row), $4 the messages, $5-$8 the owner, title, tags and data and
/// $9-$10 the fixed expiry instant and idle span (`crate::expiry::bound`) of a session
/// the statement creates (an existing session's metadata and expiry are left alone, an
/// idle expiry moved with `updated_at`). Returns the session's generation, or no row when
/// the existing row has expired (an append then takes the locked path:
/// `crate::write::append`).
pub(crate) const APPEND: &str = append!(
    "",
    "now()",
    "now()",
    "",
    "",
    "",
    "",
    "generation FROM bumped"
);

/// [`APPEND`] as a creation runs it (`create_session`, or a conditional write that found
/// the session absent): it writes only if the row does not exist yet (a row created
/// meanwhile is locked but not updated, no messages go in, and no row comes back),
/// created at $11 and last written at $12 when they are given (`interval`s since the Unix
/// epoch, for `create_session_with_times`; NULL: now), each at most the server's clock
/// ([`given_or_now!`]), an idle expiry counting from the second. A statement of its own
/// so that [`APPEND`], every plain append's, binds nothing more.
pub(crate) const CREATE: &str = append!(
    "false AND ",
    given_or_now!("$11"),
    given_or_now!("$12"),
    "",
    "",
    "",
    "",
    "generation FROM bumped"
);

/// SQL: the id at the start of a stored message's text (`{"id":"...",`), NULL when it
/// has none. Only the first 72 characters are read (the 7 before the longest id,
/// [`MessageId::MAX_LEN`](fusion_core::MessageId::MAX_LEN), and the quote after it):
/// `substr` fetches only that slice of a long message's out-of-line text, where a
/// pattern on the whole text would fetch and decompress all of it.
macro_rules! id_of_body {
    () => {
        r#"substring(substr(body, 1, 72) FROM '^\{"id":"([^"]+)"')"#
    };
}

/// SQL: the ids of the last `$n` messages of session $1 that have one, oldest first, as
/// a `text[]` (NULL when none has): one backward walk of the primary key.
macro_rules! last_ids {
    ($n:literal) => {
        concat!(
            "(SELECT array_agg(k.id ORDER BY k.seq) FILTER (WHERE k.id IS NOT NULL) \
            FROM (SELECT seq, ",
            id_of_body!(),
            " AS id FROM messages WHERE session_id = $1 ORDER BY seq DESC LIMIT ",
            $n,
            ") AS k)"
        )
    };
}

/// SQL: [`APPEND_WITH_IDS`], `$only_create` and the row a creation inserts created at
/// `$created` and last written at `$updated` as for [`append!`].
macro_rules! with_ids {
    ($only_create:literal, $created:expr, $updated:expr) => {
        append!(
            $only_create,
            $created,
            $updated,
            ", recent_ids",
            ", $12",
            ", recent_ids = (cur.recent_ids || $11::int4[])[greatest( \
                cardinality(cur.recent_ids) + cardinality($11::int4[]) - $13::int4 + 1, 1):]",
            " AND coalesce(array_ndims(cur.recent_ids), 1) = 1 \
             AND NOT coalesce(cur.recent_ids && $11::int4[], true)",
            "generation FROM bumped"
        )
    };
}

/// [`APPEND`] for a batch in which some message has an id, when none of them is stored
/// (the module docs say why it is done here): the `ON CONFLICT DO UPDATE ... WHERE`
/// refuses, writing nothing, unless the locked row's window (`cur.recent_ids`, the latest
/// version, whoever wrote it while this statement waited) is known and shares no
/// fingerprint with the batch's (one of 2+ dimensions, which `||` cannot extend, is
/// unknown); otherwise the statement does what [`APPEND`] does and appends the batch's
/// fingerprints to the window, dropping the oldest beyond $13. The window is about 280
/// bytes, kept in the row, and the check is one array overlap of integers.
///
/// $1-$10 as for [`APPEND`], $11 the fingerprints of the batch's ids, $12 the batch's own
/// window, stored when the statement creates the session (`crate::batch::Batch`), $13
/// the window's length ([`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW)).
///
/// Returns the session's generation when it stored the batch; no row when a fingerprint
/// matched, the window is unknown or the row has expired (the append then takes the
/// locked path: `crate::write::append`).
pub(crate) const APPEND_WITH_IDS: &str = with_ids!("", "now()", "now()");

/// [`APPEND_WITH_IDS`] as a creation runs it, as [`CREATE`] is [`APPEND`]'s (no row also
/// when the session exists): $1-$13 as there, $14 and $15 the given creation and last
/// write (NULL: now).
pub(crate) const CREATE_WITH_IDS: &str =
    with_ids!("false AND ", given_or_now!("$14"), given_or_now!("$15"));

/// The exact path's read, in a transaction that has locked the row of $1: the ids of
/// its last $2 ([`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW)) messages that have one,
/// oldest first (NULL: none). A statement of its own, so its snapshot, taken after the
/// lock, sees every message an appender committed before.
pub(crate) const LAST_IDS: &str = concat!("SELECT ", last_ids!("$2"));

/// The exact path's write: store the messages $3 (those of the batch whose ids were not
/// among the last messages' ids) numbered from the count before the bump of $2, set the
/// window to $4 and move `updated_at` (and an idle expiry) as an [`APPEND`] does, all
/// only if the session is unexpired and still at generation $5 and count $6, the revision
/// at which those ids were read. When every message was stored already ($2 is 0: a retry
/// whose first attempt applied), `updated_at` and the expiry stay as they were, as on
/// every other backend: a retry is not a write of the session, so it neither moves it to
/// the front of the newest-first listing nor restarts an idle expiry's clock. The row is
/// still updated (the window, unknown after a truncate, is rebuilt) and returned, so the
/// guard answers in the same statement. Any write that changes a session's messages changes one of the
/// two (an append the count, a save, a shortening truncate or a re-creation the
/// generation), so the guard holds exactly when the ids read are still the last
/// messages' ids. The ids are read under the row's lock ([`LAST_IDS`]), so it holds
/// there; it stays a guard, so that a call out of that order can only store nothing.
/// Returns the generation, or no row when the guard failed.
pub(crate) const APPEND_CHECKED: &str = concat!(
    "WITH bumped AS ( \
        UPDATE sessions SET message_count = message_count + $2, recent_ids = $4, \
            updated_at = CASE WHEN $2 = 0 THEN updated_at \
                ELSE greatest(updated_at, now()) END, \
            expires_at = CASE WHEN $2 = 0 THEN expires_at ELSE ",
    expires_at!("greatest(updated_at, now())", "expires_at", "expiry_idle"),
    " END WHERE id = $1 AND generation = $5 AND message_count = $6 AND ",
    unexpired!(""),
    " AND ",
    times_hold!(""),
    " RETURNING message_count, generation \
    ), inserted AS ( \
        INSERT INTO messages (session_id, seq, body) \
        SELECT $1, bumped.message_count - $2 + m.ord - 1, m.body \
        FROM bumped, unnest($3::text[]) WITH ORDINALITY AS m (body, ord) \
    ) \
    SELECT generation FROM bumped"
);

/// A save's first statement: set the count, a fresh generation and the window of the
/// saved history (keeping `created_at`, the metadata and the expiry of an existing
/// session, moving an idle one unless $6), taking the row's lock. $1 session id, $2
/// count, $3 fresh generation, $4 `true` to write only if the row does not exist yet (as
/// [`CREATE`] does), $5 the history's window (`crate::batch::Batch::window`), $6 `true`
/// for a rewrite that keeps an existing session's `updated_at` and expiry
/// (`Change::Rewrite`). Returns the generation, or no row when $4 refused or the row has
/// expired (the row stays locked either way).
pub(crate) const SAVE_SESSION: &str = concat!(
    "INSERT INTO sessions AS cur \
        (id, created_at, updated_at, message_count, generation, recent_ids) \
    VALUES ($1, now(), now(), $2, $3, $5) \
    ON CONFLICT (id) DO UPDATE SET \
        updated_at = CASE WHEN $6 THEN cur.updated_at \
            ELSE greatest(cur.updated_at, now()) END, \
        message_count = excluded.message_count, \
        generation = excluded.generation, \
        recent_ids = excluded.recent_ids, \
        expires_at = CASE WHEN $6 THEN cur.expires_at ELSE ",
    expires_at!(
        "greatest(cur.updated_at, now())",
        "cur.expires_at",
        "cur.expiry_idle"
    ),
    " END WHERE NOT $4 AND ",
    unexpired!("cur."),
    " AND ",
    times_hold!("cur."),
    " RETURNING generation"
);

/// Every message of $1, after its row is locked. A statement of its own: under READ
/// COMMITTED it reads a snapshot taken after the lock, so it sees the rows of every
/// appender that committed before.
pub(crate) const DELETE_MESSAGES: &str = "DELETE FROM messages WHERE session_id = $1";

/// A save's messages, $2, numbered from 0 for session $1.
pub(crate) const INSERT_MESSAGES: &str = "\
    INSERT INTO messages (session_id, seq, body) \
    SELECT $1, m.ord - 1, m.body FROM unnest($2::text[]) WITH ORDINALITY AS m (body, ord)";

/// A truncate's first statement: keep $2 messages of session $1 with the fresh
/// generation $3, only if it holds more, moving an idle expiry. Its window becomes
/// unknown (NULL): the messages kept may hold ids older than the window's, so the next
/// append with ids takes the exact path, which rebuilds it from the messages kept (a
/// fingerprint cannot be computed in SQL, and a truncate that read the kept ids back
/// would cost a round trip more). Returns the new generation, or no row when there was
/// nothing to cut (or no session, or it has expired).
pub(crate) const TRUNCATE_SESSION: &str = concat!(
    "UPDATE sessions SET message_count = $2, generation = $3, recent_ids = NULL, \
        updated_at = greatest(updated_at, now()), \
        expires_at = ",
    expires_at!("greatest(updated_at, now())", "expires_at", "expiry_idle"),
    " WHERE id = $1 AND message_count > $2 AND ",
    unexpired!(""),
    " AND ",
    times_hold!(""),
    " RETURNING generation"
);

/// A truncate's second statement, after [`TRUNCATE_SESSION`] has locked and updated the
/// row of $1: delete its messages from seq $2 on. A statement of its own, so its
/// snapshot, taken after the lock, sees every message an appender committed before (the
/// first statement's may not).
pub(crate) const CUT_TAIL: &str = "DELETE FROM messages WHERE session_id = $1 AND seq >= $2";

/// A delete's first statement, taking the row's lock; [`DELETE_MESSAGES`] follows in the
/// same transaction when it deleted a row (`crate::write::remove`). (The foreign key's
/// cascade would do, but the explicit statement also covers a schema whose constraint
/// was dropped by hand.)
pub(crate) const DELETE_SESSION: &str = "DELETE FROM sessions WHERE id = $1";

/// A conditional write's check, and the first statement of an append whose one
/// statement was refused: the session's `(generation, message_count)`, whether it has
/// expired and its `updated_at` in microseconds (as stored), locking the row until the
/// transaction ends (no row: absent). Read with the lock, that `updated_at` stays the
/// session's until then: a metadata update locks the row first ([`LOCK_INFO`]). Read
/// only if the row's times hold ([`times_hold!`]), else the statement fails, so a write
/// refused by its check (a wrong expectation, a creation of a session that exists) says
/// the session is corrupt, naming the column, as the write itself would, rather than a
/// conflict that a reload and retry only turns into that (a damaged `updated_at` already
/// failed the conversion; a damaged `created_at` did not).
pub(crate) const LOCK_REVISION: &str = concat!(
    "SELECT generation, message_count, coalesce(expires_at <= ",
    now_us!(),
    ", false), CASE WHEN ",
    times_hold!(""),
    " THEN ",
    micros!("updated_at"),
    " END FROM sessions WHERE id = $1 FOR UPDATE"
);

/// The session's `(generation, message_count)`, unlocked: what a refused write reports.
pub(crate) const READ_REVISION: &str = concat!(
    "SELECT generation, message_count FROM sessions WHERE id = $1 AND ",
    unexpired!("")
);

/// A history in seq order: one query, rows streamed back; none for an expired session.
pub(crate) const LOAD: &str = concat!(
    "SELECT seq, body FROM messages WHERE session_id = $1 AND NOT ",
    expired!(),
    " ORDER BY seq"
);

/// A history and its revision in one statement, so from one snapshot: every row carries
/// the session's `(generation, message_count)`; a session without messages yields one row
/// with NULL `seq` and `body`, an absent or expired one no row.
pub(crate) const LOAD_REVISION: &str = concat!(
    "SELECT s.generation, s.message_count, m.seq, m.body \
    FROM sessions AS s LEFT JOIN messages AS m ON m.session_id = s.id \
    WHERE s.id = $1 AND ",
    unexpired!("s."),
    " ORDER BY m.seq"
);

/// Every session id that has not expired, from the `sessions` table only.
pub(crate) const LIST_SESSIONS: &str = concat!(
    "SELECT id FROM sessions WHERE ",
    unexpired!(""),
    " ORDER BY id"
);

/// Deletes the first $1 sessions of `sessions_expiry` that have expired, oldest expiry
/// first, and their messages, in one statement. `FOR UPDATE SKIP LOCKED` locks each
/// before it is deleted, so it is still expired then (a session written again since is
/// re-checked on its newest version and left out), and passes over sessions another
/// transaction holds (a writer, or a concurrent purge: each takes different ones). The
/// messages would go by the foreign key's cascade; deleting them explicitly also covers a
/// schema whose constraint was dropped by hand, as [`DELETE_SESSION`] does. Its row count
/// is the number of sessions deleted.
pub(crate) const PURGE: &str = concat!(
    "WITH doomed AS ( \
        SELECT id FROM sessions WHERE expires_at <= ",
    now_us!(),
    " ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED \
    ), gone AS ( \
        DELETE FROM messages WHERE session_id IN (SELECT id FROM doomed) \
    ) \
    DELETE FROM sessions WHERE id IN (SELECT id FROM doomed)"
);

/// The columns of a session's facts, as [`crate::meta::decode_info`] reads them: the
/// timestamps in whole Unix microseconds, their stored precision, so a listing's cursor
/// and `session_info` give the same instant, NULL for a time out of range
/// ([`crate::expiry::stored_micros`]). (`extract` returns `numeric` from PostgreSQL 14
/// on: exact.)
macro_rules! info_columns {
    () => {
        concat!(
            "id, message_count, generation, owner, title, tags, data, expires_at, expiry_idle, ",
            $crate::expiry::stored_micros!("created_at"),
            " AS created_us, ",
            $crate::expiry::stored_micros!("updated_at"),
            " AS updated_us"
        )
    };
}
pub(crate) use info_columns;

/// One session's facts ([`info_columns`]); no row for an absent or expired session.
pub(crate) const SESSION_INFO: &str = concat!(
    "SELECT ",
    info_columns!(),
    " FROM sessions WHERE id = $1 AND ",
    unexpired!("")
);

/// An update's first statement: the session's facts, locking its row until the
/// transaction ends (no row: absent or expired, and nothing is locked).
pub(crate) const LOCK_INFO: &str = concat!(
    "SELECT ",
    info_columns!(),
    " FROM sessions WHERE id = $1 AND ",
    unexpired!(""),
    " FOR UPDATE"
);

/// An update's write, after [`LOCK_INFO`]: $1 session id, $2-$5 the owner, title, tags
/// and data that replace the old ones, $6-$7 the fixed expiry instant and idle span
/// (`crate::expiry::bound`). A metadata change is a write, so `updated_at` moves as in
/// [`APPEND`] (never backwards, so the session moves to the front of the newest-first
/// listing, before every cursor already handed out), and an idle expiry with it. Returns
/// the facts after it.
pub(crate) const UPDATE_META: &str = concat!(
    "UPDATE sessions SET owner = $2, title = $3, tags = $4, data = $5, \
        updated_at = greatest(updated_at, now()), expiry_idle = $7, expires_at = ",
    expires_at!("greatest(updated_at, now())", "$6::int8", "$7::int8"),
    " WHERE id = $1 RETURNING ",
    info_columns!()
);

/// A count or position as a `bigint`.
pub(crate) fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The purge reads `sessions_expiry` from its start and stops after its batch, and a
    /// load checks the session's expiry once (an InitPlan), not per message row.
    /// Sequential scans are turned off so the plan shows what the planner can use,
    /// whatever the size of the test's (empty) tables.
    #[tokio::test]
    async fn a_purge_walks_the_expiry_index_and_a_load_checks_the_expiry_once() {
        use fusion_core::testkit::StorageHarness;
        let Some(harness) = crate::testing::harness().await else {
            return;
        };
        let _storage = harness.open().await.unwrap();
        let mut raw = harness.raw().await;
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut raw)
            .await
            .unwrap();
        let purge: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {PURGE}"))
            .bind(10_i64)
            .fetch_all(&mut raw)
            .await
            .unwrap();
        let purge = purge.join("\n");
        assert!(purge.contains("LockRows"), "{purge}");
        assert!(
            purge.contains("Index Scan using sessions_expiry"),
            "{purge}"
        );
        let load: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {LOAD}"))
            .bind("s")
            .fetch_all(&mut raw)
            .await
            .unwrap();
        let load = load.join("\n");
        assert!(load.contains("InitPlan"), "{load}");
        assert!(!load.contains("SubPlan"), "not once per row: {load}");
    }
}
