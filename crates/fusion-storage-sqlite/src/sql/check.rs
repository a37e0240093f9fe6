//! What a write checks inside its transaction before its statements run ([`Check`]), what
//! it read for that ([`Found`]), what the check decided ([`Verdict`]) and how the write
//! ended ([`Written`]). Both runners (`crate::direct`, `crate::pooled`) read the row a
//! check names and call [`Check::decide`], so they cannot disagree on a decision.
//!
//! A check reads the row whatever its expiry and decides here, at the write's own `now`,
//! whether it has expired (`crate::expiry`): then the session counts as absent, and a
//! write that goes ahead removes it first ([`Go`]'s `remove_first`). The check of
//! an append with ids also reads the fingerprints of the session's last ids, and when
//! they cannot decide, the ids of its last messages ([`Check::confirm_from`]), and decides
//! which messages the append stores (`dedup.rs`); an expired session stores none. A
//! write under [`Expect::UnwrittenSince`](fusion_core::Expect::UnwrittenSince) reads the
//! row's `updated_at` too, in the same lookup ([`READ_REVISION_AND_UPDATED`]); no other
//! write reads it.

use std::borrow::Cow;

use fusion_core::{Error, MetaUpdate, RecentIds, Revision, SessionInfo, is_expired};

use super::dedup::{Decided, Dedup};
use super::statements::{time_holds, times_hold};
use super::{
    BEGIN_AND_READ_INFO, BEGIN_AND_READ_REVISION, BEGIN_AND_READ_REVISION_AND_RECENT, Kept,
    READ_INFO, READ_REVISION_AND_RECENT, READ_REVISION_TO_WRITE, Value, Write,
};
use crate::generation::Condition;
use crate::meta::{self, InfoRow, Updated};

/// The statement that reads what [`READ_REVISION_AND_RECENT`] does and, fifth,
/// `updated_at`, as a literal for `concat!`. The row's times must hold ([`times_hold!`]):
/// an integer `updated_at` no write stores (past `i64::MAX / 1000`) would read as a write
/// after any `since`, a conflict that no reload and retry resolves, where every other
/// write says the session is corrupt.
macro_rules! read_revision_and_updated {
    () => {
        concat!(
            "SELECT generation, message_count, expires_at, recent_ids, updated_at \
             FROM sessions WHERE id = ?1 AND ",
            times_hold!()
        )
    };
}

/// [`READ_REVISION_AND_RECENT`]'s columns and, fifth, `updated_at` (Unix milliseconds):
/// what the check of a write under
/// [`Expect::UnwrittenSince`](fusion_core::Expect::UnwrittenSince) reads, with ids or not
/// (`recent_ids` goes unused without). The same one lookup of the `sessions` row's key.
pub(crate) const READ_REVISION_AND_UPDATED: &str = read_revision_and_updated!();

/// The first round trip of a write under `UnwrittenSince` on the sqlx path: take the
/// write lock, then [`READ_REVISION_AND_UPDATED`].
pub(crate) const BEGIN_AND_READ_REVISION_AND_UPDATED: &str =
    concat!(begin_write!(), "; ", read_revision_and_updated!());

/// What a write reads and decides inside its transaction before its statements run.
#[derive(Debug)]
pub(crate) enum Check {
    /// A conditional write, a creation or an append with ids at `now` (Unix µs, the
    /// instant its statements bind): the session's revision ([`READ_REVISION_TO_WRITE`]) must meet
    /// the condition. With `dedup` (an append whose messages carry ids), the read also
    /// finds the session's `recent_ids` ([`READ_REVISION_AND_RECENT`]), and the messages
    /// whose ids are stored are left out.
    Revision {
        condition: Condition,
        now: i64,
        dedup: Option<Dedup>,
    },
    /// A metadata update at `now` (Unix µs): the session's facts ([`READ_INFO`]) with the
    /// update applied must be valid metadata.
    Meta { update: MetaUpdate, now: i64 },
}

/// The row a [`Check`] read: a revision, the row's `expires_at` and, for a check with
/// `dedup`, its `recent_ids` (read once, as the row is: `None` when the column is NULL
/// or does not hold fingerprints), for a check that [`reads_updated`](Check::reads_updated)
/// its `updated_at` (Unix milliseconds) and, when [`Check::confirm_from`] asked for them,
/// the ids of its last messages in order, for [`Check::Revision`] (absent:
/// [`Revision::ABSENT`] and `None`s); the facts (if the session exists) for [`Check::Meta`].
#[derive(Debug)]
pub(crate) enum Found {
    Revision {
        revision: Revision,
        expires_at: Option<i64>,
        recent: Option<RecentIds>,
        updated_at: Option<i64>,
        stored: Option<Vec<Option<String>>>,
    },
    Info(Option<InfoRow>),
}

/// What a [`Check`] decided.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Run the statements as this says.
    Go(Go),
    /// Roll back: the write ended as this, having written nothing.
    Stop(Written),
}

/// How a write runs once let through: binding `extra` after the write's own values (with
/// an append's batch cut down to what is `kept`, and its `recent_ids` when it decided
/// them), after removing the session when `remove_first` (it had expired); once
/// committed, the write ended as `written`.
#[derive(Debug)]
pub(crate) struct Go {
    extra: Vec<Value>,
    written: Written,
    remove_first: bool,
    kept: Kept,
    recent: Option<Vec<u8>>,
}

impl Go {
    /// A write without a check: its own values, committed.
    pub(crate) fn unchecked() -> Self {
        Self {
            extra: Vec::new(),
            written: Written::Committed(None),
            remove_first: false,
            kept: Kept::All,
            recent: None,
        }
    }

    /// What the runners need, in place of the write's `values`: the values to bind
    /// ([`Write::decided_values`]), whether to remove the session first, and how the write
    /// ended once committed.
    pub(crate) fn bind(self, values: Cow<'_, [Value]>) -> (Cow<'_, [Value]>, bool, Written) {
        let values = Write::decided_values(values, &self.kept, self.recent, self.extra);
        (values, self.remove_first, self.written)
    }
}

/// How a write that met no SQLite error ended.
#[derive(Debug)]
pub(crate) enum Written {
    /// Its statements committed. A conditional write also says the session's generation
    /// after it (0 when it left the session empty); the others do not read it.
    Committed(Option<u64>),
    /// A conditional write found the session at this revision, which its condition does not
    /// admit: it rolled back and wrote nothing.
    Refused(Revision),
    /// A metadata update committed and left the session as this; `None`: there was no
    /// session, and nothing was written.
    Updated(Option<Box<SessionInfo>>),
    /// A metadata update was refused (its result broke a rule, or the row is damaged): it
    /// rolled back and wrote nothing.
    Rejected(Error),
    /// A purge committed, deleting this many sessions.
    Purged(usize),
    /// An append found every message of its batch stored already (by their ids): it
    /// rolled back, having written nothing, and the session is at this generation.
    AllStored(u64),
    /// A write on an async task's thread found it must first remove an expired session
    /// (work that grows with that session's history): it rolled back, wrote nothing, and
    /// runs again on a blocking thread. Only `crate::direct` ends a write so, and only
    /// there.
    Deferred,
}

impl Written {
    /// What a conditional write that did not commit found: the only other way it ends.
    pub(crate) fn refused(self) -> Revision {
        match self {
            Written::Refused(found) => found,
            other => unreachable!("a conditional write ended as {other:?}"),
        }
    }

    /// Whether something was committed (what counts towards a WAL checkpoint).
    pub(crate) fn committed(&self) -> bool {
        match self {
            Written::Committed(_) | Written::Updated(Some(_)) => true,
            Written::Purged(deleted) => *deleted > 0,
            Written::Refused(_)
            | Written::AllStored(_)
            | Written::Updated(None)
            | Written::Rejected(_)
            | Written::Deferred => false,
        }
    }
}

impl Check {
    /// The statement that reads what the check decides on, bound to ?1, the session id.
    pub(crate) fn read(&self) -> &'static str {
        match self {
            Check::Revision { condition, .. } if condition.reads_updated() => {
                READ_REVISION_AND_UPDATED
            }
            Check::Revision { dedup: None, .. } => READ_REVISION_TO_WRITE,
            Check::Revision { dedup: Some(_), .. } => READ_REVISION_AND_RECENT,
            Check::Meta { .. } => READ_INFO,
        }
    }

    /// Whether the check needs `recent_ids`, the fourth column [`read`](Self::read) returns
    /// then (as it also does when it [`reads_updated`](Self::reads_updated)).
    pub(crate) fn reads_recent(&self) -> bool {
        matches!(self, Check::Revision { dedup: Some(_), .. })
    }

    /// Whether the check needs `updated_at`, the fifth column [`read`](Self::read) returns
    /// then: only a write under `UnwrittenSince`.
    pub(crate) fn reads_updated(&self) -> bool {
        matches!(self, Check::Revision { condition, .. } if condition.reads_updated())
    }

    /// [`read`](Self::read) after `BEGIN IMMEDIATE`, as one script for sqlx.
    pub(crate) fn begin_and_read(&self) -> &'static str {
        match self {
            Check::Revision { condition, .. } if condition.reads_updated() => {
                BEGIN_AND_READ_REVISION_AND_UPDATED
            }
            Check::Revision { dedup: None, .. } => BEGIN_AND_READ_REVISION,
            Check::Revision { dedup: Some(_), .. } => BEGIN_AND_READ_REVISION_AND_RECENT,
            Check::Meta { .. } => BEGIN_AND_READ_INFO,
        }
    }

    /// For a check with `dedup` that `found` a live session whose fingerprints cannot
    /// decide, the seq from which the runner reads the ids of its last messages
    /// ([`READ_LAST_IDS`](super::READ_LAST_IDS), bound to ?1 the session id and ?2 this)
    /// into `found`'s `stored`, before [`decide`](Self::decide). `None`: decide now.
    pub(crate) fn confirm_from(&self, found: &Found) -> Option<i64> {
        match (self, found) {
            (
                Check::Revision {
                    dedup: Some(dedup),
                    now,
                    ..
                },
                Found::Revision {
                    revision,
                    expires_at,
                    recent,
                    ..
                },
            ) if *revision != Revision::ABSENT && !is_expired(*expires_at, *now) => {
                let count = i64::try_from(revision.len).unwrap_or(i64::MAX);
                dedup.confirm_from(count, recent.as_ref())
            }
            _ => None,
        }
    }

    /// Decides from the row read by [`read`](Self::read).
    pub(crate) fn decide(&self, found: Found) -> Verdict {
        match (self, found) {
            (
                Check::Revision {
                    condition,
                    now,
                    dedup,
                },
                Found::Revision {
                    revision,
                    expires_at,
                    recent,
                    updated_at,
                    stored,
                },
            ) => {
                let expired = is_expired(expires_at, *now);
                let revision = if expired { Revision::ABSENT } else { revision };
                let generation = match condition.check(revision, updated_at) {
                    Ok(generation) => generation,
                    Err(found) => return Verdict::Stop(Written::Refused(found)),
                };
                // An expired (or absent) session stores no id.
                let decided = dedup.as_ref().map(|dedup| {
                    if expired {
                        dedup.decide(None, None)
                    } else {
                        dedup.decide(recent, stored.as_deref())
                    }
                });
                let (kept, recent) = match decided {
                    Some(Decided { kept, recent }) => (kept, Some(recent)),
                    None => (Some(Kept::All), None),
                };
                match kept {
                    Some(kept) => Verdict::Go(Go {
                        extra: Vec::new(),
                        written: Written::Committed(Some(generation)),
                        remove_first: expired,
                        kept,
                        recent,
                    }),
                    None => Verdict::Stop(Written::AllStored(generation)),
                }
            }
            (Check::Meta { update, now }, Found::Info(row)) => {
                match meta::apply_update(row, update, *now) {
                    Ok(Some(Updated {
                        info,
                        updated_ms,
                        expiry,
                    })) => Verdict::Go(Go {
                        extra: vec![
                            Value::Int(updated_ms),
                            Value::text_or_null(info.meta.owner.as_deref()),
                            Value::Text(info.meta.tags_json()),
                            Value::text_or_null(info.meta.title.as_deref()),
                            Value::Text(info.meta.data_json()),
                            Value::int_or_null(expiry.expires_at),
                            Value::int_or_null(expiry.idle),
                        ],
                        written: Written::Updated(Some(Box::new(info))),
                        remove_first: false,
                        kept: Kept::All,
                        recent: None,
                    }),
                    Ok(None) => Verdict::Stop(Written::Updated(None)),
                    Err(e) => Verdict::Stop(Written::Rejected(e)),
                }
            }
            (check, found) => unreachable!("{check:?} read {found:?}: a runner bug"),
        }
    }
}
