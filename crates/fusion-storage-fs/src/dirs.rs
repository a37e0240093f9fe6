//! Directories made durable: the one place that syncs a directory, and the one that
//! creates them.
//!
//! A file fsynced into a directory is lost on a power loss with the directory's own entry
//! in *its* parent, if that entry was never synced: so a directory created here has its
//! entry synced into its parent, and so on from the first of its ancestors that did not
//! exist down, when the caller asks for it (see [`create`] for who asks).

use std::fs::{self, File};
use std::io;
use std::path::Path;

use fusion_core::Result;

use crate::error::IoContext;

/// Makes renames, creations and removals in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    sync_dir_io(dir).at(dir)
}

/// [`sync_dir`] of a directory this process found rather than made (see
/// [`crate::synced_dirs`]): one it may not read (a parent of mode 0711, say) cannot be
/// synced from here, and is left to its maker, as it was before.
pub(crate) fn sync_found(dir: &Path) -> Result<()> {
    match sync_dir_io(dir) {
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        other => other.at(dir),
    }
}

#[cfg(unix)]
fn sync_dir_io(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    tests::record(dir);
    #[cfg(test)]
    tests::fail_if_asked(dir)?;
    match File::open(dir).and_then(|dir| dir.sync_all()) {
        // Some file systems cannot fsync a directory; their entries are as durable as
        // they get.
        Err(err) if err.kind() == io::ErrorKind::InvalidInput => Ok(()),
        other => other,
    }
}

/// Windows cannot open a directory through `std::fs::File`; NTFS journals its directory
/// changes itself.
#[cfg(not(unix))]
fn sync_dir_io(_dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    tests::record(_dir);
    #[cfg(test)]
    tests::fail_if_asked(_dir)?;
    Ok(())
}

/// Creates `dir` and whichever of its ancestors are missing, as
/// [`fs::create_dir_all`] does; with `sync`, each directory this created (or found
/// created by someone else once it was seen missing) has its entry synced into its
/// parent, from the first that did not exist down, before this returns. A directory found
/// there at the first look costs nothing more than that look.
///
/// The look comes first so that a directory missing then and found made by the `mkdir`
/// is known for another writer's, which may not have synced its entry yet (two
/// `connect`s of one new directory, two instances making the index's): it is synced here
/// too. One found at the first look costs nothing here; a storage instance syncs the
/// entries of its own directories found so once ([`crate::synced_dirs`]).
///
/// Who passes `sync`: the session directory and the index's own directories
/// (`.fusion-index`, `live`) hold files that every [`SyncPolicy`](crate::SyncPolicy)
/// makes durable (a `save`'s file, a `delete`'s journal line and state), so they are
/// always synced; they are made once. The directories of the index's markers (owner,
/// tags, expiry), made and removed with the sessions that need them, are synced when
/// the write adding the marker is fsynced (`EveryWrite`), with the marker itself.
pub(crate) fn create(dir: &Path, sync: bool) -> Result<()> {
    create_io(dir, sync).at(dir)
}

/// [`create`] for a caller that found `dir` missing (a file in it could not be opened
/// for that): it skips the look. Found there now, it was made meanwhile by another
/// writer, which may not have synced its entry yet, so with `sync` it is synced here
/// too. A file fsynced into it before that writer's sync would be lost with it on a
/// power loss.
pub(crate) fn create_missing(dir: &Path, sync: bool) -> Result<()> {
    make_missing(dir, sync).at(dir)
}

/// [`create`], with the operating system's error as it is (for callers that word their
/// own).
pub(crate) fn create_io(dir: &Path, sync: bool) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    make_missing(dir, sync)
}

/// Makes `dir`, found missing a moment ago, as [`create`] says: one found there now is
/// another writer's, perhaps not synced yet.
fn make_missing(dir: &Path, sync: bool) -> io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    #[cfg(test)]
    tests::before_mkdir(dir);
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let Some(parent) = dir.parent() else {
                return Err(err);
            };
            // The parent is missing too.
            make_missing(parent, sync)?;
            match fs::create_dir(dir) {
                Ok(()) => {}
                // Made meanwhile by another writer, which may not have synced it yet.
                Err(_) if dir.is_dir() => {}
                Err(err) => return Err(err),
            }
        }
        // Made meanwhile by another writer, which may not have synced it yet.
        Err(_) if dir.is_dir() => {}
        Err(err) => return Err(err),
    }
    if sync {
        sync_dir_io(parent_of(dir))?;
    }
    Ok(())
}

/// The directory holding `dir`'s entry (`.` for a relative name of one component).
pub(crate) fn parent_of(dir: &Path) -> &Path {
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use fusion_core::{ChatMessage, ConversationStorage, Expiry, SessionMeta};

    use super::*;
    use crate::{FileSystemOptions, FileSystemStorage, SyncPolicy};

    /// The directories synced under the root of each live [`Watch`], and those a watch
    /// has another writer make: only syncs some test watches are kept, and each watch's
    /// go with it, so the record stays as small as the tests running.
    static WATCHES: Mutex<Vec<Watched>> = Mutex::new(Vec::new());

    /// One [`Watch`]'s record.
    struct Watched {
        id: u64,
        root: PathBuf,
        synced: Vec<PathBuf>,
        made_by_another: Vec<PathBuf>,
        failing: Vec<PathBuf>,
        at_sync: Vec<(PathBuf, Box<dyn FnMut() + Send>)>,
    }

    /// A sync of `path` (a directory, or a lock file's contents), for the watches of it.
    pub(crate) fn record(path: &Path) {
        for watched in WATCHES.lock().unwrap().iter_mut() {
            if path.starts_with(&watched.root) {
                watched.synced.push(path.to_path_buf());
            }
            for (_, at_sync) in watched.at_sync.iter_mut().filter(|(p, _)| p == path) {
                at_sync();
            }
        }
    }

    /// A sync of the directory `dir` fails (as on a failing disk) while a watch asks it to.
    pub(super) fn fail_if_asked(dir: &Path) -> io::Result<()> {
        let watches = WATCHES.lock().unwrap();
        if watches
            .iter()
            .any(|watched| watched.failing.iter().any(|d| d == dir))
        {
            return Err(io::Error::other("a sync the test made fail"));
        }
        Ok(())
    }

    /// Just before this process's `mkdir` of `dir`: another writer's, if a watch asked.
    pub(super) fn before_mkdir(dir: &Path) {
        for watched in WATCHES.lock().unwrap().iter_mut() {
            if let Some(at) = watched.made_by_another.iter().position(|d| d == dir) {
                watched.made_by_another.remove(at);
                fs::create_dir(dir).unwrap();
            }
        }
    }

    /// Records, while it lives, the directories synced under `root` (itself included),
    /// and the session lock files whose contents are fsynced there.
    pub(crate) struct Watch {
        id: u64,
    }

    impl Watch {
        pub(crate) fn new(root: &Path) -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let id = NEXT.fetch_add(1, Ordering::Relaxed);
            WATCHES.lock().unwrap().push(Watched {
                id,
                root: root.to_path_buf(),
                synced: Vec::new(),
                made_by_another: Vec::new(),
                failing: Vec::new(),
                at_sync: Vec::new(),
            });
            Self { id }
        }

        /// The directories synced under the root since the last call, in order.
        pub(crate) fn synced(&self) -> Vec<PathBuf> {
            self.with(|watched| std::mem::take(&mut watched.synced))
        }

        /// Has another writer make `dir` (and not sync it) just before this process's
        /// next `mkdir` of it: the race in which this process found it missing first.
        pub(crate) fn made_by_another_first(&self, dir: &Path) {
            self.with(|watched| watched.made_by_another.push(dir.to_path_buf()));
        }

        /// Makes every sync of the directory `dir` fail while this watch lives, or until
        /// [`repaired`](Self::repaired).
        pub(crate) fn fail_syncs_of(&self, dir: &Path) {
            self.with(|watched| watched.failing.push(dir.to_path_buf()));
        }

        /// Runs `f` at each sync of `path` while this watch lives, just before it, with
        /// the record of watches locked: `f` must sync nothing itself.
        pub(crate) fn at_sync_of(&self, path: &Path, f: impl FnMut() + Send + 'static) {
            self.with(|watched| watched.at_sync.push((path.to_path_buf(), Box::new(f))));
        }

        /// Lets the syncs [`fail_syncs_of`](Self::fail_syncs_of) failed succeed again.
        pub(crate) fn repaired(&self) {
            self.with(|watched| watched.failing.clear());
        }

        /// Those of [`made_by_another_first`](Self::made_by_another_first) whose `mkdir`
        /// has not come.
        pub(crate) fn still_to_make(&self) -> Vec<PathBuf> {
            self.with(|watched| watched.made_by_another.clone())
        }

        fn with<T>(&self, f: impl FnOnce(&mut Watched) -> T) -> T {
            let mut watches = WATCHES.lock().unwrap();
            f(watches.iter_mut().find(|w| w.id == self.id).expect("live"))
        }
    }

    impl Drop for Watch {
        fn drop(&mut self) {
            WATCHES.lock().unwrap().retain(|w| w.id != self.id);
        }
    }

    /// Found by a review: the record of syncs grew for the life of the test binary. A
    /// sync is kept only for a live watch of its directory, and goes with the watch.
    #[test]
    fn syncs_are_kept_only_while_a_test_watches_them() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        let kept = || {
            let watches = WATCHES.lock().unwrap();
            let synced = watches.iter().flat_map(|watched| &watched.synced);
            synced.filter(|dir| dir.starts_with(root)).count()
        };
        let watch = Watch::new(root);
        create(&root.join("a"), true).unwrap();
        assert_eq!(kept(), 1);
        drop(watch);
        assert_eq!(kept(), 0, "gone with the watch");
        create(&root.join("b"), true).unwrap();
        assert_eq!(kept(), 0, "watched by none");
    }

    #[test]
    fn each_new_directory_is_synced_into_its_parent_from_the_first_missing_down() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        fs::create_dir(root.join("a")).unwrap();
        let watch = Watch::new(root);
        let leaf = root.join("a/b/c/d");
        create(&leaf, true).unwrap();
        assert!(leaf.is_dir());
        let expected = ["a", "a/b", "a/b/c"].map(|dir| root.join(dir));
        assert_eq!(
            watch.synced(),
            expected,
            "`a` existed: its entry is not new"
        );
        // Found there, it costs no sync.
        create(&leaf, true).unwrap();
        assert_eq!(watch.synced(), Vec::<PathBuf>::new());
        // Without `sync`, nothing is synced.
        create(&root.join("e/f"), false).unwrap();
        assert!(root.join("e/f").is_dir());
        assert_eq!(watch.synced(), Vec::<PathBuf>::new());
    }

    /// Found by a review: a directory found made when it was missing a moment ago (by
    /// another writer, between a failed open in it and the `mkdir`, or between a
    /// `mkdir` below it and its own) was taken for one synced long ago, so a marker
    /// fsynced into it could be lost with it on a power loss, before its maker synced
    /// it. Such a directory is synced into its parent too; one that simply exists is not.
    #[test]
    fn a_directory_another_writer_just_made_is_synced_into_its_parent() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        // Another writer's `mkdir`, its sync still to come.
        let theirs = root.join("owner");
        fs::create_dir(&theirs).unwrap();
        let watch = Watch::new(root);
        create(&theirs, true).unwrap();
        assert_eq!(watch.synced(), Vec::<PathBuf>::new(), "not seen missing");
        create_missing(&theirs, true).unwrap();
        assert_eq!(watch.synced(), [root.to_path_buf()]);
        // Without `sync`, nothing is.
        create_missing(&theirs, false).unwrap();
        assert_eq!(watch.synced(), Vec::<PathBuf>::new());
    }

    /// Found by a review: [`create`] took a directory its `mkdir` found made for one
    /// synced long ago, though it was missing a moment before, made by another writer
    /// whose sync was still to come. It looks first now: one missing then is synced.
    #[test]
    fn a_directory_made_between_the_look_and_the_mkdir_is_synced_into_its_parent() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        let watch = Watch::new(root);
        let theirs = root.join("sessions");
        watch.made_by_another_first(&theirs);
        create(&theirs, true).unwrap();
        assert_eq!(watch.still_to_make(), Vec::<PathBuf>::new());
        assert_eq!(watch.synced(), [root.to_path_buf()]);
    }

    /// Found by a review: the directories the storage makes without a failed open in
    /// them first (`connect`'s, the index's at its lock and at a rebuild, `live` at a
    /// new journal) were not synced when another writer (another `connect`, another
    /// instance) made them between this one's look and its `mkdir`.
    #[tokio::test]
    async fn a_directory_another_writer_makes_meanwhile_is_synced_into_its_parent() {
        let temp = tempfile::tempdir().unwrap();
        let top = temp.path();
        let watch = Watch::new(top);
        let root = top.join("sessions");
        watch.made_by_another_first(&root);
        let storage = FileSystemStorage::connect(&root).await.unwrap();
        assert_eq!(watch.still_to_make(), Vec::<PathBuf>::new());
        assert_eq!(watch.synced(), [top.to_path_buf()]);

        let index = root.join(crate::file_name::INDEX_DIR);
        let live = index.join("live");
        watch.made_by_another_first(&index);
        watch.made_by_another_first(&live);
        storage
            .append("s", &[ChatMessage::user("hi")])
            .await
            .unwrap();
        assert_eq!(watch.still_to_make(), Vec::<PathBuf>::new());
        let synced = watch.synced();
        assert!(synced.contains(&root), "the index's entry: {synced:?}");
        assert!(synced.contains(&index), "live's entry: {synced:?}");

        // A rebuild makes the index again.
        fs::remove_dir_all(&index).unwrap();
        watch.made_by_another_first(&index);
        storage.rebuild_index().await.unwrap();
        assert_eq!(watch.still_to_make(), Vec::<PathBuf>::new());
        let synced = watch.synced();
        assert!(synced.contains(&root), "the index's entry: {synced:?}");
    }

    /// Every directory under `root`, itself excluded.
    fn dirs_in(root: &Path) -> BTreeSet<PathBuf> {
        let mut found = BTreeSet::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(dir) = todo.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_dir() {
                    found.insert(entry.path());
                    todo.push(entry.path());
                }
            }
        }
        found
    }

    /// The directories a write made under `root` (those in `after` not in `before`),
    /// split into those whose entry was synced into their parent by then and those not.
    fn made(
        before: &BTreeSet<PathBuf>,
        after: &BTreeSet<PathBuf>,
        synced: &[PathBuf],
    ) -> (Vec<PathBuf>, Vec<PathBuf>) {
        after
            .difference(before)
            .cloned()
            .partition(|dir| synced.iter().any(|s| Some(s.as_path()) == dir.parent()))
    }

    #[tokio::test]
    async fn every_directory_the_storage_makes_is_synced_into_its_parent() {
        for sync in [SyncPolicy::OnReplace, SyncPolicy::EveryWrite] {
            let temp = tempfile::tempdir().unwrap();
            let top = temp.path();
            let watch = Watch::new(top);
            let options = FileSystemOptions::new().sync_policy(sync);

            // `connect` makes the session directory and its missing parents.
            let root = top.join("a/b");
            let storage = FileSystemStorage::connect_with(&root, options.clone())
                .await
                .unwrap();
            assert_eq!(watch.synced(), [top.to_path_buf(), top.join("a")]);

            // The first write makes the index's directories: synced whatever the policy.
            let before = dirs_in(top);
            storage
                .append("s", &[ChatMessage::user("hi")])
                .await
                .unwrap();
            let after = dirs_in(top);
            let (synced, unsynced) = made(&before, &after, &watch.synced());
            assert_eq!(unsynced, Vec::<PathBuf>::new(), "{sync:?}");
            let index = root.join(crate::file_name::INDEX_DIR);
            assert!(synced.contains(&index), "{synced:?}");
            assert!(synced.contains(&index.join("live")));

            // A creation with an owner, a tag and an expiry makes the markers'
            // directories: synced, with the markers, when its write is fsynced.
            let meta = SessionMeta::new()
                .owner("alice")
                .tags(["red"])
                .expiry(Expiry::after(Duration::from_secs(3600)));
            let before = dirs_in(top);
            storage
                .create_session("t", &meta, &[ChatMessage::user("hi")])
                .await
                .unwrap();
            let after = dirs_in(top);
            let synced_dirs = watch.synced();
            let (synced, unsynced) = made(&before, &after, &synced_dirs);
            let new: Vec<_> = after.difference(&before).collect();
            // owner, owner/alice, tag, tag/<hex>, expiry and its three levels.
            assert_eq!(new.len(), 8, "{new:?}");
            // Leaves: the directories holding a marker.
            let leaves: Vec<_> = new
                .iter()
                .filter(|dir| {
                    fs::read_dir(dir)
                        .unwrap()
                        .any(|e| e.unwrap().path().is_file())
                })
                .collect();
            assert_eq!(leaves.len(), 3, "{leaves:?}");
            match sync {
                SyncPolicy::EveryWrite => {
                    assert_eq!(unsynced, Vec::<PathBuf>::new());
                    for leaf in leaves {
                        assert!(synced_dirs.contains(leaf), "the marker in {leaf:?}");
                    }
                }
                _ => {
                    // Only the index's own directory, synced for its files anyway.
                    assert!(synced.iter().all(|dir| dir.parent() == Some(&index)));
                    for leaf in leaves {
                        assert!(!synced_dirs.contains(leaf), "{leaf:?}");
                    }
                }
            }

            // `new` touches nothing: the first write makes the directory, synced.
            let root = top.join("c/d");
            let storage = FileSystemStorage::new(&root);
            storage.save("s", &[ChatMessage::user("hi")]).await.unwrap();
            let synced = watch.synced();
            for dir in [top.to_path_buf(), top.join("c"), root.clone()] {
                assert!(synced.contains(&dir), "{dir:?} in {synced:?}");
            }
        }
    }

    #[test]
    fn a_file_where_a_directory_belongs_is_an_error() {
        let temp = tempfile::tempdir().unwrap();
        let file = temp.path().join("file");
        fs::write(&file, b"").unwrap();
        let watch = Watch::new(temp.path());
        assert!(create(&file, true).is_err());
        assert!(create(&file.join("below"), true).is_err());
        assert_eq!(watch.synced(), Vec::<PathBuf>::new());
    }

    #[test]
    fn a_relative_directory_of_one_component_is_synced_into_the_current_one() {
        assert_eq!(parent_of(Path::new("sessions")), Path::new("."));
        assert_eq!(parent_of(Path::new("./sessions")), Path::new("."));
        assert_eq!(parent_of(Path::new("/var/lib")), Path::new("/var"));
    }
}
