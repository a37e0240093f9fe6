//! How a write is recorded: its timestamp handed out and its journal line appended, and
//! a creation's or deletion's id logged (see the module docs of [`super`] on the floor
//! every creation takes from the latest deletion).

use std::sync::PoisonError;

use fusion_core::Result;

use super::{Handles, IDS_LOG, Index, Kind, ids, journal, write_at};
use crate::error::IoContext;

/// What a write does to a session, as the index records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Writes an existing session.
    Write,
    /// Creates the session.
    Create,
    /// Deletes the session.
    Delete,
}

/// What the id log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Logged {
    /// A creation, logged before its line is stamped.
    Created,
    /// A deletion, logged after its line, stamped at this timestamp.
    Deleted(i64),
}

/// What [`Index::record`] handed out: the write's timestamp, and the upkeep it made due
/// (run it with [`Index::upkeep`] once the session's lock is released).
#[derive(Debug, Clone, Copy)]
#[must_use]
pub(crate) struct Recorded {
    /// The write's timestamp in Unix microseconds: later than the floor it was given.
    pub(crate) t: i64,
    pub(super) fold: bool,
    pub(super) merge_ids: bool,
}

impl Recorded {
    /// Whether [`Index::upkeep`] has work to do for this write.
    pub(crate) fn is_due(&self) -> bool {
        self.fold || self.merge_ids
    }
}

impl Index {
    /// Hands out the timestamp of a write to `id`, later than `floor` (the session's
    /// previous `updated_at`), and records it in this instance's live journal (and a
    /// creation or deletion in the id log), fsynced if `sync`. Call it under the
    /// session's exclusive lock, before changing the session.
    ///
    /// A creation is also stamped after the latest deletion of any session (the state's
    /// `deleted`), read from the state it logs its id in first: the lock file that
    /// carried the floor of its id's last write went with that deletion, and a line
    /// below the deletion's would be taken for the deleted session's (see
    /// `crate::listing`) when the deleting instance's clock runs ahead of this one's.
    pub(crate) fn record(
        &self,
        id: &str,
        change: Change,
        floor: i64,
        sync: bool,
    ) -> Result<Recorded> {
        let (recorded, ()) = self.record_after(id, change, floor, sync, |_| Ok(()))?;
        Ok(recorded)
    }

    /// [`Index::record`], calling `first` with the write's timestamp before its line is
    /// written, for what depends on that timestamp and must precede the line (a write's
    /// expiry marker): when `first` fails, no line is written, and a listing has nothing
    /// to take for a write cut short. Returns what `first` returned too.
    pub(crate) fn record_after<T>(
        &self,
        id: &str,
        change: Change,
        floor: i64,
        sync: bool,
        first: impl FnOnce(i64) -> Result<T>,
    ) -> Result<(Recorded, T)> {
        let kind = match change {
            Change::Delete => Kind::Delete,
            Change::Write | Change::Create => Kind::Write,
        };
        let (floor, merge_ids) = match change {
            Change::Create => {
                let (deleted, merge_ids) = self.log_creation(id, sync)?;
                (floor.max(deleted.saturating_add(1)), merge_ids)
            }
            Change::Write | Change::Delete => (floor, false),
        };
        let mut first_gave = None;
        let (t, fold, journal_removed) =
            self.lives
                .append(&self.root, floor, self.limits.0, sync, |t| {
                    first_gave = Some(first(t)?);
                    Ok(journal::encode(t, kind, id))
                })?;
        let first_gave = first_gave.expect("a line written follows `first`");
        self.sync_journal_dirs(sync, journal_removed)?;
        let merge_ids = merge_ids || self.log_change(id, change, t, journal_removed, sync)?;
        Ok((Recorded { t, fold, merge_ids }, first_gave))
    }

    /// Records the creation of `id` placed at `t`, the last write a session copied from
    /// elsewhere had there (no later than now), in the instance's journal of such lines
    /// ([`Lives::append_at`](super::live::Lives::append_at)): listings, folds and builds
    /// place it at `t` as any other. Its line carries when it was recorded, which this
    /// returns too: the session's counters keep it, so that a listing knows the id's
    /// lines recorded before it, later than `t` though they may be, for an earlier
    /// session's (see [`super::journal`]). Recorded after `floor`, as [`Self::record`]
    /// records a creation. As [`Self::record_after`], calls `first` with when the line is
    /// recorded before the line is written (a creation's markers and metadata): when
    /// `first` fails, no line is written. Returns what `first` returned too.
    pub(crate) fn record_created_at<T>(
        &self,
        id: &str,
        t: i64,
        floor: i64,
        sync: bool,
        first: impl FnOnce(i64) -> Result<T>,
    ) -> Result<(Recorded, i64, T)> {
        let limit = self.limits.0;
        // Recorded after the latest deletion, as any creation (see `Index::record`).
        let (deleted, merge_ids) = self.log_creation(id, sync)?;
        let floor = floor.max(deleted.saturating_add(1));
        let mut first_gave = None;
        let (recorded, fold, removed) =
            self.lives
                .append_at(&self.root, (t, id), floor, limit, sync, |recorded| {
                    first_gave = Some(first(recorded)?);
                    Ok(journal::encode_recorded(t, Kind::Write, id, recorded))
                })?;
        let first_gave = first_gave.expect("a line written follows `first`");
        self.sync_journal_dirs(sync, removed)?;
        let merge_ids = merge_ids || self.log_change(id, Change::Create, t, removed, sync)?;
        let change = Recorded { t, fold, merge_ids };
        Ok((change, recorded, first_gave))
    }

    /// With `sync`, the entries of `live` and of the index's directory, where a line was
    /// just fsynced, made durable once per instance: another writer may have made them
    /// without syncing them yet (see [`crate::synced_dirs`]). Once again after the
    /// journal was found `removed` with the index, the session directory's entry at once
    /// ([`SyncedDirs::index_removed`](crate::synced_dirs::SyncedDirs::index_removed)):
    /// the same paths may name directories another writer made since.
    pub(super) fn sync_journal_dirs(&self, sync: bool, removed: bool) -> Result<()> {
        if removed {
            self.dirs.index_removed(&self.root)?;
        }
        if sync {
            self.dirs.entry(&self.root.join(super::live::LIVE_DIR))?;
            self.dirs.entry(&self.root)?;
        }
        Ok(())
    }

    /// The id of a creation logged, before its line is stamped: returns the latest
    /// deletion's timestamp, which its line must follow, and whether the id log is due
    /// to be merged. Logged first, the id names a session that may not exist yet (a
    /// crash before its files), which a listing by id skips as it skips any stale id.
    pub(super) fn log_creation(&self, id: &str, sync: bool) -> Result<(i64, bool)> {
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        self.log_id(&mut handles, id, Logged::Created, false, sync)
    }

    /// Raises the state's latest deletion to `t`, under the index lock, fsynced: the line
    /// of a delete that stopped before it logged its id, found in a live journal (see
    /// `crate::session_files`' `keep_stopped_delete`), whose trace, the lock file, goes
    /// next.
    pub(crate) fn raise_deleted(&self, t: i64) -> Result<()> {
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        self.update_state(&mut handles, false, true, |_, state| {
            // Known: `update_state` reads the state with `Index::read_state`.
            state.deleted = Some(state.deleted.unwrap_or(i64::MIN).max(t));
            Ok(())
        })
    }

    /// After a write's line at `t`: a deletion goes to the id log (a creation went
    /// before its line: [`Self::log_creation`]), and a journal found removed marks the
    /// index for a rebuild. Returns whether the id log is due to be merged.
    pub(super) fn log_change(
        &self,
        id: &str,
        change: Change,
        t: i64,
        journal_removed: bool,
        sync: bool,
    ) -> Result<bool> {
        // A write, the hot path, takes no lock here: the mutex is held by creations and
        // deletions while they wait for the index lock, which other processes share.
        let handles = || self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        match change {
            // A journal found removed marks the index for a rebuild in the state update
            // that logs the deleted id (as below for a write).
            Change::Delete => {
                let logged = Logged::Deleted(t);
                Ok(self
                    .log_id(&mut handles(), id, logged, journal_removed, sync)?
                    .1)
            }
            // Lines written into the removed journal since it was last found in place (up
            // to a second's), and a creation's id logged into the removed index, are read
            // by nobody: rebuilt from the session files instead.
            Change::Write | Change::Create if journal_removed => {
                self.update_state(&mut handles(), true, sync, |_, _| Ok(()))?;
                Ok(false)
            }
            Change::Write | Change::Create => Ok(false),
        }
    }

    /// Appends a creation or deletion to the id log under the index lock, a deletion's
    /// timestamp kept in the state if it is the latest, the index marked for a rebuild if
    /// `rebuild`; returns the state's latest deletion and whether the log is due to be
    /// merged.
    fn log_id(
        &self,
        handles: &mut Handles,
        id: &str,
        logged: Logged,
        rebuild: bool,
        sync: bool,
    ) -> Result<(i64, bool)> {
        self.update_state(handles, rebuild, sync, |handles, state| {
            let log = self.ids_log_for_append(handles, state)?;
            let path = self.root.join(IDS_LOG);
            let line = ids::encode_change(logged == Logged::Created, id);
            write_at(log, &line, state.ids_log_len).at(&path)?;
            if sync {
                log.sync_data().at(&path)?;
            }
            state.ids_log_len += line.len() as u64;
            // Known: `update_state` reads the state with `Index::read_state`.
            let mut deleted = state.deleted.unwrap_or(i64::MIN);
            if let Logged::Deleted(t) = logged {
                deleted = deleted.max(t);
                state.deleted = Some(deleted);
            }
            Ok((deleted, self.ids_due(state)))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;
    use std::sync::{Arc, mpsc};
    use std::time::Duration;

    use super::super::state::State;
    use super::super::tests::ids;
    use super::super::{LOCK, write_at};
    use super::*;

    /// The state as the version before `deleted` (state format 2, 573ae1f) writes it.
    fn format_2(state: &State) -> String {
        format!(
            "fusion-index 2 built {} journal {:020} ids {:020} ids-log {:020} epoch {:020}\n",
            u8::from(state.built),
            state.journal_len,
            state.ids_len,
            state.ids_log_len,
            state.epoch,
        )
    }

    /// A built index in `dir` that recorded the creation of session `a`.
    fn built_with_a(dir: &Path) -> (Index, Recorded) {
        let index = Index::new(dir);
        let a = index.record("a", Change::Create, i64::MIN, false).unwrap();
        assert!(index.is_built());
        (index, a)
    }

    /// Writes `a` (last recorded at `t`) and checks that the write marked the index for a
    /// rebuild: the lines its removed journal took are read by nobody.
    fn next_write_reports_the_removed_journal(index: &Index, t: i64) {
        let written = index.record("a", Change::Write, t + 1, false).unwrap();
        assert!(written.t > t);
        assert!(!index.is_built(), "the removed journal went unreported");
    }

    #[test]
    fn a_write_refused_before_its_line_leaves_a_removed_journal_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let (index, a) = built_with_a(dir.path());
        // Its journal removed by hand, found so at the next write a second on.
        for entry in fs::read_dir(index.root().join(super::super::live::LIVE_DIR)).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
        index.run_clock_ahead(Duration::from_secs(2));
        let refused = index.record_after("b", Change::Create, i64::MIN, false, |_| {
            Err::<(), _>(fusion_core::Error::Config("refused".into()))
        });
        assert!(refused.is_err());
        // The next write finds the journal removed, and marks the index for a rebuild:
        // the lines its journal took since it was last found in place are read by nobody.
        next_write_reports_the_removed_journal(&index, a.t);
    }

    #[test]
    fn a_write_failing_after_it_found_its_journal_removed_leaves_that_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let (index, a) = built_with_a(dir.path());
        // Its journal removed by hand, and a link where the journals go: the next write,
        // a second on, finds the journal removed and cannot start another.
        let live = index.root().join(super::super::live::LIVE_DIR);
        fs::remove_dir_all(&live).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), &live).unwrap();
        index.run_clock_ahead(Duration::from_secs(2));
        assert!(index.record("a", Change::Write, a.t + 1, false).is_err());
        // Once journals can be made again, the next write reports the removed journal.
        fs::remove_file(&live).unwrap();
        next_write_reports_the_removed_journal(&index, a.t);
    }

    #[test]
    fn a_journal_whose_directory_became_a_file_is_taken_for_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (index, a) = built_with_a(dir.path());
        // The journals' directory moved aside by hand and a file put in its place: the
        // journal's path fails "not a directory", and names no journal.
        let live = index.root().join(super::super::live::LIVE_DIR);
        fs::rename(&live, dir.path().join("moved-aside")).unwrap();
        fs::write(&live, b"").unwrap();
        index.run_clock_ahead(Duration::from_secs(2));
        // Taken for in place, its line would go to the moved journal, read by nobody.
        assert!(index.record("a", Change::Write, a.t + 1, false).is_err());
        fs::remove_file(&live).unwrap();
        next_write_reports_the_removed_journal(&index, a.t);
    }

    #[test]
    fn a_deletion_that_finds_its_journal_removed_marks_the_index_for_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::new(dir.path());
        let a = index.record("a", Change::Create, i64::MIN, false).unwrap();
        let b = index.record("b", Change::Create, i64::MIN, false).unwrap();
        assert!(index.is_built());
        // Its journal removed by hand, found so by a deletion a second on.
        for entry in fs::read_dir(index.root().join(super::super::live::LIVE_DIR)).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
        index.run_clock_ahead(Duration::from_secs(2));
        let deleted = index.record("b", Change::Delete, i64::MIN, false).unwrap();
        assert!(deleted.t > b.t && b.t > a.t);
        // The lines the removed journal took (a's creation) are read by nobody.
        assert!(!index.is_built(), "the removed journal went unreported");
    }

    #[test]
    fn a_write_waits_for_no_creation_or_deletion_of_its_instance() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::new(dir.path()));
        let created = index.record("a", Change::Create, i64::MIN, false).unwrap();
        // Held by a creation or deletion of another thread while it waits for the index
        // lock, which another process holds (as its fold's or rebuild's rename does).
        let held = index.handles.lock().unwrap();
        let writer = Arc::clone(&index);
        let (sent, received) = mpsc::channel();
        let write = std::thread::spawn(move || {
            let written = writer.record("a", Change::Write, created.t + 1, false);
            sent.send(written.map(|written| written.t)).unwrap();
        });
        // A bound only on a write that waits: one that does not never meets it.
        let written = received.recv_timeout(Duration::from_secs(120));
        drop(held);
        write.join().unwrap();
        assert!(
            written
                .expect("the write waited for the index lock")
                .unwrap()
                > created.t
        );
    }

    #[test]
    fn an_instance_of_the_version_before_deleted_shares_the_index_without_rebuilds() {
        let dir = tempfile::tempdir().unwrap();
        let here = Index::new(dir.path());
        let ahead = Index::new(dir.path());
        ahead.run_clock_ahead(Duration::from_secs(3600));
        let created = here.record("x", Change::Create, i64::MIN, false).unwrap();
        let gone = (ahead.record("x", Change::Delete, created.t + 1, false)).unwrap();
        let lock = here.root().join(LOCK);
        let log = here.root().join(IDS_LOG);
        let open = |path| fs::File::options().write(true).open(path).unwrap();
        // That version reads its own form at the start of this one's state.
        let state = State::parse(&fs::read(&lock).unwrap()).unwrap();
        let bytes = fs::read(&lock).unwrap();
        assert!(bytes.starts_with(format_2(&state).as_bytes()));
        // It logs a creation: its line at the state's length, its state in place.
        let logged_by_it = |id: &str, only_its_line: bool| {
            let state = State::parse(&fs::read(&lock).unwrap()).unwrap();
            let line = format!("+{id}\n");
            write_at(&open(&log), line.as_bytes(), state.ids_log_len).unwrap();
            let state = State {
                ids_log_len: state.ids_log_len + line.len() as u64,
                ..state
            };
            let lock = open(&lock);
            if only_its_line {
                // A lock file it made, before this version wrote one.
                lock.set_len(0).unwrap();
            }
            write_at(&lock, format_2(&state).as_bytes(), 0).unwrap();
        };
        logged_by_it("y", false);
        // This version reads that state, not damaged: no rebuild, and the creation is
        // stamped after the delete.
        let z = here.record("z", Change::Create, i64::MIN, false).unwrap();
        assert!(here.is_built(), "left to a rebuild");
        assert!(z.t > gone.t, "{} <= {}", z.t, gone.t);
        // Without the second line, the delete is recovered from the live journals.
        logged_by_it("w", true);
        let x = here.record("x", Change::Create, i64::MIN, false).unwrap();
        assert!(here.is_built(), "left to a rebuild");
        assert!(x.t > gone.t, "{} <= {}", x.t, gone.t);
        assert_eq!(ids(&here), ["w", "x", "y", "z"]);
    }
}
