//! A Redis restart mid-run: writes during the outage fail loudly, and the storage
//! reconnects; a subscription to its changes ends, subscribing during the outage fails
//! loudly, and subscribing again afterwards works.
//!
//! This case kills a server, so it starts its own throwaway `redis-server` on a free port
//! instead of touching the one at `REDIS_URL`.

mod common;

use std::time::Duration;

use common::{NO_HANG, Throwaway};
use fusion_core::{ChatMessage, ConversationStorage};
use fusion_storage_redis::{ChangeKind, RedisOptions, RedisStorage};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_fails_writes_during_the_outage_then_the_next_call_reconnects() {
    let Some(throwaway) = Throwaway::new() else {
        return;
    };
    let url = &throwaway.url;
    let mut server = throwaway.start().await;

    // No reconnect retries: each reconnect is one refused attempt that fails at once, so
    // when the server is back the manager still holds a stale refusal. That is the case
    // the storage must get through on its own (it retries a refused connection once).
    let options = RedisOptions::new()
        .connect_timeout(Duration::from_secs(1))
        .reconnect_retries(0);
    let store = RedisStorage::connect_with(url, options).await.unwrap();
    store
        .append("s", &[ChatMessage::user("before")])
        .await
        .unwrap();

    server.kill().await.expect("killing redis-server");

    // Every call during the outage reports a retryable error, within a bounded time.
    for attempt in 0..3 {
        let during = [ChatMessage::user(format!("during-{attempt}"))];
        let result = tokio::time::timeout(NO_HANG, store.append("s", &during))
            .await
            .expect("a write to a dead server must fail, not hang");
        let err = result.expect_err("a write to a dead server must not be reported as stored");
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains(url.as_str()), "{err}");
    }
    let read = tokio::time::timeout(NO_HANG, store.load("s"))
        .await
        .expect("no hang");
    assert!(read.is_err(), "load from a dead server: {read:?}");

    let _server = throwaway.start().await;

    // The very next call after the server is back succeeds on the same storage.
    store
        .append("s", &[ChatMessage::user("after")])
        .await
        .unwrap();
    // The new server started empty (no persistence): only the post-restart write is
    // there, so none of the failed writes was stored behind our back.
    let loaded = store.load("s").await.unwrap();
    assert_eq!(loaded, vec![ChatMessage::user("after")]);
    assert_eq!(store.list_sessions().await.unwrap(), ["s"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_ends_a_subscription_and_subscribing_again_works_once_it_is_back() {
    let Some(throwaway) = Throwaway::new() else {
        return;
    };
    let url = &throwaway.url;
    let mut server = throwaway.start().await;
    let options = RedisOptions::new()
        .connect_timeout(Duration::from_secs(1))
        .publish_changes(true);
    let store = RedisStorage::connect_with(url, options).await.unwrap();
    let mut changes = store.subscribe_changes().await.unwrap();

    server.kill().await.expect("killing redis-server");

    let ended = tokio::time::timeout(NO_HANG, changes.next())
        .await
        .expect("a subscription to a dead server ends, not hangs");
    assert!(ended.is_none(), "{ended:?}");
    let err = tokio::time::timeout(NO_HANG, store.subscribe_changes())
        .await
        .expect("subscribing to a dead server fails, not hangs")
        .expect_err("no server to subscribe on");
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains("subscribe_changes") && err.to_string().contains(url.as_str()),
        "{err}"
    );

    let _server = throwaway.start().await;
    let mut changes = store.subscribe_changes().await.unwrap();
    // Written by a storage of its own: `store` made no call during the outage, so its
    // first write may still meet the dropped connection (the case above covers that).
    let writer = RedisStorage::connect_with(url, RedisOptions::new().publish_changes(true))
        .await
        .unwrap();
    writer
        .append("s", &[ChatMessage::user("after")])
        .await
        .unwrap();
    let change = tokio::time::timeout(NO_HANG, changes.next())
        .await
        .expect("the change arrives")
        .expect("the subscription is open")
        .unwrap();
    assert_eq!(
        (change.kind, change.session_id.as_str()),
        (ChangeKind::Created, "s")
    );
}

/// A restart while the storage makes no call: its next read meets the dropped connection
/// and is sent once more, on the connection the manager opens again, so it succeeds, and
/// so does the write after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_idle_costs_no_read() {
    let Some(throwaway) = Throwaway::new() else {
        return;
    };
    let mut server = throwaway.start().await;
    let store = RedisStorage::connect(&throwaway.url).await.unwrap();
    store
        .append("s", &[ChatMessage::user("before")])
        .await
        .unwrap();

    server.kill().await.expect("killing redis-server");
    let _server = throwaway.start().await;

    // The new server started empty (no persistence).
    let loaded = tokio::time::timeout(NO_HANG, store.load("s"))
        .await
        .expect("no hang");
    assert_eq!(loaded.unwrap(), Vec::new());
    store
        .append("s", &[ChatMessage::user("after")])
        .await
        .unwrap();
    assert_eq!(store.load("s").await.unwrap().len(), 1);
}
