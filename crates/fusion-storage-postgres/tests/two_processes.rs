//! Two OS processes appending to one session in one schema lose nothing and keep order,
//! and two processes appending the same batches (a retry racing its first attempt, from
//! another machine) store each batch once. Each shared batch goes to a session of its
//! own, so however far one process runs ahead of the other, fewer than
//! [`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW) messages come between a batch and its
//! second copy: the window every backend promises, not a pace the scheduler must keep.
//!
//! The children are this same test binary, re-executed to run only one `child_...` test;
//! an environment variable tells them which server and schema to use and how to tag their
//! messages. Without it those tests do nothing, so a plain `cargo test` run of them passes
//! trivially.

mod support;

use std::process::Command;

use fusion_core::testkit::assert_nothing_lost_in_writer_order;
use fusion_core::{ChatMessage, ConversationStorage, MessageId};
use fusion_storage_postgres::{PostgresOptions, PostgresStorage};

/// `<server url>|<schema>|<writer tag>`, set only in child processes.
const CHILD_ENV: &str = "FUSION_POSTGRES_TEST_CHILD";
/// The same, for the children that append the shared batches.
const RACER_ENV: &str = "FUSION_POSTGRES_TEST_RACER";
const SESSION: &str = "shared";
const PER_PROCESS: usize = 1000;
/// Shared batches each racing child appends, two messages each, one session each.
const ROUNDS: usize = 300;

/// The storage a child opens from its environment variable `var`, and its writer tag.
async fn child_storage(var: &str) -> Option<(PostgresStorage, String)> {
    let task = std::env::var(var).ok()?;
    let mut parts = task.splitn(3, '|');
    let (Some(url), Some(schema), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("{var} is url|schema|tag");
    };
    let options = PostgresOptions::new(url).schema(schema);
    let storage = PostgresStorage::connect_with(options).await.unwrap();
    Some((storage, tag.to_string()))
}

/// Runs this binary's test `child` once per tag, with `var` naming the harness's schema,
/// and waits for every child to succeed.
fn run_children(harness: &support::Harness, child: &str, var: &str, tags: &[&str]) {
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = tags
        .iter()
        .map(|tag| {
            Command::new(&exe)
                .args(["--exact", child, "--nocapture"])
                .env(var, format!("{}|{}|{tag}", harness.url, harness.schema))
                .spawn()
                .expect("starting a child test process")
        })
        .collect();
    for mut child in children {
        let status = child.wait().unwrap();
        assert!(status.success(), "a child process failed: {status}");
    }
}

#[tokio::test]
async fn child_appends_when_asked() {
    let Some((storage, tag)) = child_storage(CHILD_ENV).await else {
        return;
    };
    for i in 0..PER_PROCESS {
        let message = ChatMessage::user(format!("{tag}-{i:04}"));
        storage.append(SESSION, &[message]).await.unwrap();
    }
}

#[tokio::test]
async fn two_processes_appending_to_one_session_lose_nothing_and_keep_order() {
    let Some(harness) = support::harness().await else {
        return;
    };
    // Create the schema first, as an application's first start would.
    let storage = PostgresStorage::connect_with(harness.options())
        .await
        .unwrap();
    run_children(&harness, "child_appends_when_asked", CHILD_ENV, &["a", "b"]);

    let loaded = storage.load(SESSION).await.unwrap();
    assert_nothing_lost_in_writer_order(&loaded, &["a", "b"], PER_PROCESS);
    let info = storage.session_info(SESSION).await.unwrap().unwrap();
    assert_eq!(info.message_count, 2 * PER_PROCESS);
    storage.close().await;
}

/// The session of the shared batch of `round`.
fn round_session(round: usize) -> String {
    format!("{SESSION}-{round}")
}

/// The shared batch of `round`: `shared-0` and `shared-1`, with ids every process
/// derives alike.
fn shared_batch(round: usize) -> Vec<ChatMessage> {
    (0..2)
        .map(|k| {
            let id: MessageId = format!("shared-{round}-{k}").parse().unwrap();
            ChatMessage::user(format!("shared-{k}")).with_id(id)
        })
        .collect()
}

#[tokio::test]
async fn child_races_when_asked() {
    let Some((storage, tag)) = child_storage(RACER_ENV).await else {
        return;
    };
    for round in 0..ROUNDS {
        let session = round_session(round);
        storage
            .append(&session, &shared_batch(round))
            .await
            .unwrap();
        let own: Vec<ChatMessage> = (0..2)
            .map(|k| ChatMessage::user(format!("{tag}-{k}")))
            .collect();
        storage.append(&session, &own).await.unwrap();
    }
}

#[tokio::test]
async fn two_processes_appending_the_same_batches_store_each_once() {
    let Some(harness) = support::harness().await else {
        return;
    };
    let storage = PostgresStorage::connect_with(harness.options())
        .await
        .unwrap();

    run_children(&harness, "child_races_when_asked", RACER_ENV, &["a", "b"]);

    for round in 0..ROUNDS {
        let session = round_session(round);
        // The shared batch once and in order, every own message kept, in order.
        let loaded = storage.load(&session).await.unwrap();
        assert_nothing_lost_in_writer_order(&loaded, &["shared", "a", "b"], 2);
        // The batch contiguous: its second message right after its first.
        let first = loaded.iter().position(|m| m.content == "shared-0").unwrap();
        assert_eq!(
            loaded[first + 1].content,
            "shared-1",
            "{session}: batch split"
        );
        let info = storage.session_info(&session).await.unwrap().unwrap();
        assert_eq!(info.message_count, 6, "{session}");
    }
    storage.close().await;
}
