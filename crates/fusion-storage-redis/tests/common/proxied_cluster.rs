//! A throwaway one-node Redis Cluster reached through a [`FaultProxy`], for the cases that
//! lose replies on a cluster.
//!
//! A cluster's nodes tell clients their own addresses, so a proxy in front of a shared
//! cluster would be left behind after the first `CLUSTER SLOTS`. Each case starts its own
//! node (every slot on one `redis-server --cluster-enabled yes`) that announces the
//! proxy's port instead: every connection of the client goes through the proxy. Needs
//! `redis-server` on `PATH` (skips without it, or fails under `FUSION_REQUIRE_BACKENDS`);
//! the server is killed when the case ends.

use super::cluster_node::{self, PrivateDir, Reaped};
use super::{NO_HANG, TestPort, redis_server_on_path, test_port, wait_until};
use async_trait::async_trait;
use fusion_core::testkit::faults::{FaultProxy, LosesRepliesThrough, ReplyFault};
use fusion_core::testkit::{StorageHarness, unavailable};
use fusion_storage_redis::{RedisOptions, RedisStorage};

/// A one-node cluster behind a proxy; the node is killed and waited for, then its
/// directory goes, then its ports (fields drop in this order).
pub struct ProxiedCluster {
    pub proxy: FaultProxy,
    /// `redis+cluster://` at the proxy's address.
    pub url: String,
    _node: Reaped,
    _dir: PrivateDir,
    /// The node's port and bus port, reserved while it lives (dropped last).
    _ports: [TestPort; 2],
}

#[async_trait]
impl StorageHarness for ProxiedCluster {
    type Storage = RedisStorage;
    async fn open(&self) -> fusion_core::Result<RedisStorage> {
        // The default connect timeout and retries: what an application gets.
        RedisStorage::connect_with(&self.url, RedisOptions::new()).await
    }
}

impl LosesRepliesThrough for ProxiedCluster {
    fn reply_fault(&self) -> &dyn ReplyFault {
        &self.proxy
    }
}

/// Starts the node (announcing the proxy's port), gives it every slot and waits until it
/// reports `cluster_state:ok`.
pub async fn proxied_cluster() -> Option<ProxiedCluster> {
    let Some(binary) = redis_server_on_path() else {
        return unavailable("redis_cluster", "install redis-server");
    };
    let ports = [test_port(), test_port()];
    let (port, bus_port) = (ports[0].port, ports[1].port);
    let proxy = FaultProxy::start(format!("127.0.0.1:{port}")).await;
    let dir = PrivateDir::new("fusion-exactly-once-cluster");
    let node = cluster_node::command(&binary, port, bus_port, dir.path())
        .args(["--cluster-announce-ip", "127.0.0.1"])
        .args(["--cluster-announce-port", &proxy.addr().port().to_string()])
        .spawn()
        .expect("starting redis-server");
    let node = Reaped::new(node);
    let direct = format!("redis://127.0.0.1:{port}");
    let cluster = ProxiedCluster {
        url: format!("redis+cluster://{}", proxy.addr()),
        proxy,
        _node: node,
        _dir: dir,
        _ports: ports,
    };
    let up = wait_until(NO_HANG, || async {
        let Ok(mut conn) = raw(&direct).await else {
            return false;
        };
        match redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query_async::<()>(&mut conn)
            .await
        {
            Ok(()) => true,
            // An earlier try took them, its reply lost (the node was still starting).
            Err(err) => err.to_string().contains("already busy"),
        }
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

/// A connection to one node, past the proxy.
pub async fn raw(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}
