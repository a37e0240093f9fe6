//! Conditional writes: what a caller read ([`Revision`]), what it requires of the session
//! when it writes ([`Expect`]), and the write itself ([`Change`]).
//!
//! Every history-rewriting operation of the agent (undo, summaries, prune marks, fork,
//! the first message of a session) and of the CLI (import, migrate) goes through
//! [`ConversationStorage::write_if`](crate::ConversationStorage::write_if): it reads a
//! revision, decides, and writes only if the session is still what it read, or gets
//! [`Error::Conflict`](crate::Error::Conflict) and nothing changes. That one mechanism,
//! implemented natively by every bundled backend, is what keeps another writer's messages
//! from being destroyed or hidden by a stale copy.
//!
//! # Generations
//!
//! A session's *generation* is a number the backend changes whenever the history is
//! replaced, truncated or deleted, and picks afresh (at random) whenever a session is
//! created, so a session deleted and written again never gets its old generation back.
//! Appends keep it. Therefore:
//! - equal revisions (generation and length) mean the same messages;
//! - the same generation with a greater length means the same messages with more after
//!   them, so positions the caller computed (a summary's `covers`, a prune mark) are
//!   still true.
//!
//! Generation [`ABSENT`](Revision::ABSENT)`.generation` (0) means "no such session";
//! [`LEGACY_GENERATION`] (1) is what backends report for a session written before
//! generations existed, until its first rewrite gives it a random one.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::{ChatMessage, Error};

/// The generation of a session that was stored before generations existed (or by a
/// backend that cannot keep them): existing, never rewritten since.
pub const LEGACY_GENERATION: u64 = 1;

/// What a session held at one instant: its generation and how many messages it had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Revision {
    /// Changes on every replace, truncate and delete; kept by appends (see the module docs).
    pub generation: u64,
    /// How many messages the session held.
    pub len: usize,
}

impl Revision {
    /// The revision of a session that holds no messages.
    pub const ABSENT: Revision = Revision {
        generation: 0,
        len: 0,
    };

    /// Whether the session exists (holds at least one message).
    pub fn exists(&self) -> bool {
        self.generation != 0
    }
}

/// What a conditional write requires of the session as it is when the write happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Exactly this revision: nothing at all was written since it was read.
    /// `Expect::Exactly(Revision::ABSENT)` requires that the session does not exist.
    Exactly(Revision),
    /// Not replaced, truncated or deleted since it had this generation; appends by others
    /// in between are allowed. `Expect::Generation(0)` requires that the session does not
    /// exist.
    Generation(u64),
}

impl Expect {
    /// Whether a session now at `generation` with `len` messages meets this expectation.
    /// `len` may be `None` for [`Expect::Generation`], which does not look at it.
    pub fn is_met_by(&self, generation: u64, len: impl FnOnce() -> usize) -> bool {
        match *self {
            Expect::Generation(expected) => expected == generation,
            Expect::Exactly(expected) => {
                expected.generation == generation && (generation == 0 || expected.len == len())
            }
        }
    }

    /// The [`Error::Conflict`] for a session that is now at `generation` (with `len`
    /// messages, where the backend counted them) instead of what was expected.
    pub fn conflict(
        &self,
        backend: &'static str,
        session_id: &str,
        generation: u64,
        len: Option<usize>,
    ) -> Error {
        let found = match (generation, len) {
            (0, _) => "it does not exist (deleted or expired)".to_string(),
            (generation, Some(len)) => {
                format!("it is at generation {generation} with {len} messages")
            }
            (generation, None) => format!("it is at generation {generation}"),
        };
        let expected = match *self {
            Expect::Exactly(Revision { generation: 0, .. }) | Expect::Generation(0) => {
                "expected no session".to_string()
            }
            Expect::Exactly(Revision { generation, len }) => {
                format!("expected generation {generation} with exactly {len} messages")
            }
            Expect::Generation(generation) => {
                format!("expected generation {generation} (not rewritten or deleted since)")
            }
        };
        Error::Conflict {
            backend,
            session_id: session_id.to_string(),
            detail: format!(
                "another writer changed the session: {expected}, but {found}; nothing was written"
            ),
        }
    }
}

/// The write of a conditional [`write_if`](crate::ConversationStorage::write_if).
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// Add these messages at the end (creating the session if it does not exist).
    Append(&'a [ChatMessage]),
    /// Keep only the first `n` messages (0 deletes the session).
    Truncate(usize),
    /// Replace the whole history (an empty one deletes the session).
    Replace(&'a [ChatMessage]),
    /// Replace the whole history with the same conversation stored another way (say,
    /// re-encrypted under a new key), as a rewrite rather than a write: an existing
    /// session keeps its `updated_at`, its idle expiry's instant and its place in
    /// newest-first listings, where [`Replace`](Self::Replace) counts as the session's
    /// latest activity. It still gets a fresh generation, so every reader of the old
    /// revision reads again. On an absent session, and with no messages, it is
    /// `Replace`.
    Rewrite(&'a [ChatMessage]),
}

impl Change<'_> {
    /// The messages this change writes, to check with [`check_storable`](crate::check_storable).
    pub fn messages(&self) -> &[ChatMessage] {
        match self {
            Change::Append(messages) | Change::Replace(messages) | Change::Rewrite(messages) => {
                messages
            }
            Change::Truncate(_) => &[],
        }
    }
}

/// A fresh random generation for a session being created or rewritten: never 0 (absent)
/// or [`LEGACY_GENERATION`], and below 2^53 so it survives a trip through a JSON number
/// or a Lua double unchanged.
///
/// Random rather than counted, so that no backend has to keep a counter that outlives its
/// sessions: a deleted session's generation never comes back (but with chance 2^-53).
pub fn new_generation() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // `RandomState` is seeded from the operating system's random source once per process;
    // the counter and the clock make every call in the process differ.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    let value = hasher.finish() & ((1 << 53) - 1);
    if value <= LEGACY_GENERATION {
        value + 2
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_fresh_and_in_range() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let g = new_generation();
            assert!(g > LEGACY_GENERATION && g < (1 << 53));
            assert!(seen.insert(g), "generation {g} repeated");
        }
    }

    #[test]
    fn expectations_compare_generation_and_length() {
        let at = Revision {
            generation: 7,
            len: 3,
        };
        assert!(Expect::Exactly(at).is_met_by(7, || 3));
        assert!(!Expect::Exactly(at).is_met_by(7, || 4));
        assert!(!Expect::Exactly(at).is_met_by(8, || 3));
        assert!(Expect::Generation(7).is_met_by(7, || unreachable!()));
        assert!(!Expect::Generation(7).is_met_by(0, || 0));
        assert!(Expect::Exactly(Revision::ABSENT).is_met_by(0, || 0));
        assert!(Expect::Generation(0).is_met_by(0, || 0));
        assert!(!Expect::Generation(0).is_met_by(5, || 1));
    }

    #[test]
    fn a_conflict_says_what_was_expected_and_found() {
        let err = Expect::Generation(9).conflict("fs", "s", 0, None);
        let text = err.to_string();
        assert!(
            text.contains("conflicting write to session \"s\""),
            "{text}"
        );
        assert!(text.contains("does not exist"), "{text}");
        assert!(text.contains("nothing was written"), "{text}");
        assert!(err.is_retryable());
    }
}
