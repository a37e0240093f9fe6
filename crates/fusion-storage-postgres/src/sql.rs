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
//! # Exactly once: the ids live on the session's row
//!
//! An append stores no message whose id is among the ids of the session's last
//! [`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW) messages, and the check must be atomic with
//! the write, because a retry may race its own first attempt. The append is one
//! statement, and under READ COMMITTED every table it reads, `messages` included, is read
//! at the statement's snapshot, taken before it waits for the row lock: a `NOT EXISTS` on
//! `messages` misses the rows of an appender that held the lock and committed meanwhile,
//! and would store them a second time. What the statement does see as it is now is the
//! row its `ON CONFLICT DO UPDATE` locked: `SET` and `WHERE` read the latest version of
//! the `sessions` row. So the ids to check against live on that row, in `recent_ids`,
//! and every write of the history keeps them true under the same lock: an append adds the
//! ids it stores ([`APPEND_WITH_IDS`]), a save sets the saved history's last ids
//! ([`SAVE_SESSION`]), a truncate recomputes them from the messages it keeps
//! ([`CUT_TAIL`]), a delete or a purge removes the row. Whatever the interleaving, an
//! append checks against exactly what the writers before it left, so any number of
//! instances appending one batch at once store it once by construction: the first to
//! take the lock stores it, each later one finds all of its ids. `crate::races` forces
//! each interleaving (behind a first attempt, a creation, a truncate, a save, a delete).
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

use fusion_core::sql::{check_count, corrupt_row, missing_row, revision_of};
use fusion_core::{ChatMessage, Result, Revision};

use crate::error::BACKEND;
use crate::expiry::{expired, expires_at, now_us, unexpired};

/// An append of messages without ids in one statement, so one round trip whatever the
/// history length: upsert the session row, bumping `message_count` by the number of
/// messages under the row's lock, and insert the messages numbered from the count before
/// the bump. A concurrent appender (in any process) blocks on that row lock until this
/// statement's transaction ends, then reads the bumped count: nothing collides and each
/// writer's messages stay contiguous and in order. Messages without ids are always
/// stored and never enter `recent_ids`, so this statement reads and writes nothing of
/// the window: it is the append of schema version 3, unchanged.
///
/// $1 session id, $2 number of messages, $3 a fresh generation (stored only when the
/// statement creates the row), $4 the messages, $5 `true` to write only if the row does
/// not exist yet (a conditional write that found the session absent, or
/// `create_session`: a row created meanwhile is locked but not updated, and no messages
/// go in), $6-$9 the owner, title, tags and data and $10-$11 the fixed expiry instant
/// and idle span (`crate::expiry::bound`) of a session the statement creates (an
/// existing session's metadata and expiry are left alone, an idle expiry moved with
/// `updated_at`). Returns the session's generation, or no row when $5 refused or the
/// existing row has expired (a plain append then removes it and runs again:
/// `crate::write::append`).
pub(crate) const APPEND: &str = concat!(
    "WITH bumped AS ( \
        INSERT INTO sessions AS cur \
            (id, created_at, updated_at, message_count, generation, owner, title, tags, data, \
             expires_at, expiry_idle) \
        VALUES ($1, now(), now(), $2, $3, $6, $7, $8, $9, ",
    expires_at!("now()", "$10::int8", "$11::int8"),
    ", $11) \
        ON CONFLICT (id) DO UPDATE SET \
            updated_at = greatest(cur.updated_at, now()), \
            message_count = cur.message_count + excluded.message_count, \
            expires_at = ",
    expires_at!(
        "greatest(cur.updated_at, now())",
        "cur.expires_at",
        "cur.expiry_idle"
    ),
    " WHERE NOT $5 AND ",
    unexpired!("cur."),
    " RETURNING message_count, generation \
    ), inserted AS ( \
        INSERT INTO messages (session_id, seq, body) \
        SELECT $1, bumped.message_count - $2 + m.ord - 1, m.body \
        FROM bumped, unnest($4::text[]) WITH ORDINALITY AS m (body, ord) \
    ) \
    SELECT generation FROM bumped"
);

/// [`APPEND`] for a batch in which some message has an id, exactly once (the module docs
/// say why it is done here): the `ON CONFLICT DO UPDATE` compares the batch's ids with
/// the locked row's `recent_ids` (`cur.recent_ids`, the latest version, whoever wrote it
/// while this statement waited), counts only the messages whose ids it does not find
/// (and those without ids), appends their ids to the window, dropping the oldest beyond
/// $14, and records the positions it left out in `append_skipped`, which `RETURNING`
/// hands to the insert: it inserts the others, numbered contiguously (a kept message's
/// seq is the new count less the number of kept messages from it on). The window is read
/// once (the `OFFSET 0` keeps PostgreSQL from copying the expression, and with it the
/// fetch of the out-of-line array, into each use), and kept as it is (not rewritten)
/// when no id is new. When nothing was left out, `append_skipped` is NULL and the
/// insert's checks are a NULL test per row.
///
/// $1-$11 as for [`APPEND`], $12 the messages' ids (NULL for a message without), $13 the
/// batch's own window, stored when the statement creates the session
/// (`crate::batch::Batch`), $14 the window's length
/// ([`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW)). Returns what [`APPEND`] returns. An
/// append whose messages were all stored already stores and counts nothing, and still
/// moves `updated_at` like any write.
pub(crate) const APPEND_WITH_IDS: &str = concat!(
    "WITH bumped AS ( \
        INSERT INTO sessions AS cur \
            (id, created_at, updated_at, message_count, generation, owner, title, tags, data, \
             expires_at, expiry_idle, recent_ids) \
        VALUES ($1, now(), now(), $2, $3, $6, $7, $8, $9, ",
    expires_at!("now()", "$10::int8", "$11::int8"),
    ", $11, $13) \
        ON CONFLICT (id) DO UPDATE SET \
            updated_at = greatest(cur.updated_at, now()), \
            expires_at = ",
    expires_at!(
        "greatest(cur.updated_at, now())",
        "cur.expires_at",
        "cur.expiry_idle"
    ),
    ", (message_count, recent_ids, append_skipped) = ( \
                SELECT cur.message_count + $2 - coalesce(cardinality(d.skipped), 0), \
                    CASE WHEN d.fresh IS NULL THEN cur.recent_ids \
                        ELSE (k.known || d.fresh)[greatest( \
                            cardinality(k.known) + cardinality(d.fresh) - $14::int4 + 1, 1):] \
                    END, \
                    d.skipped \
                FROM (SELECT cur.recent_ids || '{}'::text[] AS known OFFSET 0) AS k, \
                    LATERAL (SELECT \
                        array_agg(b.ord) FILTER (WHERE b.id = ANY (k.known)) AS skipped, \
                        array_agg(b.id ORDER BY b.ord) FILTER (WHERE b.id <> ALL (k.known)) \
                            AS fresh \
                        FROM unnest($12::text[]) WITH ORDINALITY AS b (id, ord)) AS d) \
        WHERE NOT $5 AND ",
    unexpired!("cur."),
    " RETURNING message_count, generation, append_skipped \
    ), inserted AS ( \
        INSERT INTO messages (session_id, seq, body) \
        SELECT $1, bumped.message_count - $2 + m.ord - 1 \
            + CASE WHEN bumped.append_skipped IS NULL THEN 0 \
                ELSE (SELECT count(*) FROM unnest(bumped.append_skipped) AS s WHERE s > m.ord) \
            END, \
            m.body \
        FROM bumped, unnest($4::text[]) WITH ORDINALITY AS m (body, ord) \
        WHERE bumped.append_skipped IS NULL OR m.ord <> ALL (bumped.append_skipped) \
    ) \
    SELECT generation FROM bumped"
);

/// A save's first statement: set the count, a fresh generation and the ids of the saved
/// history's last messages (keeping `created_at`, the metadata and the expiry of an
/// existing session, moving an idle one), taking the row's lock. $1 session id, $2 count,
/// $3 fresh generation, $4 `true` to write only if the row does not exist yet (as in
/// [`APPEND`]), $5 the history's window (`crate::batch::Batch::window`). Returns the
/// generation, or no row when $4 refused or the row has expired (the row stays locked
/// either way).
pub(crate) const SAVE_SESSION: &str = concat!(
    "INSERT INTO sessions AS cur \
        (id, created_at, updated_at, message_count, generation, recent_ids) \
    VALUES ($1, now(), now(), $2, $3, $5) \
    ON CONFLICT (id) DO UPDATE SET \
        updated_at = greatest(cur.updated_at, now()), \
        message_count = excluded.message_count, \
        generation = excluded.generation, \
        recent_ids = excluded.recent_ids, \
        expires_at = ",
    expires_at!(
        "greatest(cur.updated_at, now())",
        "cur.expires_at",
        "cur.expiry_idle"
    ),
    " WHERE NOT $4 AND ",
    unexpired!("cur."),
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
/// generation $3, only if it holds more, moving an idle expiry. Returns the new
/// generation, or no row when there was nothing to cut (or no session, or it has
/// expired).
pub(crate) const TRUNCATE_SESSION: &str = concat!(
    "UPDATE sessions SET message_count = $2, generation = $3, \
        updated_at = greatest(updated_at, now()), \
        expires_at = ",
    expires_at!("greatest(updated_at, now())", "expires_at", "expiry_idle"),
    " WHERE id = $1 AND message_count > $2 AND ",
    unexpired!(""),
    " RETURNING generation"
);

/// SQL: the id at the start of a stored message's text (`{"id":"...",`), NULL when it
/// has none.
macro_rules! id_of_body {
    () => {
        r#"substring(body FROM '^\{"id":"([^"]+)"')"#
    };
}

/// A truncate's second statement, after [`TRUNCATE_SESSION`] has locked and updated the
/// row of $1: delete its messages from seq $2 on, and recompute `recent_ids` from the ids
/// of the last $3 ([`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW)) messages kept, so the ids
/// cut are forgotten. A statement of its own, so its snapshot, taken after the lock, sees
/// every message an appender committed before (the first statement's may not). The id is
/// read from the start of the stored text, where `serde_json` writes it (ids need no
/// escaping), without parsing the JSON. A session whose window is empty (it never stored
/// an id) keeps its row as it is.
pub(crate) const CUT_TAIL: &str = concat!(
    "WITH cut AS (DELETE FROM messages WHERE session_id = $1 AND seq >= $2) \
    UPDATE sessions SET recent_ids = ( \
        SELECT array_agg(k.id ORDER BY k.seq) FILTER (WHERE k.id IS NOT NULL) \
        FROM (SELECT seq, ",
    id_of_body!(),
    " AS id FROM messages WHERE session_id = $1 AND seq < $2 \
            ORDER BY seq DESC LIMIT $3) AS k) \
    WHERE id = $1 AND recent_ids IS NOT NULL"
);

/// A delete's first statement, taking the row's lock; [`DELETE_MESSAGES`] follows in the
/// same transaction. (The foreign key's cascade would do, but the explicit statement
/// also covers a schema whose constraint was dropped by hand.)
pub(crate) const DELETE_SESSION: &str = "DELETE FROM sessions WHERE id = $1";

/// [`DELETE_SESSION`] only if the session has expired, taking the row's lock: what a
/// write that found it expired runs first. Returns the id when it deleted the row.
pub(crate) const DELETE_EXPIRED: &str = concat!(
    "DELETE FROM sessions WHERE id = $1 AND expires_at <= ",
    now_us!(),
    " RETURNING id"
);

/// A conditional write's check: the session's `(generation, message_count)` and whether
/// it has expired, locking the row until the transaction ends (no row: absent).
pub(crate) const LOCK_REVISION: &str = concat!(
    "SELECT generation, message_count, coalesce(expires_at <= ",
    now_us!(),
    ", false) FROM sessions WHERE id = $1 FOR UPDATE"
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
/// and `session_info` give the same instant. (`extract` returns `numeric` from
/// PostgreSQL 14 on: exact.)
macro_rules! info_columns {
    () => {
        concat!(
            "id, message_count, generation, owner, title, tags, data, expires_at, expiry_idle, ",
            $crate::expiry::micros!("created_at"),
            " AS created_us, ",
            $crate::expiry::micros!("updated_at"),
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

/// `(seq, body)` rows in seq order as messages; a gap or an unreadable row is
/// [`Error::Corrupt`](fusion_core::Error::Corrupt) naming the seq.
pub(crate) fn decode_rows(
    session_id: &str,
    rows: impl IntoIterator<Item = (i64, String)>,
) -> Result<Vec<ChatMessage>> {
    (0..)
        .zip(rows)
        .map(|(expected, (seq, body))| {
            if seq != expected {
                return Err(missing_row(BACKEND, session_id, expected, seq));
            }
            serde_json::from_str(&body).map_err(|e| corrupt_row(BACKEND, session_id, seq, &e))
        })
        .collect()
}

/// The rows of [`LOAD_REVISION`] as a history and its revision; a count that disagrees
/// with the rows is [`Error::Corrupt`](fusion_core::Error::Corrupt).
pub(crate) fn decode_revision(
    session_id: &str,
    rows: Vec<(i64, i64, Option<i64>, Option<String>)>,
) -> Result<(Vec<ChatMessage>, Revision)> {
    let Some(&(generation, count, ..)) = rows.first() else {
        return Ok((Vec::new(), Revision::ABSENT));
    };
    let revision = revision_of(Some((generation, count)));
    let messages = rows
        .into_iter()
        .filter_map(|(.., seq, body)| Some((seq?, body?)));
    let history = decode_rows(session_id, messages)?;
    check_count(BACKEND, session_id, revision.len, history.len())?;
    Ok((history, revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_in_order_and_gaps_are_corrupt() {
        let body = |text: &str| serde_json::to_string(&ChatMessage::user(text)).unwrap();
        let ok = decode_rows("s", [(0, body("a")), (1, body("b"))]).unwrap();
        assert_eq!(ok, [ChatMessage::user("a"), ChatMessage::user("b")]);
        let gap = decode_rows("s", [(0, body("a")), (2, body("c"))]).unwrap_err();
        assert!(gap.to_string().contains("seq 1 is missing"), "{gap}");
        let bad = decode_rows("s", [(0, "{".to_string())]).unwrap_err();
        assert!(bad.to_string().contains("seq 0"), "{bad}");
    }

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

    #[test]
    fn a_revision_needs_its_count_to_match_the_rows() {
        let body = serde_json::to_string(&ChatMessage::user("a")).unwrap();
        let rows = vec![(7, 1, Some(0), Some(body.clone()))];
        let (history, at) = decode_revision("s", rows).unwrap();
        assert_eq!((history.len(), at.generation, at.len), (1, 7, 1));
        assert_eq!(decode_revision("s", vec![]).unwrap().1, Revision::ABSENT);
        let short = vec![(7, 2, Some(0), Some(body))];
        assert!(decode_revision("s", short).is_err());
        let empty = vec![(7, 1, None, None)];
        assert!(decode_revision("s", empty).is_err());
    }
}
