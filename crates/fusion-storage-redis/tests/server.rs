//! Redis-specific behaviour against a real server: concurrency, failures, foreign data,
//! key layout. TTL and timestamps are in `clock.rs`.
//!
//! Cases that need the server at `REDIS_URL` skip without it; the ones about an
//! unreachable server need nothing but a free port.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{NO_HANG, harness};
use fusion_core::testkit::assert_nothing_lost_in_writer_order;
use fusion_core::testkit::port::{self, reserve_port};
use fusion_core::{Change, ChatMessage, ConversationStorage, Error, Expect};
use fusion_storage_redis::{RedisOptions, RedisStorage};
use redis::AsyncCommands;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_with_own_instances_keep_all_2000_appends_in_order() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 250;
    let Some(h) = harness().await else { return };
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = h.open().await;
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
    let store = h.open().await;
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
    // Reserved for the test: no other test starts a server on it meanwhile.
    let reserved = reserve_port();
    let port = reserved.port;
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
    // Reserved for the test: no other test starts a server on it meanwhile.
    let reserved = reserve_port();
    let port = reserved.port;
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

/// A query parameter the backend would ignore is refused before any connection is
/// tried (nothing listens on the port, so a connection attempt would give a
/// `Backend` error instead); `key_prefix` in the URL picks the prefix.
#[tokio::test]
async fn url_parameters_are_checked_before_connecting_and_key_prefix_is_honoured() {
    // Reserved for the test: no other test starts a server on it meanwhile.
    let reserved = reserve_port();
    let port = reserved.port;
    for (query, name) in [
        ("keyprefix=mine", "`keyprefix`"),
        ("key_prefix=a&key_prefix=b", "`key_prefix` is given 2 times"),
        ("protocol=resp3&db=1", "`db`"),
    ] {
        for url in [
            format!("redis://:hunter2@127.0.0.1:{port}/0?{query}"),
            format!("redis+cluster://:hunter2@127.0.0.1:{port},127.0.0.1:1?{query}"),
        ] {
            let err = tokio::time::timeout(NO_HANG, RedisStorage::connect(&url))
                .await
                .expect("no hang")
                .expect_err(&url);
            let shown = err.to_string();
            assert!(matches!(err, Error::Config(_)), "{url}: {shown}");
            assert!(shown.contains(name), "{url}: {shown}");
            assert!(!shown.contains("hunter2"), "password leaked: {shown}");
        }
    }
    let Some(h) = harness().await else { return };
    let separator = if h.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}key_prefix={}&protocol=resp3", h.url, h.prefix);
    let store = RedisStorage::connect(&url).await.expect("connects");
    assert_eq!(store.key_prefix(), h.prefix);
    store
        .append("via-url", &[ChatMessage::user("hi")])
        .await
        .unwrap();
    assert_eq!(h.open().await.load("via-url").await.unwrap().len(), 1);
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
    let store = h.open().await;
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
    // was created, and the id is not indexed.
    let value: String = raw.get(h.list_key("squatted")).await.unwrap();
    assert_eq!(value, "not a list");
    let meta_exists: bool = raw.exists(h.meta_key("squatted")).await.unwrap();
    assert!(!meta_exists);
    assert!(store.list_sessions().await.unwrap().is_empty());

    // The same when the foreign key sits where the meta hash goes: no list is pushed.
    let _: () = raw.set(h.meta_key("crowded"), "not a hash").await.unwrap();
    for result in [
        store.append("crowded", &[ChatMessage::user("hi")]).await,
        store.save("crowded", &[ChatMessage::user("hi")]).await,
        store
            .write_if(
                "crowded",
                Expect::Generation(0),
                Change::Append(&[ChatMessage::user("hi")]),
            )
            .await
            .map(drop),
    ] {
        let err = result.expect_err("a write over a foreign meta key must fail");
        assert!(err.to_string().contains("wrong type"), "{err}");
    }
    let list_exists: bool = raw.exists(h.list_key("crowded")).await.unwrap();
    assert!(!list_exists, "a list was pushed beside a foreign meta key");
    let value: String = raw.get(h.meta_key("crowded")).await.unwrap();
    assert_eq!(value, "not a hash");
    let _: () = raw.del(h.meta_key("crowded")).await.unwrap();
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
    let store = h.open().await;
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
    let store = h.open().await;
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
async fn a_history_longer_than_luas_unpack_limit_saves_whole() {
    let Some(h) = harness().await else { return };
    let store = h.open().await;
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
    let (app_a, app_b) = (a.open().await, b.open().await);
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

/// Found by a review: the tests' servers took a port found by binding port 0 and released
/// at once, so two tests running side by side could draw the same one, and one of them
/// then ran against the other's server (a throwaway waits only for *a* server to answer),
/// or found a server on a port meant to have nothing listening. A reserved port is
/// outside the kernel's range for port 0 (so no listener nor outgoing connection gets it
/// meanwhile) and locked, so no other reservation gets it while it is held.
#[test]
fn a_test_servers_port_is_outside_the_ephemeral_range_and_its_own() {
    let Some((low, high)) = port::ephemeral_range() else {
        return; // not Linux: nothing to compare with
    };
    let first = reserve_port();
    let second = reserve_port();
    for port in [first.port, second.port] {
        assert!(
            !(low..=high).contains(&port),
            "port {port} is in the kernel's range {low}..={high}"
        );
    }
    assert_ne!(first.port, second.port);
}

/// Found by a review: a delete short of replica acknowledgements said "stored on the
/// primary ... a retry would apply the write twice", of a delete, and so of one that
/// found nothing to remove. It says what the delete did, naming the session.
#[tokio::test]
async fn a_delete_short_of_replica_acknowledgements_says_what_it_did() {
    let Some(h) = harness().await else {
        return;
    };
    // More replicas than the server has: every write is short of them.
    let acked = h
        .connect(h.options().replica_acks(64, Duration::from_millis(10)))
        .await
        .unwrap();
    let wrong = ["stored on the primary", "apply the write twice"];
    let err = acked.delete("never").await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("delete of session \"never\""), "{shown}");
    assert!(shown.contains("so the delete removed nothing"), "{shown}");
    assert!(shown.contains("only 0 of 64 replicas"), "{shown}");
    assert!(wrong.iter().all(|wrong| !shown.contains(wrong)), "{shown}");

    let err = (acked.append("s", &[ChatMessage::user("a")]).await).unwrap_err();
    assert!(err.to_string().contains(wrong[0]), "{err}");
    let err = acked.delete("s").await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("deleted on the primary"), "{shown}");
    assert!(wrong.iter().all(|wrong| !shown.contains(wrong)), "{shown}");
    assert!(h.open().await.load("s").await.unwrap().is_empty());
}

/// Found by a review: a metadata update, a truncate or a save short of replica
/// acknowledgements said "a retry would apply the write twice", true of an append's
/// messages only: sent again, these leave the session as they did.
#[tokio::test]
async fn an_overwrite_short_of_replica_acknowledgements_is_not_said_to_apply_twice() {
    let Some(h) = harness().await else {
        return;
    };
    let acks = h.options().replica_acks(64, Duration::from_millis(10));
    let acked = h.connect(acks).await.unwrap();
    let store = h.open().await;
    let two = [ChatMessage::user("a"), ChatMessage::user("b")];
    store.append("o", &two).await.unwrap();
    let title = fusion_core::MetaUpdate::new().title(Some("t"));
    let errors = [
        acked.update_session("o", &title).await.unwrap_err(),
        acked.truncate("o", 1).await.unwrap_err(),
        acked.save("o", &two).await.unwrap_err(),
    ];
    for err in errors {
        assert!(!err.is_retryable(), "{err}");
        let shown = err.to_string();
        // Found by a later review: an update is "updated" (see below).
        assert!(
            shown.contains("written on the primary") || shown.contains("updated on the primary"),
            "{shown}"
        );
        assert!(
            shown.contains("leaves the session as this write did")
                || shown.contains("leaves the session as this update did"),
            "{shown}"
        );
        assert!(!shown.contains("apply the write twice"), "{shown}");
    }
    assert_eq!(
        store.load("o").await.unwrap(),
        two,
        "the save is on the primary"
    );
}

/// Found by a review: a creation short of replica acknowledgements said "stored on the
/// primary ... a retry would apply the write twice", the words of an append, but its
/// retry meets the session it created: a conflict; so does that of a conditional append
/// expecting a revision (`Exactly`). A write whose expectation was not met changed
/// nothing, yet was said stored too; a conditional replace by nothing deleted the session.
#[tokio::test]
async fn a_creation_or_a_conditional_write_short_of_replica_acknowledgements_says_what_it_did() {
    let Some(h) = harness().await else {
        return;
    };
    let acked = (h.connect(h.options().replica_acks(64, Duration::from_millis(10)))).await;
    let acked = acked.unwrap();
    let store = h.open().await;
    let said = [ChatMessage::user("a")];
    let meta = fusion_core::SessionMeta::new();
    let err = acked.create_session("c", &meta, &said).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("created on the primary"), "{shown}");
    assert!(
        shown.contains("the creation is refused as a conflict"),
        "{shown}"
    );
    assert!(!shown.contains("apply the write twice"), "{shown}");
    let (_, revision) = store.load_revision("c").await.unwrap();
    assert_eq!(revision.len, 1, "the creation is on the primary");

    let unmet = [
        acked.create_session("c", &meta, &said).await.unwrap_err(),
        (acked
            .write_if("c", Expect::Generation(7), Change::Append(&said))
            .await)
            .unwrap_err(),
    ];
    for err in unmet {
        let shown = err.to_string();
        assert!(shown.contains("so it changed nothing"), "{shown}");
        assert!(!shown.contains("stored on the primary"), "{shown}");
    }
    let exactly = Expect::Exactly(revision);
    let err = (acked.write_if("c", exactly, Change::Append(&said)).await).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("written on the primary"), "{shown}");
    assert!(shown.contains("refused as a conflict"), "{shown}");
    assert!(!shown.contains("apply the write twice"), "{shown}");
    let (_, revision) = store.load_revision("c").await.unwrap();
    let emptied = Expect::Exactly(revision);
    let err = (acked.write_if("c", emptied, Change::Replace(&[])).await).unwrap_err();
    assert!(err.to_string().contains("deleted on the primary"), "{err}");
    assert_eq!(store.load_revision("c").await.unwrap().1.len, 0);
}

/// Found by a review: a metadata update short of replica acknowledgements said that,
/// sent again, a conditional one "is refused as a conflict", but an update's conditions
/// are its `if_title` and `if_owner`: one that changed the owner it was conditional on is
/// refused as not that owner's, and one conditional on what it left as it was applies
/// again, leaving the session the same.
#[tokio::test]
async fn an_update_short_of_replica_acknowledgements_says_what_its_retry_meets() {
    let Some(h) = harness().await else {
        return;
    };
    let acked = (h.connect(h.options().replica_acks(64, Duration::from_millis(10)))).await;
    let acked = acked.unwrap();
    let store = h.open().await;
    let meta = fusion_core::SessionMeta::new().owner("alice");
    (store
        .create_session("u", &meta, &[ChatMessage::user("a")])
        .await)
        .unwrap();
    let hand_over = fusion_core::MetaUpdate::new()
        .owner(Some("bob"))
        .if_owner("alice");
    let err = acked.update_session("u", &hand_over).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("updated on the primary"), "{shown}");
    assert!(shown.contains("`if_owner`"), "{shown}");
    assert!(shown.contains("as not that owner's"), "{shown}");
    assert!(!shown.contains("refused as a conflict"), "{shown}");
    // As it says: sent again, the hand-over is refused as not alice's.
    let again = store.update_session("u", &hand_over).await.unwrap_err();
    assert!(matches!(again, Error::NotOwner { .. }), "{again}");
    // And one conditional on what it did not change applies again.
    let rename = fusion_core::MetaUpdate::new()
        .title(Some("t"))
        .if_owner("bob");
    assert!(acked.update_session("u", &rename).await.is_err());
    let renamed = store.update_session("u", &rename).await.unwrap().unwrap();
    assert_eq!(renamed.meta.title.as_deref(), Some("t"));
}

/// Found by a second review: short of replica acknowledgements, an append whose messages
/// all have ids was said to apply twice if sent again, though its retry skips each one
/// stored; a write that found nothing to change (a conditional append of nothing, a
/// truncate to a length the session is within) was said stored or written; a replace by
/// nothing or a truncate to none of a session never stored was said to have deleted it.
#[tokio::test]
async fn a_write_short_of_replica_acknowledgements_says_when_it_stores_once_or_changed_nothing() {
    let Some(h) = harness().await else {
        return;
    };
    let acked = (h.connect(h.options().replica_acks(64, Duration::from_millis(10)))).await;
    let acked = acked.unwrap();
    let store = h.open().await;
    let with_ids = [
        ChatMessage::user("a").with_new_id(),
        ChatMessage::assistant("b").with_new_id(),
    ];
    let err = acked.append("o", &with_ids).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("stored on the primary"), "{shown}");
    assert!(
        shown.contains("stores none of its messages twice"),
        "{shown}"
    );
    assert!(!shown.contains("apply the write twice"), "{shown}");
    // As it says: sent again, nothing is stored twice.
    store.append("o", &with_ids).await.unwrap();
    let (_, revision) = store.load_revision("o").await.unwrap();
    assert_eq!(revision.len, 2);
    let mixed = [ChatMessage::user("c"), ChatMessage::user("d").with_new_id()];
    let err = acked.append("o", &mixed).await.unwrap_err();
    assert!(err.to_string().contains("apply the write twice"), "{err}");

    let (_, revision) = store.load_revision("o").await.unwrap();
    let unchanged = [
        (acked.write_if("o", Expect::Exactly(revision), Change::Append(&[])))
            .await
            .unwrap_err(),
        (acked.write_if("none", Expect::Generation(0), Change::Append(&[])))
            .await
            .unwrap_err(),
        acked.truncate("o", 100).await.unwrap_err(),
    ];
    for err in unchanged {
        assert!(!err.is_retryable(), "{err}");
        let shown = err.to_string();
        assert!(shown.contains("so the write changed nothing"), "{shown}");
        assert!(!shown.contains("on the primary, but"), "{shown}");
    }
    let never_stored = [
        (acked.write_if("none", Expect::Generation(0), Change::Replace(&[])))
            .await
            .unwrap_err(),
        acked.truncate("none", 0).await.unwrap_err(),
    ];
    for err in never_stored {
        let shown = err.to_string();
        assert!(
            shown.contains("no session was stored under this id"),
            "{shown}"
        );
        assert!(!shown.contains("deleted on the primary"), "{shown}");
    }
    assert_eq!(store.load_revision("o").await.unwrap().1, revision);
}
