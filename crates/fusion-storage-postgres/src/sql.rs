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

use fusion_core::sql::{check_count, corrupt_row, missing_row, revision_of};
use fusion_core::{ChatMessage, Result, Revision};

use crate::error::BACKEND;
use crate::expiry::{expired, expires_at, now_us, unexpired};

/// An append in one statement, so one round trip whatever the history length:
/// upsert the session row, bumping `message_count` by the number of new messages
/// under the row's lock, and insert the messages numbered from the count before the
/// bump. A concurrent appender (in any process) blocks on that row lock until this
/// statement's transaction ends, then reads the bumped count: nothing collides and each
/// writer's messages stay contiguous and in order.
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

/// A save's first statement: set the count and a fresh generation (keeping `created_at`,
/// the metadata and the expiry of an existing session, moving an idle one), taking the
/// row's lock. $1 session id, $2 count, $3 fresh generation, $4 `true` to write only if
/// the row does not exist yet (as in [`APPEND`]). Returns the generation, or no row when
/// $4 refused or the row has expired (the row stays locked either way).
pub(crate) const SAVE_SESSION: &str = concat!(
    "INSERT INTO sessions AS cur (id, created_at, updated_at, message_count, generation) \
    VALUES ($1, now(), now(), $2, $3) \
    ON CONFLICT (id) DO UPDATE SET \
        updated_at = greatest(cur.updated_at, now()), \
        message_count = excluded.message_count, \
        generation = excluded.generation, \
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

/// The messages of $1 from seq $2 on, after a truncate has locked and updated its row.
pub(crate) const DELETE_TAIL: &str = "DELETE FROM messages WHERE session_id = $1 AND seq >= $2";

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

/// The messages as the JSON texts the `body` column stores.
pub(crate) fn encode(messages: &[ChatMessage]) -> Result<Vec<String>> {
    messages
        .iter()
        .map(|m| serde_json::to_string(m).map_err(Into::into))
        .collect()
}

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
