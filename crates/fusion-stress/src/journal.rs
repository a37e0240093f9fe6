//! The worker's journal: one JSON line per operation, appended as each operation ends,
//! with wall-clock nanoseconds taken just before and just after the call.
//!
//! The journal is the only thing the checker knows about what happened, so it records
//! outcomes exactly: a turn is acknowledged only when `send_message` returned a final
//! answer, and an undo lists the tags its session said it removed. Wall-clock time
//! (`SystemTime`) rather than `Instant` because several processes' stamps are compared.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use fusion_core::{ChatMessage, Role};
use serde::{Deserialize, Serialize};

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Whether it was `Error::Conflict` (another writer changed the session first).
    pub conflict: bool,
    /// Whether it was an error no interleaving of the run's writers may cause (checker
    /// rule 7): `Error::Corrupt` (the storage held what its readers refuse) or
    /// `Error::NotOwner` (every writer of a session is its owner).
    #[serde(default)]
    pub impossible: bool,
    /// The error's text.
    pub text: String,
}

impl Failure {
    /// The failure of `err`.
    pub fn of(err: &fusion_core::Error) -> Self {
        Failure {
            conflict: matches!(err, fusion_core::Error::Conflict { .. }),
            impossible: matches!(
                err,
                fusion_core::Error::Corrupt { .. } | fusion_core::Error::NotOwner { .. }
            ),
            text: err.to_string(),
        }
    }

    /// The failure of `result`, if it failed.
    pub fn of_result<T>(result: &fusion_core::Result<T>) -> Option<Self> {
        result.as_ref().err().map(Self::of)
    }
}

/// What one operation was and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `send_message(message)`: acknowledged when `answer` is `Some` (the final answer).
    Turn {
        /// The turn's tag, as text.
        tag: String,
        /// The user message sent.
        message: String,
        /// The final answer, when the turn succeeded.
        answer: Option<String>,
        /// Why it failed, otherwise (also when it stopped without a final answer).
        failure: Option<Failure>,
    },
    /// `undo_last_turn()`, only ever right after this worker's own acknowledged turn.
    Undo {
        /// The tag of the turn it meant to remove.
        intended: String,
        /// Tags the session's history held before the call and not after it.
        removed: Vec<String>,
        /// How many messages the call said it removed.
        count: usize,
        /// Why it failed.
        failure: Option<Failure>,
    },
    /// `summarize_history(keep_last)`.
    Summarize {
        /// Messages left as they are.
        keep_last: usize,
        /// The new summary's `covers`, when one was stored.
        covers: Option<usize>,
        /// Why it failed.
        failure: Option<Failure>,
    },
    /// `fork(new_id)`.
    Fork {
        /// The fresh id forked into.
        new_id: String,
        /// Why it failed.
        failure: Option<Failure>,
    },
    /// `clear_history()` of a shared session.
    Delete {
        /// Why it failed (a failed delete may still have deleted).
        failure: Option<Failure>,
    },
    /// `update_meta(add_tag(tag))`: the worker's own tag on a shared session's metadata.
    Label {
        /// The tag added.
        tag: String,
        /// Why it failed.
        failure: Option<Failure>,
    },
    /// `update_meta(expiry(..))` of a shared session: none, or one far past the run's end
    /// (so the expiry code of every write runs, and nothing expires).
    Retain {
        /// The expiry set, as `none`, `idle` or `at`.
        expiry: String,
        /// Why it failed.
        failure: Option<Failure>,
    },
    /// `append` of one note to a brief session, straight through the storage
    /// ([`crate::brief`]).
    Brief {
        /// The note's text.
        note: String,
        /// Why it failed.
        failure: Option<Failure>,
    },
    /// `purge_expired(batch)` of the whole storage (journaled under
    /// [`crate::brief::PURGE_SESSION`]).
    Purge {
        /// The batch asked for.
        batch: usize,
        /// How many sessions it said it removed, when it succeeded.
        removed: Option<usize>,
        /// Why it failed.
        failure: Option<Failure>,
    },
    /// `update_session` of an idle session with a new title, straight through the storage
    /// ([`crate::idle`]).
    Retitle {
        /// The title written.
        title: String,
        /// The generation of the session it found (it returned `Some`); `None` when it
        /// found none or failed.
        found: Option<u64>,
        /// Why it failed.
        failure: Option<Failure>,
    },
    /// `delete` and `create_session_with_times` of every idle session in turn, last
    /// written before the run's cutoff ([`crate::idle`]), journaled under
    /// [`crate::brief::PURGE_SESSION`].
    Renew {
        /// How many were created again before it ended.
        created: usize,
        /// Why it failed (it stops at the first failure).
        failure: Option<Failure>,
    },
    /// `purge_not_written_since` at the run's cutoff ([`crate::idle`]), journaled under
    /// [`crate::brief::PURGE_SESSION`].
    StalePurge {
        /// Sessions per page of its listing.
        page: usize,
        /// The sessions it reported deleting, each with its generation as listed, in order
        /// (also when it failed later).
        deleted: Vec<(String, u64)>,
        /// How many it listed and kept as written since, when it succeeded.
        written_meanwhile: Option<usize>,
        /// Why it failed.
        failure: Option<Failure>,
    },
    /// `reload()`.
    Reload {
        /// Why it failed.
        failure: Option<Failure>,
        /// What the session read, as [`snapshot`] writes it (empty when it failed).
        #[serde(default)]
        snapshot: Vec<String>,
    },
}

impl Op {
    /// The operation's name, for counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Turn { .. } => "turn",
            Op::Undo { .. } => "undo",
            Op::Summarize { .. } => "summarize",
            Op::Fork { .. } => "fork",
            Op::Delete { .. } => "delete",
            Op::Label { .. } => "label",
            Op::Retain { .. } => "retain",
            Op::Brief { .. } => "brief",
            Op::Purge { .. } => "purge",
            Op::Retitle { .. } => "retitle",
            Op::Renew { .. } => "renew",
            Op::StalePurge { .. } => "stale_purge",
            Op::Reload { .. } => "reload",
        }
    }

    /// Why it failed, if it did.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Op::Turn { failure, .. }
            | Op::Undo { failure, .. }
            | Op::Summarize { failure, .. }
            | Op::Fork { failure, .. }
            | Op::Delete { failure }
            | Op::Label { failure, .. }
            | Op::Retain { failure, .. }
            | Op::Brief { failure, .. }
            | Op::Purge { failure, .. }
            | Op::Retitle { failure, .. }
            | Op::Renew { failure, .. }
            | Op::StalePurge { failure, .. }
            | Op::Reload { failure, .. } => failure.as_ref(),
        }
    }
}

/// The user and assistant messages of `history`, in order, as `u:<text>` and `a:<text>`:
/// what the checker needs of a reload, without the rest of a history in every line.
pub fn snapshot(history: &[ChatMessage]) -> Vec<String> {
    history
        .iter()
        .filter_map(|m| match m.role {
            Role::User => Some(format!("u:{}", m.content)),
            Role::Assistant if !m.content.is_empty() => Some(format!("a:{}", m.content)),
            _ => None,
        })
        .collect()
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The worker that ran it.
    pub worker: usize,
    /// The session it ran on.
    pub session: String,
    /// Wall clock just before the call, ns since the epoch.
    pub start_ns: u64,
    /// Wall clock just after the call returned.
    pub end_ns: u64,
    /// Replies lost to injected faults (`--faults`) since the worker's previous
    /// operation ended: the writes (or reads) of this one whose reply a dropped
    /// connection or `LoseReplies` swallowed after they applied, and which its storage's
    /// retry layer then settled, or not. 0 in a run without faults.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub faults: usize,
    /// What it was and how it ended.
    #[serde(flatten)]
    pub op: Op,
}

impl Entry {
    /// Whether the operation failed in a way that leaves open whether it applied: any
    /// failure but a conflict (an I/O error, a dropped connection, retries run out), or a
    /// conflict after a lost reply (the retry layer answers `Error::Conflict` when an
    /// earlier attempt's reply was lost and it cannot tell that attempt applied: another
    /// writer changed the session since). Only a conflict that met no fault says that
    /// nothing was written.
    pub fn may_have_applied(&self) -> bool {
        self.op
            .failure()
            .is_some_and(|f| !f.conflict || self.faults > 0)
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// An append-only journal file.
pub struct Journal {
    file: File,
}

impl Journal {
    /// Creates (or appends to) the journal at `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening journal {}", path.display()))?;
        Ok(Journal { file })
    }

    /// Appends `entry` as one line, in one write, so a crash leaves whole lines.
    pub fn record(&mut self, entry: &Entry) -> Result<()> {
        let mut line = serde_json::to_string(entry)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        Ok(())
    }
}

/// Reads every entry of the journal at `path`, in order.
pub fn read(path: &Path) -> Result<Vec<Entry>> {
    let file = File::open(path).with_context(|| format!("opening journal {}", path.display()))?;
    let mut entries = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: {line}", path.display(), n + 1))?;
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w0.jsonl");
        let entries = vec![
            Entry {
                worker: 0,
                session: "shared-1".into(),
                start_ns: 10,
                end_ns: 20,
                faults: 0,
                op: Op::Turn {
                    tag: "w0-s1-k0".into(),
                    message: "m".into(),
                    answer: Some("ack w0-s1-k0".into()),
                    failure: None,
                },
            },
            Entry {
                worker: 0,
                session: "shared-1".into(),
                start_ns: 30,
                end_ns: 40,
                faults: 2,
                op: Op::Delete {
                    failure: Some(Failure {
                        conflict: true,
                        impossible: false,
                        text: "x".into(),
                    }),
                },
            },
        ];
        let mut journal = Journal::create(&path).unwrap();
        for entry in &entries {
            journal.record(entry).unwrap();
        }
        assert_eq!(read(&path).unwrap(), entries);
        assert_eq!(entries[1].op.kind(), "delete");
        assert!(entries[1].op.failure().unwrap().conflict);
        // A conflict after a lost reply leaves open whether the delete applied.
        assert!(entries[1].may_have_applied());
        let mut quiet = entries[1].clone();
        quiet.faults = 0;
        assert!(!quiet.may_have_applied());
        assert!(!entries[0].may_have_applied(), "succeeded");
    }
}
