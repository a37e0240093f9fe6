//! The fingerprints of a session's last ids, kept beside its messages so that an append
//! with ids almost never looks at a stored message.
//!
//! The same promise as [`fusion_core::RecentIds`] (a superset of the ids among the last
//! [`DEDUP_WINDOW`] messages; "maybe" can be wrong, "no" never is), in a shape only a
//! store that keeps it in memory can use: a fixed ring of [`DEDUP_WINDOW`] slots that is
//! checked whole, without a branch per slot, so the compiler compares several slots per
//! instruction. `RecentIds` is the form backends store as bytes and rebuild per call; here
//! it lives as long as the session, and its check runs on every append with ids.
//!
//! An append's usual case, a turn's few messages none of whose ids is stored, takes
//! [`RecentFingerprints::all_fresh`]: each id is fingerprinted once, on the stack, for the
//! check and then for the record.

use fusion_core::{ChatMessage, DEDUP_WINDOW, MessageId};

/// The most ids a batch may hold for [`RecentFingerprints::all_fresh`]: a turn's messages,
/// tool results included, fit; a larger batch takes the general path.
const SMALL_BATCH: usize = 16;

/// The fingerprints of a small batch's ids, in order: what [`RecentFingerprints::all_fresh`]
/// found, for [`RecentFingerprints::record_fresh`] to record without computing them again.
pub(crate) struct FreshBatch {
    fingerprints: [u32; SMALL_BATCH],
    len: usize,
}

/// The fingerprints ([`MessageId::fingerprint`]) of the last [`DEDUP_WINDOW`] ids recorded.
///
/// Slots not yet filled hold 0: an id whose fingerprint is 0 may then be reported as
/// maybe stored, which costs its append a look at the stored ids and nothing else.
#[derive(Debug, Clone)]
pub(crate) struct RecentFingerprints {
    /// Allocated with the session's first id, so a session without ids costs no more
    /// than a pointer.
    ring: Option<Box<[u32; DEDUP_WINDOW]>>,
    /// The slot the next fingerprint goes in; the oldest one is overwritten first.
    next: usize,
}

impl RecentFingerprints {
    /// The fingerprints of the ids among the last [`DEDUP_WINDOW`] messages of `history`.
    pub(crate) fn of(history: &[ChatMessage]) -> Self {
        let mut recent = Self {
            ring: None,
            next: 0,
        };
        recent.record(&history[history.len().saturating_sub(DEDUP_WINDOW)..]);
        recent
    }

    /// Adds the ids of `appended`, messages just stored after the others.
    pub(crate) fn record(&mut self, appended: &[ChatMessage]) {
        for id in appended.iter().filter_map(|m| m.id.as_ref()) {
            self.push(id.fingerprint());
        }
    }

    /// Adds the fingerprints [`all_fresh`](Self::all_fresh) found, once their messages
    /// are stored.
    pub(crate) fn record_fresh(&mut self, batch: &FreshBatch) {
        for &fingerprint in &batch.fingerprints[..batch.len] {
            self.push(fingerprint);
        }
    }

    fn push(&mut self, fingerprint: u32) {
        let ring = self.ring.get_or_insert_with(|| Box::new([0; DEDUP_WINDOW]));
        ring[self.next] = fingerprint;
        self.next = (self.next + 1) % DEDUP_WINDOW;
    }

    /// Whether `id` may be among the ids recorded: `false` means it is not.
    pub(crate) fn may_hold(&self, id: &MessageId) -> bool {
        self.may_hold_fingerprint(id.fingerprint())
    }

    fn may_hold_fingerprint(&self, fingerprint: u32) -> bool {
        // Every slot, folded with `|` rather than stopping at the first match: without the
        // early exit the loop vectorises, and a match is rare (only a retry repeats an id).
        self.ring.as_ref().is_some_and(|ring| {
            ring.iter()
                .fold(false, |seen, &slot| seen | (slot == fingerprint))
        })
    }

    /// The fingerprints of `batch`'s ids when it holds at most [`SMALL_BATCH`] and none
    /// may be recorded, so the whole batch is to be stored; `None` when the batch needs
    /// the general path (a look at the stored ids for one that may be stored).
    pub(crate) fn all_fresh(&self, batch: &[ChatMessage]) -> Option<FreshBatch> {
        let mut fresh = FreshBatch {
            fingerprints: [0; SMALL_BATCH],
            len: 0,
        };
        for id in batch.iter().filter_map(|m| m.id.as_ref()) {
            let fingerprint = id.fingerprint();
            if fresh.len == SMALL_BATCH || self.may_hold_fingerprint(fingerprint) {
                return None;
            }
            fresh.fingerprints[fresh.len] = fingerprint;
            fresh.len += 1;
        }
        Some(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_id(id: &str) -> ChatMessage {
        ChatMessage::user(id).with_id(id.parse().unwrap())
    }

    #[test]
    fn holds_every_id_of_the_last_window_and_forgets_older_ones() {
        let history: Vec<ChatMessage> = (0..150)
            .map(|i| {
                if i % 3 == 0 {
                    ChatMessage::user("no id")
                } else {
                    with_id(&format!("m{i}"))
                }
            })
            .collect();
        let recent = RecentFingerprints::of(&history);
        let mut grown = RecentFingerprints::of(&[]);
        for turn in history.chunks(7) {
            grown.record(turn);
        }
        let window = &history[history.len() - DEDUP_WINDOW..];
        for message in window.iter().filter(|m| m.id.is_some()) {
            let id = message.id.as_ref().unwrap();
            assert!(recent.may_hold(id), "{id}");
            assert!(grown.may_hold(id), "{id}");
        }
        // The first ids left the ring long ago (fingerprints of distinct short ids differ).
        assert!(!grown.may_hold(history[1].id.as_ref().unwrap()));
        assert!(!recent.may_hold(&"never-stored".parse().unwrap()));
    }

    #[test]
    fn a_small_batch_of_new_ids_is_fingerprinted_once_and_recorded_as_found() {
        let mut recent = RecentFingerprints::of(&[with_id("a")]);
        let turn = [with_id("b"), ChatMessage::user("no id"), with_id("c")];
        let fresh = recent
            .all_fresh(&turn)
            .expect("no id of the turn is recorded");
        assert_eq!(fresh.len, 2);
        recent.record_fresh(&fresh);
        for id in ["a", "b", "c"] {
            assert!(recent.may_hold(&id.parse().unwrap()), "{id}");
        }
        // A retry, and a batch too large for the stack: the general path.
        assert!(recent.all_fresh(&turn).is_none());
        let large: Vec<ChatMessage> = (0..=SMALL_BATCH)
            .map(|i| with_id(&format!("n{i}")))
            .collect();
        assert!(recent.all_fresh(&large).is_none());
        assert_eq!(
            recent.all_fresh(&[ChatMessage::user("x")]).map(|f| f.len),
            Some(0)
        );
    }
}
