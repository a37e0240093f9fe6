//! Many OS processes opening one new database file at the same moment all succeed.
//!
//! Opening a new file switches it to WAL and creates the schema. Two processes doing that
//! at once meet locks that SQLite does not wait for through the busy timeout (switching
//! the journal mode from a read lock gets `SQLITE_BUSY` at once), so opening retries
//! those steps until the busy timeout runs out. This test races the openings as closely
//! as the OS allows: the children are this same test binary, re-executed to run only
//! `child_opens_and_appends_when_asked`. In each round, every child waits at the file
//! barrier of `support` and only then opens that round's (still missing) database and
//! appends one message. Several rounds make a race that a single round may miss likely
//! to show. Without the environment variable that test does nothing, so a plain
//! `cargo test` run of it passes trivially.

mod support;

use std::path::{Path, PathBuf};

use fusion_core::testkit::assert_nothing_lost_in_writer_order;
use fusion_core::{ChatMessage, ConversationStorage};
use fusion_storage_sqlite::SqliteStorage;
use support::{Children, arrive_and_wait, patient};

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

#[tokio::test]
async fn child_opens_and_appends_when_asked() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, tag) = task.split_once('|').expect("CHILD_ENV is dir|tag");
    let dir = Path::new(dir);
    for round in 0..ROUNDS {
        arrive_and_wait(dir, round, tag);
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
    let mut children = Children::spawn(
        "child_opens_and_appends_when_asked",
        CHILD_ENV,
        dir.path(),
        &tags,
    );
    for round in 0..ROUNDS {
        children.wait_until_ready(dir.path(), round, &tags);
        assert!(
            !database_path(dir.path(), round).exists(),
            "the database must be new when the children open it"
        );
        children.go(dir.path(), round);
    }
    children.wait_all_succeeded();

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
