//! The statements of every write transaction, each a [`WriteSql`] that both runners run
//! (see the parent module for the parameters and how they are numbered), but for
//! APPEND_RECORDING_IDS, which only the direct path's writer can run.
//!
//! The writes that store messages keep the session's `recent_ids` (`dedup.rs`): APPEND
//! sets it to ?6 when its check decided one (an append with ids) and leaves it otherwise,
//! APPEND_RECORDING_IDS records the batch's fingerprints (?6) after it, SAVE sets it to ?6
//! and CREATE to ?13 (the fingerprints of the history they store), TRUNCATE sets it to
//! NULL (unknown: the next append with ids reads the ids themselves).
//!
//! Every statement that changes an existing `sessions` row (APPEND's, SAVE's and
//! REWRITE's upsert, TRUNCATE's update) holds [`times_hold!`] in its condition: a session
//! whose `created_at` or `updated_at` a hand edit damaged fails the write, which writes
//! nothing, and the storage reports it as `session_info` does. A metadata update reads
//! and decodes the session's facts first; a creation writes only where no session is.
//!
//! The writes that leave messages treat an expired session (`crate::expiry`) as absent:
//! APPEND and SAVE refuse its row in their upsert's `DO UPDATE ... WHERE` and skip it in
//! their later statements ([`Ends::UnlessExpired`]), TRUNCATE leaves it alone. An idle
//! expiry moves with `updated_at` in the UPDATE these writes run anyway:
//! `expires_at = updated_at * 1000 + expiry_idle`, with the `updated_at` just written.

use super::{Ends, WriteSql};
use crate::expiry::{expired, moved_expiry, unexpired};

/// SQL, last in the condition of every statement that changes an existing `sessions` row:
/// true when its `created_at` and `updated_at` are times Fusion writes (integers from 0 to
/// `i64::MAX / 1000` milliseconds, what `crate::meta` decodes; text or a blob fails the
/// range, a real the `CAST`), and otherwise the failure of the statement, so of the whole
/// write: "integer overflow", `abs` of the smallest integer (SQLite raises no error of a
/// statement's choosing outside a trigger), which `crate::error::refused_for_times`
/// recognizes. A write that went on would keep the damage (`MAX` keeps text, a blob or an
/// integer too large) with nothing to say so. Comparisons and casts on the row the
/// statement has found, and one function call.
macro_rules! times_hold {
    () => {
        concat!(
            "abs(-9223372036854775807 - ((",
            time_holds!("sessions.created_at"),
            " AND ",
            time_holds!("sessions.updated_at"),
            ") IS NOT 1))"
        )
    };
}

/// SQL for [`times_hold!`]: the column `$c` holds a time Fusion writes.
macro_rules! time_holds {
    ($c:literal) => {
        concat!(
            $c,
            " BETWEEN 0 AND 9223372036854775807 / 1000 AND ",
            $c,
            " = CAST(",
            $c,
            " AS INTEGER)"
        )
    };
}

// For the read of a write under `UnwrittenSince` (`super::check`), which compares
// `updated_at` before any of these statements runs.
pub(super) use {time_holds, times_hold};

/// APPEND's first statement: bump the session's count by ?3 (creating the row, with the
/// fresh generation ?4; an existing row keeps its generation, and moves an idle expiry),
/// and set an existing row's `recent_ids` to `$recent` (a new row's is ?6).
/// `MAX` keeps updated_at monotonic if the clock steps back. An expired row is not updated.
macro_rules! append_to_session {
    ($recent:literal) => {
        concat!(
            "INSERT INTO sessions \
                 (id, created_at, updated_at, message_count, generation, recent_ids) \
             VALUES (?1, ?2 / 1000, ?2 / 1000, ?3, ?4, ?6) \
             ON CONFLICT (id) DO UPDATE SET \
                 updated_at = MAX(excluded.updated_at, sessions.updated_at), \
                 message_count = sessions.message_count + excluded.message_count, \
                 recent_ids = ",
            $recent,
            ", ",
            moved_expiry!(),
            " WHERE ",
            unexpired!("sessions", "?2"),
            " AND ",
            times_hold!()
        )
    };
}

/// APPEND's second statement: insert the new messages after the old ones.
macro_rules! append_messages {
    () => {
        concat!(
            "INSERT INTO messages (session_id, seq, message) \
             SELECT ?1, s.message_count - ?3 + j.key, j.value \
             FROM sessions AS s, json_each(?5) AS j WHERE s.id = ?1 AND ",
            unexpired!("s", "?2")
        )
    };
}

// An append: bump the session's count, then insert the new messages after the old ones.
// The seqs come from the count read inside the write transaction, so concurrent appenders
// in any process queue on the write lock and never collide. An expired row is neither
// updated nor appended to: no row changes, and the runner starts the session afresh
// (`Ends::UnlessExpired`). `recent_ids` becomes ?6 unless that is NULL (an append without
// ids keeps it).
pub(crate) static APPEND: WriteSql = write_sql!(
    bounded: true,
    ends: Ends::UnlessExpired,
    append_to_session!("coalesce(excluded.recent_ids, sessions.recent_ids)"),
    append_messages!(),
);

// An append with ids that records them itself (`dedup.rs`): ?6 holds the fingerprints of
// the batch's ids, which `fusion_record_ids` appends to the row's `recent_ids` unless it
// may hold one of them (or holds none known). Then it fails with
// `SQLITE_CONSTRAINT_FUNCTION`, having changed nothing, and the runner decides with the
// check instead (APPEND). Only the direct path's writer has the function.
pub(crate) static APPEND_RECORDING_IDS: WriteSql = write_sql!(
    bounded: true,
    ends: Ends::UnlessExpired,
    append_to_session!("fusion_record_ids(sessions.recent_ids, excluded.recent_ids)"),
    append_messages!(),
);

/// SAVE's first statement: set the count, the fresh generation and `recent_ids` (keeping
/// created_at, the metadata and the expiry of an existing session), and `$times`: what
/// else of an existing session changes. Neither it nor the statements after it touch an
/// expired session.
macro_rules! save_to_session {
    ($times:expr) => {
        concat!(
            "INSERT INTO sessions \
                 (id, created_at, updated_at, message_count, generation, recent_ids) \
             VALUES (?1, ?2 / 1000, ?2 / 1000, ?3, ?4, ?6) \
             ON CONFLICT (id) DO UPDATE SET ",
            $times,
            "message_count = excluded.message_count, \
             generation = excluded.generation, \
             recent_ids = excluded.recent_ids \
             WHERE ",
            unexpired!("sessions", "?2"),
            " AND ",
            times_hold!()
        )
    };
}

/// SAVE's `$times`: the session's latest write, so its `updated_at` moves, and an idle
/// expiry with it. (Every expression of a SET reads the row as it was, whatever the
/// order.)
macro_rules! written_now {
    () => {
        concat!(
            "updated_at = MAX(excluded.updated_at, sessions.updated_at), ",
            moved_expiry!(),
            ", "
        )
    };
}

/// SAVE's and REWRITE's second statement: every message removed...
macro_rules! delete_messages {
    () => {
        concat!(
            "DELETE FROM messages WHERE session_id = ?1 AND NOT ",
            expired!()
        )
    };
}

/// ... and their third: those of ?5 stored instead.
macro_rules! insert_messages {
    () => {
        concat!(
            "INSERT INTO messages (session_id, seq, message) \
             SELECT ?1, j.key, j.value FROM json_each(?5) AS j WHERE NOT ",
            expired!()
        )
    };
}

// A full save: the session's row and every message replaced. Like an append, it changes
// nothing on an expired session.
pub(crate) static SAVE: WriteSql = write_sql!(
    bounded: false,
    ends: Ends::UnlessExpired,
    save_to_session!(written_now!()),
    delete_messages!(),
    insert_messages!(),
);

// A save that is not the session's latest activity (`Change::Rewrite`: the same
// conversation stored another way): its times, its expiry and so its place in the
// indexes by update time stay as they were.
pub(crate) static REWRITE: WriteSql = write_sql!(
    bounded: false,
    ends: Ends::UnlessExpired,
    // An existing session keeps its `updated_at` and expiry.
    save_to_session!(""),
    delete_messages!(),
    insert_messages!(),
);

// Keeps the first ?3 messages. The count only ever goes down, and only then do the
// generation, updated_at and an idle expiry change; the DELETE finds nothing when the
// session was already that short. An expired session is absent: nothing to truncate.
pub(crate) static TRUNCATE: WriteSql = write_sql!(
    bounded: false,
    ends: Ends::Written,
    concat!(
        "UPDATE sessions SET message_count = ?3, updated_at = MAX(?2 / 1000, updated_at), \
             generation = ?4, recent_ids = NULL, \
             expires_at = CASE WHEN expiry_idle IS NULL THEN expires_at \
                 ELSE MAX(?2 / 1000, updated_at) * 1000 + expiry_idle END \
         WHERE id = ?1 AND message_count > ?3 AND ",
        unexpired!("sessions", "?2"),
        " AND ",
        times_hold!()
    ),
    concat!(
        "DELETE FROM messages WHERE session_id = ?1 AND seq >= ?3 AND NOT ",
        expired!()
    ),
);

// A conditional append of no messages: nothing to write once the check has passed.
pub(crate) static NOTHING: WriteSql = write_sql!(bounded: true, ends: Ends::Written);

/// CREATE's first statement: the session's row with its owner and expiry.
macro_rules! create_session {
    () => {
        "INSERT INTO sessions \
         (id, created_at, updated_at, message_count, generation, owner, expires_at, expiry_idle, \
          recent_ids) \
         VALUES (?1, ?4, ?5, ?6, ?7, ?8, ?11, ?12, ?13)"
    };
}

/// CREATE's last statements: a `session_meta` row when there is a title, a tag or data,
/// and one `session_tags` row per tag. The tags are the JSON `SessionMeta::tags_json`
/// writes, so `json_each` yields each tag as text.
macro_rules! create_meta {
    () => {
        "INSERT INTO session_meta (session_id, tags, title, data) SELECT ?1, ?3, ?9, ?10 \
         WHERE ?3 <> '[]' OR ?9 IS NOT NULL OR ?10 <> '{}'"
    };
}
/// CREATE's tag rows (see [`create_meta!`]).
macro_rules! create_tags {
    () => {
        "INSERT INTO session_tags (tag, session_id) SELECT j.value, ?1 FROM json_each(?3) AS j"
    };
}

/// A creation with metadata, run only after its check found no session (or removed an
/// expired one): the row, the messages, the metadata. Its own parameters (see the module
/// documentation on gaps): ?1 the id, ?2 the messages, ?3 the tags, ?4 `created_at` and
/// ?5 `updated_at` in milliseconds (both now, or a copy's times), ?6 the count, ?7 the
/// fresh generation, ?8 the owner, ?9 the title, ?10 the data, ?11 `expires_at`, ?12
/// `expiry_idle`, ?13 `recent_ids`.
pub(crate) static CREATE: WriteSql = write_sql!(
    bounded: true,
    ends: Ends::Written,
    create_session!(),
    "INSERT INTO messages (session_id, seq, message) SELECT ?1, j.key, j.value FROM json_each(?2) AS j",
    create_meta!(),
    create_tags!(),
);

/// A metadata update, run with what `crate::meta` decided from the facts it read: ?2 the
/// new updated_at, ?3 the owner, ?4 the tags (JSON array), ?5 the title, ?6 the data, ?7
/// `expires_at`, ?8 `expiry_idle`. The tag rows are replaced whole (at most
/// `fusion_core::MAX_TAGS`).
pub(crate) static UPDATE_META: WriteSql = write_sql!(
    bounded: true,
    ends: Ends::Written,
    "UPDATE sessions SET updated_at = ?2, owner = ?3, expires_at = ?7, expiry_idle = ?8 \
     WHERE id = ?1",
    "INSERT INTO session_meta (session_id, tags, title, data) VALUES (?1, ?4, ?5, ?6) \
     ON CONFLICT (session_id) DO UPDATE \
     SET tags = excluded.tags, title = excluded.title, data = excluded.data",
    "DELETE FROM session_tags WHERE session_id = ?1",
    "INSERT INTO session_tags (tag, session_id) SELECT j.value, ?1 FROM json_each(?4) AS j",
);

// Every table explicitly: a pool given to `from_pool` may have foreign keys (and so the
// cascade) off. The metadata goes with the session.
pub(crate) static REMOVE: WriteSql = write_sql!(
    bounded: false,
    ends: Ends::Written,
    "DELETE FROM messages WHERE session_id = ?1",
    "DELETE FROM session_tags WHERE session_id = ?1",
    "DELETE FROM session_meta WHERE session_id = ?1",
    "DELETE FROM sessions WHERE id = ?1",
);

/// REMOVE, only if the session has expired at ?2: what a write that found its session
/// expired runs before running again (`Ends::UnlessExpired`). On the pool that second run
/// is a transaction of its own, so this checks again rather than trusting the first.
pub(crate) static REMOVE_EXPIRED: WriteSql = write_sql!(
    bounded: false,
    ends: Ends::Written,
    concat!("DELETE FROM messages WHERE session_id = ?1 AND ", expired!()),
    concat!("DELETE FROM session_tags WHERE session_id = ?1 AND ", expired!()),
    concat!("DELETE FROM session_meta WHERE session_id = ?1 AND ", expired!()),
    "DELETE FROM sessions WHERE id = ?1 AND expires_at <= ?2",
);

/// The first ?2 sessions expired at ?1 (microseconds), oldest expiry first: a walk of
/// `sessions_by_expiry` from its start. Deterministic, so each statement of [`PURGE`]
/// finds the same sessions (nothing else writes during its transaction).
macro_rules! purged {
    () => {
        "(SELECT id FROM sessions WHERE expires_at <= ?1 ORDER BY expires_at, id LIMIT ?2)"
    };
}

/// Deletes the sessions of `purged!` from every table, the `sessions` rows last: their
/// count is what `purge_expired` returns ([`Ends::Counted`]). Parameters: ?1 now, ?2 the
/// batch.
pub(crate) static PURGE: WriteSql = write_sql!(
    bounded: false,
    ends: Ends::Counted,
    concat!("DELETE FROM messages WHERE session_id IN ", purged!()),
    concat!("DELETE FROM session_tags WHERE session_id IN ", purged!()),
    concat!("DELETE FROM session_meta WHERE session_id IN ", purged!()),
    concat!("DELETE FROM sessions WHERE id IN ", purged!()),
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::LOAD_ROWS;

    /// A purge walks `sessions_by_expiry` from its start (O(batch)) and reaches each
    /// session's rows by key; the expiry probe of a write or a load is one lookup of the
    /// session's key, run once per statement (not once per row).
    #[tokio::test]
    async fn a_purge_walks_the_expiry_index_and_an_expiry_probe_is_one_lookup() {
        let storage = crate::SqliteStorage::connect("sqlite::memory:")
            .await
            .unwrap();
        let walk = "SEARCH sessions USING COVERING INDEX sessions_by_expiry (expires_at<?)";
        for (sql, (table, key)) in PURGE.statements.iter().zip([
            ("messages", "(session_id=?)"),
            ("session_tags", "(session_id=?)"),
            ("session_meta", "(session_id=?)"),
            ("sessions", "(id=?)"),
        ]) {
            let steps = storage.query_plan(sql).await;
            let by_key = &steps[0];
            assert!(
                by_key.starts_with(&format!("SEARCH {table} USING ")) && by_key.ends_with(key),
                "{sql}: {steps:?}"
            );
            assert_eq!(steps[1..3], ["LIST SUBQUERY 1", walk], "{sql}");
            // Then, for the `sessions` rows, the foreign keys' cascade: by key too.
            assert!(
                steps[3..].iter().all(|step| step.starts_with("SEARCH ")),
                "{sql}: {steps:?}"
            );
        }
        let probes = [REMOVE_EXPIRED.statements[0], SAVE.statements[1], LOAD_ROWS];
        for sql in probes {
            let steps = storage.query_plan(sql).await;
            assert_eq!(
                steps[1..],
                [
                    "SCALAR SUBQUERY 1",
                    "SEARCH sessions USING PRIMARY KEY (id=?)"
                ],
                "{sql}"
            );
        }
    }

    /// The reads of an append with ids are lookups by key: the session's row, then (only
    /// when its fingerprints cannot decide) a range of the session's last messages.
    #[tokio::test]
    async fn the_reads_of_an_append_with_ids_go_by_key() {
        let storage = crate::SqliteStorage::connect("sqlite::memory:")
            .await
            .unwrap();
        assert_eq!(
            storage
                .query_plan(crate::sql::READ_REVISION_AND_RECENT)
                .await,
            ["SEARCH sessions USING PRIMARY KEY (id=?)"]
        );
        // As is the read of a write under `UnwrittenSince`, which adds `updated_at`.
        assert_eq!(
            storage
                .query_plan(super::super::check::READ_REVISION_AND_UPDATED)
                .await,
            ["SEARCH sessions USING PRIMARY KEY (id=?)"]
        );
        let steps = storage.query_plan(crate::sql::READ_LAST_IDS).await;
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert!(
            steps[0].starts_with("SEARCH messages USING ")
                && steps[0].ends_with("(session_id=? AND seq>?)"),
            "{steps:?}"
        );
    }
}
