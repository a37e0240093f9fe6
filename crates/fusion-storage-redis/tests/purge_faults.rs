//! A cluster's purge that fails part way, on a throwaway one-node cluster behind a
//! [`FaultProxy`](fusion_core::testkit::faults::FaultProxy) (`common::proxied_cluster`)
//! that loses the reply to a chosen request: no expiry entry is lost, and none is swept
//! and counted twice.

mod common;

use std::time::{Duration, SystemTime};

use common::proxied_cluster::{ProxiedCluster, proxied_cluster};
use fusion_core::testkit::said;
use fusion_core::{ConversationStorage, Expiry, SessionMeta};
use fusion_storage_redis::{RedisOptions, RedisStorage};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

const PREFIX: &str = "purge-faults";
const EXPIRY: &str = "purge-faults:expiry";

async fn open(h: &ProxiedCluster) -> RedisStorage {
    let options = RedisOptions::new().key_prefix(PREFIX);
    RedisStorage::connect_with(&h.url, options).await.unwrap()
}

/// A plain connection to the node (through the proxy, which cuts nothing it is not told
/// to), for reading and setting the expiry index by hand.
async fn raw(h: &ProxiedCluster) -> MultiplexedConnection {
    let url = format!("redis://{}", h.proxy.addr());
    common::proxied_cluster::raw(&url).await.unwrap()
}

/// Found by a review: `forget` took the claimed entries out of the expiry index before it
/// read their sessions again, so when the second look failed, a live session whose entry
/// was due (written again after it expired, or a node's clock ahead) lost its entry, and
/// would never be purged once it expired. The entries go last now, and only once the
/// second look has put back those of live sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_whose_second_look_fails_keeps_a_live_sessions_expiry_entry() {
    let Some(h) = proxied_cluster().await else {
        return;
    };
    let store = open(&h).await;
    let mut raw = raw(&h).await;
    let meta = SessionMeta::new().expiry(Expiry::At(SystemTime::now() + Duration::from_secs(3600)));
    store
        .create_session("live", &meta, &said("a"))
        .await
        .unwrap();
    let _: () = raw.zadd(EXPIRY, "live", 1).await.unwrap();

    // The second look reads each session with the `INFO` script's `lenient` mode, which
    // nothing else in a purge uses: every copy of it loses its reply.
    h.proxy.cut_randomly_containing("lenient", 1.0, 3);
    let failed = store.purge_expired(10).await;
    h.proxy.stop_cutting();
    let err = failed.expect_err("the second look's replies were lost");
    assert!(err.is_retryable(), "{err}");
    let score: Option<f64> = raw.zscore(EXPIRY, "live").await.unwrap();
    assert!(score.is_some(), "the live session lost its expiry entry");
    assert!(store.session_info("live").await.unwrap().is_some());
}
