//! A Redis Cluster whose primaries take values of different lengths (`proto-max-bulk-len`):
//! a message over the smallest is refused before it is sent, as on one server
//! (`server_states.rs`), not sent to a node that drops the connection, which reads as a
//! lost connection (retryable) and had a retry layer send the message again and again.
//! Also when the primary with the smaller limit started serving slots after connect.
//!
//! Starts a throwaway two-node cluster of its own (`common::two_nodes`), the new node's
//! limit lowered to 1 MB; needs `redis-server` on `PATH` (skips without it, or fails
//! under `FUSION_REQUIRE_BACKENDS`). The nodes are killed when the test ends.

mod common;

use common::two_nodes::TwoNodes;
use common::{NO_HANG, redis_server_on_path};
use fusion_core::testkit::unavailable;
use fusion_core::{ChatMessage, ConversationStorage, Error};
use fusion_storage_redis::RedisStorage;

/// The new node's `proto-max-bulk-len`, in bytes (1 MB, the least a server takes).
const LOWERED: usize = 1024 * 1024;

/// A [`TwoNodes`] cluster whose new node takes values of at most [`LOWERED`] bytes, and
/// the URL naming its first node; `None` without `redis-server`.
async fn two_nodes() -> Option<(TwoNodes, String)> {
    let Some(binary) = redis_server_on_path() else {
        return unavailable("redis_cluster", "install redis-server");
    };
    let lowered = LOWERED.to_string();
    let cluster = TwoNodes::start_with(&binary, &["--proto-max-bulk-len", &lowered]).await;
    let url = format!("redis+cluster://127.0.0.1:{}", cluster.old.port);
    Some((cluster, url))
}

/// Writes `id` with one small message, then moves its slot to the new node.
async fn on_the_new_node(cluster: &TwoNodes, storage: &RedisStorage, id: &str) {
    storage
        .append(id, &[ChatMessage::user("small")])
        .await
        .unwrap();
    let slot = cluster.migrate_keys(id).await;
    cluster.hand_over(&slot).await;
}

/// Appends one message twice the lowered limit to `id`.
async fn append_huge(storage: &RedisStorage, id: &str) -> Error {
    let huge = ChatMessage::user("h".repeat(2 * LOWERED));
    let sent = tokio::time::timeout(NO_HANG, storage.append(id, &[huge])).await;
    sent.expect("no hang").unwrap_err()
}

/// `err` is the refusal of message 0 of `id` for its size, before it was sent: not
/// retryable, naming the limit.
fn assert_refused_for_size(err: &Error, id: &str) {
    assert!(
        matches!(err, Error::InvalidMessage { session_id, index: 0, .. } if session_id == id),
        "{err:?}"
    );
    assert!(!err.is_retryable(), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("proto-max-bulk-len"), "{shown}");
    assert!(shown.contains(&LOWERED.to_string()), "{shown}");
}

async fn contents(storage: &RedisStorage, id: &str) -> Vec<String> {
    let history = storage.load(id).await.unwrap();
    history.into_iter().map(|m| m.content).collect()
}

/// The limit is read from every primary at connect and the smallest kept: a message over
/// it is refused for a session on that node, and for one on the other node too (its slot
/// may move to the smaller one), every time, nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_smallest_limit_of_the_primaries_is_refused_before_it_is_sent() {
    let Some((cluster, url)) = two_nodes().await else {
        return;
    };
    let setup = RedisStorage::connect(&url).await.unwrap();
    on_the_new_node(&cluster, &setup, "lowered").await;

    let storage = RedisStorage::connect(&url).await.unwrap();
    for id in ["lowered", "lowered", "elsewhere"] {
        assert_refused_for_size(&append_huge(&storage, id).await, id);
    }
    assert_eq!(contents(&storage, "lowered").await, ["small"]);
    assert!(contents(&storage, "elsewhere").await.is_empty());
    // Messages under the limit still go to either node.
    for id in ["lowered", "elsewhere"] {
        let fits = ChatMessage::user("f".repeat(LOWERED / 2));
        storage.append(id, &[fits]).await.unwrap();
    }
}

/// A primary that starts serving slots after connect is not known at connect: the first
/// message over its limit is sent, and the node drops the connection. That write reads
/// the limits again, so its retry is refused before it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_with_a_smaller_limit_serving_slots_since_connect_is_read_after_a_drop() {
    let Some((cluster, url)) = two_nodes().await else {
        return;
    };
    let storage = RedisStorage::connect(&url).await.unwrap();
    on_the_new_node(&cluster, &storage, "lowered").await;

    let sent = append_huge(&storage, "lowered").await;
    assert!(
        !matches!(sent, Error::InvalidMessage { .. }),
        "the limit was known before the message was sent: {sent}"
    );
    for _ in 0..2 {
        assert_refused_for_size(&append_huge(&storage, "lowered").await, "lowered");
    }
    assert_eq!(contents(&storage, "lowered").await, ["small"]);
}

/// A primary that refuses `CONFIG` (here not allowed to the user, as managed services
/// often do) gives no limit of its own, and the others' still hold: its refusal is its
/// reply in the read of every primary, not a failure of the whole read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_refusing_config_leaves_the_limits_of_the_others() {
    let Some((cluster, url)) = two_nodes().await else {
        return;
    };
    let setup = RedisStorage::connect(&url).await.unwrap();
    on_the_new_node(&cluster, &setup, "lowered").await;
    let mut old = cluster.old.conn().await.unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "-config"])
        .query_async(&mut old)
        .await
        .unwrap();
    let refused = redis::cmd("CONFIG")
        .arg(&["GET", "maxmemory"])
        .query_async::<redis::Value>(&mut old)
        .await;
    assert!(refused.is_err(), "{refused:?}");

    let storage = RedisStorage::connect(&url).await.unwrap();
    for id in ["lowered", "elsewhere"] {
        assert_refused_for_size(&append_huge(&storage, id).await, id);
    }
}
