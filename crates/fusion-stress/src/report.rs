//! What a checked run reports: counts per kind of operation and of message outcome, and
//! every violation found, each with enough detail to find it in the stored histories.

use std::collections::BTreeMap;
use std::fmt;

use crate::journal::Entry;

/// Successes and failures of one kind of operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCount {
    /// Calls that returned `Ok` (a turn: with a final answer).
    pub ok: usize,
    /// Calls that failed.
    pub failed: usize,
    /// Failures that were `Error::Conflict`.
    pub conflicts: usize,
}

/// The counts of one run (or, added up, of several).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Per operation kind (`turn`, `undo`, `summarize`, ..., as [`crate::journal::Op::kind`]).
    pub ops: BTreeMap<String, OpCount>,
    /// Acknowledged messages: a user message and its final answer per acknowledged turn.
    pub acknowledged: usize,
    /// Acknowledged messages found where they must be.
    pub verified: usize,
    /// Acknowledged messages absent because their own writer's undo removed them.
    pub removed_by_undo: usize,
    /// Acknowledged messages absent after a delete that may have removed them.
    pub removed_by_delete: usize,
    /// Reload snapshots checked.
    pub reloads_checked: usize,
    /// Acknowledged messages found where they must be in reload snapshots.
    pub verified_at_reloads: usize,
    /// Sessions loaded and checked (shared ones and forks).
    pub sessions: usize,
    /// Stored summary records checked.
    pub summaries: usize,
    /// Notes of brief sessions written before they expired, and gone as they must be.
    pub expired_notes: usize,
    /// Acknowledged notes written after a brief session expired, found in its successor.
    pub notes_after_expiry: usize,
    /// Sessions the workers' purges removed.
    pub purged: usize,
    /// Lives of idle sessions that a retitle after the cutoff found, stored after the run
    /// as they must be ([`crate::idle`]).
    pub idle_kept: usize,
    /// Idle sessions the stale purges reported deleting.
    pub stale_purged: usize,
    /// Idle sessions deleted and created again, stale, by renews.
    pub renewed: usize,
    /// Sessions a stale purge listed and then kept, as changed between its listing and its
    /// delete: retitled (the race [`crate::idle`] is about, met) or deleted by another
    /// purge.
    pub purge_kept_written: usize,
    /// Replies lost to injected faults (`--faults`) during the workers' operations.
    pub faults: usize,
    /// Operations that met at least one lost reply.
    pub faulted_ops: usize,
    /// Of those, the ones that still failed: whether they applied is unknown, and the
    /// checker accepts either.
    pub faulted_unknown: usize,
    /// Acknowledged messages absent because their writer's undo removed them though it
    /// answered a conflict ("nothing was undone") after a lost reply: the retry layer
    /// could not tell that its own lost attempt had applied, as another writer had
    /// changed the session since. Also counted in `removed_by_undo`.
    pub undone_despite_conflict: usize,
}

impl Counts {
    /// Counts the operations of `journal` by kind and outcome, and the faults they met.
    pub fn add_ops(&mut self, journal: &[Entry]) {
        for entry in journal {
            self.faults += entry.faults;
            if entry.faults > 0 {
                self.faulted_ops += 1;
                self.faulted_unknown += usize::from(entry.op.failure().is_some());
            }
            let count = self.ops.entry(entry.op.kind().to_string()).or_default();
            match entry.op.failure() {
                None => count.ok += 1,
                Some(failure) => {
                    count.failed += 1;
                    count.conflicts += usize::from(failure.conflict);
                }
            }
        }
    }

    /// Why a run of `operations` at fault probability `faults` checked too little to
    /// pass, whatever held: no acknowledged message (every turn failed, as when faults cut
    /// every try), or faults asked for and none injected. Empty when it checked something.
    pub fn too_little_checked(&self, faults: f64, operations: usize) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.acknowledged == 0 {
            let turns = self.ops.get("turn").copied().unwrap_or_default();
            reasons.push(format!(
                "no message was acknowledged ({} of {} turns succeeded in {operations} \
                 operations): the run checked nothing of what is stored",
                turns.ok,
                turns.ok + turns.failed
            ));
        }
        if faults > 0.0 && self.faults == 0 {
            reasons.push(format!(
                "--faults {faults} injected no fault in {operations} operations: the run \
                 tested nothing of lost replies (raise the probability or the operations)"
            ));
        }
        reasons
    }

    /// All failures that were conflicts, over every kind.
    pub fn conflicts(&self) -> usize {
        self.ops.values().map(|c| c.conflicts).sum()
    }

    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &Counts) {
        for (kind, count) in &other.ops {
            let mine = self.ops.entry(kind.clone()).or_default();
            mine.ok += count.ok;
            mine.failed += count.failed;
            mine.conflicts += count.conflicts;
        }
        self.acknowledged += other.acknowledged;
        self.verified += other.verified;
        self.removed_by_undo += other.removed_by_undo;
        self.removed_by_delete += other.removed_by_delete;
        self.reloads_checked += other.reloads_checked;
        self.verified_at_reloads += other.verified_at_reloads;
        self.sessions += other.sessions;
        self.summaries += other.summaries;
        self.expired_notes += other.expired_notes;
        self.notes_after_expiry += other.notes_after_expiry;
        self.purged += other.purged;
        self.idle_kept += other.idle_kept;
        self.stale_purged += other.stale_purged;
        self.renewed += other.renewed;
        self.purge_kept_written += other.purge_kept_written;
        self.faults += other.faults;
        self.faulted_ops += other.faulted_ops;
        self.faulted_unknown += other.faulted_unknown;
        self.undone_despite_conflict += other.undone_despite_conflict;
    }

    /// One `key=value` line, which `cargo xtask stress` reads back to add rounds up.
    pub fn line(&self) -> String {
        let mut parts = Vec::new();
        for (kind, count) in &self.ops {
            parts.push(format!("{kind}_ok={}", count.ok));
            parts.push(format!("{kind}_failed={}", count.failed));
        }
        parts.push(format!("conflicts={}", self.conflicts()));
        parts.push(format!("acknowledged={}", self.acknowledged));
        parts.push(format!("verified={}", self.verified));
        parts.push(format!("removed_by_undo={}", self.removed_by_undo));
        parts.push(format!("removed_by_delete={}", self.removed_by_delete));
        parts.push(format!("reloads_checked={}", self.reloads_checked));
        parts.push(format!("verified_at_reloads={}", self.verified_at_reloads));
        parts.push(format!("sessions={}", self.sessions));
        parts.push(format!("summaries={}", self.summaries));
        parts.push(format!("expired_notes={}", self.expired_notes));
        parts.push(format!("notes_after_expiry={}", self.notes_after_expiry));
        parts.push(format!("purged={}", self.purged));
        parts.push(format!("idle_kept={}", self.idle_kept));
        parts.push(format!("stale_purged={}", self.stale_purged));
        parts.push(format!("renewed={}", self.renewed));
        parts.push(format!("purge_kept_written={}", self.purge_kept_written));
        parts.push(format!("faults={}", self.faults));
        parts.push(format!("faulted_ops={}", self.faulted_ops));
        parts.push(format!("faulted_unknown={}", self.faulted_unknown));
        parts.push(format!(
            "undone_despite_conflict={}",
            self.undone_despite_conflict
        ));
        parts.join(" ")
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (kind, count) in &self.ops {
            writeln!(
                f,
                "  {kind:<10} {:>6} ok {:>5} failed ({} conflicts)",
                count.ok, count.failed, count.conflicts
            )?;
        }
        writeln!(
            f,
            "  acknowledged messages {}: {} verified present, {} removed by their writer's \
             undo, {} removed by a delete",
            self.acknowledged, self.verified, self.removed_by_undo, self.removed_by_delete
        )?;
        writeln!(
            f,
            "  during the run: {} acknowledged messages verified in {} reload snapshots",
            self.verified_at_reloads, self.reloads_checked
        )?;
        writeln!(
            f,
            "  expiring sessions: {} notes gone with the session they were written to, {} \
             acknowledged after it expired verified present; {} sessions purged",
            self.expired_notes, self.notes_after_expiry, self.purged
        )?;
        writeln!(
            f,
            "  idle sessions: {} retitled after the cutoff and kept, {} deleted by stale \
             purges, {} renewed; {} kept by a purge as changed between its listing and \
             its delete",
            self.idle_kept, self.stale_purged, self.renewed, self.purge_kept_written
        )?;
        if self.faults > 0 {
            writeln!(
                f,
                "  faults: {} replies lost in {} operations, {} of which failed anyway \
                 (outcome unknown, either accepted); {} acknowledged messages removed by \
                 an undo that answered a conflict",
                self.faults, self.faulted_ops, self.faulted_unknown, self.undone_despite_conflict
            )?;
        }
        write!(
            f,
            "  {} sessions and {} summary records checked; {} conflicts seen",
            self.sessions,
            self.summaries,
            self.conflicts()
        )
    }
}

/// The checker's verdict on one run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// What ran and what was found.
    pub counts: Counts,
    /// Every broken rule, one line each; empty when the run passed.
    pub violations: Vec<String>,
}

impl Report {
    /// Whether no rule was broken.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `--faults 0.3` on PostgreSQL did when its proxy cut every handshake: 477 turns
    /// failed, nothing acknowledged, no rule broken, and PASS printed.
    #[test]
    fn a_run_that_acknowledged_nothing_checked_too_little_to_pass() {
        let mut counts = Counts::default();
        counts.ops.insert(
            "turn".into(),
            OpCount {
                ok: 0,
                failed: 477,
                conflicts: 0,
            },
        );
        counts.faults = 1200;
        let reasons = counts.too_little_checked(0.3, 990);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            reasons[0].contains("no message was acknowledged (0 of 477 turns"),
            "{reasons:?}"
        );
        counts.acknowledged = 2;
        assert!(counts.too_little_checked(0.3, 990).is_empty());
        counts.faults = 0;
        let reasons = counts.too_little_checked(0.3, 990);
        assert!(reasons[0].contains("injected no fault"), "{reasons:?}");
    }
}
