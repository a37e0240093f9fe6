//! Issue #13, case 10, on the real backends: `fork` checks that its target is free and
//! copies in one conditional write, so a concurrent writer of the target never
//! interleaves with the copy, on the file system, SQLite and Redis (`REDIS_URL`).
//!
//! `races.rs` plays the same two races on in-memory storage. Here every writer has a
//! storage handle of its own on one store, as separate processes would, and the race is
//! forced by a hook on the forking session's handle that lets the other writer land just
//! before the fork's read returns: never by timing.
//!
//! Each case is a function run once per backend by [`on_every_backend!`], as
//! `case_name::fs`, `case_name::sqlite` and `case_name::redis`.

mod common;

use std::sync::Arc;

use common::{HANG_GUARD, HookedStorage, SESSION, builder, client, contents, turn};
use fusion_agent::AgentSession;
use fusion_agent::testing::MockLlmServer;
use fusion_core::testkit::{clean_up_from_drop, delete_every_session, unique_name};
use fusion_core::{ChatMessage, ConversationStorage, Error};
use fusion_storage_fs::FileSystemStorage;
use fusion_storage_redis::{RedisOptions, RedisStorage};
use fusion_storage_sqlite::SqliteStorage;

/// The system prompt of every session here (the one `common::builder` sets).
const SYSTEM: &str = "You are a test agent.";

/// The backends each case runs on.
enum Backend {
    Fs,
    Sqlite,
    Redis,
}

/// One test's store: a directory, a SQLite file or a Redis key prefix of its own.
enum Place {
    Fs(tempfile::TempDir),
    Sqlite(tempfile::TempDir),
    Redis { url: String, prefix: String },
}

impl Place {
    /// A fresh store on `backend`, or `None` when `REDIS_URL` is not set (after saying
    /// so; a failure instead under `FUSION_REQUIRE_BACKENDS`).
    fn new(backend: Backend) -> Option<Place> {
        Some(match backend {
            Backend::Fs => Place::Fs(tempfile::tempdir().unwrap()),
            Backend::Sqlite => Place::Sqlite(tempfile::tempdir().unwrap()),
            Backend::Redis => {
                let url = redis_url()?;
                Place::Redis {
                    url,
                    prefix: unique_name("fusion-agent-fork"),
                }
            }
        })
    }

    /// A new handle on this store: each writer gets its own, as a process would.
    async fn open(&self) -> Arc<dyn ConversationStorage> {
        match self {
            Place::Fs(dir) => Arc::new(
                FileSystemStorage::connect(dir.path().join("sessions"))
                    .await
                    .expect("the session directory opens"),
            ),
            Place::Sqlite(dir) => {
                let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
                Arc::new(
                    SqliteStorage::connect(&url)
                        .await
                        .expect("the database opens"),
                )
            }
            Place::Redis { url, prefix } => Arc::new(
                RedisStorage::connect_with(url, RedisOptions::new().key_prefix(prefix))
                    .await
                    .expect("REDIS_URL answers"),
            ),
        }
    }
}

impl Drop for Place {
    /// Deletes what a Redis test stored under its prefix, even when the test failed.
    fn drop(&mut self) {
        let Place::Redis { url, prefix } = self else {
            return;
        };
        let (url, prefix) = (url.clone(), prefix.clone());
        clean_up_from_drop(move || async move {
            let options = RedisOptions::new().key_prefix(&prefix);
            delete_every_session(&RedisStorage::connect_with(&url, options).await?).await
        });
    }
}

/// The server at `REDIS_URL`, or `None` after printing why the Redis case is skipped;
/// under `FUSION_REQUIRE_BACKENDS` a missing server fails the test instead, as
/// `fusion_core::testkit::unavailable` does for the storage crates' own tests.
fn redis_url() -> Option<String> {
    const REASON: &str = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests";
    if let Some(url) = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
    {
        return Some(url);
    }
    if std::env::var_os("FUSION_REQUIRE_BACKENDS").is_some() {
        panic!("redis backend unavailable and FUSION_REQUIRE_BACKENDS is set: {REASON}");
    }
    // The stderr handle, not `eprintln!`, which libtest hides for passing tests: a skip
    // must be visible.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: redis: {REASON}");
    None
}

/// Expands each case `name` into `mod name { fs, sqlite, redis }` tests.
macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::{Backend, Place};

            #[tokio::test]
            async fn fs() {
                super::$case(&Place::new(Backend::Fs).unwrap()).await;
            }

            #[tokio::test]
            async fn sqlite() {
                super::$case(&Place::new(Backend::Sqlite).unwrap()).await;
            }

            #[tokio::test]
            async fn redis() {
                if let Some(place) = Place::new(Backend::Redis) {
                    super::$case(&place).await;
                }
            }
        }
    )*};
}

on_every_backend!(
    a_fork_racing_a_writer_that_creates_the_target_leaves_that_writer_whole,
    a_writer_that_loses_the_race_to_a_fork_continues_after_the_copy,
);

/// Case 10: another writer creates the fork's target after the fork read its source and
/// before it writes the copy. The fork must fail, naming what the target holds, and leave
/// the other writer's message as the target's whole history: no copy on top of it, none
/// under it.
async fn a_fork_racing_a_writer_that_creates_the_target_leaves_that_writer_whole(place: &Place) {
    let server = MockLlmServer::start().await;
    let workspace = tempfile::tempdir().unwrap();
    let storage = Arc::new(HookedStorage::over(place.open().await));
    let mut session = builder(Arc::new(client(&server)), storage.clone(), workspace.path())
        .build()
        .await
        .unwrap();
    turn(&server, &mut session, "hello", "hi").await;

    let other = place.open().await;
    storage.before_returning_a_read(
        SESSION,
        other.clone(),
        "target",
        vec![ChatMessage::user("theirs")],
    );
    let err = tokio::time::timeout(HANG_GUARD, session.fork("target"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(storage.read_hook_fired(), "the fork never read its source");
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(
        err.to_string().contains("already holds 1 messages"),
        "{err}"
    );

    // A fresh handle reads what the store holds, not what any handle remembers.
    let store = place.open().await;
    assert_eq!(contents(&store.load("target").await.unwrap()), ["theirs"]);
    assert_eq!(
        contents(&store.load(SESSION).await.unwrap()),
        [SYSTEM, "hello", "hi"]
    );
}

/// Case 10: a writer that read the target while it was still empty, then lost the race
/// to a fork, appends its turn after the fork's copy instead of writing over it or being
/// refused: the target holds the copy, then that turn, and the source neither.
async fn a_writer_that_loses_the_race_to_a_fork_continues_after_the_copy(place: &Place) {
    let server = MockLlmServer::start().await;
    let workspace = tempfile::tempdir().unwrap();
    let mut session = builder(
        Arc::new(client(&server)),
        place.open().await,
        workspace.path(),
    )
    .build()
    .await
    .unwrap();
    turn(&server, &mut session, "hello", "hi").await;
    // The other writer, on a handle of its own, reads the target while it is empty.
    let mut other_on_target = AgentSession::builder("target")
        .llm(Arc::new(client(&server)))
        .storage(place.open().await)
        .workspace_roots([workspace.path()])
        .system_prompt(SYSTEM)
        .build()
        .await
        .unwrap();
    assert_eq!(other_on_target.message_count(), 0);

    let fork = session.fork("target").await.unwrap();
    assert_eq!(fork.message_count(), 3);
    turn(&server, &mut other_on_target, "late", "late answer").await;

    let store = place.open().await;
    assert_eq!(
        contents(&store.load("target").await.unwrap()),
        [SYSTEM, "hello", "hi", "late", "late answer"]
    );
    assert_eq!(
        contents(&store.load(SESSION).await.unwrap()),
        [SYSTEM, "hello", "hi"]
    );
}
