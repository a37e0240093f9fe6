//! A session's lock file, held: the advisory lock and the generation it stores.
//!
//! The protocol (why a separate file, why its identity is checked after locking, when it
//! is removed) is described in [`crate::session_files`]; this module holds the handle.

use std::fs::{self, File, Metadata, OpenOptions, TryLockError};
use std::io;
use std::path::Path;
use std::time::SystemTime;

use fusion_core::{LEGACY_GENERATION, Result};

use crate::counters::{self, Counters, LockContents};
use crate::error::{BACKEND, IoContext};
use crate::own_file;
use crate::regular_file;

/// A session's lock, held until dropped.
#[derive(Debug)]
pub(crate) struct SessionLock {
    /// `None` when reading unlocked in a directory where the lock file cannot exist.
    file: Option<File>,
}

impl SessionLock {
    /// Takes the exclusive lock on `path`, creating it (and `dir`) if needed.
    ///
    /// The lock file's name is not synced into `dir` here, whoever created it (this
    /// process, or another writer a moment before that has not synced it yet): the
    /// writes a [`SyncPolicy`](crate::SyncPolicy) makes durable (a `save`, a `truncate`,
    /// under `EveryWrite` an append that made the session file) and a delete, before its
    /// journal line, sync the session directory under this lock, so once the lock file is
    /// there, and that sync takes its name too. Where what such a write fsyncs into the
    /// lock file would otherwise be durable before its name, the write syncs the directory
    /// first, only when the lock file may be new: a rewrite whose lock file held no
    /// generation of its own (before its rename), and an `EveryWrite` metadata update whose
    /// lock file held no counters and that removes the metadata file (a write of it syncs
    /// the directory, the lock file's name with it). An append to an existing session
    /// does not fsync the counters it stores, under any policy: a lock file lost with them
    /// is counted again, at the legacy generation it read as before that append.
    pub(crate) fn exclusive(dir: &Path, path: &Path) -> Result<Self> {
        loop {
            let (file, opened) = match regular_file::open_or_create(path) {
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    // The session directory: whatever the policy, a `save` made durable
                    // in it must not be lost with its entry.
                    crate::dirs::create_missing(dir, true)?;
                    regular_file::open_or_create(path)
                }
                other => other,
            }
            .at(path)?;
            retry_interrupted(|| file.lock()).at(path)?;
            if let Some(named) = still_linked(&opened, path)? {
                // As found under the lock: a link made before it is not missed.
                let file = if own_file::is_shared(&named) {
                    unshare(&file, path)?
                } else {
                    file
                };
                return Ok(Self { file: Some(file) });
            }
        }
    }

    /// Takes the exclusive lock on `path` if that needs no waiting and no creating:
    /// `None` when the lock file does not exist, another handle holds the lock, or the
    /// file was removed before this took it (see [`exclusive`](Self::exclusive)).
    pub(crate) fn try_exclusive(path: &Path) -> Result<Option<Self>> {
        Self::try_taking(path, true, File::try_lock)
    }

    /// Takes the shared lock on `path` on the terms of [`try_exclusive`](Self::try_exclusive).
    /// The file is opened for reading only, so this works where it cannot be written.
    pub(crate) fn try_shared(path: &Path) -> Result<Option<Self>> {
        Self::try_taking(path, false, File::try_lock_shared)
    }

    fn try_taking(
        path: &Path,
        write: bool,
        try_lock: impl FnOnce(&File) -> std::result::Result<(), TryLockError>,
    ) -> Result<Option<Self>> {
        let opened =
            regular_file::open_not_following(OpenOptions::new().read(true).write(write), path);
        let (file, opened) = match opened {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            other => other.at(path)?,
        };
        match try_lock(&file) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(err)) => return Err(err).at(path),
        }
        match still_linked(&opened, path)? {
            // Left to `exclusive`, which copies it first: not a call's to make without
            // waiting (it fsyncs).
            Some(named) if write && own_file::is_shared(&named) => Ok(None),
            Some(_) => Ok(Some(Self { file: Some(file) })),
            None => Ok(None),
        }
    }

    /// Takes the shared lock on `path`, so a reader never sees half of a write.
    ///
    /// In a directory this process may not write to (a read-only mount, another user's
    /// sessions) the lock file may be impossible to create; nobody can be writing through
    /// this backend there without having created it, so reading unlocked is safe.
    pub(crate) fn shared(path: &Path) -> Result<Self> {
        loop {
            let (file, opened) = match regular_file::open_or_create(path) {
                Ok(opened) => opened,
                Err(err) if is_unwritable(&err) => {
                    match regular_file::open_not_following(OpenOptions::new().read(true), path) {
                        Ok(opened) => opened,
                        Err(err) if err.kind() == io::ErrorKind::NotFound => {
                            return Ok(Self { file: None });
                        }
                        Err(err) => return Err(err).at(path),
                    }
                }
                Err(err) => return Err(err).at(path),
            };
            retry_interrupted(|| file.lock_shared()).at(path)?;
            if still_linked(&opened, path)?.is_some() {
                return Ok(Self { file: Some(file) });
            }
        }
    }

    /// What the lock file stores (generation and counters), read in one `read()`.
    pub(crate) fn contents(&self, path: &Path) -> Result<LockContents> {
        let Some(file) = self.file.as_ref() else {
            return Ok(counters::parse(b""));
        };
        #[cfg(test)]
        CONTENTS_READ.with(|reads| reads.set(reads.get() + 1));
        // Exactly what `format` writes, `\n` included: a buffer one byte longer would
        // cost every read a second `pread` to find the end of the file.
        let mut bytes = vec![0; counters::FORMATTED_LEN];
        let read = read_at(file, &mut bytes).at(path)?;
        bytes.truncate(read);
        Ok(counters::parse(&bytes))
    }

    /// The generation stored in the lock file, for a session whose data file holds
    /// messages: [`LEGACY_GENERATION`] if none is stored (an empty lock file, written
    /// before generations existed) or if what is stored is not one.
    pub(crate) fn generation(&self, path: &Path) -> Result<u64> {
        Ok(generation_of(&self.contents(path)?, path))
    }

    /// Stores `generation` and `counters` with one `write()` of a fixed length, fsyncing
    /// them if `sync`. Only for an exclusive lock.
    pub(crate) fn store(
        &self,
        path: &Path,
        generation: u64,
        counters: &Counters,
        sync: bool,
    ) -> Result<()> {
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        // Always the same length, so this overwrites what was stored before (a shorter
        // bare generation, written by earlier versions, included). Whatever a hand edit
        // left after it is never read: the counters end at their line's `\n`.
        write_at(file, &counters::format(generation, counters)).at(path)?;
        if sync {
            sync_data(file, path)?;
        }
        Ok(())
    }

    /// Stores the legacy generation alone in a lock file that holds nothing (a session
    /// whose counters were lost with it): read the same (an empty lock file reads as that
    /// generation, without counters), but no longer as a new lock file (see
    /// [`LockContents::holds_anything`]). Only for an exclusive lock. Fsynced, as the
    /// delete that marks it before its journal line is.
    pub(crate) fn mark(&self, path: &Path) -> Result<()> {
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        let field = counters::format_generation(LEGACY_GENERATION);
        write_at(file, field.as_bytes()).at(path)?;
        sync_data(file, path)
    }

    /// Fsyncs what the lock file holds, for a delete that needs it to hold it after a
    /// power loss (its counters, unsynced by appends under `OnReplace`). Only for an
    /// exclusive lock.
    pub(crate) fn sync(&self, path: &Path) -> Result<()> {
        match self.file.as_ref() {
            Some(file) => sync_data(file, path),
            None => Ok(()),
        }
    }

    /// When the lock file was created, where the file system records it: it is created
    /// by a session's first write and lives as long as the session, so for a session
    /// written before counters were stored it is the best record of its creation.
    pub(crate) fn created(&self) -> Option<SystemTime> {
        self.file.as_ref()?.metadata().ok()?.created().ok()
    }

    /// Removes the lock file, whose session is being deleted under this (exclusive) lock.
    /// Anyone waiting on it finds it unlinked once they hold it, and opens a new one.
    ///
    /// Where that check is not available (not Unix), the file stays, emptied: what a new
    /// lock file holds. Left holding the deleted session's counters, it sent every
    /// creation of the id after it to read the live journals' delete lines, as a delete
    /// that stopped must (see `crate::session_files`' `stopped`).
    pub(crate) fn unlink(&self, path: &Path) -> Result<()> {
        self.retire(path, cfg!(unix))
    }

    /// [`unlink`](Self::unlink), removing the file if `removable`, else emptying it.
    fn retire(&self, path: &Path, removable: bool) -> Result<()> {
        if removable {
            match fs::remove_file(path) {
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                other => other.at(path)?,
            }
        } else if let Some(file) = self.file.as_ref() {
            file.set_len(0).at(path)?;
        }
        Ok(())
    }
}

/// A copy of the lock file at `path`, open as `held` is and locked exclusively, renamed
/// over `path`: for a lock file with other names (hard links, say into a snapshot made with
/// `cp -al`), which the counters written in place would change under each of them.
///
/// The copy is locked before it gets the name, so the exclusive lock never lapses: whoever
/// opens `path` from the rename on waits on the copy, and whoever waits on `held`'s file
/// finds, once it holds it, that `path` names another file, and opens it again, as after a
/// `delete` (see [`crate::session_files`]). Written beside it as `<lock file>-tmp`, fsynced
/// before the rename and the directory after it, so a crash leaves the old file or the
/// copy, whole. Readers that cannot write (their shared lock) never need this.
#[cfg(unix)]
fn unshare(held: &File, path: &Path) -> Result<File> {
    use std::ffi::OsString;

    let mut temp = OsString::from(path.as_os_str());
    temp.push("-tmp");
    let temp = Path::new(&temp);
    let mut contents = Vec::new();
    io::Read::read_to_end(&mut &*held, &mut contents).at(path)?;
    own_file::replace_by_copy(temp, path, |copy| {
        // Nobody else opens this name: the lock cannot be held, but say so if it were.
        match copy.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "locked by another",
                ))
                .at(temp);
            }
            Err(TryLockError::Error(err)) => return Err(err).at(temp),
        }
        write_at(copy, &contents).at(temp)
    })
}

/// Link counts are not read where `is_shared` says no.
#[cfg(not(unix))]
fn unshare(_held: &File, _path: &Path) -> Result<File> {
    unreachable!("own_file::is_shared is false here")
}

/// The generation `contents` hold, for a session whose data file holds messages (see
/// [`SessionLock::generation`]).
pub(crate) fn generation_of(contents: &LockContents, path: &Path) -> u64 {
    match contents.generation {
        // 0 is "absent", which a session with messages is not.
        Some(generation) if generation > LEGACY_GENERATION => generation,
        Some(_) => LEGACY_GENERATION,
        None if !contents.generation_text => LEGACY_GENERATION,
        None => {
            tracing::warn!(
                backend = BACKEND,
                path = %path.display(),
                "the lock file does not hold a generation; reporting the legacy one \
                 until the next rewrite of the session stores a fresh one"
            );
            LEGACY_GENERATION
        }
    }
}

/// Fsyncs the lock file's contents (recorded for a test's [`crate::dirs`] watch).
fn sync_data(file: &File, path: &Path) -> Result<()> {
    #[cfg(test)]
    crate::dirs::tests::record(path);
    file.sync_data().at(path)
}

/// Reads from the start of `file` into `buf`, returning how many bytes were read. The
/// contents are rewritten in place with one `write()` of a fixed size, so one read at
/// offset 0 sees them whole (the holder of the lock is the only writer).
#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(done)
}

#[cfg(not(unix))]
fn read_at(mut file: &File, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(0))?;
    let mut done = 0;
    loop {
        match file.read(&mut buf[done..]) {
            Ok(0) => return Ok(done),
            Ok(n) => done += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
        if done == buf.len() {
            return Ok(done);
        }
    }
}

/// Writes `bytes` at the start of `file`.
#[cfg(unix)]
fn write_at(file: &File, bytes: &[u8]) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, 0)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, bytes: &[u8]) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(0))?;
    file.write_all(bytes)
}

/// What `path` names, if that is still the file locked through a handle that was `held`
/// when it was opened (its device and inode stay those of the handle). A `delete` removes
/// the lock file while holding it, and a write replaces a hard-linked one ([`unshare`]);
/// whoever opened that file before and locked it after holds a lock nobody else will take,
/// and must open the path again.
#[cfg(unix)]
fn still_linked(held: &Metadata, path: &Path) -> Result<Option<Metadata>> {
    use std::os::unix::fs::MetadataExt;

    match fs::metadata(path) {
        Ok(named) => Ok((named.dev() == held.dev() && named.ino() == held.ino()).then_some(named)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).at(path),
    }
}

/// Lock files are never removed where this cannot be checked (see [`SessionLock::unlink`]).
#[cfg(not(unix))]
fn still_linked(held: &Metadata, _path: &Path) -> Result<Option<Metadata>> {
    Ok(Some(held.clone()))
}

fn is_unwritable(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
    )
}

/// Waiting for a lock can be interrupted by a signal; that is not a failure.
fn retry_interrupted(mut op: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    loop {
        match op() {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
thread_local! {
    static CONTENTS_READ: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many times this thread read a lock file's contents.
#[cfg(test)]
pub(crate) fn contents_read() -> usize {
    CONTENTS_READ.with(std::cell::Cell::get)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use fusion_core::{ChatMessage, ConversationStorage, MetaUpdate, SessionMeta};

    use super::*;
    use crate::dirs::tests::Watch;
    use crate::{FileSystemOptions, FileSystemStorage, SyncPolicy};

    #[test]
    fn a_lock_file_kept_after_a_delete_holds_what_a_new_one_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".s.lock");
        let lock = SessionLock::exclusive(dir.path(), &path).unwrap();
        lock.store(&path, 42, &Counters::default(), false).unwrap();
        assert!(lock.contents(&path).unwrap().holds_anything());
        // As where lock files are never removed (not Unix).
        lock.retire(&path, false).unwrap();
        assert!(path.exists());
        assert!(!lock.contents(&path).unwrap().holds_anything());
        lock.retire(&path, true).unwrap();
        assert!(!path.exists());
    }

    /// A storage in a new directory (returned with it) holding the session `s`: one "hi".
    async fn one_session() -> (tempfile::TempDir, PathBuf, FileSystemStorage) {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("sessions");
        let storage = FileSystemStorage::connect(&root).await.unwrap();
        let hi = [ChatMessage::user("hi")];
        storage.append("s", &hi).await.unwrap();
        (temp, root, storage)
    }

    /// Found by a review: a lock file made anew (by the rewrite itself, or by a reader,
    /// after the old one was lost) had its name synced only after the rename of the new
    /// content. A power loss that kept the rename but not the name left the new content
    /// at the legacy generation, the old content's: a conditional write made against the
    /// old content would have been taken. Its name is synced before the rename.
    #[tokio::test]
    async fn a_rewrite_syncs_the_name_of_a_lock_file_made_anew_before_its_rename() {
        let (_temp, root, storage) = one_session().await;
        let hi = [ChatMessage::user("hi")];
        let lock = root.join(".s.lock");
        for reader_made_it in [false, true] {
            fs::remove_file(&lock).unwrap();
            if reader_made_it {
                storage.load("s").await.unwrap();
                assert!(lock.exists());
            }
            let watch = Watch::new(&root);
            storage.save("s", &hi).await.unwrap();
            // The new generation, the lock file's name, then the rename.
            let expected = [lock.clone(), root.clone(), root.clone()];
            assert_eq!(
                watch.synced(),
                expected,
                "made by a reader: {reader_made_it}"
            );
        }
        // A lock file with a generation of its own costs nothing more.
        let watch = Watch::new(&root);
        storage.save("s", &hi).await.unwrap();
        assert_eq!(watch.synced(), [lock, root]);
    }

    /// Found by a review: a failed sync of the name of a lock file made anew, before the
    /// rename, failed the rewrite with its fresh generation left stored, where a rewrite
    /// that fails before its rename puts the old generation and counters back.
    #[tokio::test]
    async fn a_rewrite_whose_lock_file_name_cannot_be_synced_keeps_the_old_generation() {
        let (_temp, root, storage) = one_session().await;
        let hi = [ChatMessage::user("hi")];
        fs::remove_file(root.join(".s.lock")).unwrap();
        let before = storage.session_info("s").await.unwrap().unwrap();
        assert_eq!(before.generation, LEGACY_GENERATION);
        let watch = Watch::new(&root);
        watch.fail_syncs_of(&root);
        let two = [ChatMessage::user("a"), ChatMessage::user("b")];
        storage.save("s", &two).await.unwrap_err();
        watch.repaired();
        let after = storage.session_info("s").await.unwrap().unwrap();
        assert_eq!(after.generation, LEGACY_GENERATION, "put back");
        assert_eq!(after.message_count, 1);
        assert_eq!(storage.load("s").await.unwrap(), hi);
    }

    /// Found by a review: under `EveryWrite`, a metadata update that removes the
    /// metadata file fsynced its counters (its time, the expiry) into a lock file made
    /// anew without ever syncing its name, so a power loss could lose them with it.
    #[tokio::test]
    async fn an_every_write_update_syncs_the_name_of_a_lock_file_made_anew() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("sessions");
        let options = FileSystemOptions::new().sync_policy(SyncPolicy::EveryWrite);
        let storage = FileSystemStorage::connect_with(&root, options)
            .await
            .unwrap();
        let hi = [ChatMessage::user("hi")];
        let meta = SessionMeta::new().title("t");
        storage.create_session("s", &meta, &hi).await.unwrap();
        let lock = root.join(".s.lock");
        let untitled = MetaUpdate::new().title(None::<String>);
        let titled = MetaUpdate::new().title(Some("t"));
        for (lost, update) in [(true, &untitled), (false, &untitled), (true, &titled)] {
            if lost {
                fs::remove_file(&lock).unwrap();
            }
            let watch = Watch::new(&root);
            storage.update_session("s", update).await.unwrap();
            let synced = watch.synced();
            let stored = synced.iter().position(|p| *p == lock).expect("fsynced");
            // After the counters, the lock file's name, only when it was made anew and
            // no metadata file's write synced it before (as a removal does not).
            let expected: &[PathBuf] = if lost && update == &untitled {
                std::slice::from_ref(&root)
            } else {
                &[]
            };
            assert_eq!(&synced[stored + 1..], expected, "{update:?}: {synced:?}");
            if lost && update == &titled {
                let before = synced[..stored].iter().rposition(|p| *p == root);
                assert!(
                    before.is_some(),
                    "the metadata's write synced it: {synced:?}"
                );
            }
        }
    }

    /// Found by a review: under `EveryWrite`, a metadata update that cleared all metadata
    /// removed the metadata file without syncing the directory when the lock file held
    /// counters, so a power loss could bring the owner, title and tags back. The
    /// directory is synced after the removal (and the counters); not where no metadata
    /// file was removed, nor under `OnReplace`.
    #[tokio::test]
    async fn an_every_write_update_that_clears_the_metadata_syncs_its_removal() {
        for sync in [SyncPolicy::EveryWrite, SyncPolicy::OnReplace] {
            let temp = tempfile::tempdir().unwrap();
            let root = temp.path().join("sessions");
            let options = FileSystemOptions::new().sync_policy(sync);
            let storage = FileSystemStorage::connect_with(&root, options)
                .await
                .unwrap();
            let hi = [ChatMessage::user("hi")];
            let meta = SessionMeta::new().owner("o").title("t").tags(["x"]);
            storage.create_session("s", &meta, &hi).await.unwrap();
            let lock = root.join(".s.lock");
            let cleared = MetaUpdate::new()
                .owner(None::<String>)
                .title(None::<String>)
                .remove_tag("x");
            let meta = root.join(crate::file_name::meta_file_name("s"));
            for removes in [true, false] {
                assert_eq!(meta.exists(), removes);
                let watch = Watch::new(&root);
                storage.update_session("s", &cleared).await.unwrap();
                assert!(!meta.exists());
                let synced = watch.synced();
                let expected = match (sync, removes) {
                    (SyncPolicy::EveryWrite, true) => vec![lock.clone(), root.clone()],
                    (SyncPolicy::EveryWrite, false) => vec![lock.clone()],
                    _ => vec![],
                };
                let synced: Vec<_> = synced
                    .into_iter()
                    .filter(|p| *p == lock || *p == root)
                    .collect();
                assert_eq!(synced, expected, "{sync:?}, removes: {removes}");
            }
        }
    }
}
