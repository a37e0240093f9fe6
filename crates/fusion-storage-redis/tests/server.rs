//! Redis-specific behaviour against a real server: concurrency, failures, foreign data, TTL.
//!
//! Cases that need the server at `REDIS_URL` skip without it; the ones about an
//! unreachable server need nothing but a free port.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, free_port, harness, wait_until};
use fusion_core::testkit::assert_nothing_lost_in_writer_order;
use fusion_core::{Change, ChatMessage, ConversationStorage, Error, Expect};
use fusion_storage_redis::{MAX_TTL, RedisOptions, RedisStorage};
use redis::AsyncCommands;

/// Generous limit for anything that must not hang; reaching it is the failure.
const NO_HANG: Duration = Duration::from_secs(30);

async fn open(h: &Harness) -> RedisStorage {
    h.connect(h.options())
        .await
        .expect("connecting to REDIS_URL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_with_own_instances_keep_all_2000_appends_in_order() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 250;
    let Some(h) = harness().await else { return };
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = open(&h).await;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            for k in 0..PER_WRITER {
                let turn = [ChatMessage::user(format!("w{w}-{k:03}"))];
                store.append("busy", &turn).await.expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task panicked");
    }
    let store = open(&h).await;
    let loaded = store.load("busy").await.unwrap();
    let writers: Vec<String> = (0..WRITERS).map(|w| format!("w{w}")).collect();
    assert_nothing_lost_in_writer_order(&loaded, &writers, PER_WRITER);
    assert_eq!(
        store.list_sessions().await.unwrap(),
        vec!["busy".to_string()]
    );
    let info = store.session_info("busy").await.unwrap().unwrap();
    assert_eq!(info.message_count, WRITERS * PER_WRITER);
}

#[tokio::test]
async fn server_down_at_start_fails_with_a_clear_retryable_error_without_hanging() {
    let port = free_port();
    let url = format!("redis://:hunter2-secret@127.0.0.1:{port}/0");
    let result = tokio::time::timeout(NO_HANG, RedisStorage::connect(&url))
        .await
        .expect("connect to a dead port must fail, not hang");
    let err = result.expect_err("nothing listens there");
    assert!(
        matches!(
            err,
            Error::Backend {
                backend: "redis",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable(), "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains(&format!("redis://:***@127.0.0.1:{port}/0")),
        "{shown}"
    );
    assert!(shown.contains("refused"), "{shown}");
}

#[tokio::test]
async fn the_url_password_never_appears_in_errors() {
    let port = free_port();
    for url in [
        format!("redis://:hunter2-secret@127.0.0.1:{port}"),
        format!("redis://app:hunter2-secret@127.0.0.1:{port}/3"),
        "rediss-typo://:hunter2-secret@h".to_string(),
        "redis://:hunter2-secret@127.0.0.1:1/not-a-db".to_string(),
    ] {
        let options = RedisOptions::new().connect_timeout(Duration::from_millis(500));
        let err = tokio::time::timeout(NO_HANG, RedisStorage::connect_with(&url, options))
            .await
            .expect("no hang")
            .expect_err(&url);
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains("hunter2"), "password leaked: {shown}");
        }
    }
    // A live server refusing the credentials must not echo them either.
    if let Some(url) = common::redis_url() {
        let bad = url.replacen("redis://", "redis://nobody-x:hunter2-secret@", 1);
        if let Err(err) = RedisStorage::connect(&bad).await {
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains("hunter2"), "password leaked: {shown}");
            }
            assert!(!err.is_retryable(), "{err}");
        }
    }
}

/// `Debug` of a connected storage names the server with its password hidden. A server
/// whose default user has no password accepts any, so the made-up one connects.
#[tokio::test]
async fn debug_output_names_the_server_without_its_password() {
    let Some(h) = harness().await else { return };
    let url = h
        .url
        .replacen("redis://", "redis://default:hunter2-secret@", 1);
    let store = match RedisStorage::connect_with(&url, h.options()).await {
        Ok(store) => store,
        // A server with a password of its own refuses this one, without echoing it.
        Err(err) => {
            assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");
            return;
        }
    };
    let shown = format!("{store:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("default:***@"), "{shown}");
    assert!(shown.contains(&h.prefix), "{shown}");
}

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn rediss_without_the_tls_feature_names_the_feature() {
    let err = RedisStorage::connect("rediss://:hunter2@127.0.0.1:6380")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::FeatureDisabled { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.contains("`tls` feature") && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn rediss_with_the_tls_feature_attempts_a_handshake() {
    // A listener that hangs up on every connection: the client gets as far as starting
    // TLS (so the rustls stack and its crypto provider are wired up) and then reports
    // the dropped connection as a retryable error.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let url = format!("rediss://:hunter2@127.0.0.1:{port}");
    let err = tokio::time::timeout(NO_HANG, RedisStorage::connect(&url))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn a_foreign_key_of_the_wrong_type_gives_a_clear_error_and_no_partial_write() {
    let Some(h) = harness().await else { return };
    let store = open(&h).await;
    let mut raw = h.raw().await;
    let _: () = raw.set(h.list_key("squatted"), "not a list").await.unwrap();

    let err = store.load("squatted").await.unwrap_err();
    let shown = err.to_string();
    assert!(!err.is_retryable(), "{shown}");
    assert!(shown.contains("wrong type"), "{shown}");
    assert!(shown.contains("\"squatted\""), "{shown}");
    assert!(shown.contains(&h.list_key("squatted")), "{shown}");
    let err = store.load_revision("squatted").await.unwrap_err();
    assert!(err.to_string().contains("wrong type"), "{err}");

    for result in [
        store.append("squatted", &[ChatMessage::user("hi")]).await,
        store.save("squatted", &[ChatMessage::user("hi")]).await,
        store.truncate("squatted", 1).await,
        store
            .write_if(
                "squatted",
                Expect::Generation(0),
                Change::Append(&[ChatMessage::user("hi")]),
            )
            .await
            .map(drop),
        store
            .write_if("squatted", Expect::Generation(0), Change::Truncate(0))
            .await
            .map(drop),
    ] {
        let err = result.expect_err("a write over a foreign key must fail");
        let shown = err.to_string();
        assert!(
            shown.contains("wrong type") && shown.contains(&h.list_key("squatted")),
            "{shown}"
        );
    }
    // The scripts check types before writing: the foreign value is intact, nothing else
    // was created, and the id the pipelined SADD indexed is not listed (and is pruned).
    let value: String = raw.get(h.list_key("squatted")).await.unwrap();
    assert_eq!(value, "not a list");
    let meta_exists: bool = raw.exists(h.meta_key("squatted")).await.unwrap();
    assert!(!meta_exists);
    assert!(store.list_sessions().await.unwrap().is_empty());
    // Other sessions are unaffected.
    store
        .append("fine", &[ChatMessage::user("ok")])
        .await
        .unwrap();
    assert_eq!(store.load("fine").await.unwrap().len(), 1);
}

/// Writes pipeline the script by its sha, which a pipeline does not load by itself: on a
/// server that forgot its scripts (restarted, or `SCRIPT FLUSH`), the write loads it and
/// goes through, stored and indexed exactly once.
#[tokio::test]
async fn writes_succeed_after_the_server_forgets_its_scripts() {
    let Some(h) = harness().await else { return };
    let store = open(&h).await;
    let mut raw = h.raw().await;
    store
        .append("flushed", &[ChatMessage::user("before")])
        .await
        .unwrap();
    flush_scripts(&mut raw).await;
    store
        .append("flushed", &[ChatMessage::user("after")])
        .await
        .unwrap();
    flush_scripts(&mut raw).await;
    store
        .save("other", &[ChatMessage::user("saved")])
        .await
        .unwrap();
    let contents: Vec<String> = store
        .load("flushed")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(contents, ["before", "after"]);
    let mut ids = store.list_sessions().await.unwrap();
    ids.sort();
    assert_eq!(ids, ["flushed", "other"]);
}

async fn flush_scripts(raw: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(raw)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_non_json_element_is_corrupt_for_that_session_only() {
    let Some(h) = harness().await else { return };
    let store = open(&h).await;
    store
        .append("damaged", &[ChatMessage::user("good")])
        .await
        .unwrap();
    store
        .append("healthy", &[ChatMessage::user("fine")])
        .await
        .unwrap();
    let mut raw = h.raw().await;
    let _: () = raw.rpush(h.list_key("damaged"), "{not json").await.unwrap();

    match store.load("damaged").await {
        Err(Error::Corrupt {
            backend: "redis",
            session_id,
            detail,
        }) => {
            assert_eq!(session_id, "damaged");
            assert!(detail.contains("element 1"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(store.load("healthy").await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_expired_session_loads_empty_and_is_not_listed() {
    let Some(h) = harness().await else { return };
    let store = h
        .connect(h.options().ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    store
        .append("brief", &[ChatMessage::user("soon gone")])
        .await
        .unwrap();
    let keeper = open(&h).await; // no TTL: its sessions stay
    keeper
        .append("lasting", &[ChatMessage::user("stays")])
        .await
        .unwrap();
    let mut listed = store.list_sessions().await.unwrap();
    listed.sort();
    assert_eq!(listed, ["brief", "lasting"]);

    let raw = h.raw().await;
    let (list, meta) = (h.list_key("brief"), h.meta_key("brief"));
    let expired = wait_until(Duration::from_secs(15), || {
        let mut raw = raw.clone();
        let (list, meta) = (list.clone(), meta.clone());
        async move {
            let n: usize = raw.exists(&[list, meta]).await.unwrap();
            n == 0
        }
    })
    .await;
    assert!(expired, "the session's keys never expired");

    assert!(store.load("brief").await.unwrap().is_empty());
    assert!(store.session_info("brief").await.unwrap().is_none());
    assert_eq!(store.list_sessions().await.unwrap(), ["lasting"]);
    // list_sessions also dropped the ghost from the index itself.
    let mut raw = raw.clone();
    let indexed: bool = raw.sismember(h.index_key(), "brief").await.unwrap();
    assert!(!indexed);
}

#[tokio::test]
async fn the_largest_ttl_is_set_by_every_write_and_one_millisecond_more_is_refused_at_connect() {
    let Some(h) = harness().await else { return };
    let store = h.connect(h.options().ttl(MAX_TTL)).await.unwrap();
    let mut raw = h.raw().await;
    let max_ms = i64::try_from(MAX_TTL.as_millis()).unwrap();
    let turn = [ChatMessage::user("a"), ChatMessage::assistant("b")];
    for step in ["append", "save", "truncate"] {
        match step {
            "append" => store.append("s", &turn).await.unwrap(),
            "save" => store.save("s", &turn).await.unwrap(),
            _ => store.truncate("s", 1).await.unwrap(),
        }
        for key in [h.list_key("s"), h.meta_key("s")] {
            let pttl: i64 = raw.pttl(&key).await.unwrap();
            assert!(
                pttl > max_ms - NO_HANG.as_millis() as i64 && pttl <= max_ms,
                "{step}: {key} has PTTL {pttl}, not about {max_ms}"
            );
        }
    }
    assert_eq!(store.load("s").await.unwrap(), turn[..1]);

    for too_long in [
        MAX_TTL + Duration::from_millis(1),
        Duration::from_millis(1 << 63),
    ] {
        let refused = h.connect(h.options().ttl(too_long)).await;
        let err = refused.expect_err("a TTL past MAX_TTL must be refused at connect");
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(err.to_string().contains("TTL"), "{err}");
    }
    // The refused configuration wrote nothing: the session is as the last write left it.
    assert_eq!(store.load("s").await.unwrap(), turn[..1]);
}

#[tokio::test]
async fn every_write_refreshes_the_ttl_of_list_and_meta() {
    let Some(h) = harness().await else { return };
    let ttl = Duration::from_secs(600);
    let store = h.connect(h.options().ttl(ttl)).await.unwrap();
    let mut raw = h.raw().await;
    let (list, meta) = (h.list_key("s"), h.meta_key("s"));
    let turn = [ChatMessage::user("a"), ChatMessage::assistant("b")];

    // After each kind of write both keys carry a fresh TTL, above the short one set by hand.
    for step in ["save", "append", "truncate"] {
        if step != "save" {
            for key in [&list, &meta] {
                let _: () = raw.pexpire(key, 5_000).await.unwrap();
            }
        }
        match step {
            "save" => store.save("s", &turn).await.unwrap(),
            "append" => store.append("s", &turn).await.unwrap(),
            _ => store.truncate("s", 1).await.unwrap(),
        }
        for key in [&list, &meta] {
            let pttl: i64 = raw.pttl(key).await.unwrap();
            assert!(
                pttl > 5_000 && pttl <= 600_000,
                "{step}: {key} has PTTL {pttl}"
            );
        }
    }
    // A storage without TTL makes the keys persistent again on its next write.
    open(&h).await.append("s", &turn).await.unwrap();
    for key in [&list, &meta] {
        let pttl: i64 = raw.pttl(key).await.unwrap();
        assert_eq!(pttl, -1, "{key}");
    }
}

#[tokio::test]
async fn a_history_longer_than_luas_unpack_limit_saves_whole() {
    let Some(h) = harness().await else { return };
    let store = open(&h).await;
    let history: Vec<ChatMessage> = (0..10_000)
        .map(|i| ChatMessage::user(format!("m{i}")))
        .collect();
    store.save("long", &history).await.unwrap();
    store.append("long", &history[..2_500]).await.unwrap();
    let loaded = store.load("long").await.unwrap();
    assert_eq!(loaded.len(), 12_500);
    assert_eq!(loaded[..10_000], history[..]);
    store.truncate("long", 3).await.unwrap();
    assert_eq!(store.load("long").await.unwrap(), history[..3]);
}

#[tokio::test]
async fn key_prefixes_keep_apps_apart_and_keys_follow_the_documented_layout() {
    let (Some(a), Some(b)) = (harness().await, harness().await) else {
        return;
    };
    let (app_a, app_b) = (open(&a).await, open(&b).await);
    app_a
        .append("same-id", &[ChatMessage::user("from a")])
        .await
        .unwrap();
    app_b
        .append("same-id", &[ChatMessage::user("from b")])
        .await
        .unwrap();
    assert_eq!(app_a.load("same-id").await.unwrap()[0].content, "from a");
    assert_eq!(app_b.load("same-id").await.unwrap()[0].content, "from b");
    app_a.delete("same-id").await.unwrap();
    assert_eq!(app_b.list_sessions().await.unwrap(), ["same-id"]);

    let mut raw = b.raw().await;
    let stored: Vec<String> = raw.lrange(b.list_key("same-id"), 0, -1).await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&stored[0]).unwrap();
    assert_eq!(json["role"], "user");
    assert_eq!(json["content"], "from b");
    let mut meta: Vec<String> = raw.hkeys(b.meta_key("same-id")).await.unwrap();
    meta.sort();
    assert_eq!(meta, ["created_at", "gen", "updated_at"]);
    let generation: u64 = raw.hget(b.meta_key("same-id"), "gen").await.unwrap();
    let (_, revision) = app_b.load_revision("same-id").await.unwrap();
    assert_eq!(revision.generation, generation);
}
