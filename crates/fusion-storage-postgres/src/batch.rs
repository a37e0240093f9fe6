//! Messages as the write statements bind them: their JSON texts, their ids lined up with
//! them, and the fingerprints of those ids a session keeps when these messages end its
//! history.
//!
//! Everything here is computed once in Rust, before any SQL runs, so the statements only
//! compare and copy integers (`crate::sql::APPEND_WITH_IDS`), and a batch without ids
//! costs nothing more than its bodies: it has no ids, and its append runs
//! `crate::sql::APPEND`, which checks none.
//!
//! A session's window (`sessions.recent_ids`) holds one [`MessageId::fingerprint`] per id,
//! as PostgreSQL's `int4` (the same 32 bits, read as signed), the content of a
//! [`RecentIds`](fusion_core::RecentIds) built from the same ids: the fingerprints of the
//! last [`DEDUP_WINDOW`] ids stored, oldest first.
//!
//! A batch is also where the size of a write is checked: PostgreSQL reads one protocol
//! message of at most 1 GiB, and every statement binds all its messages in one (one
//! `text[]`). Past that the server drops the connection, which the driver reports as a
//! reset (retryable: "cannot reach the server"), so a retry sent the same gigabyte again
//! and failed the same way. [`Batch::of`] refuses such a write before any SQL runs.

use fusion_core::{ChatMessage, DEDUP_WINDOW, Error, MessageId, Result};

use crate::error::BACKEND;

/// The most bytes of message JSON one write binds, each message counted with the 8 bytes
/// the array adds around it (a length word and up to 3 of alignment): 1 GiB, the most
/// PostgreSQL reads in one protocol message and holds in one array (`MaxAllocSize`), less
/// 1 MiB for the statement's other parameters (an id, metadata of at most 16 KiB, the
/// window).
pub(crate) const MAX_WRITE_BYTES: usize = (1 << 30) - (1 << 20);

/// The bytes a message's `body` takes in the bound array ([`MAX_WRITE_BYTES`]).
const ARRAY_BYTES_PER_MESSAGE: usize = 8;

/// The bytes a message's id adds to the same protocol message: its fingerprint in the
/// bound `int4[]`, a length word and the value.
const FINGERPRINT_BYTES: usize = 8;

/// What `message`, whose JSON is `body`, adds to the protocol message that binds it.
fn bound_bytes(message: &ChatMessage, body: &str) -> usize {
    let fingerprint = match message.id {
        Some(_) => FINGERPRINT_BYTES,
        None => 0,
    };
    body.len() + ARRAY_BYTES_PER_MESSAGE + fingerprint
}

/// A batch of messages ready to bind.
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    /// Each message's JSON as the `body` column stores it (`serde_json`, minified, the id
    /// first).
    pub bodies: Vec<String>,
    /// Each message's id, `None` for one without, lined up with `bodies`; `None` when no
    /// message has one, which is what makes the append skip every id check.
    pub ids: Option<Vec<Option<&'a MessageId>>>,
    /// The fingerprints of the batch's ids, in order (messages without an id have none):
    /// what an append compares with the session's window and adds to it. `Some` exactly
    /// when `ids` is.
    pub fingerprints: Option<Vec<i32>>,
    /// The window of a session whose history these messages are (a save) or start (an
    /// append that creates it): `{}` when no message has an id.
    pub window: Vec<i32>,
}

impl<'a> Batch<'a> {
    /// Encodes `messages` written to `session_id` (already checked by
    /// `fusion_core::check_storable`, so no two share an id). Messages whose JSON passes
    /// [`MAX_WRITE_BYTES`] together are [`Error::InvalidMessage`] naming the first one
    /// past it: no statement could carry them.
    pub fn of(session_id: &str, messages: &'a [ChatMessage]) -> Result<Self> {
        let mut bodies = Vec::with_capacity(messages.len());
        let mut bytes = 0;
        for (index, message) in messages.iter().enumerate() {
            let body = serde_json::to_string(message)?;
            bytes += bound_bytes(message, &body);
            if bytes > MAX_WRITE_BYTES {
                return Err(too_large(session_id, index, messages.len(), bytes));
            }
            bodies.push(body);
        }
        let ids = messages
            .iter()
            .any(|m| m.id.is_some())
            .then(|| messages.iter().map(|m| m.id.as_ref()).collect::<Vec<_>>());
        let fingerprints = ids
            .as_ref()
            .map(|ids| ids.iter().flatten().map(|id| fingerprint(id)).collect());
        Ok(Self {
            bodies,
            window: window(messages.iter().filter_map(|m| m.id.as_ref())),
            ids,
            fingerprints,
        })
    }

    /// No messages at all.
    pub fn is_empty(&self) -> bool {
        self.bodies.is_empty()
    }

    /// The bodies of the messages an append stores when the session's last messages hold
    /// the ids `stored`: those without an id and those whose id is not stored, in order
    /// (`fusion_core::unstored`'s rule, by position so no message is encoded again), with
    /// their ids.
    pub fn unstored(&self, stored: &[MessageId]) -> (Vec<&str>, Vec<&'a MessageId>) {
        let mut bodies = Vec::with_capacity(self.bodies.len());
        let mut ids = Vec::new();
        let no_ids = vec![None; self.bodies.len()];
        let lined_up = self.ids.as_ref().unwrap_or(&no_ids);
        for (body, id) in self.bodies.iter().zip(lined_up) {
            match id {
                Some(id) if stored.contains(id) => {}
                Some(id) => {
                    bodies.push(body.as_str());
                    ids.push(*id);
                }
                None => bodies.push(body.as_str()),
            }
        }
        (bodies, ids)
    }
}

/// The refusal of a write whose message `index` (of `count`) takes its JSON to `bytes`,
/// past [`MAX_WRITE_BYTES`].
fn too_large(session_id: &str, index: usize, count: usize, bytes: usize) -> Error {
    let mib = |bytes: usize| bytes >> 20;
    fusion_core::sql::batch_too_long(
        BACKEND,
        session_id,
        index,
        count,
        &format!("{} MiB", mib(bytes)),
        &format!(
            "PostgreSQL takes at most {} MiB in one statement",
            mib(MAX_WRITE_BYTES)
        ),
    )
}

/// The fingerprint of `id` as an `int4` column holds it.
pub(crate) fn fingerprint(id: &MessageId) -> i32 {
    id.fingerprint().cast_signed()
}

/// The window of a session whose ids, oldest first, are `ids`: the fingerprints of the
/// last [`DEDUP_WINDOW`] of them, oldest first (only those are hashed).
pub(crate) fn window<'i>(ids: impl DoubleEndedIterator<Item = &'i MessageId>) -> Vec<i32> {
    let mut window: Vec<i32> = ids.rev().take(DEDUP_WINDOW).map(fingerprint).collect();
    window.reverse();
    window
}

/// [`DEDUP_WINDOW`] as the statements bind it.
pub(crate) fn window_len() -> i32 {
    i32::try_from(DEDUP_WINDOW).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_id(id: &str) -> ChatMessage {
        ChatMessage::user(id).with_id(id.parse().unwrap())
    }

    #[test]
    fn ids_line_up_with_bodies_and_the_window_keeps_the_last_ones() {
        let plain = [ChatMessage::user("a"), ChatMessage::user("b")];
        let plain = Batch::of("s", &plain).unwrap();
        assert_eq!(plain.bodies.len(), 2);
        assert!(
            plain.ids.is_none() && plain.fingerprints.is_none() && plain.window.is_empty(),
            "no ids, no checks"
        );

        let mixed = [with_id("m-a"), ChatMessage::user("b")];
        let batch = Batch::of("s", &mixed).unwrap();
        let a: MessageId = "m-a".parse().unwrap();
        assert_eq!(batch.ids, Some(vec![Some(&a), None]));
        assert_eq!(batch.fingerprints, Some(vec![fingerprint(&a)]));
        assert_eq!(batch.window, [fingerprint(&a)]);
        // The exact check reads ids back from the start of the stored text
        // (`sql::LAST_IDS`).
        assert!(
            batch.bodies[0].starts_with(r#"{"id":"m-a","#),
            "{}",
            batch.bodies[0]
        );

        let many: Vec<ChatMessage> = (0..DEDUP_WINDOW + 3)
            .map(|i| with_id(&format!("m{i}")))
            .collect();
        let batch = Batch::of("s", &many).unwrap();
        let id = |i: usize| many[i].id.as_ref().unwrap();
        assert_eq!(
            batch.fingerprints.unwrap().len(),
            DEDUP_WINDOW + 3,
            "all checked"
        );
        assert_eq!(batch.window.len(), DEDUP_WINDOW);
        assert_eq!(batch.window[0], fingerprint(id(3)));
        assert_eq!(
            batch.window[DEDUP_WINDOW - 1],
            fingerprint(id(DEDUP_WINDOW + 2))
        );
    }

    #[test]
    fn a_message_with_an_id_counts_its_fingerprint_towards_the_limit() {
        assert_eq!(bound_bytes(&ChatMessage::user("x"), "0123456789"), 10 + 8);
        assert_eq!(bound_bytes(&with_id("m"), "0123456789"), 10 + 8 + 8);
    }

    #[test]
    fn the_window_is_what_recent_ids_holds() {
        let history: Vec<ChatMessage> = (0..DEDUP_WINDOW * 2)
            .map(|i| with_id(&format!("h{i}")))
            .collect();
        let recent = fusion_core::RecentIds::of(&history).to_bytes();
        let ours: Vec<u8> = Batch::of("s", &history)
            .unwrap()
            .window
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        assert_eq!(ours, recent);
    }

    #[test]
    fn unstored_keeps_messages_without_ids_and_with_new_ones_in_order() {
        let messages = [with_id("a"), ChatMessage::user("plain"), with_id("b")];
        let batch = Batch::of("s", &messages).unwrap();
        let a: MessageId = "a".parse().unwrap();
        let (bodies, ids) = batch.unstored(std::slice::from_ref(&a));
        assert_eq!(bodies, [&batch.bodies[1], &batch.bodies[2]]);
        assert_eq!(ids, [messages[2].id.as_ref().unwrap()]);
        let expected = fusion_core::unstored(&messages, |id| *id == a);
        assert_eq!(bodies.len(), expected.len(), "the rule of every backend");

        let plain = [ChatMessage::user("x")];
        let plain = Batch::of("s", &plain).unwrap();
        assert_eq!(plain.unstored(&[a]).0.len(), 1);
    }
}
