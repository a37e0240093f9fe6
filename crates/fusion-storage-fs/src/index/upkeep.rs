//! Replacing index files: folding finished live journals into the compacted one,
//! merging the id log into the sorted ids, and building the whole index from a scan of
//! the session directory.
//!
//! Each holds `compact.lock` throughout, so one runs at a time in the directory, and does
//! its long part (reading the old files, writing the new ones) without the index lock.
//! It then takes the index lock only to copy what writers appended meanwhile, rename the
//! new files into place and store the new state with a new epoch (so cached handles are
//! reopened). A crash before the renames leaves the old files; after them, the new ones.

use std::fs::{self, File};
use std::io::{self, Read, Write};

use fusion_core::Result;

use super::journal::{self, Scanned, Source};
use super::live::{self, Found};
use super::state::State;
use super::{COMPACT_LOCK, IDS, IDS_LOG, Index, JOURNAL, ids, lines, lock, own_dirs};
use crate::error::IoContext;

/// The sessions the latest build left out for a file that could not be read, one id a
/// line ([`Index::note_unread`]); absent when it left out none.
const UNREAD: &str = "unread";

impl Index {
    /// Folds the live journals nobody holds any more into the compacted journal and
    /// deletes them.
    pub(super) fn fold(&self) -> Result<()> {
        let Some(_compacting) = self.try_compact_lock()? else {
            return Ok(());
        };
        let (state, journal) = self.read_under_lock(|_| self.open(JOURNAL))?;
        live::sweep(&self.root)?;
        // Keeping the lock taken here keeps the file finished while it is folded.
        let finished: Vec<Found> = live::list(&self.root)?
            .into_iter()
            .filter(|found| found.file.try_lock().is_ok())
            .collect();
        // Folding costs the compacted journal's length, so it waits until the finished
        // journals are half as long (O(1) per write amortised), or many.
        let finished_len: u64 = finished.iter().map(|f| f.end).sum();
        let due = finished_len > (state.journal_len / 2).max(self.limits.0)
            || finished.len() > super::LIVE_FILES_MAX;
        if finished.is_empty() || !due {
            return Ok(());
        }
        let mut sources = vec![Source::File(&journal, state.journal_len)];
        sources.extend(finished.iter().map(|f| Source::File(&f.file, f.end)));
        let mut all_parsed = false;
        let (temp, len) = self.write_temp(JOURNAL, |out| {
            all_parsed = journal::compact_into(&sources, out)?.1;
            Ok(())
        })?;
        if !all_parsed || finished.iter().any(|f| f.lost_lines) {
            // Lines a dead writer lost (or junk): folded, the damage would be gone and the
            // sessions only those lines placed left out of listings for good. The next
            // listing rebuilds the index from the session files instead.
            let _ = fs::remove_file(&temp);
            tracing::warn!(
                backend = crate::error::BACKEND,
                dir = %self.root.display(),
                "an index journal is damaged; the next listing rebuilds the index"
            );
            return self.invalidate();
        }
        self.swap(|state| {
            fs::rename(&temp, self.root.join(JOURNAL)).at(&self.root.join(JOURNAL))?;
            state.journal_len = len;
            remove_all(&finished)
        })
    }

    /// Merges the id log into the sorted ids if that is still due.
    pub(super) fn merge_ids(&self) -> Result<()> {
        let Some(_compacting) = self.try_compact_lock()? else {
            return Ok(());
        };
        let (state, (sorted, log)) =
            self.read_under_lock(|_| Ok((self.open(IDS)?, self.open(IDS_LOG)?)))?;
        if !self.ids_due(&state) {
            return Ok(());
        }
        let log_end = state.ids_log_len;
        let mut merged = None;
        let (temp, ids_len) = self.write_temp(IDS, |out| {
            merged = ids::merge_into(&sorted, state.ids_len, &log, log_end, out)?;
            Ok(())
        })?;
        if merged.is_none() {
            // Merged, the damage would be gone and the ids it hid with it, for good: the
            // next listing rebuilds the index from the session files instead.
            let _ = fs::remove_file(&temp);
            tracing::warn!(
                backend = crate::error::BACKEND,
                dir = %self.root.display(),
                "the index's id files are damaged; the next listing rebuilds them"
            );
            return self.invalidate();
        }
        self.swap(|state| {
            let log = self.current_ids_log(log)?;
            let tail =
                lines::read_range(&log, log_end, state.ids_log_len).at(&self.root.join(IDS_LOG))?;
            let (log_temp, log_len) = self.write_temp(IDS_LOG, |out| out.write_all(&tail))?;
            fs::rename(&temp, self.root.join(IDS)).at(&self.root.join(IDS))?;
            fs::rename(&log_temp, self.root.join(IDS_LOG)).at(&self.root.join(IDS_LOG))?;
            state.ids_len = ids_len;
            state.ids_log_len = log_len;
            Ok(())
        })
    }

    /// Builds the index from `scan`, which lists every session where it is placed (and
    /// restores its set markers), unless it is built already. Writers go on
    /// meanwhile: what they append during the scan is merged in at the end.
    pub(crate) fn build(&self, scan: impl FnOnce() -> Result<Vec<Scanned>>) -> Result<()> {
        // Not through a linked index directory, where `compact.lock` would be made.
        own_dirs::check_root(&self.root)?;
        self.synced_dirs().create(&self.root)?;
        let compact_path = self.root.join(COMPACT_LOCK);
        let compacting = self.open(COMPACT_LOCK)?;
        lock(&compacting, true).at(&compact_path)?;
        let (state, (journal, log)) =
            self.read_under_lock(|_| Ok((self.open(JOURNAL)?, self.open(IDS_LOG)?)))?;
        if state.built {
            return Ok(());
        }
        // Writes from now on go to journals in this index, which the build reads, rather
        // than to files of a removed one. A built index has their directory (see
        // `Snapshot::is_damaged`).
        self.lives.restart();
        live::make_dir(&self.root)?;
        let mut records = scan()?;
        records.sort_unstable();
        records.dedup();
        // The scan misses a session created while it ran (its file appears after the scan
        // passed it), so what the journals and the id log hold is kept too: the index may
        // name more than exists, never less.
        let (logged, _) = ids::read_log(&log, state.ids_log_len).at(&self.root.join(IDS_LOG))?;
        let mut sorted_ids: Vec<&str> = records.iter().map(|record| record.id.as_str()).collect();
        sorted_ids.extend(
            logged
                .iter()
                .filter(|(_, created)| **created)
                .map(|(id, _)| id.as_str()),
        );
        sorted_ids.sort_unstable();
        sorted_ids.dedup();
        let (ids_temp, ids_len) = self.write_temp(IDS, |out| {
            sorted_ids.iter().try_for_each(|id| writeln!(out, "{id}"))
        })?;
        let lives = live::list(&self.root)?;
        let finished: Vec<&Found> = lives.iter().filter(|f| f.file.try_lock().is_ok()).collect();
        let mut sources = vec![
            Source::File(&journal, state.journal_len),
            Source::Scanned(&records),
        ];
        sources.extend(lives.iter().map(|f| Source::File(&f.file, f.end)));
        // Junk is left out: the scan of the sessions places every session anyway.
        let (journal_temp, journal_len) = self.write_temp(JOURNAL, |out| {
            journal::compact_into(&sources, out).map(drop)
        })?;
        let log_start = state.ids_log_len;
        self.swap(|state| {
            // The creations and deletions logged during the scan stay in the log.
            let log = self.current_ids_log(log)?;
            let log_tail = lines::read_range(&log, log_start, state.ids_log_len)
                .at(&self.root.join(IDS_LOG))?;
            let (log_temp, log_len) = self.write_temp(IDS_LOG, |out| out.write_all(&log_tail))?;
            fs::rename(&ids_temp, self.root.join(IDS)).at(&self.root.join(IDS))?;
            fs::rename(&log_temp, self.root.join(IDS_LOG)).at(&self.root.join(IDS_LOG))?;
            fs::rename(&journal_temp, self.root.join(JOURNAL)).at(&self.root.join(JOURNAL))?;
            state.built = true;
            state.journal_len = journal_len;
            state.ids_len = ids_len;
            state.ids_log_len = log_len;
            remove_all(finished.iter().copied())
        })
    }

    /// Notes `ids`, the sessions a build leaves out because a file of theirs could not be
    /// read (for a reason that lasts: a permission, a symbolic-link loop), so that a
    /// listing can tell when one reads again and have the index built again then, rather
    /// than at every listing (a build reads every session). None removes the note. Called
    /// from the build's scan, before the build stores its state: no index is built without
    /// its note, and builds run one at a time (`compact.lock`), the latest one's standing.
    pub(crate) fn note_unread(&self, ids: &[String]) -> Result<()> {
        let path = self.root.join(UNREAD);
        if ids.is_empty() {
            return match fs::remove_file(&path) {
                Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other.at(&path),
            };
        }
        let (temp, _) = self.write_temp(UNREAD, |out| {
            ids.iter().try_for_each(|id| writeln!(out, "{id}"))
        })?;
        fs::rename(&temp, &path).at(&path)
    }

    /// The sessions the latest build left out for a file that could not be read (see
    /// [`Self::note_unread`]).
    pub(crate) fn unread(&self) -> Result<Vec<String>> {
        let Some(mut file) = self.open_read(UNREAD)? else {
            return Ok(Vec::new());
        };
        let mut text = String::new();
        file.read_to_string(&mut text).at(&self.root.join(UNREAD))?;
        Ok(text.lines().map(str::to_string).collect())
    }

    /// Marks the index as not built, so that the next listing rebuilds it from the
    /// session files.
    pub(crate) fn invalidate(&self) -> Result<()> {
        let lock_file = self.lock_exclusive()?;
        let result = (|| {
            let mut state = self.read_state(&lock_file)?;
            state.built = false;
            self.write_state(&lock_file, &state, true)
        })();
        let _ = lock_file.unlock();
        result
    }

    /// The index lock, exclusively, the directory created if needed (see [`super::links`]).
    fn lock_exclusive(&self) -> Result<File> {
        Ok(self.lock_index(true, true)?.expect("created if missing"))
    }

    /// The id log as it is now, under the index lock, for `opened` (the one opened
    /// before the long part of a merge or build): the lines appended since must be read
    /// from the file they went to, and a writer that found the log hard-linked replaced it
    /// meanwhile with a copy (see [`super::links`]), whose first bytes are `opened`'s.
    fn current_ids_log(&self, opened: File) -> Result<File> {
        let path = self.root.join(IDS_LOG);
        let now = match fs::metadata(&path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(opened),
            other => other.at(&path)?,
        };
        if super::links::same_file(&now, &opened.metadata().at(&path)?) {
            return Ok(opened);
        }
        self.open(IDS_LOG)
    }

    /// `compact.lock`, if nobody else holds it.
    fn try_compact_lock(&self) -> Result<Option<File>> {
        // Not through a linked index directory, where it would be made.
        own_dirs::check_root(&self.root)?;
        let path = self.root.join(COMPACT_LOCK);
        let file = self.open(COMPACT_LOCK)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(err)) => Err(err).at(&path),
        }
    }

    /// Reads the state and opens files with `open`, under the exclusive index lock.
    fn read_under_lock<T>(&self, open: impl FnOnce(&State) -> Result<T>) -> Result<(State, T)> {
        let lock_file = self.lock_exclusive()?;
        let result = self.read_state(&lock_file).and_then(|state| {
            let opened = open(&state)?;
            Ok((state, opened))
        });
        let _ = lock_file.unlock();
        result
    }

    /// Runs `replace` under the exclusive index lock with the current state, then stores
    /// the state it left with a new epoch, durably.
    fn swap(&self, replace: impl FnOnce(&mut State) -> Result<()>) -> Result<()> {
        let lock_file = self.lock_exclusive()?;
        let result = (|| {
            let mut state = self.read_state(&lock_file)?;
            replace(&mut state)?;
            crate::session_files::sync_dir(&self.root)?;
            state.epoch = state.epoch.wrapping_add(1);
            self.write_state(&lock_file, &state, true)
        })();
        let _ = lock_file.unlock();
        result
    }
}

/// Deletes folded live journals.
fn remove_all<'a>(finished: impl IntoIterator<Item = &'a Found>) -> Result<()> {
    for found in finished {
        match fs::remove_file(&found.path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            other => other.at(&found.path)?,
        }
    }
    Ok(())
}
