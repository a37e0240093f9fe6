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

#[cfg(unix)]
fn sync_dir_io(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    tests::record(dir);
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
    Ok(())
}

/// Creates `dir` and whichever of its ancestors are missing, as
/// [`fs::create_dir_all`] does; with `sync`, each directory this created (or found
/// created by someone else once it was seen missing) has its entry synced into its
/// parent, from the first that did not exist down, before this returns. A directory that
/// existed already costs nothing more than the `mkdir` that found it.
///
/// Who passes `sync`: the session directory and the index's own directories
/// (`.fusion-index`, `live`) hold files that every [`SyncPolicy`](crate::SyncPolicy)
/// makes durable (a `save`'s file, a `delete`'s journal line and state), so they are
/// always synced; they are made once. The directories of the index's markers (owner,
/// tags, expiry), made and removed with the sessions that need them, are synced when
/// the write adding the marker is fsynced (`EveryWrite`), with the marker itself.
pub(crate) fn create(dir: &Path, sync: bool) -> Result<()> {
    make(dir, sync, false).at(dir)
}

/// [`create`] for a caller that found `dir` missing (a file in it could not be opened
/// for that): found there now, it was made meanwhile by another writer, which may not
/// have synced its entry yet, so with `sync` it is synced here too. A file fsynced into
/// it before that writer's sync would be lost with it on a power loss.
pub(crate) fn create_missing(dir: &Path, sync: bool) -> Result<()> {
    make(dir, sync, true).at(dir)
}

/// [`create`], with the operating system's error as it is (for callers that word their
/// own).
pub(crate) fn create_io(dir: &Path, sync: bool) -> io::Result<()> {
    make(dir, sync, false)
}

/// Makes `dir` as [`create`] says; `missing`: the caller found it missing, so one found
/// there is another writer's, perhaps not synced yet.
fn make(dir: &Path, sync: bool, missing: bool) -> io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let Some(parent) = dir.parent() else {
                return Err(err);
            };
            // The parent was missing a moment ago: one found made since is another
            // writer's, as `dir` may be below.
            make(parent, sync, true)?;
            match fs::create_dir(dir) {
                Ok(()) => {}
                // Made meanwhile by another writer, which may not have synced it yet.
                Err(_) if dir.is_dir() => {}
                Err(err) => return Err(err),
            }
        }
        // Missing a moment ago: made meanwhile by another writer, which may not have
        // synced it yet.
        Err(_) if missing && dir.is_dir() => {}
        // It existed: whoever made it synced it (or had no need to).
        Err(_) if dir.is_dir() => return Ok(()),
        Err(err) => return Err(err),
    }
    if sync {
        sync_dir_io(parent_of(dir))?;
    }
    Ok(())
}

/// The directory holding `dir`'s entry (`.` for a relative name of one component).
fn parent_of(dir: &Path) -> &Path {
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
    use std::time::Duration;

    use fusion_core::{ChatMessage, ConversationStorage, Expiry, SessionMeta};

    use super::*;
    use crate::{FileSystemOptions, FileSystemStorage, SyncPolicy};

    /// Every directory synced by this test binary, in order: tests read those under their
    /// own temporary directory with [`synced_under`].
    static SYNCED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    pub(super) fn record(dir: &Path) {
        SYNCED.lock().unwrap().push(dir.to_path_buf());
    }

    /// The directories under `root` (itself included) synced since the last call for it,
    /// in order, and forgets them.
    pub(crate) fn synced_under(root: &Path) -> Vec<PathBuf> {
        let mut synced = SYNCED.lock().unwrap();
        let (mine, others) = synced.drain(..).partition(|dir| dir.starts_with(root));
        *synced = others;
        mine
    }

    #[test]
    fn each_new_directory_is_synced_into_its_parent_from_the_first_missing_down() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        fs::create_dir(root.join("a")).unwrap();
        let _ = synced_under(root);
        let leaf = root.join("a/b/c/d");
        create(&leaf, true).unwrap();
        assert!(leaf.is_dir());
        let expected = ["a", "a/b", "a/b/c"].map(|dir| root.join(dir));
        assert_eq!(
            synced_under(root),
            expected,
            "`a` existed: its entry is not new"
        );
        // Found there, it costs no sync.
        create(&leaf, true).unwrap();
        assert_eq!(synced_under(root), Vec::<PathBuf>::new());
        // Without `sync`, nothing is synced.
        create(&root.join("e/f"), false).unwrap();
        assert!(root.join("e/f").is_dir());
        assert_eq!(synced_under(root), Vec::<PathBuf>::new());
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
        let _ = synced_under(root);
        create(&theirs, true).unwrap();
        assert_eq!(
            synced_under(root),
            Vec::<PathBuf>::new(),
            "not seen missing"
        );
        create_missing(&theirs, true).unwrap();
        assert_eq!(synced_under(root), [root.to_path_buf()]);
        // Without `sync`, nothing is.
        create_missing(&theirs, false).unwrap();
        assert_eq!(synced_under(root), Vec::<PathBuf>::new());
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
            let _ = synced_under(top);
            let options = FileSystemOptions::new().sync_policy(sync);

            // `connect` makes the session directory and its missing parents.
            let root = top.join("a/b");
            let storage = FileSystemStorage::connect_with(&root, options.clone())
                .await
                .unwrap();
            assert_eq!(synced_under(top), [top.to_path_buf(), top.join("a")]);

            // The first write makes the index's directories: synced whatever the policy.
            let before = dirs_in(top);
            storage
                .append("s", &[ChatMessage::user("hi")])
                .await
                .unwrap();
            let after = dirs_in(top);
            let (synced, unsynced) = made(&before, &after, &synced_under(top));
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
            let synced_dirs = synced_under(top);
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
            let synced = synced_under(top);
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
        assert!(create(&file, true).is_err());
        assert!(create(&file.join("below"), true).is_err());
        assert_eq!(synced_under(temp.path()), Vec::<PathBuf>::new());
    }

    #[test]
    fn a_relative_directory_of_one_component_is_synced_into_the_current_one() {
        assert_eq!(parent_of(Path::new("sessions")), Path::new("."));
        assert_eq!(parent_of(Path::new("./sessions")), Path::new("."));
        assert_eq!(parent_of(Path::new("/var/lib")), Path::new("/var"));
    }
}
