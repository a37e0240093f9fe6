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

use crate::{ChatMessage, Error, unix_micros};

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
    /// Exactly this revision, and nothing at all written since `since`, its metadata
    /// included: the session's `updated_at` as the backend records it (to the
    /// microsecond, or the millisecond on SQLite and Redis) is earlier than `since`, or
    /// not recorded. For deleting the sessions nobody has written for a while: a change
    /// of only a title, a tag or an expiry moves `updated_at` but not the revision, so
    /// [`Exactly`](Self::Exactly) alone would delete a session renamed a moment ago.
    ///
    /// A `since` on a whole millisecond compares the same on every backend: a session
    /// written in that millisecond counts as written since.
    UnwrittenSince {
        /// The revision the session must be at.
        revision: Revision,
        /// The instant before which it must have been written last.
        since: SystemTime,
    },
}

impl Expect {
    /// Whether a session now at `generation` with `len` messages, last written at
    /// `updated_at` (as recorded; `None` when not), meets this expectation. Each is asked
    /// for only when the expectation looks at it: [`Expect::Generation`] at neither, and
    /// only [`Expect::UnwrittenSince`] at `updated_at`.
    pub fn is_met_by(
        &self,
        generation: u64,
        len: impl FnOnce() -> usize,
        updated_at: impl FnOnce() -> Option<SystemTime>,
    ) -> bool {
        let exactly = |expected: Revision| {
            expected.generation == generation && (generation == 0 || expected.len == len())
        };
        match *self {
            Expect::Generation(expected) => expected == generation,
            Expect::Exactly(expected) => exactly(expected),
            Expect::UnwrittenSince { revision, since } => {
                exactly(revision) && (generation == 0 || updated_at().is_none_or(|at| at < since))
            }
        }
    }

    /// The revision this expectation names, if it names one (not for
    /// [`Expect::Generation`]).
    pub fn revision(&self) -> Option<Revision> {
        match *self {
            Expect::Generation(_) => None,
            Expect::Exactly(revision) | Expect::UnwrittenSince { revision, .. } => Some(revision),
        }
    }

    /// The generation a session meeting this expectation is at.
    pub fn generation(&self) -> u64 {
        match *self {
            Expect::Generation(generation) => generation,
            Expect::Exactly(revision) | Expect::UnwrittenSince { revision, .. } => {
                revision.generation
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
            _ if self.generation() == 0 => "expected no session".to_string(),
            Expect::Exactly(Revision { generation, len }) => {
                format!("expected generation {generation} with exactly {len} messages")
            }
            Expect::UnwrittenSince { revision, since } => format!(
                "expected generation {} with exactly {} messages, written last before {} µs \
                 since the Unix epoch",
                revision.generation,
                revision.len,
                unix_micros(since)
            ),
            Expect::Generation(generation) => {
                format!("expected generation {generation} (not rewritten or deleted since)")
            }
        };
        // Only the instant can have failed a revision that matches.
        let found = match *self {
            Expect::UnwrittenSince { revision, .. }
                if revision.generation == generation && len == Some(revision.len) =>
            {
                format!("{found}, written since (its metadata, at least)")
            }
            _ => found,
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
        assert!(Expect::Exactly(at).is_met_by(7, || 3, || None));
        assert!(!Expect::Exactly(at).is_met_by(7, || 4, || None));
        assert!(!Expect::Exactly(at).is_met_by(8, || 3, || None));
        assert!(Expect::Generation(7).is_met_by(7, || unreachable!(), || unreachable!()));
        assert!(!Expect::Generation(7).is_met_by(0, || 0, || None));
        assert!(Expect::Exactly(Revision::ABSENT).is_met_by(0, || 0, || None));
        assert!(Expect::Generation(0).is_met_by(0, || 0, || None));
        assert!(!Expect::Generation(0).is_met_by(5, || 1, || None));
    }

    #[test]
    fn unwritten_since_also_compares_the_last_write() {
        let at = Revision {
            generation: 7,
            len: 3,
        };
        let since = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        let second = std::time::Duration::from_secs(1);
        let expect = Expect::UnwrittenSince {
            revision: at,
            since,
        };
        assert!(expect.is_met_by(7, || 3, || Some(since - second)));
        assert!(
            expect.is_met_by(7, || 3, || None),
            "not recorded: not written since"
        );
        assert!(
            !expect.is_met_by(7, || 3, || Some(since)),
            "written at the instant"
        );
        assert!(!expect.is_met_by(7, || 3, || Some(since + second)));
        assert!(!expect.is_met_by(7, || 4, || Some(since - second)));
        assert!(!expect.is_met_by(8, || 3, || Some(since - second)));
        let absent = Expect::UnwrittenSince {
            revision: Revision::ABSENT,
            since,
        };
        assert!(absent.is_met_by(0, || 0, || unreachable!()));
        assert!(!absent.is_met_by(7, || 3, || None));

        let text = expect.conflict("fs", "s", 7, Some(3)).to_string();
        assert!(text.contains("before 1000000000 µs"), "{text}");
        assert!(text.contains("written since"), "{text}");
        let text = expect.conflict("fs", "s", 7, Some(4)).to_string();
        assert!(!text.contains("written since"), "{text}");
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
