//! The directories a storage instance found already made: each has its entry synced into
//! its parent the first time the instance needs it durable, once.
//!
//! [`crate::dirs`] syncs the entry of a directory it makes, or finds made by another
//! writer once it saw it missing. One simply there at the first look may still be another
//! writer's too: made a moment ago, its sync still to come, or never to come if that
//! writer crashed in between (or made it under a policy that does not sync it). A file
//! fsynced into it would be lost with it on a power loss. Nothing tells such an entry from
//! an old one, so the instance syncs the parent itself, once per directory: the session
//! directory at its first write that takes a session's lock on the blocking pool (every
//! write a policy makes durable does), just before that lock, which the session's other
//! writers would wait on; the index's directory when it first opens the index lock, and
//! `live` (and the index's directory again, for writes that take no index lock) with the
//! first line fsynced into one of its journals. Later writes find it remembered: a lock of
//! a mutex over a few paths, no system call. An index found removed is forgotten with
//! the session directory around it, their paths then perhaps another writer's new
//! directories (a session directory removed and made again while the instance runs), and
//! the session directory's entry is synced again by the write that found it.

use std::borrow::Cow;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use fusion_core::Result;

/// The directories whose entries one storage instance (and its clones) made durable.
#[derive(Debug, Default)]
pub(crate) struct SyncedDirs {
    /// A few paths: the session directory, the index's, `live`.
    dirs: Mutex<Vec<PathBuf>>,
}

impl SyncedDirs {
    /// [`crate::dirs::create`] with `sync`, a directory found at the first look included:
    /// its entry is synced into its parent the first time this instance finds it.
    pub(crate) fn create(&self, dir: &Path) -> Result<()> {
        if !dir.is_dir() {
            // Made here (or by another writer once seen missing), and synced.
            crate::dirs::create(dir, true)?;
            self.remember(dir);
            return Ok(());
        }
        self.entry(dir)
    }

    /// Makes the entry of `dir`, which exists, durable in its parent, unless this instance
    /// did so before.
    pub(crate) fn entry(&self, dir: &Path) -> Result<()> {
        if self.known(dir) {
            return Ok(());
        }
        if let Some(parent) = entry_parent(dir) {
            crate::dirs::sync_found(&parent)?;
        }
        self.remember(dir);
        Ok(())
    }

    /// The index's directory `index`, found removed under this instance (by hand, or
    /// with the whole session directory, made again since by another process): forgets
    /// every directory from the session directory down, whose paths may name another
    /// writer's new directories now, not synced yet, and syncs the session directory's
    /// entry again at once, for the write that found it (under its session's lock: rare);
    /// one found removed meanwhile, its parent perhaps too, is made again, as the write's
    /// journal would make it. An instance has no other cheap sign of a session directory
    /// replaced: its writes look at no directory, and this costs nothing until the index
    /// is found removed.
    pub(crate) fn index_removed(&self, index: &Path) -> Result<()> {
        let Some(sessions) = index.parent() else {
            self.forget_under(index);
            return Ok(());
        };
        self.forget_under(sessions);
        self.create(sessions)
    }

    /// Forgets `dir` and the directories under it, found removed: the path may name
    /// another directory now, made by a writer that has not synced it.
    fn forget_under(&self, dir: &Path) {
        let mut dirs = self.dirs.lock().unwrap_or_else(PoisonError::into_inner);
        dirs.retain(|known| !known.starts_with(dir));
    }

    /// Whether this instance made the entry of `dir` durable.
    pub(crate) fn known(&self, dir: &Path) -> bool {
        let dirs = self.dirs.lock().unwrap_or_else(PoisonError::into_inner);
        dirs.iter().any(|known| known == dir)
    }

    fn remember(&self, dir: &Path) {
        let mut dirs = self.dirs.lock().unwrap_or_else(PoisonError::into_inner);
        if !dirs.iter().any(|known| known == dir) {
            dirs.push(dir.to_path_buf());
        }
    }
}

/// The directory holding the entry of `dir`, which exists: the parent of its name, unless
/// that name is a symbolic link (a storage root given so) or ends in `.` or `..`, whose
/// entry is in the parent of the directory it resolves to; `None` for the file system's
/// root. One `lstat` more, once per directory and instance.
fn entry_parent(dir: &Path) -> Option<Cow<'_, Path>> {
    let linked = fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
    if dir.file_name().is_none() || linked {
        // Resolved where it can be; otherwise the parent of its name, as before.
        if let Ok(real) = fs::canonicalize(dir) {
            return real.parent().map(|parent| Cow::Owned(parent.to_path_buf()));
        }
    }
    Some(Cow::Borrowed(crate::dirs::parent_of(dir)))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use fusion_core::{ChatMessage, ConversationStorage};

    use crate::dirs::tests::Watch;
    use crate::file_name::INDEX_DIR;
    use crate::index::{Change, Index};
    use crate::lock::SessionLock;
    use crate::{FileSystemOptions, FileSystemStorage, SyncPolicy};

    const NONE: Vec<PathBuf> = Vec::new();

    /// The change whose record finds the index removed: a write by its journal, when it
    /// looks again a while later, or a creation by the index lock the instance keeps.
    fn finding_the_index_removed(index: &Index, by_its_journal: bool) -> Change {
        if by_its_journal {
            index.run_clock_ahead(std::time::Duration::from_secs(3600));
            Change::Write
        } else {
            Change::Create
        }
    }

    /// Found by a review: a session directory found made at the first look was taken for
    /// synced by its maker, which may not have synced it yet (or crashed first), so a
    /// `save`, or under `EveryWrite` any write, could be lost with the directory on a
    /// power loss. Its entry is synced into its parent by the instance's first write
    /// that takes a session's lock, once.
    #[tokio::test]
    async fn a_session_directory_found_made_is_synced_into_its_parent_once() {
        for sync in [SyncPolicy::OnReplace, SyncPolicy::EveryWrite] {
            let temp = tempfile::tempdir().unwrap();
            let top = temp.path();
            let root = top.join("sessions");
            // Another writer's `mkdir`, its sync still to come.
            fs::create_dir(&root).unwrap();
            let watch = Watch::new(top);
            let options = FileSystemOptions::new().sync_policy(sync);
            let storage = FileSystemStorage::connect_with(&root, options)
                .await
                .unwrap();
            assert_eq!(watch.synced(), NONE, "{sync:?}: a look syncs nothing");
            let hi = [ChatMessage::user("hi")];
            storage.save("s", &hi).await.unwrap();
            let synced = watch.synced();
            assert!(synced.contains(&top.to_path_buf()), "{sync:?}: {synced:?}");
            // Once per instance: no later write syncs it again.
            storage.append("s", &hi).await.unwrap();
            storage.save("t", &hi).await.unwrap();
            storage.delete("t").await.unwrap();
            assert!(!watch.synced().contains(&top.to_path_buf()), "{sync:?}");
            // `new` looks at nothing: its first write syncs it.
            let other = FileSystemStorage::new(&root);
            other.save("u", &hi).await.unwrap();
            assert!(watch.synced().contains(&top.to_path_buf()), "{sync:?}");
            if sync == SyncPolicy::EveryWrite {
                // The common append costs nothing more: no directory synced at all.
                storage.append("s", &hi).await.unwrap();
                assert_eq!(watch.synced(), NONE);
            }
        }
    }

    /// Found by a review: `live` and the index's directory found made were taken for
    /// synced, so a journal line fsynced there (a delete's, whatever the policy) could be
    /// lost with them on a power loss. The first line fsynced into a journal of the
    /// instance syncs their entries, once.
    #[test]
    fn the_index_directories_found_made_are_synced_with_the_first_fsynced_line() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("sessions");
        let index_dir = root.join(INDEX_DIR);
        let live = index_dir.join("live");
        // Another writer's `mkdir`s, their syncs still to come.
        fs::create_dir_all(&live).unwrap();
        let watch = Watch::new(temp.path());
        let index = Index::new(&root);
        let record = |sync| {
            let _ = index.record("s", Change::Write, i64::MIN, sync).unwrap();
        };
        record(false);
        assert_eq!(watch.synced(), NONE, "no line fsynced, nothing to keep");
        record(true);
        // The journal's name, then the entries of `live` and of the index's directory.
        assert_eq!(watch.synced(), [live, index_dir, root]);
        record(true);
        assert_eq!(watch.synced(), NONE, "once");
    }
    /// Found by a review: once this instance had synced the entries of the index's
    /// directories, an index removed (by hand, for a rebuild) and made again by another
    /// writer, its syncs still to come, was taken for synced by the path alone, so the
    /// lines and state fsynced into it could be lost with it on a power loss. An instance
    /// that finds the index removed, by its lock or by its journal, syncs them again.
    #[test]
    fn index_directories_made_again_after_a_removal_are_synced_again() {
        for by_its_journal in [false, true] {
            let temp = tempfile::tempdir().unwrap();
            let root = temp.path().join("sessions");
            let index_dir = root.join(INDEX_DIR);
            let index = Index::new(&root);
            let _ = index.record("s", Change::Create, i64::MIN, true).unwrap();
            fs::remove_dir_all(&index_dir).unwrap();
            // Another writer's `mkdir`s, their syncs still to come.
            fs::create_dir_all(index_dir.join("live")).unwrap();
            let watch = Watch::new(temp.path());
            let change = finding_the_index_removed(&index, by_its_journal);
            let _ = index.record("t", change, i64::MIN, true).unwrap();
            let synced = watch.synced();
            assert!(
                synced.contains(&root),
                "by its journal: {by_its_journal}: {synced:?}"
            );
            assert!(
                synced.contains(&index_dir),
                "by its journal: {by_its_journal}"
            );
        }
    }
    /// Found by a review: an instance that had synced the session directory's entry took
    /// one removed and made again by another process, its sync still to come, for synced
    /// by the path alone, so a `save` there, or under `EveryWrite` any write, could be
    /// lost with it on a power loss. The write that finds the index removed with it (by
    /// the index lock a creation takes, or by its journal, looked at once a second) syncs
    /// the session directory's entry again, whatever it fsyncs itself.
    #[test]
    fn a_session_directory_made_again_behind_the_instance_is_synced_again() {
        for by_its_journal in [false, true] {
            let temp = tempfile::tempdir().unwrap();
            let top = temp.path();
            let root = top.join("sessions");
            let index = Index::new(&root);
            // The instance's first session write: the directory synced, a line recorded.
            index.synced_dirs().create(&root).unwrap();
            let _ = index.record("s", Change::Create, i64::MIN, true).unwrap();
            // Another process's `rm -r` and `mkdir`, its sync still to come.
            fs::remove_dir_all(&root).unwrap();
            fs::create_dir(&root).unwrap();
            let watch = Watch::new(top);
            let change = finding_the_index_removed(&index, by_its_journal);
            let _ = index.record("t", change, i64::MIN, false).unwrap();
            let synced = watch.synced();
            assert!(
                synced.contains(&top.to_path_buf()),
                "by its journal: {by_its_journal}: {synced:?}"
            );
            assert!(index.synced_dirs().known(&root));
        }
    }

    /// A session directory removed with its parent after a creation took its session's
    /// lock, before the index lock: the index found removed, the creation makes them again
    /// (as it did before the session directory's entry was synced there), and does not
    /// fail for the missing parent.
    #[test]
    fn a_session_directory_removed_with_its_parent_is_made_again() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("parent/sessions");
        let index = Index::new(&root);
        index.synced_dirs().create(&root).unwrap();
        let _ = index.record("s", Change::Create, i64::MIN, true).unwrap();
        fs::remove_dir_all(temp.path().join("parent")).unwrap();
        let _ = index.record("t", Change::Create, i64::MIN, true).unwrap();
        assert!(root.join(INDEX_DIR).join("live").is_dir());
    }

    /// Found by a review: the instance's first write synced the session directory's entry
    /// into its parent while it held the session's lock, so the other writers of the
    /// session (another process's, each CLI call's) waited for that fsync too. It is
    /// synced before the lock is taken.
    #[tokio::test]
    async fn the_session_directory_is_synced_before_the_session_is_locked() {
        let temp = tempfile::tempdir().unwrap();
        let top = temp.path();
        let root = top.join("sessions");
        let hi = [ChatMessage::user("hi")];
        // Another instance's session.
        FileSystemStorage::new(&root)
            .append("s", &hi)
            .await
            .unwrap();
        let watch = Watch::new(top);
        let free = Arc::new(Mutex::new(Vec::new()));
        watch.at_sync_of(top, {
            let (free, lock) = (free.clone(), root.join(".s.lock"));
            move || {
                let taken = SessionLock::try_exclusive(&lock).unwrap();
                free.lock().unwrap().push(taken.is_some());
            }
        });
        let options = FileSystemOptions::new().inline_calls(false);
        let storage = FileSystemStorage::connect_with(&root, options)
            .await
            .unwrap();
        storage.append("s", &hi).await.unwrap();
        assert_eq!(*free.lock().unwrap(), [true], "the session's lock was free");
    }
    /// Found by a review: the entry of a session directory named through a symbolic link
    /// (a storage root given so), or by a name ending in `..`, was synced into the
    /// directory holding that name (the link's, or the one `..` leaves), not into the one
    /// holding the directory's entry.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_session_directory_named_by_a_link_or_dots_is_synced_where_its_entry_is() {
        let temp = tempfile::tempdir().unwrap();
        let top = fs::canonicalize(temp.path()).unwrap();
        let real = top.join("real");
        let sessions = real.join("sessions");
        // Another writer's `mkdir`s, their syncs still to come.
        fs::create_dir_all(sessions.join("sub")).unwrap();
        std::os::unix::fs::symlink(&sessions, top.join("link")).unwrap();
        let hi = [ChatMessage::user("hi")];
        for root in [top.join("link"), sessions.join("sub/..")] {
            let watch = Watch::new(&top);
            FileSystemStorage::new(&root).save("s", &hi).await.unwrap();
            let synced = watch.synced();
            assert!(synced.contains(&real), "{root:?}: {synced:?}");
        }
    }
}
