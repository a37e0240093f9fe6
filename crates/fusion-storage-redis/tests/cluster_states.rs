//! Server states a Redis Cluster's node meets, on a throwaway one-node cluster of its own
//! (`common::proxied_cluster`, its proxy cutting nothing): a node that refuses writes
//! (`MISCONF`) still serves reads, to a storage connected before and to one connecting
//! meanwhile. Needs `redis-server` on `PATH` (skips without it, or fails under
//! `FUSION_REQUIRE_BACKENDS`).

mod common;

use common::proxied_cluster::{proxied_cluster, raw};
use common::{NO_HANG, unique_prefix, wait_until};
use fusion_core::testkit::said;
use fusion_core::{ChatMessage, ConversationStorage, SessionMeta};
use fusion_storage_redis::{RedisOptions, RedisStorage};
use redis::aio::MultiplexedConnection;

/// Sends `args` as one command on `conn`.
async fn run(conn: &mut MultiplexedConnection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(conn).await
}

/// Waits until `PING` on `conn` is refused with `MISCONF` (`refused`) or answered.
async fn ping_refused(conn: &MultiplexedConnection, refused: bool) -> bool {
    wait_until(NO_HANG, || {
        let mut conn = conn.clone();
        async move {
            let ping = run(&mut conn, &["PING"]).await;
            ping.is_err_and(|err| err.code() == Some("MISCONF")) == refused
        }
    })
    .await
}

/// A node whose snapshot cannot be saved refuses writes, and `PING`, with `MISCONF`
/// (`stop-writes-on-bgsave-error`), but serves reads. The cluster client sends `PING`
/// on every connection it opens to a node: that must not fail the reads of a storage
/// connected before, nor the connect and reads of one connecting meanwhile. Writes are
/// refused retryably, naming the state, and succeed once a save does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refusing_writes_after_a_failed_save_still_serves_reads() {
    let Some(cluster) = proxied_cluster().await else {
        return;
    };
    let options = RedisOptions::new().key_prefix(unique_prefix());
    let before = RedisStorage::connect_with(&cluster.url, options.clone())
        .await
        .unwrap();
    before
        .create_session("kept", &SessionMeta::new(), &said("a"))
        .await
        .unwrap();

    // A save that cannot be renamed into place (a directory where the snapshot goes,
    // `dbfilename`'s default) fails, and the node refuses writes while a save point is
    // set.
    let mut node = raw(&format!("redis://{}", cluster.proxy.addr()))
        .await
        .unwrap();
    let dir: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query_async(&mut node)
        .await
        .unwrap();
    let blocked = std::path::Path::new(&dir[1]).join("dump.rdb");
    std::fs::create_dir_all(&blocked).unwrap();
    for args in [
        ["CONFIG", "SET", "stop-writes-on-bgsave-error", "yes"],
        ["CONFIG", "SET", "save", "3600 1"],
    ] {
        run(&mut node, &args).await.unwrap();
    }
    run(&mut node, &["BGSAVE"]).await.unwrap();
    assert!(
        ping_refused(&node, true).await,
        "the failed save never made the node refuse PING"
    );

    let read = tokio::time::timeout(NO_HANG, before.load("kept")).await;
    assert_eq!(read.expect("no hang").unwrap(), said("a"));
    let connecting = RedisStorage::connect_with(&cluster.url, options.clone());
    let during = tokio::time::timeout(NO_HANG, connecting).await;
    let during = during.expect("no hang").unwrap();
    let read = tokio::time::timeout(NO_HANG, during.load("kept")).await;
    assert_eq!(read.expect("no hang").unwrap(), said("a"));
    let listed = tokio::time::timeout(NO_HANG, during.list_sessions()).await;
    assert_eq!(listed.expect("no hang").unwrap(), ["kept"]);
    let info = tokio::time::timeout(NO_HANG, during.session_info("kept")).await;
    assert_eq!(info.expect("no hang").unwrap().unwrap().message_count, 2);

    let turn = [ChatMessage::user("refused")];
    let refused = tokio::time::timeout(NO_HANG, during.append("kept", &turn)).await;
    let refused = refused.expect("no hang").unwrap_err();
    assert!(refused.is_retryable(), "{refused}");
    let shown = refused.to_string();
    assert!(shown.contains("stop-writes-on-bgsave-error"), "{shown}");

    std::fs::remove_dir(&blocked).unwrap();
    run(&mut node, &["BGSAVE"]).await.unwrap();
    assert!(
        ping_refused(&node, false).await,
        "the node never took writes again"
    );
    during.append("kept", &turn).await.unwrap();
    let mut after = said("a");
    after.extend(turn);
    assert_eq!(before.load("kept").await.unwrap(), after);
}
