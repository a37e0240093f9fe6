//! The listing index in `.fusion-index/`: what lets a page of sessions be read without
//! opening every session file.
//!
//! ```text
//! .fusion-index/
//!   lock            locked to change the shared files below; holds the state (state.rs)
//!   compact.lock    held by whoever compacts or builds
//!   live/<random>   a storage instance's journals: `<µs> w|d <id>` per write (live.rs;
//!                   a copy's creation: `<µs> w@<µs> <id>`, see journal.rs)
//!   journal         the compacted journal: the lines of finished live journals, merged
//!   ids, ids-log    every id, sorted, and the creations/deletions since (ids.rs): by id
//!   owner/<owner>/<id>, tag/<hex>/<id>   membership markers (sets.rs): filters
//!   expiry/<hex>/<hex>/<hex>/<µs>.<id>   expiry markers (expiry.rs): what a purge reads
//!   unread          the sessions the latest build left out, a file of theirs unreadable
//! ```
//!
//! # Consistency
//!
//! The index is a *superset*: it may name sessions that no longer exist or places they
//! have left, never miss one. Every write takes its timestamp here and appends its
//! journal line (under the session's lock, before touching the session), so the line
//! exists before the session reports that `updated_at`; a listing checks every session it
//! shows against the session's own counters and metadata, skipping stale lines. A crash
//! after the line but before the session's counters leaves a line newer than the
//! session, which the next listing that meets it repairs (see `crate::listing`). The
//! expiry markers are a superset too: every session that expires has one at or before
//! its expiry, and a purge checks each against the session (see [`expiry`]).
//!
//! Appends, the hot path, share no lock with other instances: each instance writes its
//! own live journals, handing out timestamps that increase strictly across all of them
//! (and are later than the session's previous `updated_at`), so every journal is sorted
//! by `(timestamp, id)` and a listing merges them newest first, each found by binary
//! search. An instance has one journal while its writes come one at a time; a write
//! that finds it busy (another thread of the instance is writing its line) takes the
//! next of `live::LIVE_SLOTS` journals instead of waiting, so many threads never queue
//! behind one holder's system call (or behind a holder the scheduler paused). Creations
//! and deletions also append to the shared id log, under the index lock, at the valid
//! length the state records, so junk a crash left after it is overwritten. Readers take
//! the lock shared only to read the state and open the files, then read without it.
//!
//! A write's timestamp follows its session's previous line because the session's lock
//! file carries that line's time (its counters). A deletion removes the lock file, and
//! with it that floor, so the state keeps the latest timestamp any deletion got
//! (`deleted`, raised by each under the index lock it takes anyway to log the id), and a
//! creation, which takes that lock too, logs its id first and is stamped after it. So a
//! creation's line follows the delete of its id whichever instance deleted, on whichever
//! clock: a listing takes the lines of an id recorded before its delete line for the
//! deleted session's (see `crate::listing`), and an instance whose clock runs ahead
//! stamps its delete ahead of the others' now. The floor is one number for all ids (no
//! per-id record survives a delete at O(1)), read at no extra cost: after a delete by
//! an instance whose clock runs ahead, any creation is stamped as that instance would
//! stamp it, as a write to a session that instance last wrote already is. A delete
//! that stopped between its journal line and the state leaves its session's lock file
//! behind holding counters, or a generation it stored first where they were lost (it
//! unlinks that file last): a creation that finds either takes its floor from the live
//! journals' delete lines as well, and whoever removes such a lock file without a
//! session (a delete made again, a purge) raises `deleted` to them first (see
//! `crate::session_files`' `stopped`).
//!
//! # Upkeep, paid by the writes that cause it
//!
//! An instance whose live journal passes 1 MiB starts a new one, and then folds the
//! journals nobody holds any more into the compacted one (each session's line recorded
//! last kept, deletions dropped; see [`journal`]) once they are half as long as it: O(1)
//! per write amortised. One that finds more than 16 journals when it starts one folds
//! whatever is finished (many short-lived processes). The creation or deletion
//! that grows the id log past 1/32 of the sorted ids merges the two. Both run after the
//! write released its session's lock, and hold the index lock only to rename. A
//! directory written by an earlier version has no index: the first listing builds it by
//! scanning the directory once.

mod expiry;
mod ids;
mod journal;
mod lines;
mod links;
mod live;
mod markers;
mod own_dirs;
mod record;
mod sets;
mod snapshot;
mod state;
mod upkeep;

#[cfg(test)]
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fusion_core::{Result, new_generation};

pub(crate) use self::expiry::marker_instant;
pub(crate) use self::journal::{Kind, Scanned};
use self::live::Lives;
pub(crate) use self::own_dirs::CheckedDirs;
#[cfg(test)]
pub(crate) use self::own_dirs::lstats as dir_lstats;
pub(crate) use self::record::{Change, Recorded};
pub(crate) use self::sets::{Members, SetKey};
pub(crate) use self::snapshot::Snapshot;
#[cfg(test)]
pub(crate) use self::snapshot::reads_above_cursor;
use self::state::State;
use crate::error::{BACKEND, IoContext};
use crate::file_name::INDEX_DIR;
use crate::own_file;
use crate::regular_file;
use crate::synced_dirs::SyncedDirs;

const LOCK: &str = "lock";
const COMPACT_LOCK: &str = "compact.lock";
const JOURNAL: &str = "journal";
const IDS: &str = "ids";
const IDS_LOG: &str = "ids-log";

/// An instance starts a new live journal once its own passes this.
const LIVE_MAX: u64 = 1 << 20;
/// An instance that finds more live journals than this when it starts one folds the
/// finished ones, however short.
const LIVE_FILES_MAX: usize = 16;
/// The id log is merged once it is past 1/32 of the sorted ids, or this. A page by id
/// reads the whole log: at a million sessions that is some 30,000 lines.
const IDS_LOG_MIN: u64 = 64 << 10;

/// The index of one session directory. Cheap to keep: files are opened on first use.
#[derive(Debug)]
pub(crate) struct Index {
    root: PathBuf,
    /// [`LIVE_MAX`] and [`IDS_LOG_MIN`]; smaller in tests.
    limits: (u64, u64),
    /// This instance's live journals.
    lives: Lives,
    /// The files creations and deletions write, kept between writes. The mutex orders
    /// this instance's writers of them: the lock file's lock is per open file, not per
    /// thread.
    handles: Mutex<Handles>,
    /// The directories whose entries this instance made durable ([`crate::synced_dirs`]).
    dirs: SyncedDirs,
    /// How many times this instance fsynced the state: what the tests of durability
    /// count.
    #[cfg(test)]
    state_syncs: std::sync::atomic::AtomicUsize,
    /// How many times it synced the directory after creating one of its files.
    #[cfg(test)]
    entry_syncs: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, Default)]
struct Handles {
    /// The index lock file, and its metadata when opened (see [`links`]).
    lock: Option<(File, fs::Metadata)>,
    /// The index's directory as found when that file was opened: another one there once
    /// the file has no name left tells an index removed from a lock file replaced.
    root: Option<fs::Metadata>,
    epoch: u64,
    ids_log: Option<File>,
}

impl Index {
    /// The index of the sessions in `dir`.
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            root: dir.join(INDEX_DIR),
            limits: (LIVE_MAX, IDS_LOG_MIN),
            lives: Lives::new(),
            handles: Mutex::new(Handles::default()),
            dirs: SyncedDirs::default(),
            #[cfg(test)]
            state_syncs: Default::default(),
            #[cfg(test)]
            entry_syncs: Default::default(),
        }
    }

    /// How many times this instance fsynced the index state.
    #[cfg(test)]
    pub(crate) fn state_syncs(&self) -> usize {
        self.state_syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the id log is due to be merged in `state`.
    fn ids_due(&self, state: &State) -> bool {
        state.ids_log_len > (state.ids_len / 32).max(self.limits.1)
    }

    /// Runs the clock of this instance's timestamps `by` ahead of the real one.
    #[cfg(test)]
    pub(crate) fn run_clock_ahead(&self, by: std::time::Duration) {
        self.lives.run_clock_ahead(by);
    }

    /// Folds the finished live journals now, however short (the upkeep of a write waits
    /// until they are long).
    #[cfg(test)]
    pub(crate) fn fold_now(&self) -> Result<()> {
        let mut folding = Index::new(self.root.parent().expect("the sessions' directory"));
        folding.limits.0 = 0;
        folding.fold()
    }

    /// The directories whose entries this instance made durable.
    pub(crate) fn synced_dirs(&self) -> &SyncedDirs {
        &self.dirs
    }

    /// The index's directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Runs `change` on the index's state under the index lock, then stores the state,
    /// marked for a rebuild from the session files if `rebuild`, or if the index was
    /// removed under this instance (its lock file has no name): its journals then hold
    /// the only lines of its writes since, and new ones are started (even in a directory
    /// without sessions yet, whose new index would be built otherwise).
    fn update_state<R>(
        &self,
        handles: &mut Handles,
        rebuild: bool,
        sync: bool,
        change: impl FnOnce(&mut Handles, &mut State) -> Result<R>,
    ) -> Result<R> {
        let mut rebuild = rebuild;
        let (lock_file, opened) = self.lock_held(handles, &mut rebuild)?;
        let result = (|| {
            let mut state = self.read_state(&lock_file)?;
            let result = change(handles, &mut state)?;
            state.built &= !rebuild;
            self.write_state(&lock_file, &state, sync || rebuild)?;
            Ok(result)
        })();
        let _ = lock_file.unlock();
        handles.lock = Some((lock_file, opened));
        result
    }

    /// Runs the upkeep a write made due. Failures are logged, not returned: the write
    /// itself succeeded, and the next write that finds the upkeep due tries again.
    pub(crate) fn upkeep(&self, recorded: Recorded) {
        let run = |what: &str, result: Result<()>| {
            if let Err(err) = result {
                tracing::warn!(backend = BACKEND, error = %err, "index {what} failed; retried later");
            }
        };
        if recorded.fold {
            run("compaction", self.fold());
        }
        if recorded.merge_ids {
            run("id merge", self.merge_ids());
        }
    }

    /// A consistent view of the index files for one listing, or `None` if there is no
    /// index yet.
    pub(crate) fn snapshot(&self) -> Result<Option<Snapshot>> {
        let lock_path = self.root.join(LOCK);
        let Some(lock_file) = self.lock_index(false, false)? else {
            return Ok(None);
        };
        let result = (|| {
            let state = State::parse(&read_head(&lock_file).at(&lock_path)?);
            let Some(state) = state.filter(|s| s.built) else {
                return Ok(None);
            };
            let live = live::list(&self.root)?;
            // Made with every built index and kept by folds: missing, it was removed by
            // hand, with what its journals held that the compacted one does not.
            let live_lost = live.is_empty() && !self.root.join(live::LIVE_DIR).is_dir();
            Ok(Some(Snapshot {
                root: self.root.clone(),
                state,
                journal: self.open_read(JOURNAL)?,
                live,
                live_lost,
                ids: self.open_read(IDS)?,
                ids_log: self.open_read(IDS_LOG)?,
            }))
        })();
        let _ = lock_file.unlock();
        result
    }

    /// Whether the index holds every session, its expiry markers included (see
    /// [`State::built`]); `false` if there is no index or it cannot be read.
    pub(crate) fn is_built(&self) -> bool {
        let Ok(Some(lock_file)) = self.lock_index(false, false) else {
            return false;
        };
        let head = read_head(&lock_file);
        let _ = lock_file.unlock();
        head.ok()
            .and_then(|head| State::parse(&head))
            .is_some_and(|state| state.built)
    }

    fn open(&self, name: &str) -> Result<File> {
        let path = self.root.join(name);
        self.open_or_create_synced(&path).map(|(file, _)| file)
    }

    /// A file opened for reading; a missing one reads as empty.
    fn open_read(&self, name: &str) -> Result<Option<File>> {
        let path = self.root.join(name);
        match regular_file::open(OpenOptions::new().read(true), &path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            other => other.at(&path).map(|(file, _)| Some(file)),
        }
    }

    /// The state, under the exclusive lock. A damaged state is recovered from the files,
    /// marked as not built, so the next listing rebuilds the index; so is a new one in a
    /// directory that already holds sessions (written by an earlier version). A new index
    /// in a directory without sessions is complete from the start.
    fn read_state(&self, lock_file: &File) -> Result<State> {
        let path = self.root.join(LOCK);
        let head = read_head(lock_file).at(&path)?;
        match State::parse(&head) {
            Some(state) if state.deleted.is_some() => return Ok(state),
            // Written by the version before `deleted`, which reads and writes the first
            // line only (see [`state`]): the rest holds, `deleted` is recovered.
            Some(state) => {
                let state = State {
                    deleted: Some(self.latest_delete()?),
                    ..state
                };
                self.write_state(lock_file, &state, true)?;
                return Ok(state);
            }
            None => {}
        }
        if head.is_empty() && !self.has_sessions()? {
            // A built index has its journals' directory (see `Snapshot::is_damaged`).
            live::make_dir(&self.root)?;
            let state = State {
                built: true,
                epoch: new_generation(),
                // None in a new directory (no live journal yet, one `readdir`); a lost
                // state's live journals may still hold delete lines.
                deleted: Some(self.latest_delete()?),
                ..State::default()
            };
            self.write_state(lock_file, &state, true)?;
            return Ok(state);
        }
        let state = State {
            built: false,
            journal_len: valid_len(&self.open(JOURNAL)?).at(&self.root.join(JOURNAL))?,
            ids_len: valid_len(&self.open(IDS)?).at(&self.root.join(IDS))?,
            ids_log_len: valid_len(&self.open(IDS_LOG)?).at(&self.root.join(IDS_LOG))?,
            epoch: new_generation(),
            deleted: Some(self.latest_delete()?),
        };
        self.write_state(lock_file, &state, true)?;
        Ok(state)
    }

    /// The latest timestamp of a delete line in the live journals, for a state recovered
    /// from damage or loss, or a creation after a delete that stopped before the state
    /// took its timestamp: the journals still hold every delete line a listing may meet (the
    /// compacted journal none: a fold drops them). Read once, on those rare paths.
    pub(crate) fn latest_delete(&self) -> Result<i64> {
        let mut deleted = i64::MIN;
        for found in live::list(&self.root)? {
            journal::for_each_line(&found.file, found.end, |_, entry| {
                if entry.kind == Kind::Delete {
                    deleted = deleted.max(entry.t);
                }
            })
            .at(&found.path)?;
        }
        Ok(deleted)
    }

    /// Whether the session directory holds a session file (stops at the first).
    fn has_sessions(&self) -> Result<bool> {
        let Some(dir) = self.root.parent() else {
            return Ok(false);
        };
        let entries = match fs::read_dir(dir) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            other => other.at(dir)?,
        };
        for entry in entries {
            let name = entry.at(dir)?.file_name();
            if name
                .to_str()
                .and_then(crate::file_name::id_from_file_name)
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn write_state(&self, lock_file: &File, state: &State, sync: bool) -> Result<()> {
        let path = self.root.join(LOCK);
        write_at(lock_file, &state.format(), 0).at(&path)?;
        if sync {
            lock_file.sync_data().at(&path)?;
            #[cfg(test)]
            self.state_syncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Writes a temporary file next to `name` with `fill`, fsyncs it and returns its path
    /// and length; the caller renames it into place.
    fn write_temp(
        &self,
        name: &str,
        fill: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
    ) -> Result<(PathBuf, u64)> {
        let path = self.root.join(format!("{name}.tmp"));
        let (file, _) = own_file::create_anew(&path).at(&path)?;
        let mut out = BufWriter::with_capacity(256 * 1024, &file);
        fill(&mut out).and_then(|()| out.flush()).at(&path)?;
        drop(out);
        file.sync_all().at(&path)?;
        let len = file.metadata().at(&path)?.len();
        Ok((path, len))
    }
}

/// Takes `file`'s lock, exclusive or shared, through interruptions.
pub(crate) fn lock(file: &File, exclusive: bool) -> io::Result<()> {
    loop {
        let result = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        match result {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// The first bytes of `file`, enough for the state.
fn read_head(file: &File) -> io::Result<Vec<u8>> {
    lines::read_range(file, 0, State::LEN as u64)
}

/// The length of `file` up to its last `\n`.
fn valid_len(file: &File) -> io::Result<u64> {
    live::complete_end(file)
}

/// Writes `bytes` at `offset` of `file`.
#[cfg(unix)]
pub(crate) fn write_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

#[cfg(not(unix))]
pub(crate) fn write_at(mut file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newest_first(index: &Index) -> Vec<(i64, String)> {
        let snapshot = index.snapshot().unwrap().expect("built");
        assert!(!snapshot.is_damaged());
        let mut entries = snapshot.newest_first(None).unwrap();
        let mut out = Vec::new();
        while let Some(entry) = entries.next_entry().unwrap() {
            if entry.kind == Kind::Write {
                out.push((entry.t, entry.id));
            }
        }
        assert!(!entries.damaged());
        out
    }

    /// The ids a listing by id finds in `index`, in its order.
    pub(super) fn ids(index: &Index) -> Vec<String> {
        let snapshot = index.snapshot().unwrap().expect("built");
        let mut ids = snapshot.ids_after(None).unwrap().unwrap();
        let mut out = Vec::new();
        while let Some(id) = ids.next_id().unwrap() {
            out.push(id);
        }
        out
    }

    fn live_files(dir: &Path) -> usize {
        fs::read_dir(dir.join(INDEX_DIR).join(live::LIVE_DIR)).map_or(0, |entries| entries.count())
    }

    #[test]
    fn the_writes_that_grow_the_files_fold_them() {
        let dir = tempfile::tempdir().unwrap();
        // A session of an earlier version: the index starts unbuilt.
        fs::write(dir.path().join("old.jsonl"), "{}\n").unwrap();
        let mut index = Index::new(dir.path());
        index.limits = (256, 64);
        index
            .build(|| Ok(vec![Scanned::written_at(5, "old")]))
            .unwrap();
        let mut last = HashMap::new();
        for round in 0..200 {
            for id in ["a", "b", "c"] {
                let change = if round == 0 {
                    Change::Create
                } else {
                    Change::Write
                };
                let recorded = index.record(id, change, i64::MIN, false).unwrap();
                last.insert(id, recorded.t);
                index.upkeep(recorded);
            }
        }
        let gone = index
            .record("b", Change::Delete, last["b"] + 1, false)
            .unwrap();
        index.upkeep(gone);
        let state = index.snapshot().unwrap().unwrap().state;
        assert!(state.journal_len > 0, "folded: {state:?}");
        assert!(live_files(dir.path()) <= 2, "finished journals are deleted");
        // The last write of each live session, newest first, and the scanned one.
        let listed = newest_first(&index);
        let live: Vec<(i64, String)> = listed
            .iter()
            .filter(|(_, id)| id != "b")
            .take(2)
            .cloned()
            .collect();
        assert_eq!(
            live,
            [(last["c"], "c".to_string()), (last["a"], "a".to_string())]
        );
        assert!(listed.contains(&(5, "old".to_string())));
        assert!(listed.windows(2).all(|w| w[0] > w[1]), "newest first");
        assert_eq!(ids(&index), ["a", "c", "old"]);
        let more = index.record("b", Change::Create, i64::MIN, false).unwrap();
        index.upkeep(more);
        assert_eq!(ids(&index), ["a", "b", "c", "old"]);
        assert_eq!(newest_first(&index)[0], (more.t, "b".to_string()));
    }

    #[test]
    fn folds_racing_writers_in_other_instances_lose_no_line() {
        let dir = tempfile::tempdir().unwrap();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    // One instance per thread: its own journal and locks, like a process.
                    let mut index = Index::new(&path);
                    index.limits = (512, 64);
                    let mut last = HashMap::new();
                    for i in 0..400 {
                        let id = format!("s{}", (i * 7 + w) % 40);
                        let change = if i < 40 {
                            Change::Create
                        } else {
                            Change::Write
                        };
                        let recorded = index.record(&id, change, i64::MIN, false).unwrap();
                        last.insert(id, recorded.t);
                        index.upkeep(recorded);
                    }
                    last
                })
            })
            .collect();
        let mut newest: HashMap<String, i64> = HashMap::new();
        for writer in writers {
            for (id, t) in writer.join().unwrap() {
                let entry = newest.entry(id).or_insert(t);
                *entry = (*entry).max(t);
            }
        }
        let index = Index::new(dir.path());
        let state = index.snapshot().unwrap().unwrap().state;
        assert!(state.journal_len > 0 && state.ids_len > 0, "{state:?}");
        let mut seen = HashMap::new();
        for (t, id) in newest_first(&index) {
            seen.entry(id).or_insert(t);
        }
        assert_eq!(seen, newest, "each id's newest line survives");
        let mut expected: Vec<String> = newest.into_keys().collect();
        expected.sort();
        assert_eq!(ids(&index), expected);
    }

    #[test]
    fn a_write_that_finds_the_journal_busy_takes_the_next_in_the_same_order() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::new(dir.path());
        index.build(|| Ok(Vec::new())).unwrap();
        let record = |id: &str, change, floor| {
            let recorded = index.record(id, change, floor, false).unwrap();
            index.upkeep(recorded);
            recorded.t
        };
        let first = record("a", Change::Create, i64::MIN);
        // Another thread of the instance writing its line: the next writes go elsewhere.
        let busy = index.lives.hold_first();
        let second = record("b", Change::Create, i64::MIN);
        let third = record("a", Change::Write, first + 1);
        assert_eq!(live_files(dir.path()), 2);
        drop(busy);
        let fourth = record("c", Change::Create, i64::MIN);
        assert_eq!(live_files(dir.path()), 2, "the first journal is free again");
        assert!(first < second && second < third && third < fourth);
        let listed = newest_first(&index);
        let expected = [(fourth, "c"), (third, "a"), (second, "b"), (first, "a")];
        assert_eq!(
            listed,
            expected.map(|(t, id)| (t, id.to_string())),
            "both journals merged, newest first"
        );
        assert_eq!(ids(&index), ["a", "b", "c"]);
    }

    #[test]
    fn threads_of_one_instance_lose_no_line_and_keep_one_order() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::new(dir.path());
        index.build(|| Ok(Vec::new())).unwrap();
        // However the threads interleave (one journal or several), each id's newest line
        // is found, and the timestamps are unique across the instance's journals.
        let newest: HashMap<String, i64> = std::thread::scope(|scope| {
            let writers: Vec<_> = (0..8)
                .map(|w| {
                    let index = &index;
                    scope.spawn(move || {
                        let mut last = HashMap::new();
                        for i in 0..300 {
                            let id = format!("t{w}-{}", i % 30);
                            let floor = last.get(&id).map_or(i64::MIN, |t: &i64| t + 1);
                            let change = if i < 30 {
                                Change::Create
                            } else {
                                Change::Write
                            };
                            let recorded = index.record(&id, change, floor, false).unwrap();
                            assert!(recorded.t >= floor);
                            last.insert(id, recorded.t);
                            index.upkeep(recorded);
                        }
                        last
                    })
                })
                .collect();
            writers
                .into_iter()
                .flat_map(|writer| writer.join().unwrap())
                .collect()
        });
        let listed = newest_first(&index);
        assert!(
            listed.windows(2).all(|w| w[0].0 > w[1].0),
            "one strict order"
        );
        let mut seen = HashMap::new();
        for (t, id) in listed {
            seen.entry(id).or_insert(t);
        }
        assert_eq!(seen, newest, "each id's newest line survives");
        assert_eq!(ids(&index).len(), 8 * 30);
    }

    #[test]
    fn a_lost_state_is_recovered_and_the_index_marked_for_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::new(dir.path());
        let first = index.record("a", Change::Create, i64::MIN, false).unwrap();
        fs::write(index.root().join(LOCK), b"junk").unwrap();
        assert!(index.snapshot().unwrap().is_none(), "not built any more");
        let other = Index::new(dir.path());
        let second = other
            .record("b", Change::Create, first.t + 1, false)
            .unwrap();
        // The scan finds what the sessions say; the journals' lines are kept as well.
        index
            .build(|| {
                Ok(vec![
                    Scanned::written_at(first.t, "a"),
                    Scanned::written_at(second.t, "b"),
                ])
            })
            .unwrap();
        // The instances still hold their journals, whose lines the build copied: a
        // listing meets each write twice and counts it once.
        let mut listed: Vec<String> = newest_first(&index).into_iter().map(|(_, id)| id).collect();
        listed.dedup();
        assert_eq!(listed, ["b", "a"]);
        assert_eq!(ids(&index), ["a", "b"]);
    }

    #[test]
    fn damaged_id_files_are_left_to_a_rebuild_never_merged() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::new(dir.path());
        index.limits = (LIVE_MAX, 64);
        index.build(|| Ok(Vec::new())).unwrap();
        for id in ["a", "b", "c"] {
            let created = index.record(id, Change::Create, i64::MIN, false).unwrap();
            assert!(!created.merge_ids, "the log is short yet");
        }
        assert_eq!(ids(&index), ["a", "b", "c"]);
        // Zeros where the log's lines were, as a power loss can leave a file written in
        // place; the creation that takes the log past its limit makes a merge due.
        let log = index.root().join(IDS_LOG);
        let len = fs::metadata(&log).unwrap().len();
        fs::write(&log, vec![0; usize::try_from(len).unwrap()]).unwrap();
        let long = "x".repeat(100);
        let created = index
            .record(&long, Change::Create, i64::MIN, false)
            .unwrap();
        assert!(created.merge_ids);
        index.upkeep(created);
        // Merged, `a`, `b` and `c` would be gone from the ids for good; the index is
        // marked for a rebuild instead, which restores them from the session files.
        assert!(!index.is_built(), "left to a rebuild");
        assert!(fs::read(index.root().join(IDS)).unwrap().is_empty());
    }

    #[test]
    fn a_fold_leaves_a_journal_that_lost_lines_to_a_rebuild() {
        // Zeros where a stopped writer's last lines were (no line ends there), or over
        // its lines, their ends kept.
        for zeros_keep_newlines in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            Index::new(dir.path()).build(|| Ok(Vec::new())).unwrap();
            let stopped = Index::new(dir.path());
            for id in ["a", "b", "c"] {
                let created = stopped.record(id, Change::Create, i64::MIN, false).unwrap();
                stopped.upkeep(created);
            }
            drop(stopped);
            let live_dir = dir.path().join(INDEX_DIR).join(live::LIVE_DIR);
            let journal = fs::read_dir(&live_dir).unwrap().next().unwrap().unwrap();
            let journal = journal.path();
            let mut bytes = fs::read(&journal).unwrap();
            let second_line = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
            for byte in &mut bytes[second_line..] {
                if !(zeros_keep_newlines && *byte == b'\n') {
                    *byte = 0;
                }
            }
            fs::write(&journal, bytes).unwrap();
            // Another instance writes until its journal is finished and a fold is due.
            let mut writer = Index::new(dir.path());
            writer.limits = (256, IDS_LOG_MIN);
            loop {
                let written = writer.record("d", Change::Write, i64::MIN, false).unwrap();
                let due = written.is_due();
                writer.upkeep(written);
                if due {
                    break;
                }
            }
            assert!(!writer.is_built(), "left to a rebuild");
            assert!(journal.exists(), "not folded away");
        }
    }

    #[test]
    fn a_file_created_for_lines_fsynced_into_it_has_its_name_synced_once() {
        use std::sync::atomic;
        let dir = tempfile::tempdir().unwrap();
        let index = Index::new(dir.path());
        let dir_syncs = |index: &Index| index.lives.hold_first().as_ref().map(|l| l.dir_syncs);
        // A write left to the page cache pays for no directory sync.
        let _ = index.record("a", Change::Write, i64::MIN, false).unwrap();
        assert_eq!(dir_syncs(&index), Some(0));
        for _ in 0..2 {
            let _ = index.record("a", Change::Write, i64::MIN, true).unwrap();
        }
        assert_eq!(dir_syncs(&index), Some(1), "the new journal's name, once");
        // A creation makes the index's lock, state and id files, each synced into place.
        let _ = index.record("b", Change::Create, i64::MIN, true).unwrap();
        let made = fs::read_dir(&index.root).unwrap();
        let files = made.filter(|entry| entry.as_ref().unwrap().path().is_file());
        let entry_syncs = |index: &Index| index.entry_syncs.load(atomic::Ordering::Relaxed);
        assert_eq!(entry_syncs(&index), files.count());
        // Found there, they cost another instance nothing.
        let other = Index::new(dir.path());
        let _ = other.record("c", Change::Create, i64::MIN, true).unwrap();
        assert_eq!(entry_syncs(&other), 0);
    }

    /// Copies the directory `from` to `to`, as `cp -r` does.
    fn copy_tree(from: &Path, to: &Path) {
        fs::create_dir(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let to = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_tree(&entry.path(), &to);
            } else {
                fs::copy(entry.path(), &to).unwrap();
            }
        }
    }

    /// Found by a review: a session directory moved away (renamed, a copy put in its
    /// place, as a restore does) kept its journal's link count, so the instance went on
    /// appending the lines of its writes to the journal it had moved away with, which the
    /// new index never reads: a session written so was left out of listings (its line
    /// there older than its counters) with nothing to mark the index for a rebuild. The
    /// journal's once-a-second look checks its path: found another file, it is taken for
    /// removed, and the write's line goes to a new journal, the index marked for a rebuild.
    #[test]
    fn a_journal_moved_away_with_its_directory_is_taken_for_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sessions");
        let index = Index::new(&root);
        let _ = index.record("s", Change::Create, i64::MIN, false).unwrap();
        fs::rename(&root, dir.path().join("moved")).unwrap();
        copy_tree(&dir.path().join("moved"), &root);
        // The write looks again a while later.
        index.run_clock_ahead(std::time::Duration::from_secs(3600));
        let written = index.record("s", Change::Write, i64::MIN, false).unwrap();
        assert!(!index.is_built(), "left to a rebuild");
        let line = journal::encode(written.t, Kind::Write, "s");
        let live = root.join(INDEX_DIR).join(live::LIVE_DIR);
        let journals = fs::read_dir(live)
            .unwrap()
            .map(|e| fs::read(e.unwrap().path()));
        let with_line = journals.filter(|j| j.as_ref().unwrap().ends_with(&line));
        assert_eq!(with_line.count(), 1, "the line in the new index");
    }
}
