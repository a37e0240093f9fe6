//! OS processes that all start one session at the same moment with a create-only
//! conditional write store its opening once, and every process's message once.
//!
//! Each child opens the database file, then in each round waits at the file barrier of
//! `support` and races the others to create that round's session with
//! `write_if(Expect::Generation(0), Append([system, user]))`. Exactly one may win; each
//! loser gets `Error::Conflict`, reads the session with `load_revision` and appends its
//! own user message under the generation it read. Half the children write through the
//! direct connections of `SqliteStorage::connect`, half through a pool of their own
//! (`from_pool`), so both runners of the check meet each other on one file. Without the
//! environment variable the child test does nothing, so a plain `cargo test` run of it
//! passes trivially.

mod support;

use std::path::Path;
use std::time::Duration;

use fusion_core::testkit::assert_nothing_lost_in_writer_order;
use fusion_core::{Change, ChatMessage, ConversationStorage, Error, Expect, LEGACY_GENERATION};
use fusion_storage_sqlite::{SqlitePool, SqliteStorage};
use sqlx::sqlite::SqliteConnectOptions;
use support::{Children, arrive_and_wait, patient};

/// `<directory>|<writer tag>`, set only in child processes.
const CHILD_ENV: &str = "FUSION_SQLITE_CREATING_AT_ONCE_CHILD";
const CHILDREN: usize = 6;
const ROUNDS: usize = 5;
const PROMPT: &str = "the system prompt";

fn database_path(dir: &Path) -> std::path::PathBuf {
    dir.join("sessions.db")
}

fn session(round: usize) -> String {
    format!("start-{round}")
}

/// Written by the child that created the session of `round`, holding the generation
/// its write returned.
fn created_file(dir: &Path, round: usize, tag: &str) -> std::path::PathBuf {
    dir.join(format!("created-{round}-{tag}"))
}

/// Even-numbered children open the file as the library does; odd ones hand it a pool of
/// their own, so their writes take the sqlx path.
async fn open(dir: &Path, tag: &str) -> SqliteStorage {
    let index: usize = tag.trim_start_matches('p').parse().unwrap();
    let path = database_path(dir);
    if index.is_multiple_of(2) {
        let url = format!("sqlite://{}", path.display());
        return SqliteStorage::connect_with(&url, patient()).await.unwrap();
    }
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .busy_timeout(Duration::from_secs(60));
    let pool = SqlitePool::connect_with(options).await.unwrap();
    SqliteStorage::from_pool(pool).await.unwrap()
}

#[tokio::test]
async fn child_creates_or_joins_when_asked() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, tag) = task.split_once('|').expect("CHILD_ENV is dir|tag");
    let dir = Path::new(dir);
    let storage = open(dir, tag).await;
    for round in 0..ROUNDS {
        let id = session(round);
        let user = ChatMessage::user(format!("{tag}-0"));
        let opening = [ChatMessage::system(PROMPT), user.clone()];
        arrive_and_wait(dir, round, tag);
        match storage
            .write_if(&id, Expect::Generation(0), Change::Append(&opening))
            .await
        {
            Ok(generation) => {
                assert!(generation > LEGACY_GENERATION, "created with {generation}");
                std::fs::write(created_file(dir, round, tag), generation.to_string()).unwrap();
            }
            Err(Error::Conflict { .. }) => {
                // Nobody rewrites these sessions, so the one retry under the generation
                // just read must apply, and keep that generation.
                let (history, now) = storage.load_revision(&id).await.unwrap();
                assert!(
                    now.exists(),
                    "{tag}: the conflict came from an existing session"
                );
                assert_eq!(history.len(), now.len);
                assert_eq!(history[0], ChatMessage::system(PROMPT));
                let kept = storage
                    .write_if(
                        &id,
                        Expect::Generation(now.generation),
                        Change::Append(std::slice::from_ref(&user)),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{tag}: the append after a conflict: {e}"));
                assert_eq!(
                    kept, now.generation,
                    "{tag}: an append keeps the generation"
                );
            }
            Err(other) => panic!("{tag}: {other}"),
        }
    }
    storage.close().await;
}

#[tokio::test]
async fn processes_creating_one_session_at_once_store_its_opening_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", database_path(dir.path()).display());
    // The file and its schema exist first, so the race is between the writes alone
    // (`opening_at_once.rs` races the openings).
    let storage = SqliteStorage::connect_with(&url, patient()).await.unwrap();
    let tags: Vec<String> = (0..CHILDREN).map(|i| format!("p{i}")).collect();
    let mut children = Children::spawn(
        "child_creates_or_joins_when_asked",
        CHILD_ENV,
        dir.path(),
        &tags,
    );
    for round in 0..ROUNDS {
        children.wait_until_ready(dir.path(), round, &tags);
        children.go(dir.path(), round);
    }
    children.wait_all_succeeded();

    for round in 0..ROUNDS {
        let creators: Vec<(&String, u64)> = tags
            .iter()
            .filter_map(|tag| {
                let text = std::fs::read_to_string(created_file(dir.path(), round, tag)).ok()?;
                Some((tag, text.parse().unwrap()))
            })
            .collect();
        assert_eq!(creators.len(), 1, "round {round}: creators {creators:?}");
        let (creator, generation) = creators[0];

        let (history, revision) = storage.load_revision(&session(round)).await.unwrap();
        assert_eq!(
            revision.generation, generation,
            "round {round}: appends kept it"
        );
        assert_eq!(revision.len, CHILDREN + 1, "round {round}");
        assert_eq!(history.len(), revision.len);
        assert_eq!(history[0], ChatMessage::system(PROMPT), "round {round}");
        assert_eq!(
            history[1],
            ChatMessage::user(format!("{creator}-0")),
            "round {round}: the opening is stored whole, system then creator"
        );
        let systems = history.iter().filter(|m| m.content == PROMPT).count();
        assert_eq!(systems, 1, "round {round}: {history:?}");
        // Every process's message once, in whatever order they got the lock.
        assert_nothing_lost_in_writer_order(&history[1..], &tags, 1);
    }
    storage.close().await;
}
