//! A sessions directory this process cannot write (a copy made by hand, a read-only
//! mount) is still listed newest first, though a session in it lost its counters and the
//! listing cannot store them again.
//!
//! Root writes anywhere, so as root the listing runs in a child process (this test binary
//! again, running only `child_lists_when_asked`) as the user `nobody`; otherwise here.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use fusion_core::testkit::child::{NOBODY, run_test_in_child, running_as_root};
use fusion_core::{ChatMessage, ConversationStorage, SessionQuery};
use fusion_storage_fs::FileSystemStorage;

/// The directory to list, set only in the child process.
const CHILD_ENV: &str = "FUSION_FS_TEST_READ_ONLY_DIR";

/// The sessions of `dir`, newest first, from a storage opened afresh.
async fn newest_first(dir: &Path) -> Vec<String> {
    let storage = FileSystemStorage::new(dir);
    let page = storage.list_page(&SessionQuery::new()).await.unwrap();
    page.sessions.into_iter().map(|info| info.id).collect()
}

#[tokio::test]
async fn child_lists_when_asked() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    assert_eq!(newest_first(Path::new(&dir)).await, ["new", "old"]);
}

#[tokio::test]
async fn a_read_only_directory_is_listed_newest_first_though_a_session_lost_its_counters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("archive");
    let storage = FileSystemStorage::new(&dir);
    storage
        .append("old", &[ChatMessage::user("one")])
        .await
        .unwrap();
    storage
        .append("new", &[ChatMessage::user("two")])
        .await
        .unwrap();
    assert_eq!(newest_first(&dir).await, ["new", "old"]);
    // Its counters are lost, and no lock file can be created for it again.
    std::fs::remove_file(dir.join(".old.lock")).unwrap();

    let root = running_as_root();
    if root {
        // `nobody` may write the files and the index as they are, but create nothing in
        // the sessions directory.
        for entry in walk(&dir) {
            std::os::unix::fs::chown(&entry, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        std::os::unix::fs::chown(&dir, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();

    if root {
        let dir = dir.to_str().expect("a temp dir's path is UTF-8");
        run_test_in_child("child_lists_when_asked", CHILD_ENV, dir);
    } else {
        assert_eq!(newest_first(&dir).await, ["new", "old"]);
    }
    assert!(!dir.join(".old.lock").exists());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The directory to list in `child_lists_without_journals_when_asked`.
const NO_JOURNALS_ENV: &str = "FUSION_FS_TEST_READ_ONLY_NO_JOURNALS_DIR";

#[tokio::test]
async fn child_lists_without_journals_when_asked() {
    let Ok(dir) = std::env::var(NO_JOURNALS_ENV) else {
        return;
    };
    assert_eq!(newest_first(Path::new(&dir)).await, ["c", "b", "a"]);
}

/// A read-only directory whose index lost its live journals' directory (removed by hand;
/// or built by an earlier version and not written since), which the listing takes for
/// damaged but cannot rebuild there, is listed from its sessions, as one whose index cannot
/// be opened: not refused because the rebuild could not mark the index.
#[tokio::test]
async fn a_read_only_directory_whose_index_lost_its_journals_is_listed_from_its_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("archive");
    let storage = FileSystemStorage::new(&dir);
    for id in ["a", "b", "c"] {
        storage.append(id, &[ChatMessage::user(id)]).await.unwrap();
    }
    drop(storage);
    let index = dir.join(".fusion-index");
    std::fs::remove_dir_all(index.join("live")).unwrap();
    let read_only = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let files: Vec<_> = walk(&dir).into_iter().filter(|p| p.is_file()).collect();
    for file in &files {
        read_only(file, 0o444);
    }
    read_only(&index, 0o555);
    read_only(&dir, 0o555);
    if running_as_root() {
        // Root writes anywhere: `nobody` lists it, reaching it through the temporary
        // directory, and owns nothing there.
        read_only(tmp.path(), 0o755);
        let dir = dir.to_str().expect("a temp dir's path is UTF-8");
        run_test_in_child(
            "child_lists_without_journals_when_asked",
            NO_JOURNALS_ENV,
            dir,
        );
    } else {
        assert_eq!(newest_first(&dir).await, ["c", "b", "a"]);
    }
    read_only(&dir, 0o755);
    read_only(&index, 0o755);
}

/// The directory to list in `child_lists_a_read_only_session_file_when_asked`.
const READ_ONLY_FILE_ENV: &str = "FUSION_FS_TEST_READ_ONLY_FILE_DIR";

#[tokio::test]
async fn child_lists_a_read_only_session_file_when_asked() {
    let Ok(dir) = std::env::var(READ_ONLY_FILE_ENV) else {
        return;
    };
    assert_eq!(newest_first(Path::new(&dir)).await, ["new", "old"]);
}

/// Found by a review: a session file made read-only (`chmod a-w`, to keep a conversation
/// as it is) in a directory this process writes, whose lock file lost its counters, was
/// left out of newest-first listings with a warning that its file cannot be read: the
/// repair of its place opens the file to append, and that refusal was taken for a failed
/// read. It is listed at its journal line, as in a read-only directory.
#[tokio::test]
async fn a_session_file_made_read_only_is_listed_though_it_lost_its_counters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    let storage = FileSystemStorage::new(&dir);
    for id in ["old", "new"] {
        storage.append(id, &[ChatMessage::user(id)]).await.unwrap();
    }
    drop(storage);
    // Its counters lost (a lock file holding a generation alone, as an earlier version
    // wrote it), and its file's time an hour before its journal line, so that the listing
    // must repair its place.
    std::fs::write(dir.join(".old.lock"), "0000000000000042").unwrap();
    let old = dir.join("old.jsonl");
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let file = std::fs::File::options().write(true).open(&old).unwrap();
    file.set_modified(an_hour_ago).unwrap();
    drop(file);
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o444)).unwrap();

    if running_as_root() {
        // Root writes anywhere: `nobody` lists it, owning every file, so that only the
        // session file's mode refuses it a write.
        for entry in walk(&dir).into_iter().chain([dir.clone()]) {
            std::os::unix::fs::chown(&entry, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = dir.to_str().expect("a temp dir's path is UTF-8");
        run_test_in_child(
            "child_lists_a_read_only_session_file_when_asked",
            READ_ONLY_FILE_ENV,
            dir,
        );
    } else {
        assert_eq!(newest_first(&dir).await, ["new", "old"]);
    }
}

/// Every file and directory under `dir`, not `dir` itself.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}
