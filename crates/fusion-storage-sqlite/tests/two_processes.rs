//! Two OS processes appending to one session in one database file lose nothing.
//!
//! The children are this same test binary, re-executed to run only
//! `child_appends_when_asked`; an environment variable tells them which database to use
//! and how to tag their messages. Without it that test does nothing, so a plain
//! `cargo test` run of it passes trivially.

use std::process::Command;
use std::time::Duration;

use fusion_core::testkit::assert_nothing_lost_in_writer_order;
use fusion_core::{ChatMessage, ConversationStorage};
use fusion_storage_sqlite::{SqliteOptions, SqliteStorage};

/// `<database url>|<writer tag>`, set only in child processes.
const CHILD_ENV: &str = "FUSION_SQLITE_TEST_CHILD";
const SESSION: &str = "shared";
const PER_PROCESS: usize = 1000;

/// The children wait for the write lock far longer than the default: this test is about
/// losing nothing under contention, not about how long a loaded CI machine takes.
fn patient() -> SqliteOptions {
    SqliteOptions::new().busy_timeout(Duration::from_secs(60))
}

#[tokio::test]
async fn child_appends_when_asked() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (url, tag) = task.split_once('|').expect("CHILD_ENV is url|tag");
    let storage = SqliteStorage::connect_with(url, patient()).await.unwrap();
    for i in 0..PER_PROCESS {
        let message = ChatMessage::user(format!("{tag}-{i:04}"));
        storage.append(SESSION, &[message]).await.unwrap();
    }
}

#[tokio::test]
async fn two_processes_appending_to_one_session_lose_nothing_and_keep_order() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    // Create the file and schema first, as an application's first start would.
    let storage = SqliteStorage::connect_with(&url, patient()).await.unwrap();

    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|tag| {
            Command::new(&exe)
                .args(["--exact", "child_appends_when_asked", "--nocapture"])
                .env(CHILD_ENV, format!("{url}|{tag}"))
                .spawn()
                .expect("starting a child test process")
        })
        .collect();
    for mut child in children {
        let status = child.wait().unwrap();
        assert!(status.success(), "a child process failed: {status}");
    }

    let loaded = storage.load(SESSION).await.unwrap();
    assert_nothing_lost_in_writer_order(&loaded, &["a", "b"], PER_PROCESS);
    let info = storage.session_info(SESSION).await.unwrap().unwrap();
    assert_eq!(info.message_count, 2 * PER_PROCESS);
}

/// The database to open, read and close, set only in the child of the test below.
const READER_ENV: &str = "FUSION_SQLITE_TEST_READER";

#[test]
fn child_reads_and_closes_when_asked() {
    let Ok(path) = std::env::var(READER_ENV) else {
        return;
    };
    let conn = rusqlite::Connection::open(&path).unwrap();
    let _: i64 = conn
        .query_row("SELECT count(*) FROM sessions", [], |row| row.get(0))
        .unwrap();
    conn.close().unwrap();
}

/// Closing one storage keeps the locks of another on the same file in this process. POSIX
/// drops all of a process's locks on a file when any handle to it closes, so a storage
/// that kept a plain handle of its own (to notice the file deleted) released the other's
/// locks when it went; another process closing its connection then took itself for the
/// last user, checkpointed and deleted the log under the open storage, whose later writes
/// nobody else saw (and a later writer corrupted the file).
#[tokio::test]
async fn closing_one_storage_keeps_the_locks_of_another_on_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let url = format!("sqlite://{}", path.display());
    let kept = SqliteStorage::connect(&url).await.unwrap();
    kept.append(SESSION, &[ChatMessage::user("one")])
        .await
        .unwrap();
    let other = SqliteStorage::connect(&url).await.unwrap();
    other
        .append(SESSION, &[ChatMessage::user("two")])
        .await
        .unwrap();
    other.close().await;
    drop(other);

    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_reads_and_closes_when_asked",
            "--nocapture",
        ])
        .env(READER_ENV, &path)
        .status()
        .expect("starting a child test process");
    assert!(status.success(), "the child process failed: {status}");
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    assert!(
        std::path::Path::new(&wal).exists(),
        "the log was deleted under an open storage"
    );

    kept.append(SESSION, &[ChatMessage::user("three")])
        .await
        .unwrap();
    let fresh = SqliteStorage::connect(&url).await.unwrap();
    let texts: Vec<String> = fresh
        .load(SESSION)
        .await
        .unwrap()
        .into_iter()
        .map(|message| message.content)
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);
    fresh.close().await;
    kept.close().await;
}
