//! The checker: after every worker has exited, compares the stored sessions with the
//! workers' journals.
//!
//! Rules (each break is one violation line):
//! 1. Every non-empty session starts with the system prompt and holds it exactly once (a
//!    session's opening append is create-only, whoever starts it).
//! 2. No message is stored twice (checked by [`crate::duplicates`]: by id, tag or tagged
//!    answer, after the run and in every reload's snapshot), and a shared session holds
//!    only its own tags.
//! 3. Each acknowledged turn's user message is present, and its final answer follows it
//!    (order, not contiguity: other writers may interleave), before the same writer's next
//!    present turn, unless the turn is excused: that writer's own undo listed the tag as
//!    removed (or failed in a way that leaves open whether it applied: other than by
//!    conflict, or by a conflict after a lost reply), or a delete of the session ended
//!    after the turn started (its window overlapped or followed it). A conflicting undo
//!    that met no lost reply excuses nothing: it must have removed nothing.
//! 4. A writer's present acknowledged turns appear in the order it sent them.
//! 5. An undo removed only the turn it was meant to undo (the worker undoes only right after
//!    its own acknowledged turn), and that tag is gone.
//! 6. Every stored summary record covering positions `0..covers` comes after them and
//!    names every tag of the user messages there (the mock summarizer names every tag it
//!    is shown, and each summary folds in the previous one, so a summary that misses a
//!    tag hides that message from every later request).
//! 7. No operation fails in a way no interleaving of writers may cause: the storage
//!    finding the session corrupt (a session row counting messages a racing delete
//!    removed, say), which fails every later call on that session until someone deletes
//!    it; or refusing a writer as not the session's owner, when every writer of a session
//!    is its owner (a racing delete let a write create it without its owner, say).
//! 8. The storage's listings agree with the histories (checked by [`crate::listing`], on
//!    what the storage listed after the run).
//! 9. Sessions that expired during the run lost what was written before their instant and
//!    nothing written after it, and the purges removed no more than expired (checked by
//!    [`crate::brief`]).
//! 10. Each acknowledged turn answered its own message (`ack <its tag>`): a turn whose
//!     request ended with another writer's message would answer that one instead.
//! 11. An idle session that a retitle after the cutoff found is still stored with its one
//!     message, and the purges of sessions not written since the cutoff deleted only idle
//!     ones (checked by [`crate::idle`]).
//!
//! Rules 3 to 5 are checked after the run, and also against every successful reload's
//! snapshot (what the worker's session read from storage during the run): there, a turn
//! counts only if it was acknowledged before the reload started, and a delete or undo
//! excuses it only if it started before the reload ended. Deletes wipe most of a long
//! run's messages by the end, so the reloads are where most acknowledged messages are
//! seen.
//!
//! No rule depends on timing except through the logged order of wall-clock stamps.
//!
//! With injected faults (`--faults`), an operation that succeeded is held to every rule
//! as it is without them (the retry layer claims it settled its lost replies); one that
//! failed after a lost reply may or may not have applied, and is accepted either way,
//! as any failed turn already is (its messages may be stored or not, never twice).

use std::collections::{BTreeMap, HashMap};

use fusion_agent::context::SUMMARY_KEY;
use fusion_core::{ChatMessage, Role};

use crate::brief::{self, Brief};
use crate::idle::{self, IdleRun};
use crate::journal::{Entry, Op};
use crate::report::Report;
use crate::tags::{Tag, tags_in};
use crate::{duplicates, journal_rules};

/// What a run left behind, as the checker reads it.
pub struct RunRecord<'a> {
    /// The system prompt every session was built with.
    pub system_prompt: &'a str,
    /// The shared session ids; the position is the session index in tags.
    pub shared: &'a [String],
    /// Every worker's journal entries, each worker's in its own order.
    pub journal: &'a [Entry],
    /// The sessions that expired during the run, as the coordinator created them.
    pub brief: &'a [Brief],
    /// The idle sessions and the stale purges' cutoff, as the coordinator fixed them.
    pub idle: &'a IdleRun,
    /// Every stored session (shared ones, forks, brief ones) as loaded after the run.
    pub stored: &'a BTreeMap<String, Vec<ChatMessage>>,
    /// The generation of every session `session_info` found after the run.
    pub generations: &'a BTreeMap<String, u64>,
}

/// Checks `run` and counts what it holds.
pub fn check(run: &RunRecord<'_>) -> Report {
    let mut report = Report::default();
    report.counts.add_ops(run.journal);
    for (id, history) in run.stored {
        report.counts.sessions += 1;
        let own_shape =
            run.brief.iter().any(|b| b.id == *id) || run.idle.sessions.iter().any(|s| s.id == *id);
        if !own_shape {
            check_session_shape(run.system_prompt, id, history, &mut report);
        }
    }
    let empty = Vec::new();
    for (index, id) in run.shared.iter().enumerate() {
        let history = run.stored.get(id).unwrap_or(&empty);
        check_foreign_tags(index, id, history, &mut report.violations);
        let log = SessionLog::new(run.journal, id);
        for point in reload_points(run.journal, id) {
            check_acknowledged(&log, &point, &mut report);
        }
        check_acknowledged(&log, &final_point(id, history), &mut report);
    }
    report
        .violations
        .extend(duplicates::in_reloads(run.journal));
    journal_rules::check(run.journal, &mut report.violations);
    brief::check(
        run.brief,
        run.journal,
        run.stored,
        &mut report.counts,
        &mut report.violations,
    );
    idle::check(
        run.idle,
        run.journal,
        run.stored,
        run.generations,
        &mut report.counts,
        &mut report.violations,
    );
    report
}

/// Rules 1, 2 (duplicates) and 6, for any stored session.
fn check_session_shape(prompt: &str, id: &str, history: &[ChatMessage], report: &mut Report) {
    let violations = &mut report.violations;
    if history.is_empty() {
        return;
    }
    let is_prompt = |m: &ChatMessage| m.role == Role::System && m.content == prompt;
    let prompts: Vec<usize> = positions(history, is_prompt);
    if prompts != [0] {
        violations.push(format!(
            "{id}: the system prompt must be stored once at position 0, found at {prompts:?} \
             (first message: {})",
            describe(&history[0])
        ));
    }
    violations.extend(duplicates::in_history(id, history));
    for (r, record) in history.iter().enumerate() {
        let Some(covers) = summary_covers(record) else {
            continue;
        };
        report.counts.summaries += 1;
        if covers > r {
            violations.push(format!(
                "{id}: summary record at {r} claims to cover 0..{covers}, past itself"
            ));
        }
        let named = tags_in(&record.content);
        for (p, message) in history.iter().enumerate().take(covers.min(r)) {
            if message.role != Role::User {
                continue;
            }
            for tag in tags_in(&message.content) {
                if !named.contains(&tag) {
                    violations.push(format!(
                        "{id}: summary record at {r} (covers 0..{covers}) hides {tag} at {p}: \
                         its text does not name it"
                    ));
                }
            }
        }
    }
}

/// Rule 2 (foreign tags) for shared session number `index`.
fn check_foreign_tags(index: usize, id: &str, history: &[ChatMessage], out: &mut Vec<String>) {
    for (p, message) in history.iter().enumerate() {
        if message.role != Role::User {
            continue;
        }
        for tag in tags_in(&message.content) {
            if tag.session != index {
                out.push(format!(
                    "{id}: holds {tag} at {p}, a message sent to another session"
                ));
            }
        }
    }
}

/// One acknowledged turn of a writer on the session being checked.
struct Acked<'e> {
    entry: &'e Entry,
    tag: &'e str,
    message: &'e str,
    answer: &'e str,
}

/// A moment when a session's contents are known: the load after the run, or a worker's
/// reload during it.
struct Point<'a> {
    /// Where the contents come from, for messages.
    label: String,
    /// The stored messages as (role, text), in stored order (a reload's snapshot holds
    /// only user and assistant messages, so its positions are within the snapshot).
    messages: Vec<(Role, &'a str)>,
    /// The load began after this: turns acknowledged before it must be there.
    start_ns: u64,
    /// The load had read storage by this: deletes and undos that started later cannot
    /// have removed anything from it.
    end_ns: u64,
}

impl Point<'_> {
    fn is_final(&self) -> bool {
        self.start_ns == u64::MAX
    }
}

/// The point after the run: everything is over, so every turn and every delete counts.
fn final_point<'a>(id: &str, history: &'a [ChatMessage]) -> Point<'a> {
    Point {
        label: format!("{id} after the run"),
        messages: history
            .iter()
            .map(|m| (m.role, m.content.as_str()))
            .collect(),
        start_ns: u64::MAX,
        end_ns: u64::MAX,
    }
}

/// The points where workers reloaded session `id` during the run.
fn reload_points<'a>(journal: &'a [Entry], id: &str) -> Vec<Point<'a>> {
    let reloads = journal.iter().filter(|e| e.session == id);
    reloads
        .filter_map(|e| match &e.op {
            Op::Reload {
                failure: None,
                snapshot,
            } => Some(Point {
                label: format!(
                    "{id} as worker {}'s reload at {} ns read it",
                    e.worker, e.start_ns
                ),
                messages: snapshot.iter().filter_map(|s| snapshot_item(s)).collect(),
                start_ns: e.start_ns,
                end_ns: e.end_ns,
            }),
            _ => None,
        })
        .collect()
}

/// What the journal says about one shared session, indexed for checking many points.
struct SessionLog<'e> {
    /// Each worker's acknowledged turns, in its order.
    turns: BTreeMap<usize, Vec<Acked<'e>>>,
    /// Each tag's undo, by the tag's own writer: how it excuses, and its window.
    undos: HashMap<&'e str, (UndoExcuse, u64, u64)>,
    /// Every delete's window.
    deletes: Vec<(u64, u64)>,
}

impl<'e> SessionLog<'e> {
    fn new(journal: &'e [Entry], id: &str) -> Self {
        let mut log = SessionLog {
            turns: BTreeMap::new(),
            undos: HashMap::new(),
            deletes: Vec::new(),
        };
        for entry in journal.iter().filter(|e| e.session == id) {
            match &entry.op {
                Op::Turn { .. } => {
                    if let Some(turn) = acknowledged(entry) {
                        log.turns.entry(entry.worker).or_default().push(turn);
                    }
                }
                Op::Undo { intended, .. } => {
                    let own = Tag::parse(intended).is_some_and(|t| t.worker == entry.worker);
                    if let Some(excuse) = undo_excuse(entry).filter(|_| own) {
                        let window = (excuse, entry.start_ns, entry.end_ns);
                        log.undos.insert(intended.as_str(), window);
                    }
                }
                Op::Delete { .. } => log.deletes.push((entry.start_ns, entry.end_ns)),
                _ => {}
            }
        }
        log
    }
}

/// Rules 3, 4 and 5 for one shared session at `point`.
fn check_acknowledged(log: &SessionLog<'_>, point: &Point<'_>, report: &mut Report) {
    let at = &point.label;
    let counts = &mut report.counts;
    if !point.is_final() {
        counts.reloads_checked += 1;
    }
    // A delete that started before the load ended may have removed any turn that started
    // before the delete ended: only the latest such end matters.
    let deleted_until = log
        .deletes
        .iter()
        .filter(|(start, _)| *start <= point.end_ns)
        .map(|(_, end)| *end)
        .max();
    let mut users: HashMap<&str, usize> = HashMap::new();
    let mut answers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (p, &(role, text)) in point.messages.iter().enumerate() {
        match role {
            Role::User => {
                users.entry(text).or_insert(p);
            }
            Role::Assistant => answers.entry(text).or_default().push(p),
            _ => {}
        }
    }
    for (worker, turns) in &log.turns {
        // (tag, user position, answer position) of this writer's present turns, in order.
        let mut present: Vec<(&str, usize, usize)> = Vec::new();
        for turn in turns.iter().filter(|t| t.entry.end_ns < point.start_ns) {
            if point.is_final() {
                counts.acknowledged += 2;
            }
            let undone = log
                .undos
                .get(turn.tag)
                .filter(|(_, start, _)| *start <= point.end_ns);
            let deleted = deleted_until.is_some_and(|end| end >= turn.entry.start_ns);
            let Some(&p) = users.get(turn.message) else {
                let last = usize::from(point.is_final()) * 2;
                let after_conflict = undone
                    .is_some_and(|(excuse, _, _)| *excuse == UndoExcuse::ConflictAfterLostReply);
                if undone.is_some() && !after_conflict {
                    counts.removed_by_undo += last;
                } else if deleted {
                    counts.removed_by_delete += last;
                } else if after_conflict {
                    // Nothing else removed it: the undo did, though it answered a conflict.
                    counts.removed_by_undo += last;
                    counts.undone_despite_conflict += last;
                } else {
                    report.violations.push(format!(
                        "{at}: acknowledged turn {} of worker {worker} (started {} ns) is \
                         missing; no undo of its own and no delete explains it",
                        turn.tag, turn.entry.start_ns
                    ));
                }
                continue;
            };
            if let Some((UndoExcuse::Reported, _, undo_end)) = undone
                && *undo_end < point.start_ns
            {
                report.violations.push(format!(
                    "{at}: worker {worker}'s undo reported removing {} but it is still \
                     stored at {p}",
                    turn.tag
                ));
            }
            let answer_at = answers
                .get(turn.answer)
                .and_then(|qs| qs.iter().copied().find(|&q| q > p));
            match answer_at {
                Some(q) => {
                    if point.is_final() {
                        counts.verified += 2;
                    } else {
                        counts.verified_at_reloads += 2;
                    }
                    present.push((turn.tag, p, q));
                }
                None => report.violations.push(format!(
                    "{at}: acknowledged answer {:?} of {} (user message at {p}) is not \
                     stored after it",
                    turn.answer, turn.tag
                )),
            }
        }
        for pair in present.windows(2) {
            let ((a, pa, qa), (b, pb, _)) = (pair[0], pair[1]);
            if pb <= pa {
                report.violations.push(format!(
                    "{at}: worker {worker}'s {b} (at {pb}) is stored before its earlier {a} \
                     (at {pa})"
                ));
            } else if pb < qa {
                report.violations.push(format!(
                    "{at}: worker {worker}'s answer to {a} (at {qa}) is stored after its next \
                     turn {b} (at {pb})"
                ));
            }
        }
    }
}

fn acknowledged(entry: &Entry) -> Option<Acked<'_>> {
    match &entry.op {
        Op::Turn {
            tag,
            message,
            answer: Some(answer),
            failure: None,
        } => Some(Acked {
            entry,
            tag,
            message,
            answer,
        }),
        _ => None,
    }
}

/// Why a writer's own later undo may have removed its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UndoExcuse {
    /// The undo succeeded and listed the tag among what it removed.
    Reported,
    /// The undo failed other than by conflict, so whether it removed its turn is unknown.
    Unknown,
    /// The undo answered a conflict after a lost reply: its lost attempt may have applied
    /// before another writer changed the session, which the retry layer cannot tell.
    ConflictAfterLostReply,
}

/// How an undo excuses the absence of the turn it was meant to remove (`intended`).
fn undo_excuse(entry: &Entry) -> Option<UndoExcuse> {
    let Op::Undo {
        intended,
        removed,
        failure,
        ..
    } = &entry.op
    else {
        return None;
    };
    match failure {
        None if removed.contains(intended) => Some(UndoExcuse::Reported),
        Some(f) if !f.conflict => Some(UndoExcuse::Unknown),
        Some(_) if entry.may_have_applied() => Some(UndoExcuse::ConflictAfterLostReply),
        _ => None,
    }
}

/// A reload snapshot's item `u:<text>` or `a:<text>` (see [`crate::journal::snapshot`]).
fn snapshot_item(item: &str) -> Option<(Role, &str)> {
    match item.split_at_checked(2)? {
        ("u:", text) => Some((Role::User, text)),
        ("a:", text) => Some((Role::Assistant, text)),
        _ => None,
    }
}

fn summary_covers(message: &ChatMessage) -> Option<usize> {
    if message.role != Role::System {
        return None;
    }
    let covers = message.metadata.get(SUMMARY_KEY)?.get("covers")?.as_u64()?;
    usize::try_from(covers).ok()
}

fn positions(history: &[ChatMessage], pred: impl Fn(&ChatMessage) -> bool) -> Vec<usize> {
    history
        .iter()
        .enumerate()
        .filter(|(_, m)| pred(m))
        .map(|(p, _)| p)
        .collect()
}

fn describe(message: &ChatMessage) -> String {
    let mut text: String = message.content.chars().take(60).collect();
    if text.len() < message.content.len() {
        text.push('…');
    }
    format!("{:?} {text:?}", message.role)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Failure;
    use crate::tags::{answer, user_message};
    use fusion_agent::context::summary_record;

    const PROMPT: &str = "stress prompt";
    const S0: &str = "shared-0";

    fn tag(worker: usize, turn: usize) -> Tag {
        Tag {
            worker,
            session: 0,
            turn,
        }
    }

    fn turn(worker: usize, k: usize, start: u64, end: u64) -> Entry {
        let t = tag(worker, k);
        Entry {
            worker,
            session: S0.into(),
            start_ns: start,
            end_ns: end,
            faults: 0,
            op: Op::Turn {
                tag: t.to_string(),
                message: user_message(t),
                answer: Some(answer(t)),
                failure: None,
            },
        }
    }

    fn failed_turn(worker: usize, k: usize, start: u64, end: u64) -> Entry {
        let mut entry = turn(worker, k, start, end);
        if let Op::Turn {
            answer, failure, ..
        } = &mut entry.op
        {
            *answer = None;
            *failure = Some(Failure {
                conflict: true,
                impossible: false,
                text: "conflict".into(),
            });
        }
        entry
    }

    fn undo(worker: usize, k: usize, removed: &[Tag], failure: Option<Failure>) -> Entry {
        Entry {
            worker,
            session: S0.into(),
            start_ns: 1_000,
            end_ns: 1_001,
            faults: 0,
            op: Op::Undo {
                intended: tag(worker, k).to_string(),
                removed: removed.iter().map(Tag::to_string).collect(),
                count: removed.len() * 2,
                failure,
            },
        }
    }

    fn delete(worker: usize, start: u64, end: u64) -> Entry {
        Entry {
            worker,
            session: S0.into(),
            start_ns: start,
            end_ns: end,
            faults: 0,
            op: Op::Delete { failure: None },
        }
    }

    fn reload(worker: usize, start: u64, end: u64, seen: &[ChatMessage]) -> Entry {
        Entry {
            worker,
            session: S0.into(),
            start_ns: start,
            end_ns: end,
            faults: 0,
            op: Op::Reload {
                failure: None,
                snapshot: crate::journal::snapshot(seen),
            },
        }
    }

    /// The user message and answer of each tag, in the given order.
    fn messages(tags: &[Tag]) -> Vec<ChatMessage> {
        tags.iter()
            .flat_map(|&t| {
                [
                    ChatMessage::user(user_message(t)),
                    ChatMessage::assistant(answer(t)),
                ]
            })
            .collect()
    }

    fn session(body: Vec<ChatMessage>) -> Vec<ChatMessage> {
        let mut history = vec![ChatMessage::system(PROMPT)];
        history.extend(body);
        history
    }

    fn check_one(journal: &[Entry], history: Vec<ChatMessage>) -> Report {
        let shared = vec![S0.to_string()];
        let mut stored = BTreeMap::new();
        if !history.is_empty() {
            stored.insert(S0.to_string(), history);
        }
        check(&RunRecord {
            system_prompt: PROMPT,
            shared: &shared,
            journal,
            brief: &[],
            idle: &IdleRun::default(),
            stored: &stored,
            generations: &BTreeMap::new(),
        })
    }

    fn assert_violation(report: &Report, needle: &str) {
        assert!(
            report.violations.iter().any(|v| v.contains(needle)),
            "expected a violation containing {needle:?}, got {:#?}",
            report.violations
        );
    }

    #[test]
    fn interleaved_writers_with_everything_stored_pass_and_are_counted() {
        let journal = [
            turn(0, 1, 10, 20),
            turn(1, 1, 11, 21),
            failed_turn(1, 2, 22, 23),
            turn(0, 2, 24, 30),
        ];
        // Turns interleave: 0's user message, 1's user message, then both answers.
        let mut body = vec![
            ChatMessage::user(user_message(tag(0, 1))),
            ChatMessage::user(user_message(tag(1, 1))),
            ChatMessage::assistant(answer(tag(1, 1))),
            ChatMessage::assistant(answer(tag(0, 1))),
        ];
        body.extend(messages(&[tag(0, 2)]));
        let report = check_one(&journal, session(body));
        assert!(report.passed(), "{:#?}", report.violations);
        assert_eq!(report.counts.acknowledged, 6);
        assert_eq!(report.counts.verified, 6);
        assert_eq!(report.counts.ops["turn"].ok, 3);
        assert_eq!(report.counts.ops["turn"].conflicts, 1);
    }

    #[test]
    fn a_missing_acknowledged_turn_is_a_violation() {
        let journal = [turn(0, 1, 10, 20), turn(1, 1, 11, 21)];
        let report = check_one(&journal, session(messages(&[tag(0, 1)])));
        assert_violation(&report, "acknowledged turn w1-s0-k1 of worker 1");
        let report = check_one(
            &journal,
            session(vec![ChatMessage::user(user_message(tag(0, 1)))]),
        );
        assert_violation(
            &report,
            "\"ack w0-s0-k1\" of w0-s0-k1 (user message at 1) is not stored",
        );
    }

    #[test]
    fn only_the_writers_own_undo_excuses_its_turn() {
        let own = [turn(0, 1, 10, 20), undo(0, 1, &[tag(0, 1)], None)];
        let report = check_one(&own, session(vec![]));
        assert!(report.passed(), "{:#?}", report.violations);
        assert_eq!(report.counts.removed_by_undo, 2);

        // Worker 1's undo reporting worker 0's tag does not excuse worker 0's turn.
        let other = [
            turn(0, 1, 10, 20),
            turn(1, 2, 30, 40),
            undo(1, 2, &[tag(0, 1), tag(1, 2)], None),
        ];
        let report = check_one(&other, session(vec![]));
        assert_violation(&report, "acknowledged turn w0-s0-k1 of worker 0");
        assert_violation(
            &report,
            "worker 1's undo of w1-s0-k2 also removed [\"w0-s0-k1\"]",
        );
        assert_eq!(report.counts.removed_by_undo, 2);
    }

    #[test]
    fn a_conflicting_undo_excuses_nothing_and_an_unknown_failure_excuses_its_own_turn() {
        let conflict = Failure {
            conflict: true,
            impossible: false,
            text: "conflict".into(),
        };
        let report = check_one(
            &[turn(0, 1, 10, 20), undo(0, 1, &[], Some(conflict))],
            session(vec![]),
        );
        assert_violation(&report, "acknowledged turn w0-s0-k1");
        let io = Failure {
            conflict: false,
            impossible: false,
            text: "io".into(),
        };
        let report = check_one(
            &[turn(0, 1, 10, 20), undo(0, 1, &[], Some(io))],
            session(vec![]),
        );
        assert!(report.passed(), "{:#?}", report.violations);
    }

    #[test]
    fn a_failure_no_interleaving_may_cause_is_a_violation() {
        let mut reload = reload(1, 50, 60, &[]);
        reload.op = Op::Reload {
            failure: Some(Failure {
                conflict: false,
                impossible: true,
                text: "session is corrupt: message seq 0 is missing".into(),
            }),
            snapshot: Vec::new(),
        };
        let report = check_one(&[reload], Vec::new());
        assert_violation(
            &report,
            "worker 1's reload failed as no interleaving may: session is corrupt",
        );
    }

    #[test]
    fn an_undo_that_reported_removing_a_stored_turn_is_a_violation() {
        let journal = [turn(0, 1, 10, 20), undo(0, 1, &[tag(0, 1)], None)];
        let report = check_one(&journal, session(messages(&[tag(0, 1)])));
        assert_violation(
            &report,
            "undo reported removing w0-s0-k1 but it is still stored",
        );
    }

    #[test]
    fn a_delete_excuses_turns_started_before_it_ended_only() {
        // Delete window 50..60: the turn 10..20 may be gone, the turn 70..80 may not.
        let journal = [turn(0, 1, 10, 20), delete(1, 50, 60), turn(0, 2, 70, 80)];
        let report = check_one(&journal, session(messages(&[tag(0, 2)])));
        assert!(report.passed(), "{:#?}", report.violations);
        assert_eq!(report.counts.removed_by_delete, 2);
        let report = check_one(&journal, Vec::new());
        assert_violation(&report, "acknowledged turn w0-s0-k2");
        // A delete overlapping the turn (started before it ended) excuses it too.
        let overlapping = [turn(0, 1, 10, 20), delete(1, 5, 15)];
        assert!(check_one(&overlapping, Vec::new()).passed());
    }

    #[test]
    fn a_writers_turns_out_of_order_are_a_violation() {
        let journal = [turn(0, 1, 10, 20), turn(0, 2, 30, 40)];
        let report = check_one(&journal, session(messages(&[tag(0, 2), tag(0, 1)])));
        assert_violation(
            &report,
            "w0-s0-k2 (at 1) is stored before its earlier w0-s0-k1 (at 3)",
        );
        let interleaved = session(vec![
            ChatMessage::user(user_message(tag(0, 1))),
            ChatMessage::user(user_message(tag(0, 2))),
            ChatMessage::assistant(answer(tag(0, 1))),
            ChatMessage::assistant(answer(tag(0, 2))),
        ]);
        let report = check_one(&journal, interleaved);
        assert_violation(
            &report,
            "answer to w0-s0-k1 (at 3) is stored after its next turn",
        );
    }

    #[test]
    fn the_system_prompt_must_be_stored_once_at_the_start() {
        let journal = [turn(0, 1, 10, 20)];
        let twice = {
            let mut h = session(messages(&[tag(0, 1)]));
            h.insert(1, ChatMessage::system(PROMPT));
            h
        };
        assert_violation(&check_one(&journal, twice), "found at [0, 1]");
        // A session resurrected by a late append holds a fragment without its prompt.
        let fragment = vec![ChatMessage::assistant(answer(tag(0, 1)))];
        let report = check_one(&[], fragment);
        assert_violation(&report, "found at [] (first message: Assistant");
    }

    #[test]
    fn duplicates_and_foreign_tags_are_violations() {
        let duplicated = session(messages(&[tag(0, 1), tag(0, 1)]));
        assert_violation(
            &check_one(&[], duplicated),
            "w0-s0-k1 stored twice, at 1 and 3",
        );
        let foreign = Tag {
            worker: 0,
            session: 1,
            turn: 1,
        };
        assert_violation(
            &check_one(&[], session(messages(&[foreign]))),
            "sent to another session",
        );
    }

    #[test]
    fn a_summary_must_name_every_user_tag_it_covers() {
        let mut history = session(messages(&[tag(0, 1), tag(1, 1), tag(0, 2)]));
        // Covers 1..5: the first two turns.
        history.push(summary_record("Summary: notes w0-s0-k1 w1-s0-k1.", 5));
        let report = check_one(&[], history.clone());
        assert!(report.passed(), "{:#?}", report.violations);
        assert_eq!(report.counts.summaries, 1);

        history.push(summary_record("Summary: notes w0-s0-k1 w0-s0-k2.", 7));
        assert_violation(
            &check_one(&[], history),
            "summary record at 8 (covers 0..7) hides w1-s0-k1 at 3",
        );

        let mut early = session(messages(&[tag(0, 1)]));
        early.insert(1, summary_record("Summary: notes.", 3));
        assert_violation(&check_one(&[], early), "claims to cover 0..3, past itself");
    }

    #[test]
    fn a_reload_must_have_read_every_turn_acknowledged_before_it_started() {
        // Worker 0's k1 was acknowledged (ended at 20) before worker 1's reload at 30..40,
        // which read only the prompt; k2 ended after the reload started, so it may be absent.
        let journal = [
            turn(0, 1, 10, 20),
            turn(0, 2, 25, 35),
            reload(1, 30, 40, &[]),
        ];
        let after = session(messages(&[tag(0, 1), tag(0, 2)]));
        let report = check_one(&journal, after.clone());
        assert_violation(
            &report,
            "reload at 30 ns read it: acknowledged turn w0-s0-k1",
        );
        assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);

        let seen = session(messages(&[tag(0, 1)]));
        let journal = [
            turn(0, 1, 10, 20),
            turn(0, 2, 25, 35),
            reload(1, 30, 40, &seen),
        ];
        let report = check_one(&journal, after);
        assert!(report.passed(), "{:#?}", report.violations);
        assert_eq!(report.counts.reloads_checked, 1);
        assert_eq!(report.counts.verified_at_reloads, 2);
    }

    #[test]
    fn only_a_delete_that_started_before_a_reload_ended_excuses_a_turn_there() {
        let late = [
            turn(0, 1, 10, 20),
            reload(1, 30, 40, &[]),
            delete(2, 45, 50),
        ];
        assert_violation(&check_one(&late, Vec::new()), "reload at 30 ns read it");
        let early = [
            turn(0, 1, 10, 20),
            delete(2, 35, 50),
            reload(1, 30, 40, &[]),
        ];
        assert!(check_one(&early, Vec::new()).passed());
    }

    /// `entry` as if `faults` replies were lost while it ran.
    fn faulted(mut entry: Entry, faults: usize) -> Entry {
        entry.faults = faults;
        entry
    }

    fn gave_up() -> Failure {
        Failure {
            conflict: false,
            impossible: false,
            text: "append of session \"shared-0\": applied, but the reply was lost \
                   (injected fault) (after 4 attempts)"
                .into(),
        }
    }

    #[test]
    fn a_conflicting_undo_after_a_lost_reply_is_accepted_whether_it_applied_or_not() {
        let conflict = Failure {
            conflict: true,
            impossible: false,
            text: "conflict: nothing was undone".into(),
        };
        let journal = [
            turn(0, 1, 10, 20),
            faulted(undo(0, 1, &[], Some(conflict)), 1),
        ];
        // Not applied: the turn is stored.
        let report = check_one(&journal, session(messages(&[tag(0, 1)])));
        assert!(report.passed(), "{:#?}", report.violations);
        assert_eq!(report.counts.verified, 2);
        // Applied before another writer changed the session: the turn is gone.
        let report = check_one(&journal, session(messages(&[tag(1, 1)])));
        assert!(report.passed(), "{:#?}", report.violations);
        assert_eq!(report.counts.removed_by_undo, 2);
        assert_eq!(report.counts.undone_despite_conflict, 2);
        assert_eq!(
            (report.counts.faults, report.counts.faulted_ops),
            (1, 1),
            "{:?}",
            report.counts
        );
        assert_eq!(report.counts.faulted_unknown, 1);
        // A delete explains it first, when there is one.
        let mut deleted = journal.to_vec();
        deleted.push(delete(1, 2_000, 2_010));
        let report = check_one(&deleted, Vec::new());
        assert!(report.passed(), "{:#?}", report.violations);
        assert_eq!(report.counts.undone_despite_conflict, 0);
        assert_eq!(report.counts.removed_by_delete, 2);
    }

    #[test]
    fn a_turn_that_failed_after_lost_replies_may_be_stored_or_not_but_never_twice() {
        let mut failed = faulted(turn(0, 1, 10, 20), 4);
        if let Op::Turn {
            answer, failure, ..
        } = &mut failed.op
        {
            *answer = None;
            *failure = Some(gave_up());
        }
        let journal = [failed, turn(0, 2, 30, 40)];
        let absent = check_one(&journal, session(messages(&[tag(0, 2)])));
        assert!(absent.passed(), "{:#?}", absent.violations);
        let present = check_one(&journal, session(messages(&[tag(0, 1), tag(0, 2)])));
        assert!(present.passed(), "{:#?}", present.violations);
        assert_eq!(
            present.counts.acknowledged, 2,
            "only the second turn counts"
        );

        // Its user message stored twice (a retry that appended it again).
        let twice = session(messages(&[tag(0, 1), tag(0, 1), tag(0, 2)]));
        assert_violation(
            &check_one(&journal, twice),
            "user message w0-s0-k1 stored twice",
        );
        // Its answer stored twice, the user message once.
        let mut answered_twice = session(messages(&[tag(0, 1), tag(0, 2)]));
        answered_twice.insert(3, ChatMessage::assistant(answer(tag(0, 1))));
        assert_violation(
            &check_one(&journal, answered_twice),
            "assistant message \"ack w0-s0-k1\" stored twice, at 2 and 3",
        );
        // A message stored twice under one id, whatever its text.
        let tool = ChatMessage::tool_result("call-1", "notes.txt").with_new_id();
        let mut by_id = session(messages(&[tag(0, 1), tag(0, 2)]));
        by_id.insert(2, tool.clone());
        by_id.insert(3, tool);
        assert_violation(
            &check_one(&journal, by_id),
            "stored twice, at 2 and 3 (Tool",
        );
    }

    #[test]
    fn an_acknowledged_turn_that_met_lost_replies_is_held_to_every_rule() {
        // The retry layer settled its lost replies and the turn succeeded: it must be
        // stored, once, in its writer's order, like any other.
        let journal = [
            faulted(turn(0, 1, 10, 20), 2),
            faulted(turn(0, 2, 30, 40), 1),
        ];
        let report = check_one(&journal, session(messages(&[tag(0, 2)])));
        assert_violation(&report, "acknowledged turn w0-s0-k1 of worker 0");
        let report = check_one(&journal, session(messages(&[tag(0, 2), tag(0, 1)])));
        assert_violation(
            &report,
            "w0-s0-k2 (at 1) is stored before its earlier w0-s0-k1",
        );
        let report = check_one(&journal, session(messages(&[tag(0, 1), tag(0, 2)])));
        assert!(report.passed(), "{:#?}", report.violations);
        assert_eq!(report.counts.faults, 3);
        assert_eq!(report.counts.faulted_unknown, 0);
        // An undo that succeeded after a lost reply still removes only its own turn.
        let undone = [
            faulted(turn(1, 1, 10, 20), 0),
            faulted(turn(0, 1, 30, 40), 0),
            faulted(undo(0, 1, &[tag(0, 1), tag(1, 1)], None), 1),
        ];
        assert_violation(
            &check_one(&undone, session(vec![])),
            "worker 0's undo of w0-s0-k1 also removed [\"w1-s0-k1\"]",
        );
    }
}
