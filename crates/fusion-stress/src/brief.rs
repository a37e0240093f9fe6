//! Rule 9 of the checker: sessions that expire in the middle of the run ("brief" sessions).
//!
//! Before the workers start, the coordinator creates a few sessions, each holding one note
//! and expiring at a fixed instant inside the run ([`Expiry::At`]). Workers append notes
//! to them straight through the storage (no agent, no owner) and call `purge_expired`
//! while others write. From its instant on a session is gone for readers and writers, and
//! an append starts a new session with no metadata, so no expiry, which nothing may
//! remove. Using the journal's wall-clock stamps (every backend's clock is this machine's)
//! and a margin for the clocks' granularity:
//! - a note whose append ended before the instant went with the expired session: it is
//!   not stored after the run (an expired session's messages never come back);
//! - a note whose append started after the instant and was acknowledged went into the new
//!   session: it is stored after the run, once (a purge that meets the new session, or the
//!   expired one's index entries, keeps it);
//! - the session holds nothing else, no note twice, and each worker's notes in the order
//!   it appended them;
//! - all purges together removed no more sessions than expired (each brief session
//!   expires once, and what replaces it never does).
//!
//! An append that straddles the instant, or failed, may be in either session or none.
//! The coordinator checks only once every instant is past, so the expiries are all due.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use fusion_core::{ChatMessage, ConversationStorage, Expiry, Role, SessionMeta};

use crate::journal::{Entry, Op, now_ns};
use crate::report::Counts;

/// How many brief sessions a run has.
pub const BRIEF_SESSIONS: usize = 3;

/// How far apart an append's stamps and an expiry instant must be for the append to count
/// as before or after it, for the clocks' granularity (Redis keeps milliseconds for its
/// own key expiry, the backends microseconds).
pub const MARGIN_NS: u64 = 5_000_000;

/// The journal's session name for a purge, which covers the whole storage.
pub const PURGE_SESSION: &str = "*";

/// The first instant of a run without a duration; each next one is four times as far
/// from the start (30, 120, 480 ms). Such a run's workers start and finish their few
/// operations in some tenths of a second, faster or slower with the machine's load, so
/// spreading the instants over scales puts appends on both sides of some of them.
const FIRST_WITHOUT_DURATION: Duration = Duration::from_millis(30);

/// The id of brief session `index`.
pub fn brief_id(index: usize) -> String {
    format!("brief-{index}")
}

/// The text of worker `worker`'s note number `n` (over all brief sessions).
pub fn note(worker: usize, n: usize) -> String {
    format!("brief note w{worker}-n{n}")
}

/// One brief session, as the coordinator created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brief {
    /// Its id.
    pub id: String,
    /// When it expires, ns since the epoch.
    pub expires_ns: u64,
    /// The note it was created with.
    pub seed: String,
    /// When its creation returned, ns since the epoch.
    pub seed_end_ns: u64,
}

/// Where an append lies against an expiry instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// Ended before it: stored in the session that expired.
    Before,
    /// Started after it: stored in the session that replaced it.
    After,
    /// Too close to tell.
    Either,
}

impl Brief {
    /// The expiry instants of a run starting at `start_ns`: spread evenly over its
    /// `seconds` when it has a duration, else from 30 ms after the start on, each
    /// four times as far as the one before.
    pub fn instants(start_ns: u64, seconds: Option<f64>) -> Vec<u64> {
        let offset = |k: usize| match seconds {
            Some(seconds) => seconds * (k + 1) as f64 / (BRIEF_SESSIONS + 1) as f64,
            None => FIRST_WITHOUT_DURATION.as_secs_f64() * 4f64.powi(k as i32),
        };
        (0..BRIEF_SESSIONS)
            .map(|k| start_ns.saturating_add((offset(k) * 1e9) as u64))
            .collect()
    }

    /// Creates brief session `index` in `storage`, expiring at `expires_ns`.
    pub async fn create(
        storage: &dyn ConversationStorage,
        index: usize,
        expires_ns: u64,
    ) -> Result<Brief> {
        let id = brief_id(index);
        let seed = format!("brief seed {index}");
        let meta =
            SessionMeta::new().expiry(Expiry::At(UNIX_EPOCH + Duration::from_nanos(expires_ns)));
        storage
            .create_session(&id, &meta, &[ChatMessage::user(seed.clone())])
            .await
            .with_context(|| format!("creating brief session {id}"))?;
        Ok(Brief {
            id,
            expires_ns,
            seed,
            seed_end_ns: now_ns(),
        })
    }

    fn when(&self, start_ns: u64, end_ns: u64) -> When {
        if end_ns.saturating_add(MARGIN_NS) < self.expires_ns {
            When::Before
        } else if start_ns > self.expires_ns.saturating_add(MARGIN_NS) {
            When::After
        } else {
            When::Either
        }
    }
}

/// One append of a note, as the journal has it.
struct Append<'e> {
    worker: usize,
    note: &'e str,
    when: When,
    acknowledged: bool,
}

/// Rule 9 for every brief session of the run, and the purges' total.
pub fn check(
    briefs: &[Brief],
    journal: &[Entry],
    stored: &BTreeMap<String, Vec<ChatMessage>>,
    counts: &mut Counts,
    out: &mut Vec<String>,
) {
    let empty = Vec::new();
    for brief in briefs {
        let appends: Vec<Append<'_>> = journal
            .iter()
            .filter(|e| e.session == brief.id)
            .filter_map(|e| match &e.op {
                Op::Brief { note, failure } => Some(Append {
                    worker: e.worker,
                    note,
                    when: brief.when(e.start_ns, e.end_ns),
                    acknowledged: failure.is_none(),
                }),
                _ => None,
            })
            .collect();
        let history = stored.get(&brief.id).unwrap_or(&empty);
        check_one(brief, &appends, history, counts, out);
    }
    let purged: usize = journal
        .iter()
        .map(|e| match &e.op {
            Op::Purge {
                removed: Some(removed),
                ..
            } => *removed,
            _ => 0,
        })
        .sum();
    counts.purged += purged;
    if purged > briefs.len() {
        out.push(format!(
            "purges removed {purged} sessions, but only {} ever expired",
            briefs.len()
        ));
    }
}

fn check_one(
    brief: &Brief,
    appends: &[Append<'_>],
    history: &[ChatMessage],
    counts: &mut Counts,
    out: &mut Vec<String>,
) {
    let id = &brief.id;
    let seed_when = brief.when(0, brief.seed_end_ns);
    let by_note: HashMap<&str, &Append<'_>> = appends.iter().map(|a| (a.note, a)).collect();
    let mut positions: HashMap<&str, usize> = HashMap::new();
    for (p, message) in history.iter().enumerate() {
        let text = message.content.as_str();
        let when = if text == brief.seed {
            seed_when
        } else if message.role == Role::User
            && let Some(append) = by_note.get(text)
        {
            append.when
        } else {
            out.push(format!(
                "{id}: holds a message no worker appended at {p}: {:?} {text:?}",
                message.role
            ));
            continue;
        };
        if let Some(first) = positions.insert(text, p) {
            out.push(format!(
                "{id}: {text:?} is stored twice, at {first} and {p}"
            ));
        }
        if when == When::Before {
            out.push(format!(
                "{id}: holds {text:?} at {p}, written before the session expired at {} ns: \
                 an expired session's message came back",
                brief.expires_ns
            ));
        }
    }
    if seed_when == When::Before && !positions.contains_key(brief.seed.as_str()) {
        counts.expired_notes += 1;
    }
    let mut last: HashMap<usize, (&str, usize)> = HashMap::new();
    for append in appends {
        let present = positions.get(append.note).copied();
        match (append.when, present) {
            (When::Before, None) => counts.expired_notes += 1,
            (When::After, None) if append.acknowledged => out.push(format!(
                "{id}: worker {}'s {:?}, acknowledged after the session expired at {} ns, \
                 is missing from the session that replaced it",
                append.worker, append.note, brief.expires_ns
            )),
            (When::After, Some(_)) if append.acknowledged => counts.notes_after_expiry += 1,
            _ => {}
        }
        let Some(p) = present else { continue };
        if let Some((earlier, q)) = last.insert(append.worker, (append.note, p))
            && q > p
        {
            out.push(format!(
                "{id}: worker {}'s {:?} (at {p}) is stored before its earlier {earlier:?} \
                 (at {q})",
                append.worker, append.note
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Failure;

    const X: u64 = 1_000_000_000;

    fn brief() -> Brief {
        Brief {
            id: "brief-0".into(),
            expires_ns: X,
            seed: "brief seed 0".into(),
            seed_end_ns: X - 100 * MARGIN_NS,
        }
    }

    fn append(worker: usize, n: usize, start_ns: u64, end_ns: u64, ok: bool) -> Entry {
        Entry {
            worker,
            session: "brief-0".into(),
            start_ns,
            end_ns,
            faults: 0,
            op: Op::Brief {
                note: note(worker, n),
                failure: (!ok).then(|| Failure {
                    conflict: false,
                    impossible: false,
                    text: "connection reset".into(),
                }),
            },
        }
    }

    fn purge(removed: usize) -> Entry {
        Entry {
            worker: 0,
            session: PURGE_SESSION.into(),
            start_ns: X,
            end_ns: X,
            faults: 0,
            op: Op::Purge {
                batch: 4,
                removed: Some(removed),
                failure: None,
            },
        }
    }

    fn run(journal: &[Entry], stored: &[&str]) -> (Counts, Vec<String>) {
        let history: Vec<ChatMessage> = stored.iter().map(|t| ChatMessage::user(*t)).collect();
        let stored = BTreeMap::from([("brief-0".to_string(), history)]);
        let (mut counts, mut out) = (Counts::default(), Vec::new());
        check(&[brief()], journal, &stored, &mut counts, &mut out);
        (counts, out)
    }

    const EARLY: (u64, u64) = (X - 20 * MARGIN_NS, X - 10 * MARGIN_NS);
    const LATE: (u64, u64) = (X + 10 * MARGIN_NS, X + 20 * MARGIN_NS);
    const LATER: (u64, u64) = (X + 30 * MARGIN_NS, X + 40 * MARGIN_NS);

    #[test]
    fn what_expired_is_gone_and_what_came_after_is_kept_in_order() {
        let journal = [
            append(0, 0, EARLY.0, EARLY.1, true),
            append(1, 0, X - MARGIN_NS, X + MARGIN_NS, true),
            append(0, 1, LATE.0, LATE.1, true),
            append(0, 2, LATER.0, LATER.1, true),
            append(1, 1, LATER.0, LATER.1, false),
            purge(1),
        ];
        let (counts, out) = run(&journal, &[&note(0, 1), &note(1, 0), &note(0, 2)]);
        assert_eq!(out, Vec::<String>::new());
        assert_eq!((counts.expired_notes, counts.notes_after_expiry), (2, 2));
        assert_eq!(counts.purged, 1);
    }

    #[test]
    fn an_expired_sessions_note_that_came_back_is_reported() {
        let journal = [append(0, 0, EARLY.0, EARLY.1, true)];
        let (_, out) = run(&journal, &[&note(0, 0)]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0].contains("an expired session's message came back"),
            "{out:?}"
        );
        let (_, out) = run(&[], &["brief seed 0"]);
        assert!(out[0].contains("came back"), "{out:?}");
    }

    #[test]
    fn a_lost_note_of_the_new_session_is_reported() {
        let journal = [
            append(0, 0, LATE.0, LATE.1, true),
            append(0, 1, LATER.0, LATER.1, true),
        ];
        let (_, out) = run(&journal, &[&note(0, 1)]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].contains("is missing from the session that replaced it"));
        // Failed, it may be missing.
        let journal = [append(0, 0, LATE.0, LATE.1, false)];
        assert_eq!(run(&journal, &[]).1, Vec::<String>::new());
    }

    #[test]
    fn duplicates_strangers_disorder_and_extra_purges_are_reported() {
        let journal = [
            append(0, 0, LATE.0, LATE.1, true),
            append(0, 1, LATER.0, LATER.1, true),
            purge(1),
            purge(1),
        ];
        let (_, out) = run(&journal, &[&note(0, 1), &note(0, 0), &note(0, 0), "hello"]);
        let all = out.join("\n");
        assert!(all.contains("stored twice"), "{all}");
        assert!(all.contains("is stored before its earlier"), "{all}");
        assert!(all.contains("no worker appended"), "{all}");
        assert!(
            all.contains("purges removed 2 sessions, but only 1"),
            "{all}"
        );
    }

    #[test]
    fn instants_lie_inside_the_run() {
        let spread = Brief::instants(X, Some(8.0));
        assert_eq!(
            spread,
            vec![X + 2_000_000_000, X + 4_000_000_000, X + 6_000_000_000]
        );
        let scaled = Brief::instants(X, None);
        assert_eq!(
            scaled,
            vec![X + 30_000_000, X + 120_000_000, X + 480_000_000]
        );
    }
}
