//! The listing index shared by OS processes: processes creating, writing, deleting and
//! listing sessions at once in a directory an earlier version wrote (so the first
//! listings build the index while the writers go on) leave an index that lists every
//! session exactly once, in order, by owner and by id.
//!
//! Child processes are this test binary run again with `--exact <child test>`; the child
//! tests do nothing unless [`ROLE_ENV`] names their role.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use fusion_core::testkit::{all_pages, said};
use fusion_core::{
    ChatMessage, ConversationStorage, Position, SessionMeta, SessionOrder, SessionQuery,
};
use fusion_storage_fs::FileSystemStorage;

const ROLE_ENV: &str = "FUSION_FS_INDEX_TEST_ROLE";
const DIR_ENV: &str = "FUSION_FS_INDEX_TEST_DIR";
const TAG_ENV: &str = "FUSION_FS_INDEX_TEST_TAG";
/// Sessions of an earlier version in the directory before the children start.
const LEGACY: usize = 100;
/// Sessions each writer creates.
const CREATED: usize = 120;

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(test: &str, role: &str, dir: &Path, tag: &str) -> Reaped {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir)
        .env(TAG_ENV, tag)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Reaped(child)
}

fn child_role(role: &str) -> Option<(FileSystemStorage, String)> {
    (std::env::var(ROLE_ENV).ok()? == role).then(|| {
        let dir = std::env::var_os(DIR_ENV).expect("child needs its directory");
        let tag = std::env::var(TAG_ENV).expect("child needs its tag");
        // Waits for the parent's start line, so the children begin together.
        std::io::stdin()
            .lock()
            .read_line(&mut String::new())
            .unwrap();
        (FileSystemStorage::new(dir), tag)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Child: creates [`CREATED`] sessions owned by its tag, appends to each as it goes, and
/// deletes every tenth.
#[test]
fn child_creator() {
    let Some((storage, tag)) = child_role("creator") else {
        return;
    };
    runtime().block_on(async {
        for i in 0..CREATED {
            let id = format!("{tag}-{i:03}");
            let meta = SessionMeta::new()
                .owner(tag.clone())
                .tags([format!("t{}", i % 3)]);
            storage
                .create_session(&id, &meta, &said("hi"))
                .await
                .unwrap();
            storage.append(&id, &said("more")).await.unwrap();
            if i % 10 == 9 {
                storage
                    .delete(&format!("{tag}-{:03}", i - 5))
                    .await
                    .unwrap();
            }
        }
    });
}

/// Child: lists every page over and over while the creators run (its first listing
/// builds the index), checking that no pass shows a session twice.
#[test]
fn child_lister() {
    let Some((storage, _)) = child_role("lister") else {
        return;
    };
    runtime().block_on(async {
        for _ in 0..20 {
            for order in [SessionOrder::UpdatedDesc, SessionOrder::Id] {
                let ids = all_pages(&storage, SessionQuery::new().order(order).limit(37)).await;
                let distinct: HashSet<&String> = ids.iter().collect();
                assert_eq!(
                    distinct.len(),
                    ids.len(),
                    "{order:?}: a session listed twice"
                );
            }
        }
    });
}

#[test]
fn processes_writing_and_listing_at_once_keep_the_index_whole() {
    let tmp = tempfile::tempdir().unwrap();
    // As an earlier version leaves a directory: session files and bare lock files.
    for i in 0..LEGACY {
        let line = serde_json::to_string(&ChatMessage::user(format!("old {i}"))).unwrap();
        std::fs::write(tmp.path().join(format!("old-{i:03}.jsonl")), line + "\n").unwrap();
        std::fs::write(tmp.path().join(format!(".old-{i:03}.lock")), "").unwrap();
    }
    let mut children = vec![
        spawn_child("child_creator", "creator", tmp.path(), "p0"),
        spawn_child("child_creator", "creator", tmp.path(), "p1"),
        spawn_child("child_lister", "lister", tmp.path(), "l0"),
        spawn_child("child_lister", "lister", tmp.path(), "l1"),
    ];
    for child in &mut children {
        child.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    for child in &mut children {
        assert!(child.0.wait().unwrap().success(), "a child failed");
    }

    runtime().block_on(async {
        let storage = FileSystemStorage::new(tmp.path());
        let mut expected = storage.list_sessions().await.unwrap();
        expected.sort();
        assert_eq!(expected.len(), LEGACY + 2 * (CREATED - CREATED / 10));

        let by_id = all_pages(
            &storage,
            SessionQuery::new().order(SessionOrder::Id).limit(33),
        )
        .await;
        assert_eq!(by_id, expected);
        let newest = all_pages(&storage, SessionQuery::new().limit(33)).await;
        let mut infos = Vec::new();
        for id in &newest {
            infos.push(storage.session_info(id).await.unwrap().unwrap());
        }
        let positions: Vec<Position> = infos
            .iter()
            .map(|i| Position::of(SessionOrder::UpdatedDesc, i))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "newest first");
        let mut sorted = newest.clone();
        sorted.sort();
        assert_eq!(sorted, expected);
        for owner in ["p0", "p1"] {
            let owned = all_pages(&storage, SessionQuery::new().owner(owner).limit(10)).await;
            assert_eq!(owned.len(), CREATED - CREATED / 10, "{owner}");
            assert!(owned.iter().all(|id| id.starts_with(owner)));
            for info in infos.iter().filter(|i| owned.contains(&i.id)) {
                assert_eq!(info.message_count, 4, "{}", info.id);
            }
        }
        let tagged = all_pages(&storage, SessionQuery::new().tag("t1")).await;
        assert!(!tagged.is_empty());
        for id in &tagged {
            let info = storage.session_info(id).await.unwrap().unwrap();
            assert!(info.meta.tags.contains(&"t1".to_string()));
        }
    });
}
