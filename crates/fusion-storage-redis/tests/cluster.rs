//! The Redis backend on a Redis Cluster (`FUSION_REDIS_CLUSTER_URL`, three primaries with
//! a replica each; `cargo xtask test-all-backends` starts one): the conformance suite, and
//! what is particular to a cluster: one slot per session, sessions spread over the
//! primaries, the index without cross-slot requests, replica acknowledgements, and a
//! single-server URL pointed at a cluster node.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Harness, cluster_harness, primaries, publishing_cluster_harness};
use fusion_core::{Change, ChatMessage, ConversationStorage, Error, Expect};
use fusion_storage_redis::RedisStorage;

fusion_core::conformance_suite!(conformance_redis_cluster, cluster_harness);
// Every write script in its publishing form (`RedisOptions::publish_changes`).
fusion_core::conformance_suite!(
    conformance_redis_cluster_publishing,
    publishing_cluster_harness
);

async fn open(h: &Harness) -> RedisStorage {
    let storage = h.open().await;
    assert!(storage.is_cluster());
    storage
}

/// The slot of `key`, as the cluster computes it.
async fn slot(h: &Harness, key: &str) -> u16 {
    let mut raw = h.raw_cluster().await;
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut raw)
        .await
        .expect("CLUSTER KEYSLOT")
}

#[tokio::test]
async fn a_sessions_keys_share_one_slot_and_sessions_spread_over_the_primaries() {
    let Some(h) = cluster_harness().await else {
        return;
    };
    let storage = open(&h).await;
    let ids: Vec<String> = (0..60).map(|i| format!("spread-{i}")).collect();
    for id in &ids {
        storage
            .append(id, &[ChatMessage::user(id.as_str())])
            .await
            .unwrap();
    }
    let mut slots = HashSet::new();
    for id in &ids {
        let list = slot(&h, &h.list_key(id)).await;
        assert_eq!(list, slot(&h, &h.meta_key(id)).await, "{id}");
        slots.insert(list);
    }
    assert!(
        slots.len() > 40,
        "60 sessions in only {} slots",
        slots.len()
    );
    // Each primary holds some of them: count the list keys node by node.
    let mut holding = 0;
    for node in primaries(&h.url) {
        let mut conn = redis::Client::open(node.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:s:*", h.prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        holding += usize::from(!keys.is_empty());
    }
    assert!(holding >= 2, "all 60 sessions on one primary");
    let mut listed = storage.list_sessions().await.unwrap();
    listed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listed, want);
}

#[tokio::test]
async fn the_index_follows_creates_appends_deletes_and_expiry_across_slots() {
    let Some(h) = cluster_harness().await else {
        return;
    };
    let storage = open(&h).await;
    let mut raw = h.raw_cluster().await;
    // Both indexes of every session, as (id, score) pairs: by id (all at 0) and by
    // update time.
    let members = |raw: &mut redis::cluster_async::ClusterConnection| {
        let mut raw = raw.clone();
        let (ids, updated) = (h.ids_key(), h.updated_key());
        async move {
            let mut both = Vec::new();
            for key in [ids, updated] {
                let entries: Vec<(String, f64)> = redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(&mut raw)
                    .await
                    .unwrap();
                both.push(entries);
            }
            let [by_id, by_update] = <[_; 2]>::try_from(both).unwrap();
            assert!(by_id.iter().all(|(_, score)| *score == 0.0), "{by_id:?}");
            let mut ids: Vec<String> = by_update.into_iter().map(|(id, _)| id).collect();
            ids.sort();
            let listed: Vec<String> = by_id.into_iter().map(|(id, _)| id).collect();
            assert_eq!(listed, ids, "both indexes hold the same ids");
            ids
        }
    };
    storage
        .append("a", &[ChatMessage::user("1")])
        .await
        .unwrap();
    storage
        .append("a", &[ChatMessage::user("2")])
        .await
        .unwrap();
    storage.save("b", &[ChatMessage::user("1")]).await.unwrap();
    assert_eq!(members(&mut raw).await, ["a", "b"]);
    storage.delete("a").await.unwrap();
    assert_eq!(members(&mut raw).await, ["b"]);
    assert!(storage.load("a").await.unwrap().is_empty());

    // A session whose keys vanish (expired, say) is pruned from the index by the next
    // listing; the index is in another slot than the session.
    let _: () = redis::cmd("DEL")
        .arg(h.list_key("b"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(storage.list_sessions().await.unwrap().is_empty());
    assert!(members(&mut raw).await.is_empty());
    // Created again, it is listed again.
    storage
        .append("b", &[ChatMessage::user("again")])
        .await
        .unwrap();
    assert_eq!(storage.list_sessions().await.unwrap(), ["b"]);
}

#[tokio::test]
async fn replica_acknowledgements_pass_with_a_replica_and_fail_clearly_without_enough() {
    let Some(h) = cluster_harness().await else {
        return;
    };
    let acked = h
        .connect(h.options().replica_acks(1, Duration::from_secs(10)))
        .await
        .unwrap();
    acked
        .append("s", &[ChatMessage::user("held by a replica")])
        .await
        .unwrap();
    acked.truncate("s", 1).await.unwrap();
    acked
        .append("s", &[ChatMessage::user("two")])
        .await
        .unwrap();
    assert_eq!(acked.load("s").await.unwrap().len(), 2);

    // Each primary has one replica, so two can never acknowledge.
    let greedy = h
        .connect(h.options().replica_acks(2, Duration::from_millis(50)))
        .await
        .unwrap();
    let err = greedy
        .append("s", &[ChatMessage::user("three")])
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("only 1 of 2 replicas"), "{shown}");
    assert!(shown.contains("stored on the primary"), "{shown}");
    // As the error says, the primary has it.
    assert_eq!(acked.load("s").await.unwrap().len(), 3);
    // Found by a review: a delete short of them said "stored on the primary ... a retry
    // would apply the write twice", also one that found nothing to remove.
    let shown = greedy.delete("never").await.unwrap_err().to_string();
    assert!(shown.contains("delete of session \"never\""), "{shown}");
    assert!(shown.contains("so the delete removed nothing"), "{shown}");
    assert!(!shown.contains("stored on the primary"), "{shown}");
    let shown = greedy.delete("s").await.unwrap_err().to_string();
    assert!(shown.contains("deleted on the primary"), "{shown}");
    assert!(!shown.contains("apply the write twice"), "{shown}");
    assert!(acked.load("s").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_single_server_url_on_a_cluster_node_names_the_cluster_scheme() {
    let Some(h) = cluster_harness().await else {
        return;
    };
    let cluster = open(&h).await;
    // Find a session whose slot the first node does not serve: connected to that node
    // alone, the storage meets a MOVED it cannot follow.
    let node = primaries(&h.url).remove(0);
    let single = h
        .connect_to(&node)
        .await
        .expect("a cluster node accepts a connection");
    let mut moved = None;
    for i in 0..50 {
        let id = format!("elsewhere-{i}");
        if let Err(err) = single.load(&id).await {
            moved = Some(err);
            break;
        }
    }
    let err = moved.expect("50 sessions all on the first node");
    assert!(
        matches!(
            err,
            Error::Backend {
                retryable: false,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("redis+cluster://"), "{err}");
    // A write is refused the same way wherever its session's slot is (the write script
    // also names the index, in another slot: CROSSSLOT, or MOVED), and stores nothing.
    for i in 0..5 {
        let id = format!("anywhere-{i}");
        let err = single
            .append(&id, &[ChatMessage::user("hi")])
            .await
            .expect_err("a write through a single-server URL on a cluster node");
        assert!(err.to_string().contains("redis+cluster://"), "{err}");
        assert!(!err.is_retryable(), "{err}");
        assert!(cluster.load(&id).await.unwrap().is_empty());
    }
    assert!(cluster.list_sessions().await.unwrap().is_empty());
}

#[tokio::test]
async fn writes_succeed_after_every_primary_forgets_its_scripts() {
    let Some(h) = cluster_harness().await else {
        return;
    };
    let storage = open(&h).await;
    storage
        .append("s", &[ChatMessage::user("1")])
        .await
        .unwrap();
    for node in primaries(&h.url) {
        let mut conn = redis::Client::open(node.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    storage
        .append("s", &[ChatMessage::user("2")])
        .await
        .unwrap();
    storage.truncate("s", 1).await.unwrap();
    storage
        .append("t", &[ChatMessage::user("new")])
        .await
        .unwrap();
    assert_eq!(storage.load("s").await.unwrap().len(), 1);
    let mut ids = storage.list_sessions().await.unwrap();
    ids.sort();
    assert_eq!(ids, ["s", "t"]);
}

/// What `call` returns while `key`, where Fusion keeps an index, holds a string (as
/// something other than Fusion may write under the prefix): the index's node refuses its
/// requests with "wrong type", after the session's write on its own node. `key` is
/// deleted afterwards.
async fn with_index_of_another_type<T>(h: &Harness, key: &str, call: impl Future<Output = T>) -> T {
    let mut raw = h.raw_cluster().await;
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("not an index")
        .query_async(&mut raw)
        .await
        .unwrap();
    let returned = call.await;
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut raw)
        .await
        .unwrap();
    returned
}

/// Found by a review: only a creation's refused index requests were tested on a
/// cluster. An append to a session that exists stores its messages on the session's
/// node; the index's node then refuses its entry, and the error says the write was
/// stored, offering no retry for a refusal that lasts.
#[tokio::test]
async fn an_append_whose_index_requests_fail_after_the_write_says_it_was_stored() {
    let Some(h) = cluster_harness().await else {
        return;
    };
    let storage = open(&h).await;
    storage
        .append("s", &[ChatMessage::user("one")])
        .await
        .unwrap();
    let two = [ChatMessage::user("two")];
    let append = storage.append("s", &two);
    let refused = with_index_of_another_type(&h, &h.updated_key(), append)
        .await
        .expect_err("the by-update index's node refuses its entry");
    assert!(!refused.is_retryable(), "{refused}");
    let shown = refused.to_string();
    assert!(shown.contains("wrong type"), "{shown}");
    assert!(shown.contains("write itself was stored"), "{shown}");
    assert!(!shown.contains("a retry"), "{shown}");
    let history = storage.load("s").await.unwrap();
    let contents: Vec<&str> = history.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["one", "two"], "the write was stored");
}

/// Found by a review: a delete whose steps after its script failed (the look-again entry
/// it leaves in the expiry index, the removals from the listings) answered with that
/// step's refusal alone, as if the delete had written nothing, though the session was
/// gone; and the look failing first cancelled the script mid-flight. The script runs to
/// its end, and the error says the session was deleted.
#[tokio::test]
async fn a_delete_whose_steps_after_the_script_fail_says_the_session_was_deleted() {
    let Some(h) = cluster_harness().await else {
        return;
    };
    let storage = open(&h).await;
    // The look-again entry refused (it goes beside the script), then the removals.
    for (id, index) in [("looked", h.expiry_key()), ("removed", h.ids_key())] {
        storage
            .append(id, &[ChatMessage::user("one")])
            .await
            .unwrap();
        let refused = with_index_of_another_type(&h, &index, storage.delete(id))
            .await
            .expect_err("the index's node refuses the delete's step");
        let shown = refused.to_string();
        assert!(shown.contains("wrong type"), "{id}: {shown}");
        assert!(
            shown.contains("session itself was deleted"),
            "{id}: {shown}"
        );
        assert!(storage.load(id).await.unwrap().is_empty(), "{id}");
    }
}

/// Found by a review: a write that found its session not stored (a conditional write
/// refused as a conflict, the retry of one that met what its first copy did) takes the
/// session out of the indexes as a delete does, and since the delete's steps after its
/// script began saying that the session was deleted, so did such a write's, though it
/// deleted nothing (here the session never existed). Its error is the step's own.
#[tokio::test]
async fn a_write_that_finds_no_session_and_whose_index_steps_fail_says_nothing_was_deleted() {
    let Some(h) = cluster_harness().await else {
        return;
    };
    let storage = open(&h).await;
    let one = [ChatMessage::user("one")];
    let write = storage.write_if("never", Expect::Generation(7), Change::Append(&one));
    let refused = with_index_of_another_type(&h, &h.expiry_key(), write)
        .await
        .expect_err("the expiry index's node refuses the look-again entry");
    let shown = refused.to_string();
    assert!(shown.contains("wrong type"), "{shown}");
    assert!(!shown.contains("deleted"), "{shown}");
    assert!(storage.load("never").await.unwrap().is_empty());
}
