//! A directory snapshotted with hard links (`cp -al`, rsnapshot, `rsync --link-dest`)
//! shares every file's inode with the snapshot: whatever the backend writes in place, not
//! by replacing the file, would change the snapshot too. These tests link a store file by
//! file, as `cp -al` does, write through the library, and check the snapshot byte for byte.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use fusion_core::{ChatMessage, ConversationStorage, MetaUpdate, SessionMeta, SessionQuery};
use fusion_storage_fs::FileSystemStorage;

fn numbered(prefix: &str, n: usize) -> Vec<ChatMessage> {
    (0..n)
        .map(|i| ChatMessage::user(format!("{prefix}-{i}")))
        .collect()
}

/// `cp -al from to`: the directories made anew, every file hard-linked.
fn link_copy(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            link_copy(&entry.path(), &target);
        } else {
            fs::hard_link(entry.path(), &target).unwrap();
        }
    }
}

/// Asserts that the files under `dir` are `before`, naming those that are not.
fn assert_unchanged(dir: &Path, before: &BTreeMap<PathBuf, Vec<u8>>) {
    let after = contents(dir);
    let changed: std::collections::BTreeSet<_> = before
        .keys()
        .chain(after.keys())
        .filter(|path| before.get(*path) != after.get(*path))
        .collect();
    assert!(changed.is_empty(), "the snapshot changed: {changed:?}");
}

/// Every file under `dir` and its bytes.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            found.extend(contents(&entry.path()));
        } else {
            found.insert(entry.path(), fs::read(entry.path()).unwrap());
        }
    }
    found
}

#[tokio::test]
async fn a_snapshot_made_with_hard_links_keeps_its_bytes_while_the_store_moves_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, snapshot) = (tmp.path().join("store"), tmp.path().join("snapshot"));
    {
        let storage = FileSystemStorage::connect(&store).await.unwrap();
        storage.append("plain", &numbered("p", 2)).await.unwrap();
        let meta = SessionMeta::new().owner("alice").tags(["ops"]);
        storage
            .create_session("meta", &meta, &numbered("m", 1))
            .await
            .unwrap();
        storage.save("gone", &numbered("g", 2)).await.unwrap();
        storage.save("saved", &numbered("s", 2)).await.unwrap();
        // The index exists, with its state and id log.
        storage.list_page(&SessionQuery::new()).await.unwrap();
    }
    // What a `save` killed before its rename leaves: its temporary file.
    fs::write(store.join(".saved.tmp"), "left by a crash\n").unwrap();
    link_copy(&store, &snapshot);
    let before = contents(&snapshot);
    assert!(
        before
            .keys()
            .any(|path| path.ends_with(".fusion-index/ids-log")),
        "{:?}",
        before.keys()
    );

    let storage = FileSystemStorage::connect(&store).await.unwrap();
    storage.append("plain", &numbered("p2", 1)).await.unwrap();
    storage.append("plain", &numbered("p3", 1)).await.unwrap();
    storage.append("meta", &numbered("m2", 1)).await.unwrap();
    let update = MetaUpdate::new().title(Some("renamed"));
    storage.update_session("meta", &update).await.unwrap();
    let meta = SessionMeta::new().owner("bob");
    storage
        .create_session("new", &meta, &numbered("n", 1))
        .await
        .unwrap();
    storage.delete("gone").await.unwrap();
    storage.save("saved", &numbered("s2", 1)).await.unwrap();
    storage.list_page(&SessionQuery::new()).await.unwrap();

    assert_unchanged(&snapshot, &before);
    let mut plain = numbered("p", 2);
    plain.extend(numbered("p2", 1));
    plain.extend(numbered("p3", 1));
    assert_eq!(storage.load("plain").await.unwrap(), plain);
    assert_eq!(storage.load("meta").await.unwrap().len(), 2);
    let info = storage.session_info("meta").await.unwrap().unwrap();
    assert_eq!(info.message_count, 2);
    let page = storage.list_page(&SessionQuery::new()).await.unwrap();
    let mut ids: Vec<_> = page.sessions.iter().map(|s| s.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["meta", "new", "plain", "saved"]);
    assert_eq!(storage.load("saved").await.unwrap(), numbered("s2", 1));
    // And the snapshot is a store of its own, as it was.
    let old = FileSystemStorage::new(&snapshot);
    assert_eq!(old.load("plain").await.unwrap(), numbered("p", 2));
    assert_eq!(old.load("gone").await.unwrap(), numbered("g", 2));
}

/// Runs `work(i)` for `writers` storage instances on `store` at once (each on its own
/// thread and runtime, as separate processes would), all of them first waiting on the lock
/// of the hard-linked file `held`, which this holds until the kernel reports every one of
/// them blocked on it: so they all hold the old file open when the first to get the lock
/// replaces it, and every other one must find that out.
#[cfg(target_os = "linux")]
fn all_blocked_on<F, Fut>(store: &Path, held: &Path, writers: usize, work: F)
where
    F: Fn(FileSystemStorage, usize) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = ()>,
{
    use std::os::unix::fs::MetadataExt;

    let lock = fs::File::options()
        .read(true)
        .write(true)
        .open(held)
        .unwrap();
    lock.lock().unwrap();
    // `/proc/locks` names a file `MAJOR:MINOR:INODE`, the device's numbers in hex.
    let (dev, ino) = {
        let metadata = lock.metadata().unwrap();
        (metadata.dev(), metadata.ino())
    };
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let file = format!(" {major:02x}:{minor:02x}:{ino} ");
    let threads: Vec<_> = (0..writers)
        .map(|i| {
            let store = store.to_path_buf();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(work(FileSystemStorage::new(store), i));
            })
        })
        .collect();
    // A condition, not a delay: `/proc/locks` lists each waiter as `->`. Bounded, so a
    // writer that never blocks fails the test instead of hanging it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let locks = fs::read_to_string("/proc/locks").unwrap();
        let waiting = locks
            .lines()
            .filter(|line| line.contains("->") && line.contains(&file))
            .count();
        if waiting == writers {
            break;
        }
        assert!(threads.iter().all(|t| !t.is_finished()), "a writer ended");
        assert!(
            std::time::Instant::now() < deadline,
            "{waiting} of {writers} writers blocked on the lock file"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    drop(lock);
    for thread in threads {
        thread.join().unwrap();
    }
}

#[cfg(target_os = "linux")]
#[test]
fn writers_waiting_on_a_hard_linked_lock_file_lose_nothing_when_it_is_replaced() {
    const WRITERS: usize = 4;
    const EACH: usize = 5;
    let tmp = tempfile::tempdir().unwrap();
    let (store, snapshot) = (tmp.path().join("store"), tmp.path().join("snapshot"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let storage = FileSystemStorage::connect(&store).await.unwrap();
        storage
            .append("shared", &numbered("first", 1))
            .await
            .unwrap();
        storage.list_page(&SessionQuery::new()).await.unwrap();
    });
    link_copy(&store, &snapshot);
    let before = contents(&snapshot);

    // The session's lock file: every append waits on the old one.
    all_blocked_on(
        &store,
        &store.join(".shared.lock"),
        WRITERS,
        |storage, i| async move {
            for n in 0..EACH {
                let message = ChatMessage::user(format!("w{i}-{n}"));
                storage.append("shared", &[message]).await.unwrap();
            }
        },
    );
    // The index's lock file: every creation waits on the old one to log its id.
    let index_lock = store.join(".fusion-index/lock");
    all_blocked_on(&store, &index_lock, WRITERS, |storage, i| async move {
        let meta = SessionMeta::new().owner("alice");
        let id = format!("new-{i}");
        storage
            .create_session(&id, &meta, &numbered(&id, 1))
            .await
            .unwrap();
    });

    assert_unchanged(&snapshot, &before);
    runtime.block_on(async {
        let storage = FileSystemStorage::new(&store);
        let stored = storage.load("shared").await.unwrap();
        assert_eq!(stored.len(), 1 + WRITERS * EACH);
        for i in 0..WRITERS {
            for n in 0..EACH {
                let text = format!("w{i}-{n}");
                let found = stored.iter().filter(|m| m.content == text).count();
                assert_eq!(found, 1, "{text}");
            }
        }
        // Every id was logged: the page by id reads the id log.
        let query = SessionQuery::new().order(fusion_core::SessionOrder::Id);
        let page = storage.list_page(&query).await.unwrap();
        let ids: Vec<_> = page.sessions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["new-0", "new-1", "new-2", "new-3", "shared"]);
    });
}

#[tokio::test]
async fn an_instance_that_kept_the_index_lock_open_copies_the_whole_state() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, snapshot) = (tmp.path().join("store"), tmp.path().join("snapshot"));
    let storage = FileSystemStorage::connect(&store).await.unwrap();
    // A creation logs its id under the index lock, which the instance keeps open after,
    // having read the state through it (the second time, a state that was there).
    storage.append("a", &numbered("a", 1)).await.unwrap();
    storage.append("b", &numbered("b", 1)).await.unwrap();
    let state = store.join(".fusion-index/lock");
    let built = fs::read_to_string(&state).unwrap();
    assert!(built.starts_with("fusion-index 2 built 1 "), "{built}");
    link_copy(&store, &snapshot);
    let before = contents(&snapshot);

    // The same instance finds the lock file linked and copies it: the state, not what
    // follows wherever its handle was last read to.
    storage.append("c", &numbered("c", 1)).await.unwrap();
    let copied = fs::read_to_string(&state).unwrap();
    assert!(
        copied.starts_with("fusion-index 2 built 1 "),
        "the state was lost with the copy: {copied:?}"
    );
    // The instance's live journal is checked for links once a second: it may take lines
    // of this write (documented). Every other file is as it was.
    let mut before = before;
    before.retain(|path, _| !path.to_string_lossy().contains("/live/"));
    let mut after = contents(&snapshot);
    after.retain(|path, _| !path.to_string_lossy().contains("/live/"));
    assert_eq!(after, before, "the snapshot changed");
    let page = storage.list_page(&SessionQuery::new()).await.unwrap();
    let ids: Vec<_> = page.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["c", "b", "a"]);
    // Nothing to rebuild: the listing found the index built.
    let listed = fs::read_to_string(&state).unwrap();
    assert!(listed.starts_with("fusion-index 2 built 1 "), "{listed}");
}

#[tokio::test]
async fn a_lock_file_left_to_a_snapshot_that_is_then_removed_is_no_removed_index() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, snapshot) = (tmp.path().join("store"), tmp.path().join("snapshot"));
    let idle = FileSystemStorage::connect(&store).await.unwrap();
    // It keeps the index lock file open, and a live journal.
    idle.append("a", &numbered("a", 1)).await.unwrap();
    idle.append("a", &numbered("a2", 1)).await.unwrap();
    link_copy(&store, &snapshot);
    // Another instance copies the index's lock file, which only the snapshot then names;
    // and the snapshot goes (a backup rotated away).
    let other = FileSystemStorage::new(&store);
    other.append("b", &numbered("b", 1)).await.unwrap();
    fs::remove_dir_all(&snapshot).unwrap();

    // The idle instance finds its lock file without a name: replaced, not removed with
    // the index, whose live journals are where they were.
    idle.append("c", &numbered("c", 1)).await.unwrap();
    let state = fs::read_to_string(store.join(".fusion-index/lock")).unwrap();
    assert!(
        state.starts_with("fusion-index 2 built 1 "),
        "marked for a rebuild: {state:?}"
    );
    let page = idle.list_page(&SessionQuery::new()).await.unwrap();
    let ids: Vec<_> = page.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["c", "b", "a"]);
}

#[tokio::test]
async fn an_id_log_linked_without_the_lock_file_is_copied_before_an_append() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, snapshot) = (tmp.path().join("store"), tmp.path().join("snapshot"));
    let storage = FileSystemStorage::connect(&store).await.unwrap();
    storage.append("a", &numbered("a", 1)).await.unwrap();
    // A snapshot that linked the id log after a writer had copied the lock file (a `cp -al`
    // racing it), or the id log alone.
    fs::create_dir(&snapshot).unwrap();
    let log = snapshot.join("ids-log");
    fs::hard_link(store.join(".fusion-index/ids-log"), &log).unwrap();
    let before = fs::read(&log).unwrap();

    storage.append("b", &numbered("b", 1)).await.unwrap();
    storage.delete("a").await.unwrap();
    assert_eq!(
        fs::read(&log).unwrap(),
        before,
        "the snapshot's id log changed"
    );
    let query = SessionQuery::new().order(fusion_core::SessionOrder::Id);
    let other = FileSystemStorage::new(&store);
    other.append("c", &numbered("c", 1)).await.unwrap();
    for storage in [&storage, &other] {
        let page = storage.list_page(&query).await.unwrap();
        let ids: Vec<_> = page.sessions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
    }
    let log = fs::read_to_string(store.join(".fusion-index/ids-log")).unwrap();
    assert!(log.contains("b") && log.contains("c"), "{log:?}");
}

#[tokio::test]
async fn a_delete_removes_the_copy_of_a_lock_file_a_crash_left() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::connect(tmp.path()).await.unwrap();
    storage.append("s", &numbered("s", 1)).await.unwrap();
    // What a crash between a hard-linked lock file's copy and its rename leaves.
    let left = tmp.path().join(".s.lock-tmp");
    fs::write(&left, "left by a crash\n").unwrap();
    storage.delete("s").await.unwrap();
    assert!(!left.exists(), "left behind");
    assert!(!tmp.path().join(".s.lock").exists());
}
