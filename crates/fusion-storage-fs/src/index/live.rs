//! A storage instance's own journals, `live/<random>`: where its writes append their
//! lines without any lock shared with other instances or processes.
//!
//! An instance appends only to its own files (one, or a few while several of its threads
//! write at once: see `LIVE_SLOTS`), with timestamps it makes strictly increasing, so
//! each file is sorted; a listing merges the sorted files. The instance
//! holds an exclusive `flock` on its file for as long as it may write to it: a file
//! whose lock can be taken belongs to nobody any more (its instance moved on to a new
//! file, was dropped, or its process died), and compaction folds it into the compacted
//! journal and deletes it. A file is created under a hidden name, locked, and only then
//! renamed into `live/`, so nobody ever finds it unlocked while its instance lives.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::SystemTime;

use fusion_core::{Result, new_generation, unix_micros};

use super::{lines, own_dirs};
use crate::error::IoContext;
use crate::regular_file;

/// The directory of the live journals, under the index root.
pub(crate) const LIVE_DIR: &str = "live";

/// How many live journals one instance may write at once: a write takes the first that
/// no other thread is writing. With one, W5's 64 tasks on a 2-core machine queued behind
/// its lock (p99 3.2–4.4 ms); with four, 1.7–1.8 ms (docs/performance.md).
pub(crate) const LIVE_SLOTS: usize = 4;

/// How often a journal in use is checked to still be in the directory (µs of the
/// timestamps its lines get): one `stat` a second, not one per write.
const RECHECK_US: i64 = 1_000_000;

/// A storage instance's live journals, each opened by the first write that takes its
/// slot, and the timestamps their lines get.
#[derive(Debug)]
pub(crate) struct Lives {
    /// A slot's mutex orders the lines of its journal.
    slots: [Mutex<Option<Live>>; LIVE_SLOTS],
    /// The latest timestamp handed out, by any slot: each write's is later, so the
    /// instance's writes stay in one order whichever journals they reach.
    last_t: AtomicI64,
    /// The journal of the creations placed at a given time (sessions copied from
    /// elsewhere with their times; see [`Lives::append_at`]), and its last line's
    /// `(t, id)`: kept apart from the slots, whose lines are stamped now.
    dated: Mutex<Option<(Live, (i64, String))>>,
    /// A journal found removed by a write that then failed (its new journal not made or
    /// its line not written): the next write to succeed reports it, as its own finding.
    removed_unreported: AtomicBool,
    /// How far this instance's clock runs ahead of the real one, in µs: tests play an
    /// instance on another host with it.
    #[cfg(test)]
    ahead_us: AtomicI64,
}

impl Lives {
    pub(crate) fn new() -> Self {
        Self {
            slots: Default::default(),
            last_t: AtomicI64::new(i64::MIN),
            dated: Mutex::new(None),
            removed_unreported: AtomicBool::new(false),
            #[cfg(test)]
            ahead_us: AtomicI64::new(0),
        }
    }

    /// Appends `line(t)` to the first journal no other thread is writing (in `root/live`,
    /// started if the slot has none), `t` being later than `floor` and than every
    /// timestamp handed out before. Returns `t`, and whether the journals are due a fold:
    /// this write started one among more than `LIVE_FILES_MAX`, or took its journal past
    /// `limit` and so finished it; and whether the journal this instance had been writing
    /// was found removed (with the index, by hand; by this write, or by one that failed
    /// after it looked), so that the lines it took since it was last found in place are
    /// read by nobody. A failing `line` writes no line and
    /// looks at no journal.
    pub(crate) fn append(
        &self,
        root: &Path,
        floor: i64,
        limit: u64,
        sync: bool,
        line: impl FnOnce(i64) -> Result<Vec<u8>>,
    ) -> Result<(i64, bool, bool)> {
        let mut slot = self.free_slot();
        let mut fold = false;
        // Handed out under the slot's lock, so the journal gets its lines in order.
        let t = self.next_t(floor);
        // Before the journal is looked at: a failing `line` must not take in a finding
        // (the journal removed) that only this write's success reports.
        let line = line(t)?;
        let found = slot.as_mut().map(|live| live.check_since(t)).transpose()?;
        let removed = found == Some(JournalStatus::Removed);
        if removed {
            // Kept until a write succeeds: one failing past here must not drop it.
            self.removed_unreported.store(true, Ordering::Relaxed);
        }
        if removed || found == Some(JournalStatus::Shared) {
            // Someone removed the index (a listing rebuilds it): lines written to the
            // removed file would be read by nobody, and their sessions never listed. Or
            // the journal has another name, in a snapshot made with hard links, which
            // lines written to it would change: left (its lines stand, and the next fold
            // takes them) for a new one.
            *slot = None;
        }
        if slot.is_none() {
            let (live, count) = Live::create(root)?;
            fold = count > super::LIVE_FILES_MAX;
            *slot = Some(live);
        }
        let live = slot.as_mut().expect("created above");
        live.append(&line, sync)?;
        if live.len > limit {
            // Closing the file releases its lock: the next fold takes its lines.
            *slot = None;
            fold = true;
        }
        let removed = self.removed_unreported.swap(false, Ordering::Relaxed);
        Ok((t, fold, removed))
    }

    /// Appends `line`, the line of a write of `id` placed at the given time `t` (earlier
    /// than this instance's other lines, as a rule), to the instance's journal of such
    /// lines, which stays sorted as every journal must: while the lines come in
    /// increasing `(t, id)` order they go to one journal; a line that sorts before its
    /// journal's last one finishes it (the next fold takes it, as it takes any) and
    /// starts another. So a copy made oldest first fills one journal, and one in another
    /// order starts up to one per line, whose folds (due once more than
    /// `LIVE_FILES_MAX` journals stand) cost the compacted journal's length each.
    /// The line is `line(recorded)`, `recorded` being a timestamp handed out as for any
    /// write, later than `floor` and every line recorded before (see [`super::journal`]). Returns it,
    /// whether a fold is due and whether the journal was found removed, as
    /// [`append`](Self::append) does.
    pub(crate) fn append_at(
        &self,
        root: &Path,
        (t, id): (i64, &str),
        floor: i64,
        limit: u64,
        sync: bool,
        line: impl FnOnce(i64) -> Result<Vec<u8>>,
    ) -> Result<(i64, bool, bool)> {
        let mut dated = self.dated.lock().unwrap_or_else(PoisonError::into_inner);
        let mut fold = false;
        let recorded = self.next_t(floor);
        // Before the journal is looked at, as in `append`.
        let line = line(recorded)?;
        let found = dated.as_mut().map(|(live, _)| live.check_since(recorded));
        let found = found.transpose()?;
        let removed = found == Some(JournalStatus::Removed);
        if removed {
            // Kept until a write succeeds, as in `append`.
            self.removed_unreported.store(true, Ordering::Relaxed);
        }
        let in_order = dated
            .as_ref()
            .is_some_and(|(_, (last_t, last_id))| (*last_t, last_id.as_str()) < (t, id));
        if removed || found == Some(JournalStatus::Shared) || !in_order {
            // Closing the file releases its lock: the next fold takes its lines.
            *dated = None;
        }
        let (mut live, last) = match dated.take() {
            Some(open) => open,
            None => {
                let (live, count) = Live::create(root)?;
                fold = count > super::LIVE_FILES_MAX;
                // Nothing sorts below the first line.
                (live, (i64::MIN, String::new()))
            }
        };
        if let Err(err) = live.append(&line, sync) {
            // As in a slot: junk at most after its last line, which the next overwrites.
            *dated = Some((live, last));
            return Err(err);
        }
        if live.len > limit {
            fold = true;
        } else {
            *dated = Some((live, (t, id.to_string())));
        }
        let removed = self.removed_unreported.swap(false, Ordering::Relaxed);
        Ok((recorded, fold, removed))
    }

    /// The first slot no other thread holds, or, when all are held, the first once it is
    /// free.
    fn free_slot(&self) -> MutexGuard<'_, Option<Live>> {
        for slot in &self.slots {
            match slot.try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.slots[0].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A timestamp later than `floor` and than every one handed out before: the clock's
    /// now if it is.
    fn next_t(&self, floor: i64) -> i64 {
        let now = unix_micros(SystemTime::now());
        #[cfg(test)]
        let now = now.saturating_add(self.ahead_us.load(Ordering::Relaxed));
        let mut last = self.last_t.load(Ordering::Relaxed);
        loop {
            let t = now.max(last.saturating_add(1)).max(floor);
            match self
                .last_t
                .compare_exchange_weak(last, t, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return t,
                Err(newer) => last = newer,
            }
        }
    }

    /// Closes this instance's journals, so that its next writes start new ones: after a
    /// build of the index, which may have replaced a removed `.fusion-index/` (and
    /// with it the files these handles still write).
    pub(crate) fn restart(&self) {
        for slot in &self.slots {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        *self.dated.lock().unwrap_or_else(PoisonError::into_inner) = None;
        // The build read the session files: nothing a removed journal took is missing.
        self.removed_unreported.store(false, Ordering::Relaxed);
    }

    /// Whether every journal this instance writes is still where it was created: not so
    /// once the index was removed (and maybe built anew); `None` when it writes none.
    /// Takes each slot in turn.
    pub(crate) fn in_place(&self) -> Result<Option<bool>> {
        let mut found = None;
        for slot in &self.slots {
            let slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(live) = slot.as_ref() {
                if live.look()? == JournalStatus::Removed {
                    return Ok(Some(false));
                }
                found = Some(true);
            }
        }
        let dated = self.dated.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((live, _)) = dated.as_ref() {
            if live.look()? == JournalStatus::Removed {
                return Ok(Some(false));
            }
            found = Some(true);
        }
        Ok(found)
    }

    /// Runs this instance's clock `by` ahead of the real one, as another host's may.
    #[cfg(test)]
    pub(crate) fn run_clock_ahead(&self, by: std::time::Duration) {
        let by = i64::try_from(by.as_micros()).expect("a span in µs");
        self.ahead_us.store(by, Ordering::Relaxed);
    }

    /// Holds the first slot, as a thread writing its journal would.
    #[cfg(test)]
    pub(crate) fn hold_first(&self) -> MutexGuard<'_, Option<Live>> {
        self.slots[0].lock().unwrap()
    }
}

/// This instance's journal, open and locked.
#[derive(Debug)]
pub(crate) struct Live {
    file: File,
    path: PathBuf,
    /// The file's metadata when it got its name: what `path` names while it is in place.
    held: fs::Metadata,
    /// Where the next line goes: the end of the last complete line written.
    len: u64,
    /// When it was last found in the directory (see [`RECHECK_US`]).
    checked_us: i64,
    /// How many times the directory was synced since the file got its name: once, with
    /// the first line fsynced into it, which a power loss would lose with that name.
    pub(super) dir_syncs: u32,
}

impl Live {
    /// A new journal in `root/live`, locked, and how many journals the directory then
    /// holds (a crowd of them, from many short-lived processes, calls for a compaction).
    pub(crate) fn create(root: &Path) -> Result<(Self, usize)> {
        let dir = make_dir(root)?;
        let (file, path) = loop {
            let name = format!("{:016x}", new_generation());
            let hidden = dir.join(format!(".{name}"));
            let path = dir.join(&name);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&hidden)
                .at(&hidden)?;
            super::lock(&file, true).at(&hidden)?;
            match fs::rename(&hidden, &path) {
                Ok(()) => break (file, path),
                // A sweep took it for a crash's leftover before it was locked: again.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err).at(&path),
            }
        };
        let count = fs::read_dir(&dir).at(&dir)?.count();
        let live = Live {
            held: file.metadata().at(&path)?,
            file,
            path,
            len: 0,
            checked_us: unix_micros(SystemTime::now()),
            dir_syncs: 0,
        };
        Ok((live, count))
    }

    /// Whether the file is no longer where it was made (removed with the index, by hand,
    /// or moved away with its directory, a copy in its place) or has other names too:
    /// its path looked at (a `stat` that fails is an error, and the next write looks
    /// again) at `now` if last looked at [`RECHECK_US`] before, or at once if an `fstat` of
    /// the open file says it has no name left (the lines written to it would be lost at
    /// its close) or others, or fails (ESTALE: removed from an NFS server by another host).
    fn check_since(&mut self, now: i64) -> Result<JournalStatus> {
        let open = self.file.metadata();
        self.check_found(open, now)
    }

    /// [`Self::check_since`] with what the `fstat` found: what it says is the path's to
    /// confirm, as some FUSE file systems report no link (0) for every file.
    fn check_found(&mut self, open: io::Result<fs::Metadata>, now: i64) -> Result<JournalStatus> {
        use crate::own_file::{is_shared, is_unlinked};
        let clean = open.is_ok_and(|open| !is_unlinked(&open) && !is_shared(&open));
        if clean && now.saturating_sub(self.checked_us) < RECHECK_US {
            return Ok(JournalStatus::InPlace);
        }
        self.look().inspect(|_| self.checked_us = now)
    }

    /// Whether the journal's path still names it (one `stat`, as the file's own `fstat`
    /// would cost, which cannot tell a journal moved away with its directory).
    fn look(&self) -> Result<JournalStatus> {
        status(fs::metadata(&self.path), &self.held).at(&self.path)
    }

    /// Writes `line` (stamped later than every line before it) after the last one.
    /// A failed write leaves at most junk after the valid end, which the next write
    /// overwrites and readers never reach.
    pub(crate) fn append(&mut self, line: &[u8], sync: bool) -> Result<()> {
        super::write_at(&self.file, line, self.len).at(&self.path)?;
        if sync {
            self.file.sync_data().at(&self.path)?;
            if self.dir_syncs == 0 {
                crate::session_files::sync_dir(self.path.parent().expect("in `live`"))?;
                self.dir_syncs += 1;
            }
        }
        self.len += line.len() as u64;
        Ok(())
    }
}

/// Makes `root/live` if missing, not through a link, synced (delete lines are fsynced in).
pub(crate) fn make_dir(root: &Path) -> Result<PathBuf> {
    let dir = root.join(LIVE_DIR);
    own_dirs::check(root, &dir)?.refuse_links(None)?;
    crate::dirs::create(&dir, true).map(|()| dir)
}

/// What [`Live::check_since`] found of a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JournalStatus {
    InPlace,
    Removed,
    Shared,
}

/// What a `stat` of a journal's path says of the journal `held`: any failure but no file
/// or directory there (no permission, EIO) is returned, as a removal it hid would go unseen.
fn status(named: io::Result<fs::Metadata>, held: &fs::Metadata) -> io::Result<JournalStatus> {
    match named {
        Ok(named) if !super::links::same_file(&named, held) => Ok(JournalStatus::Removed),
        Ok(named) if crate::own_file::is_shared(&named) => Ok(JournalStatus::Shared),
        Ok(_) => Ok(JournalStatus::InPlace),
        Err(err) => match err.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Ok(JournalStatus::Removed),
            _ => Err(err),
        },
    }
}

/// A live journal as a reader or compactor finds it.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    /// The end of its last complete line: a write under way is not read.
    pub(crate) end: u64,
    /// Whether what follows `end` is more than part of one line (see [`lost_lines`]): in
    /// a journal nobody holds any more, lines its writer's death lost.
    pub(crate) lost_lines: bool,
}

/// Every live journal in `root/live`.
pub(crate) fn list(root: &Path) -> Result<Vec<Found>> {
    let dir = root.join(LIVE_DIR);
    // Not a linked directory, whose files would be folded as journals, then deleted.
    own_dirs::check(root, &dir)?.refuse_links(None)?;
    let entries = match fs::read_dir(&dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.at(&dir)?,
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.at(&dir)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            // Being created, or what a crash left of a creation.
            continue;
        }
        let path = entry.path();
        let file = match regular_file::open(OpenOptions::new().read(true), &path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            other => other.at(&path)?.0,
        };
        let len = file.metadata().at(&path)?.len();
        let end = complete_end_of(&file, len).at(&path)?;
        let lost_lines = lost_lines(&file, end, len).at(&path)?;
        found.push(Found {
            path,
            file,
            end,
            lost_lines,
        });
    }
    Ok(found)
}

/// Deletes what crashed creations left in `root/live`: hidden files nobody holds.
pub(crate) fn sweep(root: &Path) -> Result<()> {
    let dir = root.join(LIVE_DIR);
    // Not a linked directory, whose hidden files nobody locks would be deleted.
    own_dirs::check(root, &dir)?.refuse_links(None)?;
    let entries = match fs::read_dir(&dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other.at(&dir)?,
    };
    for entry in entries {
        let entry = entry.at(&dir)?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Locked means a creation under way; gone means it just completed.
        if let Ok((file, _)) = regular_file::open(OpenOptions::new().read(true), &path)
            && file.try_lock().is_ok()
        {
            let _ = fs::remove_file(&path);
        }
    }
    Ok(())
}

/// Whether `[end, len)` of a journal, what follows its last complete line, is more than
/// part of one line. A write under way, or one its process was killed in, leaves at most
/// that, which placed nothing: the session is changed only after its line is written. A
/// power loss leaves more, or zeros, where lines the disk never got were (ext4 and XFS
/// keep a file's new length but not always its new data): sessions their writes placed.
fn lost_lines(file: &File, end: u64, len: u64) -> io::Result<bool> {
    if len - end > super::journal::MAX_LINE as u64 {
        return Ok(true);
    }
    Ok(lines::read_range(file, end, len)?.contains(&0))
}

/// The length of `file` up to its last `\n`.
pub(crate) fn complete_end(file: &File) -> io::Result<u64> {
    complete_end_of(file, file.metadata()?.len())
}

/// [`complete_end`] of `file`, `len` bytes long.
fn complete_end_of(file: &File, len: u64) -> io::Result<u64> {
    let mut from = len;
    while from > 0 {
        let start = from.saturating_sub(4096);
        let chunk = lines::read_range(file, start, from)?;
        if let Some(newline) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + newline as u64 + 1);
        }
        from = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn a_journal_whose_path_cannot_be_looked_at_is_an_error_not_in_place() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let held = file.as_file().metadata().unwrap();
        let kind = |err: io::ErrorKind| status(Err(io::Error::from(err)), &held);
        for unknown in [io::ErrorKind::PermissionDenied, io::ErrorKind::Other] {
            assert_eq!(kind(unknown).unwrap_err().kind(), unknown);
        }
        for gone in [io::ErrorKind::NotFound, io::ErrorKind::NotADirectory] {
            assert_eq!(kind(gone).unwrap(), JournalStatus::Removed);
        }
        let named = fs::metadata(file.path());
        assert_eq!(status(named, &held).unwrap(), JournalStatus::InPlace);
    }

    /// Found by a review: every write took an `fstat` of its journal that failed (ESTALE,
    /// the file removed from an NFS server by another host) for an error, failing that
    /// write and every later one, where the path's `stat` finds the journal gone and a
    /// new one is started; and it took a link count of 0 (which some FUSE file systems
    /// report for every file) for a removal without asking the path: a new journal, and
    /// the index marked for a rebuild, at every write. The path now confirms the `fstat`.
    #[cfg(unix)]
    #[test]
    fn what_an_fstat_of_the_journal_says_is_confirmed_at_its_path() {
        let root = tempfile::tempdir().unwrap();
        let (mut live, _) = Live::create(root.path()).unwrap();
        let now = live.checked_us;
        let stale = || Err(io::Error::other("stale file handle"));
        // The metadata of a file with no name left.
        let unlinked = || tempfile::tempfile().unwrap().metadata();
        assert_eq!(unlinked().unwrap().nlink(), 0);
        for open in [stale(), unlinked()] {
            assert_eq!(live.check_found(open, now).unwrap(), JournalStatus::InPlace);
        }
        fs::remove_file(&live.path).unwrap();
        for open in [stale(), unlinked(), live.file.metadata()] {
            assert_eq!(live.check_found(open, now).unwrap(), JournalStatus::Removed);
        }
    }
}
