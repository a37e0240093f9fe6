//! The index lock, taken so that it is the file `lock` names, and the files written in
//! place made this directory's own first.
//!
//! Two of the index's files are written in place: `lock` (the state, at every creation and
//! deletion) and `ids-log` (appended to under that lock). In a directory snapshotted with
//! hard links (`cp -al`, rsnapshot, `rsync --link-dest`) the snapshot shares their inodes,
//! and those writes would change it too. So whoever takes the lock exclusively and finds
//! `lock` with other names copies it to a new file renamed over it, the new lock file
//! locked before it gets its name: the lock never lapses. Everyone else may hold the old
//! lock file open (an instance keeps it between writes), so every taker checks, once it
//! holds a lock, that `lock` still names the file it locked, and opens it again if not, as
//! a session's lock file is checked (see `crate::session_files`). An append to `ids-log`
//! likewise checks that the path names the handle it keeps, and copies the file first if
//! it has other names, whether or not `lock` had (see `Index::ids_log_for_append`): the
//! check, not an epoch some copy might have failed to store, keeps an instance from
//! appending to a file only a snapshot still names. The other files
//! are replaced by renames (`journal`, `ids`, temporary files), are empty markers, or are
//! an instance's own live journal, which it leaves for a new one when it finds it linked
//! (see `live`).

use std::fs::{self, File, Metadata, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use fusion_core::Result;

use super::state::State;
use super::{Handles, IDS_LOG, Index, LOCK, lock, own_dirs};
use crate::error::IoContext;
use crate::own_file;
use crate::regular_file;

/// What the index's `lock` path names, against a file opened from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Named {
    /// That file, with no other name.
    Alone,
    /// That file, which also has other names.
    Shared,
    /// Another file, or nothing: the file was replaced (by a taker who found it shared) or
    /// removed (with the index).
    Other,
}

impl Index {
    /// The index's file at `path` for reading and writing, created if missing and the
    /// directory then synced: the state or an id fsynced into a file whose name was not
    /// is lost with it on a power loss. A file already there costs the one `open` it did.
    pub(super) fn open_or_create_synced(&self, path: &Path) -> Result<(File, Metadata)> {
        let mut existing = OpenOptions::new();
        match regular_file::open_not_following(existing.read(true).write(true), path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            other => return other.at(path),
        }
        // Synced whoever created it: another writer may have made it since the open above
        // and not synced its name yet, so one found by this create is synced here too, as
        // `crate::dirs` does for a directory found made once it was missing.
        let created = regular_file::open_or_create(path).at(path)?;
        crate::session_files::sync_dir(&self.root)?;
        #[cfg(test)]
        self.entry_syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(created)
    }

    /// The index lock file, opened (created with the directory if `create`, else `None`
    /// when there is none) and locked, exclusively or shared, once `lock` still names it;
    /// taken exclusively, first made this directory's own ([`Self::unshare`]).
    pub(super) fn lock_index(&self, exclusive: bool, create: bool) -> Result<Option<File>> {
        let path = self.root.join(LOCK);
        // Not through a linked index directory, where the lock would be made or written.
        own_dirs::check_root(&self.root)?;
        loop {
            let (file, metadata) = if create {
                self.synced_dirs().create(&self.root)?;
                self.open_or_create_synced(&path)?
            } else {
                match regular_file::open(OpenOptions::new().read(true), &path) {
                    Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
                    other => other.at(&path)?,
                }
            };
            lock(&file, exclusive).at(&path)?;
            match self.named(&metadata)? {
                Named::Other => continue,
                Named::Shared if exclusive => return self.unshare(&file).map(Some),
                Named::Alone | Named::Shared => return Ok(Some(file)),
            }
        }
    }

    /// The index lock file `handles` keep (opened, with the directory, if they keep none),
    /// locked exclusively once `lock` still names it: one `stat` each time. Found
    /// hard-linked, it is replaced by a copy ([`Self::unshare`]); found replaced, it is
    /// opened again; found removed with the index, `handles` and the instance's journals
    /// are started anew and `rebuild` is set, as the lines those journals took since are
    /// read by nobody.
    pub(super) fn lock_held(
        &self,
        handles: &mut Handles,
        rebuild: &mut bool,
    ) -> Result<(File, Metadata)> {
        let lock_path = self.root.join(LOCK);
        loop {
            let (file, opened) = match handles.lock.take() {
                Some(held) => held,
                None => {
                    // Not through a linked index directory, where the lock and the id log
                    // would be made (a lock kept is checked below to be `lock` still).
                    own_dirs::check_root(&self.root)?;
                    self.synced_dirs().create(&self.root)?;
                    handles.root = Some(fs::metadata(&self.root).at(&self.root)?);
                    self.open_or_create_synced(&lock_path)?
                }
            };
            lock(&file, true).at(&lock_path)?;
            match self.named(&opened)? {
                Named::Alone => return Ok((file, opened)),
                Named::Shared => {
                    // Hard-linked (a snapshot): replaced by a copy, the id log too.
                    let copy = self.unshare(&file)?;
                    let metadata = copy.metadata().at(&lock_path)?;
                    handles.ids_log = None;
                    return Ok((copy, metadata));
                }
                Named::Other => {
                    let _ = file.unlock();
                    // Replaced by a writer who found it hard-linked, or removed with the
                    // index: then this instance's journals lost their names, and the lines
                    // they took since are read by nobody. Without a journal to tell (each
                    // finished, none started yet), a lock file with no name left is taken
                    // for removed with the index only if the index's directory is another
                    // one now: the replaced one has no name either once the snapshot that
                    // kept it is gone.
                    let removed = match self.lives.in_place()? {
                        Some(in_place) => !in_place,
                        None => {
                            own_file::is_removed(&file) && !self.same_root(handles.root.as_ref())
                        }
                    };
                    if removed {
                        // What it names now may be another writer's, not synced yet.
                        self.synced_dirs().index_removed(&self.root)?;
                        *handles = Handles::default();
                        self.lives.restart();
                        *rebuild = true;
                    }
                }
            }
        }
    }

    /// Whether the index's directory is still `was` (one `stat`): the same device and
    /// inode, and the same creation time where the file system keeps one (a directory
    /// made anew may get the inode number of the one removed).
    fn same_root(&self, was: Option<&Metadata>) -> bool {
        match (fs::metadata(&self.root), was) {
            (Ok(now), Some(was)) => {
                same_file(&now, was) && now.created().ok() == was.created().ok()
            }
            _ => false,
        }
    }

    /// What `lock` names, against the file that was `opened` from it: one `stat`.
    pub(super) fn named(&self, opened: &Metadata) -> Result<Named> {
        let path = self.root.join(LOCK);
        match fs::metadata(&path) {
            Ok(named) if same_file(&named, opened) => Ok(if own_file::is_shared(&named) {
                Named::Shared
            } else {
                Named::Alone
            }),
            Ok(_) => Ok(Named::Other),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Named::Other),
            Err(err) => Err(err).at(&path),
        }
    }

    /// Copies the lock file `held`, locked exclusively, to a new file renamed over it, and
    /// returns the new lock file, locked (see the module docs). The copy is fsynced before
    /// its rename and the directory after, so a crash leaves the old file or the copy,
    /// whole. The id log is made this directory's own by its next append
    /// ([`Self::ids_log_for_append`]).
    pub(super) fn unshare(&self, held: &File) -> Result<File> {
        let path = self.root.join(LOCK);
        // From the start: an instance's kept handle was last read up to the state's end
        // (`read_head` seeks), and what follows is not the state.
        let mut contents = Vec::new();
        let mut from = held;
        from.seek(SeekFrom::Start(0))
            .and_then(|_| from.read_to_end(&mut contents))
            .at(&path)?;
        if let Some(mut state) = State::parse(&contents) {
            // Every instance holding the old `ids-log` opens the new one before appending.
            state.epoch = state.epoch.wrapping_add(1);
            let head = state.format();
            contents.splice(..head.len().min(contents.len()), head);
        }
        self.copy_beside(LOCK, &path, |out| {
            // Locked before it is named `lock`: nobody else knows it yet.
            match out.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(io::ErrorKind::WouldBlock.into()),
                Err(TryLockError::Error(err)) => return Err(err),
            }
            super::write_at(out, &contents, 0)
        })
    }

    /// The id log to append to under the exclusive index lock: the one `handles` keep
    /// while `ids-log` still names it (else opened again: a merge or a build replaced it,
    /// or a copy made by the append of another instance), first copied if it has other
    /// names (a snapshot made with hard links; whether `lock` has is no sign either way:
    /// a copy of it made before the snapshot linked `ids-log`, or a snapshot of `ids-log`
    /// alone). One `stat` and one `fstat`, for creations and deletions only. A copy gives
    /// the state the next epoch, as the other replacements do.
    pub(super) fn ids_log_for_append<'h>(
        &self,
        handles: &'h mut Handles,
        state: &mut State,
    ) -> Result<&'h File> {
        let path = self.root.join(IDS_LOG);
        let named = match fs::metadata(&path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            other => Some(other.at(&path)?),
        };
        let kept = match (&handles.ids_log, &named) {
            (Some(log), Some(named)) if handles.epoch == state.epoch => {
                same_file(&log.metadata().at(&path)?, named)
            }
            _ => false,
        };
        if !kept {
            handles.ids_log = Some(self.open(IDS_LOG)?);
            handles.epoch = state.epoch;
        }
        if named.as_ref().is_some_and(own_file::is_shared) {
            let log = handles.ids_log.as_ref().expect("opened above");
            let copy = self.copy_beside(IDS_LOG, &path, |out| {
                let mut from = log;
                from.seek(SeekFrom::Start(0))?;
                io::copy(&mut from, out).map(drop)
            })?;
            handles.ids_log = Some(copy);
            state.epoch = state.epoch.wrapping_add(1);
            handles.epoch = state.epoch;
        }
        Ok(handles.ids_log.as_ref().expect("opened above"))
    }

    /// Writes `<name>.tmp` with `fill` and renames it over `path`, durably
    /// ([`own_file::replace_by_copy`]); returns the new file, still open.
    fn copy_beside(
        &self,
        name: &str,
        path: &Path,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<File> {
        let temp = self.root.join(format!("{name}.tmp"));
        own_file::replace_by_copy(&temp, path, |copy| fill(copy).at(&temp))
    }
}

/// Whether two metadata describe one file (device and inode).
#[cfg(unix)]
pub(super) fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Files are never replaced where `own_file::is_shared` says no.
#[cfg(not(unix))]
pub(super) fn same_file(_a: &Metadata, _b: &Metadata) -> bool {
    true
}

#[cfg(all(test, unix))]
mod tests {
    use super::super::{Change, Scanned};
    use super::*;

    use super::super::tests::ids;

    #[test]
    fn a_build_keeps_the_ids_logged_into_a_copy_made_while_it_scanned() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = tempfile::tempdir().unwrap();
        // A session of an earlier version: the index starts unbuilt.
        fs::write(dir.path().join("old.jsonl"), "{}\n").unwrap();
        let (index, other) = (Index::new(dir.path()), Index::new(dir.path()));
        let _ = other
            .record("first", Change::Create, i64::MIN, false)
            .unwrap();
        index
            .build(|| {
                // A snapshot made with hard links while the build scans: the next
                // creation copies the id log and logs its id into the copy.
                for name in [LOCK, IDS_LOG] {
                    fs::hard_link(index.root().join(name), snapshot.path().join(name)).unwrap();
                }
                let _ = other
                    .record("created", Change::Create, i64::MIN, false)
                    .unwrap();
                Ok(vec![Scanned::written_at(5, "old")])
            })
            .unwrap();
        assert_eq!(ids(&index), ["created", "first", "old"]);
    }

    #[test]
    fn an_instance_between_journals_whose_lock_file_lost_its_last_name_to_a_copy_keeps_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = tempfile::tempdir().unwrap();
        let mut idle = Index::new(dir.path());
        // Every line finishes its journal: the instance writes none when it takes the lock.
        idle.limits.0 = 1;
        let _ = idle.record("a", Change::Create, i64::MIN, false).unwrap();
        assert_eq!(idle.lives.in_place().unwrap(), None);
        // A snapshot links the lock file the idle instance keeps, another instance copies
        // it, and the snapshot goes: the kept file has no name left.
        fs::hard_link(idle.root().join(LOCK), snapshot.path().join(LOCK)).unwrap();
        let other = Index::new(dir.path());
        let _ = other.record("b", Change::Create, i64::MIN, false).unwrap();
        fs::remove_file(snapshot.path().join(LOCK)).unwrap();

        let _ = idle.record("c", Change::Create, i64::MIN, false).unwrap();
        assert!(idle.is_built(), "the index was taken for removed");
        assert_eq!(ids(&idle), ["a", "b", "c"]);
    }

    #[test]
    fn an_instance_between_journals_finds_the_index_removed_and_made_anew() {
        let dir = tempfile::tempdir().unwrap();
        let mut idle = Index::new(dir.path());
        idle.limits.0 = 1;
        let _ = idle.record("a", Change::Create, i64::MIN, false).unwrap();
        assert_eq!(idle.lives.in_place().unwrap(), None);
        // Removed, and made anew by another instance: the idle instance's journals, which
        // held `a`, went with it.
        fs::remove_dir_all(idle.root()).unwrap();
        let other = Index::new(dir.path());
        let _ = other.record("b", Change::Create, i64::MIN, false).unwrap();
        assert!(other.is_built());

        let _ = idle.record("c", Change::Create, i64::MIN, false).unwrap();
        assert!(!idle.is_built(), "not marked for a rebuild");
    }
}
