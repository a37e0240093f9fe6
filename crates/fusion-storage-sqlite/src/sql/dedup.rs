//! Exactly-once appends (issue #18): an append whose messages carry ids stores only those
//! whose id is not among the session's last `fusion_core::DEDUP_WINDOW` messages,
//! deciding so inside its write transaction.
//!
//! Each session's row keeps, in `recent_ids` (migration 0005), the fingerprints of the ids
//! of its last messages (`fusion_core::RecentIds`), rewritten by the statement that bumps
//! the count, which every append runs anyway.
//!
//! On the direct path that statement decides on its own ([`APPEND_RECORDING_IDS`]): the
//! writer connection has an SQL function, `fusion_record_ids` ([`register`]), that appends
//! the batch's fingerprints to the row's unless one of them may be stored (nearly never:
//! only a retry repeats an id), so the usual append with ids is the same two statements as
//! one without. When it cannot decide, the function fails the statement, which changes
//! nothing ([`is_undecided`]), and the append goes on, in the same transaction, as below.
//!
//! Otherwise (on the sqlx path, which cannot add functions to its connections, and when
//! the function could not decide) an append with ids reads the fingerprints with the
//! revision ([`READ_REVISION_AND_RECENT`]): when none of its ids may be stored it stores
//! its whole batch and binds the new fingerprints, having read no message. Otherwise (a
//! fingerprint matched, or the column is NULL: after a truncate, or in a session last
//! written before version 5) it reads the ids of the session's last messages themselves
//! ([`READ_LAST_IDS`]), in the same transaction, and leaves out exactly those stored.
//! When none is left the write rolls back, having changed nothing (`Written::AllStored`).
//! SQLite admits one writer at a time, so no other append stores one of those ids between
//! the read and the write.
//!
//! Why not a unique index on `(session_id, message_id)`, the obvious design: it costs every
//! append with ids one index probe and one index entry per message, about 50,000
//! instructions per W1 append and one more page to the WAL, against a few hundred for
//! the fingerprints on a row that is written anyway (docs/performance.md).
//!
//! A message's id is in its JSON, first (`fusion_core` serialises it first, and it never
//! needs escaping), so [`READ_LAST_IDS`] reads it from each text's first bytes
//! ([`message_id!`]) without parsing the rest.

use fusion_core::{ChatMessage, DEDUP_WINDOW, MessageId, RecentIds, Result};
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, ffi};

#[cfg(doc)]
use super::statements::APPEND_RECORDING_IDS;
use super::statements::{time_holds, times_hold};

/// The name [`APPEND_RECORDING_IDS`] calls the function [`register`] adds by.
const RECORD_IDS: &str = "fusion_record_ids";

/// Adds `fusion_record_ids(stored, batch)` to `conn`: `RecentIds::record_bytes` of the
/// two blobs, or, when it returns `None` or `stored` is not a blob (NULL: unknown), a
/// failure that [`is_undecided`] recognises: `SQLITE_CONSTRAINT_FUNCTION` (a constraint
/// failed in a function), which SQLite answers by undoing the statement while the
/// transaction goes on, and which no built-in function raises. Deterministic, and not
/// callable from a schema object (`SQLITE_DIRECTONLY`), so a database file cannot make it
/// run.
pub(crate) fn register(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_DIRECTONLY;
    conn.create_scalar_function(RECORD_IDS, 2, flags, record_ids)
}

fn record_ids(ctx: &Context<'_>) -> rusqlite::Result<Vec<u8>> {
    let recorded = match (ctx.get_raw(0), ctx.get_raw(1)) {
        (ValueRef::Blob(stored), ValueRef::Blob(batch)) => RecentIds::record_bytes(stored, batch),
        _ => None,
    };
    // No message: SQLite would report a function's error with one as plain `SQLITE_ERROR`.
    recorded.ok_or_else(|| {
        rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_CONSTRAINT_FUNCTION), None)
    })
}

/// Whether `error` is `fusion_record_ids` failing to decide: the statement that called it
/// changed nothing, and the write's check must decide instead.
pub(crate) fn is_undecided(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.code == ErrorCode::ConstraintViolation
                && e.extended_code == ffi::SQLITE_CONSTRAINT_FUNCTION
    )
}

/// SQL: the id in the message JSON text `$json`, or NULL when it has none. 65 is
/// `MessageId::MAX_LEN` and the closing quote.
macro_rules! message_id {
    ($json:literal) => {
        concat!(
            "CASE WHEN substr(",
            $json,
            ", 1, 7) = '{\"id\":\"' THEN substr(",
            $json,
            ", 8, nullif(instr(substr(",
            $json,
            ", 8, 65), '\"'), 0) - 1) END"
        )
    };
}

/// The statement that reads a session's revision and `recent_ids`, as a literal for
/// `concat!`.
macro_rules! read_revision_and_recent {
    () => {
        concat!(
            "SELECT generation, message_count, expires_at, recent_ids FROM sessions \
             WHERE id = ?1 AND ",
            times_hold!()
        )
    };
}

/// `READ_REVISION`'s columns and, fourth, `recent_ids` (a blob, NULL when unknown): what the
/// check of an append with ids reads first inside its transaction. One lookup of the
/// `sessions` row's key, read only if the row's times hold, as `READ_REVISION_TO_WRITE`
/// (an append whose every message is stored already would otherwise end `Ok` on a
/// session every other write reports corrupt).
pub(crate) const READ_REVISION_AND_RECENT: &str = read_revision_and_recent!();

/// The first round trip of an append with ids on the sqlx path: take the write lock, then
/// [`READ_REVISION_AND_RECENT`].
pub(crate) const BEGIN_AND_READ_REVISION_AND_RECENT: &str =
    concat!(begin_write!(), "; ", read_revision_and_recent!());

/// The ids (NULL for a message without one) of session ?1's messages from seq ?2 on, in
/// order: a range of the `messages` key, read only when the fingerprints cannot decide. A
/// message a hand edit stored as a blob is read by its bytes, as the loads read it (a
/// blob never equals text in SQLite, so its id would not be seen and the append would
/// store it again).
pub(crate) const READ_LAST_IDS: &str = concat!(
    "SELECT ",
    message_id!("CAST(message AS TEXT)"),
    " FROM messages WHERE session_id = ?1 AND seq >= ?2 ORDER BY seq"
);

/// What an append whose messages carry ids needs to store only those not stored yet.
#[derive(Debug, Clone)]
pub(crate) struct Dedup {
    /// The id of each message of the batch, in order, if it has one.
    ids: Vec<Option<MessageId>>,
}

/// Which messages of its batch an append stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kept {
    /// All of them, as bound: the usual case.
    All,
    /// Only those at these places of the batch, in order: the others are stored already.
    Only(Vec<usize>),
}

/// What an append with ids decided: which messages it stores (`None`: none), and the
/// session's `recent_ids` after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decided {
    pub(crate) kept: Option<Kept>,
    pub(crate) recent: Vec<u8>,
}

/// `messages`, written to `session_id`, as one JSON array ([`super::batch::encode`]) whose elements are exactly each message's
/// `serde_json::to_string`, and, when any of them carries an id, the [`Dedup`] of an
/// append of them. The array is written as for a batch without ids: which messages an
/// append leaves out is known only in the rare case that one is stored already, and only
/// then is the array taken apart ([`Kept::cut`]).
pub(crate) fn encode(
    session_id: &str,
    messages: &[ChatMessage],
) -> Result<(String, Option<Dedup>)> {
    let batch = super::batch::encode(session_id, messages)?;
    if messages.iter().all(|m| m.id.is_none()) {
        return Ok((batch, None));
    }
    let ids = messages.iter().map(|m| m.id.clone()).collect();
    Ok((batch, Some(Dedup { ids })))
}

/// The `recent_ids` of a session whose history is `history`, as a SAVE or a CREATE stores
/// it.
pub(crate) fn recent_of(history: &[ChatMessage]) -> Vec<u8> {
    RecentIds::of(history).to_bytes()
}

impl Dedup {
    /// The seq from which [`READ_LAST_IDS`] must read the stored ids, for a session of
    /// `count` messages whose `recent_ids` is `recent`: `None` when the fingerprints show
    /// that no id of the batch is stored, the usual case.
    pub(crate) fn confirm_from(&self, count: i64, recent: Option<&RecentIds>) -> Option<i64> {
        let window = i64::try_from(DEDUP_WINDOW).expect("a small constant");
        let from = (count - window).max(0);
        let Some(recent) = recent else {
            return Some(from);
        };
        self.ids().any(|id| recent.may_hold(id)).then_some(from)
    }

    /// What to store, given the session's `recent_ids` (`recent`) and, when
    /// [`confirm_from`](Self::confirm_from) asked for them, the `stored` ids of its last
    /// messages in order: every message without an id and every one whose id is not
    /// stored.
    pub(crate) fn decide(
        &self,
        recent: Option<RecentIds>,
        stored: Option<&[Option<String>]>,
    ) -> Decided {
        let mut window = match stored {
            Some(stored) => {
                let mut window = RecentIds::default();
                // An id that is not a valid `MessageId` was written by hand: no batch id
                // equals it, and it has no fingerprint to keep.
                let ids: Vec<MessageId> = stored
                    .iter()
                    .flatten()
                    .filter_map(|id| id.parse().ok())
                    .collect();
                window.record_ids(&ids);
                window
            }
            None => recent.unwrap_or_default(),
        };
        let is_stored = |id: &Option<MessageId>| match (id, stored) {
            (Some(id), Some(stored)) => stored.iter().flatten().any(|s| s == id.as_str()),
            _ => false,
        };
        let kept: Vec<usize> = (0..self.ids.len())
            .filter(|&i| !is_stored(&self.ids[i]))
            .collect();
        window.record_ids(kept.iter().filter_map(|&i| self.ids[i].as_ref()));
        let kept = if kept.is_empty() {
            None
        } else if kept.len() == self.ids.len() {
            Some(Kept::All)
        } else {
            Some(Kept::Only(kept))
        };
        Decided {
            kept,
            recent: window.to_bytes(),
        }
    }

    /// The fingerprints of the batch's ids as `recent_ids` stores them, for
    /// [`APPEND_RECORDING_IDS`]; `None` for a batch of more ids than a window, of which
    /// `RecentIds::record_bytes` would see only the last.
    pub(crate) fn fingerprints(&self) -> Option<Vec<u8>> {
        let ids = self.ids().count();
        if ids > DEDUP_WINDOW {
            return None;
        }
        let mut fingerprints = Vec::with_capacity(ids * RecentIds::BYTES_PER_ID);
        for id in self.ids() {
            RecentIds::push_bytes(&mut fingerprints, id);
        }
        Some(fingerprints)
    }

    fn ids(&self) -> impl Iterator<Item = &MessageId> {
        self.ids.iter().flatten()
    }
}

impl Kept {
    /// The JSON array of the kept messages, cut from `batch`, the bound array; and how many
    /// they are. `None` for [`Kept::All`]: the batch as it is.
    pub(crate) fn cut(&self, batch: &str) -> Option<(String, usize)> {
        let Kept::Only(places) = self else {
            return None;
        };
        let elements = elements(batch);
        let mut kept = String::with_capacity(batch.len());
        kept.push('[');
        for (i, &place) in places.iter().enumerate() {
            if i > 0 {
                kept.push(',');
            }
            kept.push_str(elements[place]);
        }
        kept.push(']');
        Some((kept, places.len()))
    }
}

/// The texts of the elements of `array`, a JSON array as `serde_json` writes it (no
/// whitespace): split at each comma outside a string and outside any nested value.
fn elements(array: &str) -> Vec<&str> {
    let bytes = array.as_bytes();
    let mut elements = Vec::new();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut start = 1;
    for (i, &byte) in bytes.iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth -= 1;
                if depth == 0 && i > start {
                    elements.push(&array[start..i]);
                }
            }
            b',' if depth == 1 => {
                elements.push(&array[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    elements
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Vec<ChatMessage> {
        vec![
            ChatMessage::user("a").with_new_id(),
            ChatMessage::user("no id"),
            ChatMessage::assistant("b \"quoted\"").with_new_id(),
        ]
    }

    fn id(message: &ChatMessage) -> MessageId {
        message.id.clone().unwrap()
    }

    #[test]
    fn a_batch_with_ids_is_encoded_as_one_without() {
        let batch = batch();
        let (json, dedup) = encode("s", &batch).unwrap();
        assert_eq!(json, serde_json::to_string(&batch).unwrap());
        let dedup = dedup.unwrap();
        let elements = elements(&json);
        assert_eq!(elements.len(), batch.len());
        for ((id, element), message) in dedup.ids.iter().zip(elements).zip(&batch) {
            assert_eq!(element, serde_json::to_string(message).unwrap());
            assert_eq!(id, &message.id);
        }

        let plain = [ChatMessage::user("x")];
        let (json, dedup) = encode("s", &plain).unwrap();
        assert_eq!(json, serde_json::to_string(&plain).unwrap());
        assert!(dedup.is_none(), "no ids, no dedup work");
    }

    /// The array is split only at its own commas, whatever the messages' texts hold.
    #[test]
    fn elements_are_the_messages_as_serialised_one_by_one() {
        let tricky = [
            ChatMessage::user(r#"a, "b" ] } [ { \" \\ , ü 🦀"#).with_new_id(),
            ChatMessage::assistant("\\").with_new_id(),
            ChatMessage::tool_result("call_1", r#"{"k": [1, 2, {"x": "]"}]}"#),
            ChatMessage::user(""),
        ];
        for len in 0..=tricky.len() {
            let messages = &tricky[..len];
            let json = serde_json::to_string(messages).unwrap();
            let expected: Vec<String> = messages
                .iter()
                .map(|m| serde_json::to_string(m).unwrap())
                .collect();
            assert_eq!(elements(&json), expected, "{json}");
        }
    }

    /// Fingerprints that cannot hold the batch's ids decide alone; a match, or none known,
    /// asks for the stored ids of the window.
    #[test]
    fn the_stored_ids_are_read_only_when_the_fingerprints_cannot_decide() {
        let batch = batch();
        let (_, dedup) = encode("s", &batch).unwrap();
        let dedup = dedup.unwrap();
        let others = RecentIds::from_bytes(&recent_of(&[ChatMessage::user("x").with_new_id()]));
        assert_eq!(dedup.confirm_from(100, others.as_ref()), None);
        assert_eq!(dedup.confirm_from(100, None), Some(100 - 64), "unknown");
        assert_eq!(dedup.confirm_from(3, None), Some(0));
        let holding = RecentIds::from_bytes(&recent_of(&batch[2..]));
        assert_eq!(dedup.confirm_from(100, holding.as_ref()), Some(36));
        // Bytes that are not fingerprints read as unknown.
        assert_eq!(RecentIds::from_bytes(b"bad"), None);

        let decided = dedup.decide(others.clone(), None);
        assert_eq!(decided.kept, Some(Kept::All));
        let mut expected = others.unwrap();
        expected.record(&batch);
        assert_eq!(decided.recent, expected.to_bytes());
    }

    #[test]
    fn only_messages_whose_ids_are_stored_are_dropped() {
        let batch = batch();
        let (json, dedup) = encode("s", &batch).unwrap();
        let dedup = dedup.unwrap();
        let stored = |ids: &[&MessageId]| -> Vec<Option<String>> {
            std::iter::once(None)
                .chain(ids.iter().map(|id| Some(id.as_str().to_owned())))
                .collect()
        };

        let none = dedup.decide(None, Some(&stored(&[])));
        assert_eq!(none.kept, Some(Kept::All));
        assert_eq!(none.recent, recent_of(&batch));

        let first = dedup.decide(None, Some(&stored(&[&id(&batch[0])])));
        let kept = first.kept.unwrap();
        let (cut, count) = kept.cut(&json).unwrap();
        assert_eq!(count, 2);
        assert_eq!(cut, serde_json::to_string(&batch[1..]).unwrap());
        assert_eq!(first.recent, recent_of(&batch), "the stored id, then b");

        let both = dedup.decide(None, Some(&stored(&[&id(&batch[2]), &id(&batch[0])])));
        assert_eq!(
            both.kept.unwrap().cut(&json).unwrap().0,
            serde_json::to_string(&batch[1..2]).unwrap()
        );
        assert_eq!(Kept::All.cut(&json), None);

        let only_ids = [batch[0].clone(), batch[2].clone()];
        let (_, dedup) = encode("s", &only_ids).unwrap();
        let all = dedup
            .unwrap()
            .decide(None, Some(&stored(&[&id(&batch[0]), &id(&batch[2])])));
        assert_eq!(all.kept, None, "nothing left to store");
    }

    /// `fusion_record_ids` records a batch's fingerprints after a row's, and when it cannot
    /// decide fails only its statement: the transaction goes on, the row as it was.
    #[test]
    fn the_sql_function_records_or_undoes_its_statement_alone() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, recent BLOB)")
            .unwrap();
        let stored = recent_of(&[ChatMessage::user("a").with_new_id()]);
        let batch = batch();
        let (_, dedup) = encode("s", &batch).unwrap();
        let fingerprints = dedup.unwrap().fingerprints().unwrap();
        assert_eq!(fingerprints, recent_of(&batch));
        conn.execute("INSERT INTO t VALUES (1, ?1), (2, NULL)", [&stored])
            .unwrap();

        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let record = "UPDATE t SET recent = fusion_record_ids(recent, ?2) WHERE id = ?1";
        conn.execute(record, (1, &fingerprints)).unwrap();
        let retried = conn.execute(record, (1, &fingerprints)).unwrap_err();
        assert!(is_undecided(&retried), "{retried:?}");
        let unknown = conn.execute(record, (2, &fingerprints)).unwrap_err();
        assert!(is_undecided(&unknown), "{unknown:?}");
        assert!(!conn.is_autocommit(), "still in the transaction");
        conn.execute_batch("COMMIT").unwrap();

        let recent = |id: i64| -> Option<Vec<u8>> {
            conn.query_row("SELECT recent FROM t WHERE id = ?1", [id], |row| row.get(0))
                .unwrap()
        };
        let mut expected = RecentIds::from_bytes(&stored).unwrap();
        expected.record(&batch);
        assert_eq!(recent(1), Some(expected.to_bytes()), "recorded once");
        assert_eq!(recent(2), None, "unknown stays unknown");
        let other =
            rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_CONSTRAINT_UNIQUE), None);
        assert!(!is_undecided(&other));
    }

    /// `message_id!` reads from a message's first bytes what its JSON says its id is.
    #[test]
    fn the_id_read_from_the_text_is_the_one_in_the_json() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let longest: MessageId = "x".repeat(MessageId::MAX_LEN).parse().unwrap();
        let shortest: MessageId = "1".parse().unwrap();
        let messages = [
            ChatMessage::user("a").with_id(longest),
            ChatMessage::user("b").with_id(shortest),
            ChatMessage::user("c").with_id("a:B.c-d_9".parse().unwrap()),
            ChatMessage::user("d").with_new_id(),
            ChatMessage::user(r#"{"id":"not this one"}"#),
            ChatMessage::tool_result("call_1", "no id of its own"),
        ];
        let sql = concat!(
            "SELECT ",
            message_id!("m.message"),
            ", m.message ->> '$.id' FROM (SELECT ?1 AS message) AS m"
        );
        for message in messages {
            let json = serde_json::to_string(&message).unwrap();
            let (from_text, from_json): (Option<String>, Option<String>) = conn
                .query_row(sql, [&json], |row| Ok((row.get(0)?, row.get(1)?)))
                .unwrap();
            assert_eq!(from_text, from_json, "{json}");
            assert_eq!(
                from_text.as_deref(),
                message.id.as_ref().map(MessageId::as_str)
            );
        }
    }
}
