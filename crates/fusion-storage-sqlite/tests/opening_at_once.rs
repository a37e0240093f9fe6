//! Many OS processes opening one new database file at the same moment all succeed.
//!
//! Opening a new file switches it to WAL and creates the schema. Two processes doing that
//! at once meet locks that SQLite does not wait for through the busy timeout (switching
//! the journal mode from a read lock gets `SQLITE_BUSY` at once), so opening retries
//! those steps until the busy timeout runs out. This test races the openings as closely
//! as the OS allows: the children are this same test binary, re-executed to run only
//! `child_opens_and_appends_when_asked`. In each round, every child announces that it is
//! ready with a file of its own, then polls for a `go` file that the parent creates once
//! every child is ready, and only then opens that round's (still missing) database and
//! appends one message. Several rounds make a race that a single round may miss likely
//! to show. Without the environment variable that test does nothing, so a plain
//! `cargo test` run of it passes trivially.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use fusion_core::testkit::assert_nothing_lost_in_writer_order;
use fusion_core::{ChatMessage, ConversationStorage};
use fusion_storage_sqlite::{SqliteOptions, SqliteStorage};

/// `<directory>|<writer tag>`, set only in child processes.
const CHILD_ENV: &str = "FUSION_SQLITE_OPEN_AT_ONCE_CHILD";
const SESSION: &str = "shared";
const CHILDREN: usize = 8;
const ROUNDS: usize = 5;

fn database_path(dir: &Path, round: usize) -> PathBuf {
    dir.join(format!("new-{round}.db"))
}

fn database_url(dir: &Path, round: usize) -> String {
    format!("sqlite://{}", database_path(dir, round).display())
}

fn ready_file(dir: &Path, round: usize, tag: &str) -> PathBuf {
    dir.join(format!("ready-{round}-{tag}"))
}

fn go_file(dir: &Path, round: usize) -> PathBuf {
    dir.join(format!("go-{round}"))
}

/// Polls until `path` exists. The barrier that lines the processes up: no sleep decides
/// when anything happens, the pause only keeps the poll from spinning a core. Gives up
/// when the directory is gone: the parent test ended without it.
fn wait_for(path: &Path) {
    let dir = path
        .parent()
        .expect("barrier files live in the test directory");
    while !path.exists() {
        assert!(
            dir.exists(),
            "the parent test ended before {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The child processes, killed if the parent fails before they finish, so that none is
/// left polling for a barrier file that will never come.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // Errors only mean the child has already been reaped.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Each opening waits far longer than the default: the test is about opening at all under
/// contention, not about how long a loaded CI machine takes to do it.
fn patient() -> SqliteOptions {
    SqliteOptions::new().busy_timeout(Duration::from_secs(60))
}

#[tokio::test]
async fn child_opens_and_appends_when_asked() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, tag) = task.split_once('|').expect("CHILD_ENV is dir|tag");
    let dir = Path::new(dir);
    for round in 0..ROUNDS {
        std::fs::write(ready_file(dir, round, tag), b"").unwrap();
        wait_for(&go_file(dir, round));
        let storage = SqliteStorage::connect_with(&database_url(dir, round), patient())
            .await
            .unwrap_or_else(|e| panic!("child {tag} could not open database {round}: {e}"));
        let message = ChatMessage::user(format!("{tag}-0000"));
        storage.append(SESSION, &[message]).await.unwrap();
        storage.close().await;
    }
}

#[tokio::test]
async fn processes_opening_a_new_database_at_once_all_open_and_store() {
    let dir = tempfile::tempdir().unwrap();
    let tags: Vec<String> = (0..CHILDREN).map(|i| format!("p{i}")).collect();
    let exe = std::env::current_exe().unwrap();
    let mut children = Children(
        tags.iter()
            .map(|tag| {
                Command::new(&exe)
                    .args([
                        "--exact",
                        "child_opens_and_appends_when_asked",
                        "--nocapture",
                    ])
                    .env(CHILD_ENV, format!("{}|{tag}", dir.path().display()))
                    .spawn()
                    .expect("starting a child test process")
            })
            .collect(),
    );
    for round in 0..ROUNDS {
        // Every child is ready once its file exists; one that exits before that failed.
        while !tags
            .iter()
            .all(|tag| ready_file(dir.path(), round, tag).exists())
        {
            for child in &mut children.0 {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("a child process exited before round {round}: {status}");
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            !database_path(dir.path(), round).exists(),
            "the database must be new when the children open it"
        );
        std::fs::write(go_file(dir.path(), round), b"").unwrap();
    }
    for child in &mut children.0 {
        let status = child.wait().unwrap();
        assert!(status.success(), "a child process failed: {status}");
    }

    for round in 0..ROUNDS {
        let storage = SqliteStorage::connect(&database_url(dir.path(), round))
            .await
            .unwrap();
        let loaded = storage.load(SESSION).await.unwrap();
        // Each child appended one message; their order is whoever got the lock first.
        assert_nothing_lost_in_writer_order(&loaded, &tags, 1);
        storage.close().await;
    }
}
