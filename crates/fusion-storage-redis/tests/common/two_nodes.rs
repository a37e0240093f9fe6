//! Throwaway cluster nodes a test starts itself (`redis-server --cluster-enabled yes` on
//! ports of their own): [`Node`], and [`TwoNodes`], a cluster that grows onto its second node.

use std::path::Path;

use super::cluster_node::{self, PrivateDir, Reaped};
use super::{NO_HANG, TestPort, test_port, wait_until};
use redis::aio::MultiplexedConnection;

/// One node of the throwaway cluster; when dropped, killed and waited for, then its
/// directory removed, then its ports given back (fields drop in this order).
pub struct Node {
    pub port: u16,
    pub bus_port: u16,
    pub process: Reaped,
    pub dir: PrivateDir,
    /// Its port and bus port, reserved while it lives (dropped last).
    _ports: [TestPort; 2],
}

impl Node {
    pub fn start(binary: &Path) -> Node {
        Self::start_with(binary, &[])
    }

    /// A node started with `config` (command-line arguments of `redis-server`) after its
    /// own.
    pub fn start_with(binary: &Path, config: &[&str]) -> Node {
        let ports = [test_port(), test_port()];
        let (port, bus_port) = (ports[0].port, ports[1].port);
        let dir = PrivateDir::new("fusion-cluster-growth");
        let process = cluster_node::command(binary, port, bus_port, dir.path())
            .args(config)
            .spawn()
            .expect("starting redis-server");
        let process = Reaped::new(process);
        Node {
            port,
            bus_port,
            process,
            dir,
            _ports: ports,
        }
    }

    pub async fn conn(&self) -> redis::RedisResult<MultiplexedConnection> {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port))?
            .get_multiplexed_async_connection()
            .await
    }

    /// Runs `CLUSTER args...` on this node.
    pub async fn cluster<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        redis::cmd("CLUSTER")
            .arg(args)
            .query_async(&mut self.conn().await?)
            .await
    }
}

/// Two nodes of a cluster of their own: the first serves every slot, the second joined
/// with none. With their ids.
pub struct TwoNodes {
    pub old: Node,
    pub new: Node,
    pub old_id: String,
    pub new_id: String,
}

impl TwoNodes {
    pub async fn start(binary: &Path) -> TwoNodes {
        Self::start_with(binary, &[]).await
    }

    /// [`start`](Self::start), the new node started with `new_config` (command-line
    /// arguments of `redis-server`).
    pub async fn start_with(binary: &Path, new_config: &[&str]) -> TwoNodes {
        let (old, new) = (Node::start(binary), Node::start_with(binary, new_config));
        let slots_taken = wait_until(NO_HANG, || async {
            old.cluster::<()>(&["ADDSLOTSRANGE", "0", "16383"])
                .await
                .is_ok()
        })
        .await;
        assert!(slots_taken, "the first node never took the slots");
        let met = wait_until(NO_HANG, || async {
            let (port, bus_port) = (old.port.to_string(), old.bus_port.to_string());
            new.cluster::<()>(&["MEET", "127.0.0.1", &port, &bus_port])
                .await
                .is_ok()
        })
        .await;
        assert!(met, "the second node never met the first");
        let (old_id, new_id): (String, String) = (
            old.cluster(&["MYID"]).await.unwrap(),
            new.cluster(&["MYID"]).await.unwrap(),
        );
        let joined = wait_until(NO_HANG, || async {
            let nodes: String = old.cluster(&["NODES"]).await.unwrap_or_default();
            let info: String = new.cluster(&["INFO"]).await.unwrap_or_default();
            nodes.contains(&new_id) && info.contains("cluster_state:ok")
        })
        .await;
        assert!(joined, "the two nodes never formed one cluster");
        TwoNodes {
            old,
            new,
            old_id,
            new_id,
        }
    }

    /// Moves the keys of session `id` to the new node the way `redis-cli --cluster
    /// reshard` does, keys first; returns their slot, which the old node then answers
    /// `ASK` for.
    pub async fn migrate_keys(&self, id: &str) -> String {
        let mut conn = self.old.conn().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("*{id}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!keys.is_empty(), "the session's keys are on the old node");
        let slot: u16 = self.old.cluster(&["KEYSLOT", &keys[0]]).await.unwrap();
        let slot = slot.to_string();
        let _: () = self
            .new
            .cluster(&["SETSLOT", &slot, "IMPORTING", &self.old_id])
            .await
            .unwrap();
        let _: () = self
            .old
            .cluster(&["SETSLOT", &slot, "MIGRATING", &self.new_id])
            .await
            .unwrap();
        let _: () = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(self.new.port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
        slot
    }

    /// Gives `slot` to the new node, on both: the old one answers `MOVED` for it since.
    pub async fn hand_over(&self, slot: &str) {
        for node in [&self.old, &self.new] {
            let _: () = node
                .cluster(&["SETSLOT", slot, "NODE", &self.new_id])
                .await
                .unwrap();
        }
    }
}
