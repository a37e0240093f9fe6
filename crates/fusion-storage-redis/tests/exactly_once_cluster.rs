//! Exactly once when replies are lost, on a Redis Cluster reached through a
//! [`FaultProxy`]: a write that reaches its node but whose reply is lost fails with a
//! retryable error (it is not sent again behind the caller's back, which would store an
//! append twice or turn a conditional write into a conflict with its own first copy), and
//! the retry layer's check of what a lost reply applied makes every write land once.
//!
//! A cluster's nodes tell clients their own addresses, so a proxy in front of a shared
//! cluster would be left behind after the first `CLUSTER SLOTS`. Each case starts its own
//! throwaway one-node cluster (every slot on one `redis-server --cluster-enabled yes`)
//! that announces the proxy's port instead: every connection of the client goes through
//! the proxy. Needs `redis-server` on `PATH` (skips without it, or fails under
//! `FUSION_REQUIRE_BACKENDS`); the server is killed when the case ends.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use common::{NO_HANG, free_port, redis_server_on_path, wait_until};
use fusion_core::testkit::faults::{FaultProxy, ReplyFault};
use fusion_core::testkit::{StorageHarness, unavailable};
use fusion_core::{Change, ChatMessage, ConversationStorage, Error, Expect};
use fusion_layers::RetryLayer;
use fusion_storage_redis::{RedisOptions, RedisStorage};
use tokio::process::{Child, Command};

/// A one-node cluster behind a proxy; the node dies and its directory goes with it.
struct ProxiedCluster {
    proxy: FaultProxy,
    /// `redis+cluster://` at the proxy's address.
    url: String,
    _node: Child,
    dir: PathBuf,
}

impl Drop for ProxiedCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[async_trait]
impl StorageHarness for ProxiedCluster {
    type Storage = RedisStorage;
    async fn open(&self) -> fusion_core::Result<RedisStorage> {
        // The default connect timeout and retries: what an application gets.
        RedisStorage::connect_with(&self.url, RedisOptions::new()).await
    }
}

impl ReplyFault for ProxiedCluster {
    fn lose_next_reply(&self, session_id: &str) {
        self.proxy.lose_next_reply(session_id);
    }

    fn lose_replies_at_random(&self, session_id: &str, probability: f64, seed: u64) {
        self.proxy
            .lose_replies_at_random(session_id, probability, seed);
    }

    fn replies_lost(&self) -> usize {
        self.proxy.replies_lost()
    }
}

/// Starts the node (announcing the proxy's port), gives it every slot and waits until it
/// reports `cluster_state:ok`.
async fn harness() -> Option<ProxiedCluster> {
    let Some(binary) = redis_server_on_path() else {
        return unavailable("redis_cluster", "install redis-server");
    };
    let (port, bus_port) = (free_port(), free_port());
    let proxy = FaultProxy::start(format!("127.0.0.1:{port}")).await;
    let dir = std::env::temp_dir().join(format!("fusion-exactly-once-cluster-{port}"));
    std::fs::create_dir_all(&dir).expect("creating the node's directory");
    let node = Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        .args(["--cluster-port", &bus_port.to_string()])
        .args(["--cluster-announce-ip", "127.0.0.1"])
        .args(["--cluster-announce-port", &proxy.addr().port().to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting redis-server");
    let direct = format!("redis://127.0.0.1:{port}");
    let cluster = ProxiedCluster {
        url: format!("redis+cluster://{}", proxy.addr()),
        proxy,
        _node: node,
        dir,
    };
    let up = wait_until(NO_HANG, || async {
        let Ok(mut conn) = raw(&direct).await else {
            return false;
        };
        redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query_async::<()>(&mut conn)
            .await
            .is_ok()
    })
    .await;
    assert!(up, "the node on port {port} never took the slots");
    let ok = wait_until(NO_HANG, || async {
        let Ok(mut conn) = raw(&direct).await else {
            return false;
        };
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        info.contains("cluster_state:ok")
    })
    .await;
    assert!(
        ok,
        "the node on port {port} never reported cluster_state:ok"
    );
    Some(cluster)
}

async fn raw(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

fn retry() -> RetryLayer {
    RetryLayer::new()
        .max_attempts(10)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
}

fusion_core::lost_reply_suite!(harness, retry());

fn contents(history: &[ChatMessage]) -> Vec<&str> {
    history.iter().map(|m| m.content.as_str()).collect()
}

/// Without a retry layer: an append without ids and a conditional append whose replies
/// were lost each fail with a retryable error (not `Ok`, not a conflict), and each was
/// applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_is_a_retryable_error_and_the_write_is_applied_once() {
    let Some(h) = harness().await else { return };
    let store = h.open().await.expect("connecting through the proxy");
    const ID: &str = "lost-on-a-cluster";
    store.append(ID, &[ChatMessage::user("a")]).await.unwrap();

    h.lose_next_reply(ID);
    let err = store
        .append(ID, &[ChatMessage::user("b")])
        .await
        .expect_err("the reply was lost");
    assert!(err.is_retryable(), "a lost reply is retryable: {err}");
    assert_eq!(h.replies_lost(), 1);
    let (history, revision) = store.load_revision(ID).await.unwrap();
    assert_eq!(contents(&history), ["a", "b"], "applied once, not twice");

    h.lose_next_reply(ID);
    let expected = Expect::Exactly(revision);
    let err = store
        .write_if(ID, expected, Change::Append(&[ChatMessage::user("c")]))
        .await
        .expect_err("the reply was lost");
    assert!(
        !matches!(err, Error::Conflict { .. }),
        "the write met its own first copy: {err}"
    );
    assert!(err.is_retryable(), "a lost reply is retryable: {err}");
    assert_eq!(h.replies_lost(), 2);
    let history = store.load(ID).await.unwrap();
    assert_eq!(contents(&history), ["a", "b", "c"], "applied once");
}
