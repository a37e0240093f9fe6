//! Rule 11 of the checker: sessions nobody writes but to retitle them ("idle" sessions),
//! and the purge of the sessions not written since a cutoff (`purge_not_written_since`,
//! what `fusion sessions purge --older-than` runs).
//!
//! Before anything else of the run is written, the coordinator creates a few sessions
//! holding one message each, and fixes the run's cutoff a moment after them; it starts the
//! rest (brief sessions, workers) once the cutoff is past, so every other session is
//! written first after it and only idle sessions are ever older. Workers, straight through
//! the same storage as their other operations (layer, retry layer, faults):
//! - retitle an idle session (`update_session` with a new title), journaling the
//!   generation of the session it found, if it found one;
//! - purge the sessions last written before the cutoff, journaling each one it reported
//!   deleting with its generation as listed;
//! - renew them all: delete each and create it again with its one message and times
//!   before the cutoff (`create_session_with_times`, as an import does). A session written
//!   after the cutoff stays so, and one purged stays gone: without renewing, the race this
//!   rule is about (a retitle between a purge's listing and its delete) could happen once
//!   per session at the start of the run and never again.
//!
//! Generations are random and never reused, so one names one life of a session (a
//! metadata update keeps it). Using the journal's wall-clock stamps and [`MARGIN_NS`] for
//! the clocks' granularity, a retitle that started after the cutoff and found a session
//! wrote that life after the cutoff (its metadata only, so its revision did not move):
//! from then on no purge may delete it, even one that listed it before, and a purge that
//! deleted it earlier would have left the retitle nothing to find (a retitle creates
//! nothing). So:
//! - no purge reported deleting a life that a retitle after the cutoff found, nor any
//!   session but an idle one;
//! - that life is stored after the run, unless a renew (whose deletes come after the
//!   retitle's start) may have replaced it;
//! - an idle session stored after the run holds its one message and nothing else.
//!
//! A retitle that found nothing, or failed, promises nothing: under `--faults` a lost
//! attempt may have applied (and kept the session) or not. One that found a session did
//! apply, after it started, to the life it names: the retry layer answers only with an
//! attempt's own reply. A purge's delete whose reply was lost counts as its own when the
//! session is gone (the retry layer's settling), so a purge that met a lost reply may
//! report a life that a renew deleted: such a report is excused when a renew overlapped.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use fusion::storage::{StalePurge, purge_not_written_since};
use fusion_core::{ChatMessage, ConversationStorage, MetaUpdate, Role, SessionMeta, SessionTimes};

use crate::brief::MARGIN_NS;
use crate::journal::{Entry, Failure, Op, now_ns};
use crate::report::Counts;

/// How many idle sessions a run has: one purge deletes all those it listed one after
/// another, so the more it lists, the longer the later ones wait for their delete, which
/// a retitle may come in before.
pub const IDLE_SESSIONS: usize = 32;

/// The pages a stale purge reads its listing in: one session at a time (a listing per
/// delete, its cursor read past what was just deleted), a few, or all at once (every
/// delete after one listing).
pub const PAGES: [usize; 3] = [1, 3, 500];

/// The id of idle session `index`.
pub fn idle_id(index: usize) -> String {
    format!("idle-{index}")
}

/// The one message of idle session `index`, in each of its lives.
pub fn seed(index: usize) -> String {
    format!("idle seed {index}")
}

/// The title worker `worker`'s retitle number `n` writes.
pub fn title(worker: usize, n: usize) -> String {
    format!("idle title w{worker}-n{n}")
}

/// One idle session, as the coordinator created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idle {
    /// Its id.
    pub id: String,
    /// The one message it was created with.
    pub seed: String,
}

/// The run's idle sessions and cutoff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdleRun {
    /// The sessions, as created.
    pub sessions: Vec<Idle>,
    /// The cutoff of every purge, ns since the epoch: [`MARGIN_NS`] after the last
    /// creation returned.
    pub cutoff_ns: u64,
}

impl IdleRun {
    /// Creates the idle sessions in `storage` and fixes the cutoff after them. The caller
    /// writes nothing else before [`IdleRun::past`].
    pub async fn create(storage: &dyn ConversationStorage) -> Result<IdleRun> {
        let mut sessions = Vec::with_capacity(IDLE_SESSIONS);
        for index in 0..IDLE_SESSIONS {
            let id = idle_id(index);
            let seed = seed(index);
            let meta = SessionMeta::new().title(format!("idle {index}"));
            storage
                .create_session(&id, &meta, &[ChatMessage::user(seed.clone())])
                .await
                .with_context(|| format!("creating idle session {id}"))?;
            sessions.push(Idle { id, seed });
        }
        Ok(IdleRun {
            sessions,
            cutoff_ns: now_ns().saturating_add(MARGIN_NS),
        })
    }

    /// How long until the cutoff is past by [`MARGIN_NS`]: from then on, whatever is
    /// written is written after it, on every backend's clock.
    pub fn past(&self) -> Duration {
        let past = self.cutoff_ns.saturating_add(MARGIN_NS);
        Duration::from_nanos(past.saturating_sub(now_ns()))
    }
}

/// Retitles idle session `id` to `title` through `storage`.
pub async fn retitle(storage: &dyn ConversationStorage, id: &str, title: String) -> Op {
    let update = MetaUpdate::new().title(Some(title.clone()));
    let result = storage.update_session(id, &update).await;
    Op::Retitle {
        title,
        found: result
            .as_ref()
            .ok()
            .and_then(|info| info.as_ref())
            .map(|i| i.generation),
        failure: Failure::of_result(&result),
    }
}

/// Deletes every idle session in `storage` and creates each again, last written a second
/// before `cutoff_ns`; stops at the first failure.
pub async fn renew(storage: &dyn ConversationStorage, cutoff_ns: u64) -> Op {
    let before = UNIX_EPOCH + Duration::from_nanos(cutoff_ns.saturating_sub(1_000_000_000));
    let mut created = 0;
    for index in 0..IDLE_SESSIONS {
        let id = idle_id(index);
        let meta = SessionMeta::new().title(format!("idle {index}"));
        let seed = [ChatMessage::user(seed(index))];
        let times = SessionTimes::new(before, before);
        let result = match storage.delete(&id).await {
            Ok(()) => storage
                .create_session_with_times(&id, &meta, &seed, times)
                .await
                .map(|_| ()),
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            let failure = Some(Failure::of(&err));
            return Op::Renew { created, failure };
        }
        created += 1;
    }
    Op::Renew {
        created,
        failure: None,
    }
}

/// Purges from `storage` the sessions last written before `cutoff_ns`, reading the listing
/// `page` sessions at a time.
pub async fn purge(storage: &dyn ConversationStorage, cutoff_ns: u64, page: usize) -> Op {
    let purge = StalePurge {
        page,
        ..StalePurge::before(UNIX_EPOCH + Duration::from_nanos(cutoff_ns))
    };
    let mut deleted = Vec::new();
    let result = purge_not_written_since(storage, &purge, |info| {
        deleted.push((info.id.clone(), info.generation));
    });
    let result = result.await;
    Op::StalePurge {
        page,
        deleted,
        written_meanwhile: result.as_ref().ok().map(|r| r.written_meanwhile),
        failure: Failure::of_result(&result),
    }
}

/// Rule 11 for the run's idle sessions and purges, with `generations` the generation of
/// each session stored after the run.
pub fn check(
    idle: &IdleRun,
    journal: &[Entry],
    stored: &BTreeMap<String, Vec<ChatMessage>>,
    generations: &BTreeMap<String, u64>,
    counts: &mut Counts,
    out: &mut Vec<String>,
) {
    // Each life a purge reported deleting, and the first purge that did.
    let mut deleted_by: HashMap<(&str, u64), &Entry> = HashMap::new();
    for entry in journal {
        match &entry.op {
            Op::StalePurge {
                deleted,
                written_meanwhile,
                ..
            } => {
                counts.purge_kept_written += written_meanwhile.unwrap_or(0);
                for (id, generation) in deleted {
                    if !idle.sessions.iter().any(|s| s.id == *id) {
                        out.push(format!(
                            "{id}: worker {}'s stale purge at {} ns deleted it, but only \
                             idle sessions were written before its cutoff at {} ns",
                            entry.worker, entry.start_ns, idle.cutoff_ns
                        ));
                        continue;
                    }
                    counts.stale_purged += 1;
                    deleted_by.entry((id, *generation)).or_insert(entry);
                }
            }
            Op::Renew { created, .. } => counts.renewed += created,
            _ => {}
        }
    }
    let after_cutoff = idle.cutoff_ns.saturating_add(MARGIN_NS);
    let renews: Vec<(u64, u64)> = journal
        .iter()
        .filter(|e| matches!(e.op, Op::Renew { .. }))
        .map(|e| (e.start_ns, e.end_ns))
        .collect();
    // Whether a renew may have deleted a life between `from` and `to`.
    let renewed_within = |from: u64, to: u64| renews.iter().any(|&(s, e)| e >= from && s <= to);
    for session in &idle.sessions {
        let id = &session.id;
        if let Some(history) = stored.get(id) {
            let intact = matches!(history.as_slice(), [only]
                if only.role == Role::User && only.content == session.seed);
            if !intact {
                out.push(format!(
                    "{id}: holds {} messages after the run, not just its seed {:?}",
                    history.len(),
                    session.seed
                ));
            }
        }
        let now = stored.get(id).and_then(|_| generations.get(id)).copied();
        // The lives retitles after the cutoff found, each with the first that found it.
        let mut found: BTreeMap<u64, &Entry> = BTreeMap::new();
        for entry in journal.iter().filter(|e| e.session == *id) {
            if let Op::Retitle {
                found: Some(generation),
                ..
            } = entry.op
                && entry.start_ns > after_cutoff
            {
                found.entry(generation).or_insert(entry);
            }
        }
        for (generation, retitle) in found {
            let purge = deleted_by.get(&(id.as_str(), generation)).copied();
            // A faulted purge's report may be a renew's delete that it found done.
            let purged =
                purge.filter(|p| p.faults == 0 || !renewed_within(retitle.start_ns, p.end_ns));
            if let Some(p) = purged {
                out.push(format!(
                    "{id}: worker {}'s retitle at {}..{} ns, after the cutoff at {} ns, found \
                     it at generation {generation}, but worker {}'s stale purge at {}..{} ns \
                     reported deleting that generation: a purge deleted a session written \
                     after its cutoff",
                    retitle.worker,
                    retitle.start_ns,
                    retitle.end_ns,
                    idle.cutoff_ns,
                    p.worker,
                    p.start_ns,
                    p.end_ns
                ));
                continue;
            }
            if now == Some(generation) {
                counts.idle_kept += 1;
            } else if !renewed_within(retitle.start_ns, u64::MAX) {
                let after = match now {
                    Some(now) => format!("at generation {now}"),
                    None => "gone".to_string(),
                };
                out.push(format!(
                    "{id}: worker {}'s retitle at {}..{} ns, after the cutoff at {} ns, found \
                     it at generation {generation}, but after the run it is {after}, and no \
                     renew came after",
                    retitle.worker, retitle.start_ns, retitle.end_ns, idle.cutoff_ns
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUTOFF: u64 = 1_000_000_000;
    const LATE: u64 = CUTOFF + 10 * MARGIN_NS;

    fn run() -> IdleRun {
        IdleRun {
            sessions: (0..2)
                .map(|i| Idle {
                    id: idle_id(i),
                    seed: seed(i),
                })
                .collect(),
            cutoff_ns: CUTOFF,
        }
    }

    fn entry(worker: usize, session: &str, start_ns: u64, op: Op) -> Entry {
        Entry {
            worker,
            session: session.into(),
            start_ns,
            end_ns: start_ns + 1_000,
            faults: 0,
            op,
        }
    }

    fn retitle(worker: usize, index: usize, start_ns: u64, found: Option<u64>) -> Entry {
        let op = Op::Retitle {
            title: title(worker, 0),
            found,
            failure: None,
        };
        entry(worker, &idle_id(index), start_ns, op)
    }

    fn purge(worker: usize, start_ns: u64, deleted: &[(&str, u64)], kept: usize) -> Entry {
        let op = Op::StalePurge {
            page: 500,
            deleted: deleted.iter().map(|(d, g)| (d.to_string(), *g)).collect(),
            written_meanwhile: Some(kept),
            failure: None,
        };
        entry(worker, "*", start_ns, op)
    }

    /// Checks `journal` against idle sessions stored after the run as (index, generation).
    fn check_with(journal: &[Entry], stored: &[(usize, u64)]) -> (Counts, Vec<String>) {
        let history = |i: usize| vec![ChatMessage::user(seed(i))];
        let generations = stored.iter().map(|&(i, g)| (idle_id(i), g)).collect();
        let stored = stored
            .iter()
            .map(|&(i, _)| (idle_id(i), history(i)))
            .collect();
        let (mut counts, mut out) = (Counts::default(), Vec::new());
        check(
            &run(),
            journal,
            &stored,
            &generations,
            &mut counts,
            &mut out,
        );
        (counts, out)
    }

    fn renew(start_ns: u64, faults: usize) -> Entry {
        let op = Op::Renew {
            created: 2,
            failure: None,
        };
        let mut renew = entry(4, "*", start_ns, op);
        renew.faults = faults;
        renew
    }

    #[test]
    fn a_retitled_session_is_kept_and_an_untouched_one_purged_and_renewed() {
        let journal = [
            retitle(0, 0, LATE, Some(5)),
            purge(1, LATE + 5_000, &[("idle-1", 7)], 1),
            retitle(2, 1, LATE + 10_000, None),
            renew(LATE + 20_000, 0),
            // Found the renewed lives: those are kept.
            retitle(3, 1, LATE + 30_000, Some(9)),
            retitle(3, 0, LATE + 40_000, Some(8)),
        ];
        let (counts, out) = check_with(&journal, &[(0, 8), (1, 9)]);
        assert_eq!(out, Vec::<String>::new());
        let kept = (counts.idle_kept, counts.stale_purged, counts.renewed);
        assert_eq!(kept, (2, 1, 2));
        assert_eq!(counts.purge_kept_written, 1);
    }

    #[test]
    fn a_life_retitled_after_the_cutoff_and_purged_is_reported() {
        // What a purge deleting under the listed revision alone does: the retitle wrote
        // only metadata between the purge's listing and its delete.
        let journal = [
            purge(1, LATE, &[("idle-0", 5)], 0),
            retitle(0, 0, LATE + 100, Some(5)),
        ];
        let (_, out) = check_with(&journal, &[(1, 6)]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].contains("worker 1's stale purge at"), "{out:?}");
        assert!(out[0].contains("a purge deleted a session written after its cutoff"));
        // Renewed since: the purge's report still breaks the rule, being its own delete.
        let mut renewed = journal.to_vec();
        renewed.push(renew(LATE + 200, 0));
        let (_, out) = check_with(&renewed, &[(0, 8), (1, 6)]);
        assert_eq!(out.len(), 1, "{out:?}");
        // Unless the purge met a lost reply: then its report may be the renew's delete.
        renewed[0].faults = 1;
        assert_eq!(check_with(&renewed, &[(0, 8)]).1, Vec::<String>::new());
        // Gone with no purge nor renew to explain it.
        let lost = [retitle(0, 0, LATE, Some(5))];
        let (_, out) = check_with(&lost, &[(0, 6)]);
        assert!(
            out[0].contains("after the run it is at generation 6"),
            "{out:?}"
        );
        // Found by a retitle that started before the cutoff: nothing kept it.
        let early = [retitle(0, 0, CUTOFF, Some(5))];
        assert_eq!(check_with(&early, &[]).1, Vec::<String>::new());
    }

    #[test]
    fn a_working_session_purged_or_an_idle_one_changed_is_reported() {
        let journal = [purge(1, LATE, &[("shared-0", 3), ("idle-1", 4)], 0)];
        let (counts, out) = check_with(&journal, &[(0, 5)]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0].contains("shared-0: worker 1's stale purge"),
            "{out:?}"
        );
        assert!(out[0].contains("but only idle sessions"), "{out:?}");
        assert_eq!(counts.stale_purged, 1);

        let mut stored = BTreeMap::new();
        let history = vec![ChatMessage::user(seed(0)), ChatMessage::user("hello")];
        stored.insert(idle_id(0), history);
        let generations = BTreeMap::from([(idle_id(0), 5)]);
        let (mut counts, mut out) = (Counts::default(), Vec::new());
        check(&run(), &[], &stored, &generations, &mut counts, &mut out);
        assert!(out[0].contains("holds 2 messages"), "{out:?}");
    }
}
