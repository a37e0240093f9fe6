//! Exactly-once appends (issue #18): an append whose messages carry ids stores only those
//! whose id its session does not store yet, deciding so inside its write transaction.
//!
//! A message's id is stored twice: in its JSON (the `message` column) and in the
//! `message_id` column (migration 0005), whose unique partial index `messages_by_id`
//! answers "does this session store this id" in one probe. Such an append reads, in the
//! transaction that then writes, the session's revision and which ids of its batch the
//! session stores ([`READ_REVISION_AND_STORED`]: one probe per id, never a scan), and
//! [`Dedup::kept`] says which messages are left ([`Kept`]); their seqs run on from the
//! count, and the count grows by what is stored. When none is left the write rolls back,
//! having changed nothing (`Written::AllStored`). SQLite admits one writer at a time, so
//! no other append stores one of those ids between the read and the write. The SQL backends
//! look at every id of the session, further back than `fusion_core::DEDUP_WINDOW`.
//!
//! A batch without ids skips all of this and runs the statements it ran before ids existed,
//! leaving `message_id` NULL. The inserts of messages with ids (APPEND, SAVE and CREATE
//! each have a variant) fill `message_id` from the JSON text itself ([`message_id!`]):
//! `fusion_core` serialises the id first and it never needs escaping, so it is the text
//! between `{"id":"` and the next `"`, read from the text's first bytes without parsing the
//! rest. Each message's text is taken from `json_each` once ([`batch_rows!`]): `json_each`
//! renders an element's text afresh each time a statement names it.

use std::collections::HashSet;
use std::ops::Range;

use fusion_core::{ChatMessage, Result};

/// SQL: the id in the message JSON text `$json`, or NULL when it has none. `$json` must be
/// a column of [`batch_rows!`], which SQLite computes once per row, so that naming it three
/// times costs three short string functions, not three renderings of the message. 65 is
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
pub(crate) use message_id;

/// SQL: the rows `(key, message)` of the JSON array bound to `$param`, in order, as a
/// subquery that SQLite does not flatten into the statement around it (a subquery with an
/// `OFFSET` is never flattened): it runs as a co-routine whose row holds each message's
/// text once, however often the statement names `message`. A unit test counts the reads.
macro_rules! batch_rows {
    ($param:literal) => {
        concat!(
            "(SELECT j.key AS key, j.value AS message FROM json_each(",
            $param,
            ") AS j LIMIT -1 OFFSET 0)"
        )
    };
}
pub(crate) use batch_rows;

/// The statement that reads a session's revision and which ids of a batch it stores, as a
/// literal for `concat!`.
macro_rules! read_revision_and_stored {
    () => {
        "SELECT generation, message_count, expires_at, \
         (SELECT group_concat(m.message_id, ' ') FROM json_each(?2) AS i \
          CROSS JOIN messages AS m WHERE m.session_id = ?1 AND m.message_id = i.value) \
         FROM sessions WHERE id = ?1"
    };
}

/// `READ_REVISION`'s columns and, fourth, the ids among ?2 (a JSON array of strings) that
/// session ?1 stores, separated by spaces (ids hold none), NULL when it stores none: what
/// the check of an append with ids reads inside its transaction. One lookup of the
/// `sessions` row, and one probe of `messages_by_id` per id (`CROSS JOIN` keeps the ids
/// the outer loop, so no message is scanned). No row when the session is absent: then it
/// stores nothing. A unit test checks the plan.
pub(crate) const READ_REVISION_AND_STORED: &str = read_revision_and_stored!();

/// The first round trip of an append with ids on the sqlx path: take the write lock, then
/// [`READ_REVISION_AND_STORED`].
pub(crate) const BEGIN_AND_READ_REVISION_AND_STORED: &str =
    concat!(begin_write!(), "; ", read_revision_and_stored!());

/// What an append whose messages carry ids needs to store only those not stored yet.
#[derive(Debug, Clone)]
pub(crate) struct Dedup {
    /// The batch's ids, as a JSON array of strings: ?2 of [`READ_REVISION_AND_STORED`].
    ids: String,
    /// Each message of the batch in order: where its id lies in `ids`, if it has one, and
    /// where its JSON text lies in the batch array the write binds.
    messages: Vec<(Option<Range<usize>>, Range<usize>)>,
}

/// Which messages of its batch an append stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kept {
    /// All of them, as bound: the usual case.
    All,
    /// Only those whose JSON texts lie at these ranges of the bound batch array, in order:
    /// the others are stored already.
    Only(Vec<Range<usize>>),
}

/// `messages` as one JSON array whose elements are exactly each message's
/// `serde_json::to_string`, and, when any of them carries an id, the [`Dedup`] of an
/// append of them. Both are written in one pass each, without a string per message: this
/// runs on every append.
pub(crate) fn encode(messages: &[ChatMessage]) -> Result<(String, Option<Dedup>)> {
    if messages.iter().all(|m| m.id.is_none()) {
        return Ok((serde_json::to_string(messages)?, None));
    }
    let mut batch = Vec::with_capacity(messages.len() * 256);
    let mut ids = String::with_capacity(messages.len() * 40);
    let mut dedup = Vec::with_capacity(messages.len());
    batch.push(b'[');
    ids.push('[');
    for message in messages {
        if !dedup.is_empty() {
            batch.push(b',');
        }
        let start = batch.len();
        serde_json::to_writer(&mut batch, message)?;
        // A `MessageId` never needs escaping, so its JSON string is the id in quotes.
        let id = message.id.as_ref().map(|id| {
            if ids.len() > 1 {
                ids.push(',');
            }
            ids.push('"');
            let start = ids.len();
            ids.push_str(id.as_str());
            let id = start..ids.len();
            ids.push('"');
            id
        });
        dedup.push((id, start..batch.len()));
    }
    batch.push(b']');
    ids.push(']');
    let batch = String::from_utf8(batch).expect("serde_json writes UTF-8");
    let dedup = Dedup {
        ids,
        messages: dedup,
    };
    Ok((batch, Some(dedup)))
}

impl Dedup {
    /// The batch's ids as a JSON array of strings, to bind to ?2 of the check's read.
    pub(crate) fn ids(&self) -> &str {
        &self.ids
    }

    /// What to store once the read found `stored`, the batch's ids that the session stores
    /// already (separated by spaces, as [`READ_REVISION_AND_STORED`] returns them): every
    /// message without an id and every one whose id is not among them, in order. `None`
    /// when that leaves nothing.
    pub(crate) fn kept(&self, stored: Option<&str>) -> Option<Kept> {
        let Some(stored) = stored else {
            return Some(Kept::All);
        };
        let stored: HashSet<&str> = stored.split(' ').collect();
        let is_stored = |id: &Option<Range<usize>>| {
            id.as_ref()
                .is_some_and(|id| stored.contains(&self.ids[id.clone()]))
        };
        let kept: Vec<Range<usize>> = self
            .messages
            .iter()
            .filter(|(id, _)| !is_stored(id))
            .map(|(_, message)| message.clone())
            .collect();
        if kept.is_empty() {
            None
        } else if kept.len() == self.messages.len() {
            Some(Kept::All)
        } else {
            Some(Kept::Only(kept))
        }
    }
}

impl Kept {
    /// The JSON array of the kept messages, cut from `batch`, the bound array; and how many
    /// they are. `None` for [`Kept::All`]: the batch as it is.
    pub(crate) fn cut(&self, batch: &str) -> Option<(String, usize)> {
        let Kept::Only(ranges) = self else {
            return None;
        };
        let mut kept = String::with_capacity(batch.len());
        kept.push('[');
        for (i, range) in ranges.iter().enumerate() {
            if i > 0 {
                kept.push(',');
            }
            kept.push_str(&batch[range.clone()]);
        }
        kept.push(']');
        Some((kept, ranges.len()))
    }
}

#[cfg(test)]
mod tests {
    use fusion_core::MessageId;

    use super::*;

    fn batch() -> Vec<ChatMessage> {
        vec![
            ChatMessage::user("a").with_new_id(),
            ChatMessage::user("no id"),
            ChatMessage::assistant("b \"quoted\"").with_new_id(),
        ]
    }

    #[test]
    fn a_batch_with_ids_is_encoded_as_one_without() {
        let batch = batch();
        let (json, dedup) = encode(&batch).unwrap();
        assert_eq!(json, serde_json::to_string(&batch).unwrap());
        let dedup = dedup.unwrap();
        let ids: Vec<String> = serde_json::from_str(dedup.ids()).unwrap();
        assert_eq!(
            ids,
            [batch[0].id.clone().unwrap(), batch[2].id.clone().unwrap()]
                .map(|id| id.as_str().to_owned())
        );
        for ((_, range), message) in dedup.messages.iter().zip(&batch) {
            assert_eq!(json[range.clone()], serde_json::to_string(message).unwrap());
        }

        let plain = [ChatMessage::user("x")];
        let (json, dedup) = encode(&plain).unwrap();
        assert_eq!(json, serde_json::to_string(&plain).unwrap());
        assert!(dedup.is_none(), "no ids, no dedup work");
    }

    #[test]
    fn only_messages_whose_ids_are_stored_are_dropped() {
        let batch = batch();
        let (json, dedup) = encode(&batch).unwrap();
        let dedup = dedup.unwrap();
        let id = |i: usize| batch[i].id.clone().unwrap();
        assert_eq!(dedup.kept(None), Some(Kept::All));
        assert_eq!(dedup.kept(Some("someone-else")), Some(Kept::All));

        let kept = dedup.kept(Some(id(0).as_str())).unwrap();
        let (cut, count) = kept.cut(&json).unwrap();
        assert_eq!(count, 2);
        assert_eq!(cut, serde_json::to_string(&batch[1..]).unwrap());

        let both = format!("{} {}", id(2).as_str(), id(0).as_str());
        let kept = dedup.kept(Some(&both)).unwrap();
        assert_eq!(
            kept.cut(&json).unwrap().0,
            serde_json::to_string(&batch[1..2]).unwrap()
        );
        assert_eq!(Kept::All.cut(&json), None);

        let only_ids = [batch[0].clone(), batch[2].clone()];
        let (_, dedup) = encode(&only_ids).unwrap();
        assert_eq!(
            dedup.unwrap().kept(Some(&both)),
            None,
            "nothing left to store"
        );
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
