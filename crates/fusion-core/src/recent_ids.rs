//! [`RecentIds`]: a short summary of the ids a session stored last, which tells most
//! appends that none of their ids is stored without looking at a stored message.
//!
//! Exactly-once appends ([`DEDUP_WINDOW`]) ask, for every message of a batch that carries
//! an id, whether the session's last messages hold that id. Nearly always the answer is no
//! (only a retry repeats an id), and finding it by comparing the id with each of 64 stored
//! ids, or by probing an index, costs more than the rest of a small append. A backend that
//! keeps a `RecentIds` beside a session answers no with a few integer comparisons, and
//! looks at the stored messages only when it answers maybe.
//!
//! It holds one 32-bit [`fingerprint`](MessageId::fingerprint) per id, for the last
//! [`DEDUP_WINDOW`] messages with ids that were recorded, oldest first. It may say maybe
//! for an id that is not stored (another id with the same fingerprint: chance about
//! 64 in 2^32 per id, or an id that has left the window), never no for one that is,
//! provided every write of the session keeps it: [`record`](RecentIds::record) after each
//! append, [`of`](RecentIds::of) the whole history after any other change.

use std::collections::VecDeque;

use crate::{ChatMessage, DEDUP_WINDOW, MessageId};

/// The fingerprints of the ids of a session's last messages (see the module docs): a
/// superset of the ids among its last [`DEDUP_WINDOW`] messages.
///
/// ```
/// use fusion_core::{ChatMessage, RecentIds};
///
/// let stored = vec![ChatMessage::user("hi").with_new_id()];
/// let mut recent = RecentIds::of(&stored);
/// assert!(recent.may_hold(stored[0].id.as_ref().unwrap()));
///
/// let reply = ChatMessage::assistant("hello").with_new_id();
/// assert!(!recent.may_hold(reply.id.as_ref().unwrap()));
/// recent.record(std::slice::from_ref(&reply));
/// assert!(recent.may_hold(reply.id.as_ref().unwrap()));
///
/// // Stored as bytes beside a session, and read back.
/// assert_eq!(RecentIds::from_bytes(&recent.to_bytes()), Some(recent));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentIds {
    /// At most [`DEDUP_WINDOW`], oldest first.
    fingerprints: VecDeque<u32>,
}

impl RecentIds {
    /// The bytes one fingerprint takes in [`to_bytes`](Self::to_bytes).
    pub const BYTES_PER_ID: usize = 4;

    /// The fingerprints of the ids among the last [`DEDUP_WINDOW`] messages of `history`.
    pub fn of(history: &[ChatMessage]) -> Self {
        let mut recent = Self::with_room();
        recent.record(&history[history.len().saturating_sub(DEDUP_WINDOW)..]);
        recent
    }

    /// Adds the ids of `appended`, messages just stored after the others, forgetting the
    /// oldest beyond [`DEDUP_WINDOW`].
    pub fn record(&mut self, appended: &[ChatMessage]) {
        self.record_ids(appended.iter().filter_map(|m| m.id.as_ref()));
    }

    /// [`record`](Self::record) from the ids alone, in the order they were stored.
    pub fn record_ids<'a>(&mut self, ids: impl IntoIterator<Item = &'a MessageId>) {
        self.record_fingerprints(ids.into_iter().map(MessageId::fingerprint));
    }

    /// The last [`DEDUP_WINDOW`] of `fingerprints` ([`MessageId::fingerprint`]), given
    /// oldest first: for a backend that found them without the ids.
    pub fn from_fingerprints(fingerprints: impl IntoIterator<Item = u32>) -> Self {
        let mut recent = Self::with_room();
        recent.record_fingerprints(fingerprints);
        recent
    }

    /// Empty, with room for a whole window: a backend rebuilds one on every append with
    /// ids, and growing it one push at a time would allocate five times on the way to 64.
    fn with_room() -> Self {
        Self {
            fingerprints: VecDeque::with_capacity(DEDUP_WINDOW),
        }
    }

    fn record_fingerprints(&mut self, fingerprints: impl IntoIterator<Item = u32>) {
        for fingerprint in fingerprints {
            if self.fingerprints.len() == DEDUP_WINDOW {
                self.fingerprints.pop_front();
            }
            self.fingerprints.push_back(fingerprint);
        }
    }

    /// Whether `id` may be stored: `false` means it is not among the ids recorded.
    pub fn may_hold(&self, id: &MessageId) -> bool {
        let fingerprint = id.fingerprint();
        // Every slot, folded with `|` rather than stopping at the first match: without the
        // early exit the loop vectorises, and a match is rare (only a retry repeats an id).
        let (front, back) = self.fingerprints.as_slices();
        let holds = |slots: &[u32]| {
            slots
                .iter()
                .fold(false, |seen, &f| seen | (f == fingerprint))
        };
        holds(front) | holds(back)
    }

    /// How many fingerprints it holds.
    pub fn len(&self) -> usize {
        self.fingerprints.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty()
    }

    /// The fingerprints as bytes, oldest first, [`BYTES_PER_ID`](Self::BYTES_PER_ID)
    /// each (little-endian): at most 256 bytes, for a backend to store beside a session.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Four bytes at a time into a buffer of the final size: a byte-by-byte `collect`
        // cannot tell the size ahead and checks the capacity at every byte.
        let mut bytes = vec![0; self.fingerprints.len() * Self::BYTES_PER_ID];
        let slots = bytes.as_chunks_mut::<{ Self::BYTES_PER_ID }>().0;
        for (slot, fingerprint) in slots.iter_mut().zip(&self.fingerprints) {
            *slot = fingerprint.to_le_bytes();
        }
        bytes
    }

    /// Reads what [`to_bytes`](Self::to_bytes) wrote; `None` when `bytes` cannot be that
    /// (a length that is not a whole number of fingerprints, or more than the window).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (chunks, rest) = bytes.as_chunks::<{ Self::BYTES_PER_ID }>();
        if !rest.is_empty() || chunks.len() > DEDUP_WINDOW {
            return None;
        }
        // At most a window: nothing to forget, so no check per fingerprint.
        let mut recent = Self::with_room();
        recent
            .fingerprints
            .extend(chunks.iter().map(|c| u32::from_le_bytes(*c)));
        Some(recent)
    }

    /// Writes `id`'s fingerprint after `bytes` as [`to_bytes`](Self::to_bytes) writes it:
    /// the ids of a batch written so, in order, are the bytes of a window that recorded
    /// only them (if they are at most a window), the `batch` of
    /// [`record_bytes`](Self::record_bytes), made with no `RecentIds`.
    pub fn push_bytes(bytes: &mut Vec<u8>, id: &MessageId) {
        bytes.extend_from_slice(&id.fingerprint().to_le_bytes());
    }

    /// The bytes of `stored` with `batch` recorded after it, both in the form
    /// [`to_bytes`](Self::to_bytes) writes: `batch` the fingerprints of an append's ids (at
    /// most a window of them). `None` when `stored` may hold one of `batch`'s fingerprints
    /// (a retry, or a rare collision), or either is not that form: then the caller must
    /// look at the stored ids. The same answer as [`from_bytes`](Self::from_bytes),
    /// [`may_hold`](Self::may_hold) and [`record`](Self::record), worked out on the bytes
    /// as stored: for a store that runs it inside its own write (SQLite's SQL function),
    /// on every append with ids.
    pub fn record_bytes(stored: &[u8], batch: &[u8]) -> Option<Vec<u8>> {
        let (slots, rest) = stored.as_chunks::<{ Self::BYTES_PER_ID }>();
        let (new, new_rest) = batch.as_chunks::<{ Self::BYTES_PER_ID }>();
        if !rest.is_empty()
            || !new_rest.is_empty()
            || slots.len() > DEDUP_WINDOW
            || new.len() > DEDUP_WINDOW
        {
            return None;
        }
        // Every slot for each new fingerprint, as in `may_hold`: the loop vectorises.
        let held = new
            .iter()
            .any(|f| slots.iter().fold(false, |seen, s| seen | (s == f)));
        if held {
            return None;
        }
        // `new` is at most a window long, so what is forgotten comes from `stored`.
        let forgotten = (slots.len() + new.len()).saturating_sub(DEDUP_WINDOW);
        let kept = &stored[forgotten * Self::BYTES_PER_ID..];
        let mut bytes = Vec::with_capacity(kept.len() + batch.len());
        bytes.extend_from_slice(kept);
        bytes.extend_from_slice(batch);
        Some(bytes)
    }
}

impl MessageId {
    /// A 32-bit hash of the id, the same in every process and every version of this crate
    /// (backends store it: [`RecentIds`]). Two ids may share one; equal ids always do.
    #[inline]
    pub fn fingerprint(&self) -> u32 {
        // Eight bytes at a time (ids are short), each word folded in with a multiply, then
        // the length; the 64-bit result's halves folded together. Fixed constants, so the
        // value never changes.
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let bytes = self.as_str().as_bytes();
        let (words, tail) = bytes.as_chunks::<8>();
        let mut h: u64 = 0x243f_6a88_85a3_08d3;
        let mut fold = |word: u64| h = (h ^ word).wrapping_mul(K).rotate_left(29);
        for word in words {
            fold(u64::from_le_bytes(*word));
        }
        if !tail.is_empty() {
            fold(tail_word(bytes, tail.len()));
        }
        fold(bytes.len() as u64);
        let h = (h ^ (h >> 32)).wrapping_mul(K);
        (h >> 32) as u32
    }
}

/// The last `tail` (1 to 7) bytes of `bytes` as the low bytes of a little-endian word,
/// the others zero. An id of 8 bytes or more reads its last 8 and shifts out those its
/// words already took: one load, where copying a tail of varying length into a zeroed
/// word compiles to a call to `memcpy`, about a fifth of an id's fingerprint.
fn tail_word(bytes: &[u8], tail: usize) -> u64 {
    match bytes.last_chunk::<8>() {
        Some(last) => u64::from_le_bytes(*last) >> (8 * (8 - tail)),
        None => {
            let mut last = [0u8; 8];
            last[..tail].copy_from_slice(&bytes[bytes.len() - tail..]);
            u64::from_le_bytes(last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_id(id: &str) -> ChatMessage {
        ChatMessage::user(id).with_id(id.parse().unwrap())
    }

    /// Stored fingerprints must read the same in every later version: pinned values.
    #[test]
    fn fingerprints_never_change() {
        let pinned: Vec<u32> = ["a", "evt_01J9Z3", "0193a5c4-0000-7000-8000-000000000000"]
            .iter()
            .map(|id| id.parse::<MessageId>().unwrap().fingerprint())
            .collect();
        assert_eq!(pinned, [PINNED_A, PINNED_EVT, PINNED_UUID]);
    }
    const PINNED_A: u32 = 3_418_391_828;
    const PINNED_EVT: u32 = 2_659_916_138;
    const PINNED_UUID: u32 = 930_691_689;

    #[test]
    fn a_tail_word_is_the_tail_padded_with_zeros() {
        let bytes = b"0123456789abcdef-tail";
        for len in 1..=bytes.len() {
            let id = &bytes[..len];
            let tail = len % 8;
            if tail == 0 {
                continue;
            }
            let mut padded = [0u8; 8];
            padded[..tail].copy_from_slice(&id[len - tail..]);
            assert_eq!(
                tail_word(id, tail),
                u64::from_le_bytes(padded),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn fresh_ids_rarely_share_a_fingerprint() {
        let fingerprints: std::collections::HashSet<u32> = (0..100_000)
            .map(|_| MessageId::new().fingerprint())
            .collect();
        // 100,000 random 32-bit values collide about once; allow a few.
        assert!(fingerprints.len() >= 100_000 - 5, "{}", fingerprints.len());
    }

    #[test]
    fn holds_the_last_window_of_ids_and_never_misses_one() {
        let history: Vec<ChatMessage> = (0..100)
            .map(|i| {
                if i % 3 == 0 {
                    ChatMessage::user("no id")
                } else {
                    with_id(&format!("m{i}"))
                }
            })
            .collect();
        let recent = RecentIds::of(&history);
        let last = &history[history.len() - DEDUP_WINDOW..];
        for id in last.iter().filter_map(|m| m.id.as_ref()) {
            assert!(recent.may_hold(id), "{id}");
        }
        assert!(recent.len() <= DEDUP_WINDOW);

        let mut grown = RecentIds::default();
        for chunk in history.chunks(7) {
            grown.record(chunk);
        }
        assert_eq!(grown.len(), DEDUP_WINDOW, "bounded by the window");
        for id in last.iter().filter_map(|m| m.id.as_ref()) {
            assert!(grown.may_hold(id), "{id}");
        }
        assert!(!grown.may_hold(&"m1".parse().unwrap()), "left the window");
    }

    /// `record_bytes` answers as parsing, checking and recording would, at every length of
    /// the stored window and of the batch.
    #[test]
    fn recording_on_the_bytes_agrees_with_the_window() {
        let ids: Vec<ChatMessage> = (0..200).map(|i| with_id(&format!("r{i}"))).collect();
        for stored_len in [0, 1, 30, 63, 64] {
            let stored = RecentIds::of(&ids[..stored_len]);
            for batch_len in [1, 2, 40, 64] {
                let batch = &ids[100..100 + batch_len];
                let mut expected = stored.clone();
                expected.record(batch);
                let batch_bytes = RecentIds::of(batch).to_bytes();
                let mut pushed = Vec::new();
                for id in batch.iter().filter_map(|m| m.id.as_ref()) {
                    RecentIds::push_bytes(&mut pushed, id);
                }
                assert_eq!(pushed, batch_bytes);
                assert_eq!(
                    RecentIds::record_bytes(&stored.to_bytes(), &batch_bytes),
                    Some(expected.to_bytes()),
                    "{stored_len} stored, {batch_len} new"
                );
            }
            if let Some(last) = ids[..stored_len].last() {
                let retry = RecentIds::of(&[ids[150].clone(), last.clone()]).to_bytes();
                assert_eq!(RecentIds::record_bytes(&stored.to_bytes(), &retry), None);
            }
        }
        let one = RecentIds::of(&ids[..1]).to_bytes();
        assert_eq!(
            RecentIds::record_bytes(b"bad", &one),
            None,
            "not fingerprints"
        );
        assert_eq!(RecentIds::record_bytes(&one, b"bad"), None);
        let too_many = vec![0u8; (DEDUP_WINDOW + 1) * RecentIds::BYTES_PER_ID];
        assert_eq!(RecentIds::record_bytes(&too_many, &one), None);
        assert_eq!(RecentIds::record_bytes(&[], &too_many), None);
    }

    #[test]
    fn bytes_round_trip_and_garbage_is_refused() {
        let recent = RecentIds::of(&[with_id("a"), with_id("b")]);
        let bytes = recent.to_bytes();
        assert_eq!(bytes.len(), 2 * RecentIds::BYTES_PER_ID);
        assert_eq!(RecentIds::from_bytes(&bytes), Some(recent));
        assert_eq!(RecentIds::from_bytes(&[]), Some(RecentIds::default()));
        assert_eq!(RecentIds::from_bytes(&[1, 2, 3]), None);
        assert_eq!(
            RecentIds::from_bytes(&vec![0; (DEDUP_WINDOW + 1) * RecentIds::BYTES_PER_ID]),
            None
        );
    }
}
