//! Two OS processes appending to one session in one schema lose nothing and keep order.
//!
//! The children are this same test binary, re-executed to run only
//! `child_appends_when_asked`; an environment variable tells them which server and schema
//! to use and how to tag their messages. Without it that test does nothing, so a plain
//! `cargo test` run of it passes trivially.

mod support;

use std::process::Command;

use fusion_core::testkit::assert_nothing_lost_in_writer_order;
use fusion_core::{ChatMessage, ConversationStorage};
use fusion_storage_postgres::{PostgresOptions, PostgresStorage};

/// `<server url>|<schema>|<writer tag>`, set only in child processes.
const CHILD_ENV: &str = "FUSION_POSTGRES_TEST_CHILD";
const SESSION: &str = "shared";
const PER_PROCESS: usize = 1000;

#[tokio::test]
async fn child_appends_when_asked() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = task.splitn(3, '|');
    let (Some(url), Some(schema), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("{CHILD_ENV} is url|schema|tag");
    };
    let options = PostgresOptions::new(url).schema(schema);
    let storage = PostgresStorage::connect_with(options).await.unwrap();
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

    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|tag| {
            Command::new(&exe)
                .args(["--exact", "child_appends_when_asked", "--nocapture"])
                .env(
                    CHILD_ENV,
                    format!("{}|{}|{tag}", harness.url, harness.schema),
                )
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
    storage.close().await;
}
