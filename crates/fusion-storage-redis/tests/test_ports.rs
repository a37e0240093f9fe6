//! The ports the crate's tests give the servers they start, from a `LOW-HIGH` range
//! (`FUSION_REDIS_TEST_PORTS`): each held while its server may run, and handed out again
//! once it is dropped.

mod common;

use std::sync::Arc;

use common::two_nodes::Node;
use common::{NO_HANG, PortRange, TEST_PORTS, env_url, redis_server_on_path, wait_until};
use fusion_core::testkit::port::reserve_port;

/// Found by a review: a range's ports were handed out once each, never given back, so a
/// range sized for the servers a test binary runs at once (a machine that leaves the tests
/// only a few ports) ran out after that many servers in all, and every later test panicked
/// with "every port of it is taken". A port dropped is handed out again; a port held is
/// not handed out twice.
#[test]
fn a_port_of_the_range_is_handed_out_again_once_dropped() {
    // One port: the last of the configured range, or a reserved one (kept while the
    // test runs, so no other reservation takes it; nothing listens on it).
    let reserved = env_url(TEST_PORTS).is_none().then(reserve_port);
    let port = match &reserved {
        Some(reserved) => reserved.port,
        None => {
            let range = env_url(TEST_PORTS).unwrap();
            let (_, high) = range.split_once('-').expect("LOW-HIGH");
            high.trim().parse().expect("a port")
        }
    };
    let range = Arc::new(PortRange::new(port, port));
    for round in 0..3 {
        let held = PortRange::take(&range)
            .unwrap_or_else(|| panic!("round {round}: port {port} was not handed out again"));
        assert_eq!(held.port, port);
        assert!(
            PortRange::take(&range).is_none(),
            "port {port} was handed out while held"
        );
        drop(held);
    }
}

/// Found by a second review: a dropped node was killed (tokio's `kill_on_drop`) but not
/// waited for, so its ports went back to the range (or their reservation ended) while
/// it was still exiting, and its directory was named after its port
/// (`fusion-cluster-growth-PORT`), shared with the next node given that port, of this
/// run or another. Once a node has dropped, its process is gone, its ports are free and
/// its directory removed; two nodes never share a directory.
#[tokio::test]
async fn a_dropped_node_has_exited_and_left_its_ports_and_directory_free() {
    let Some(binary) = redis_server_on_path() else {
        fusion_core::testkit::unavailable::<()>("redis_cluster", "install redis-server");
        return;
    };
    for round in 0..3 {
        let (node, other) = (Node::start(&binary), Node::start(&binary));
        assert_ne!(
            node.dir.path(),
            other.dir.path(),
            "two nodes share a directory"
        );
        let up = wait_until(NO_HANG, || async { node.conn().await.is_ok() }).await;
        assert!(up, "the node on port {} never answered", node.port);
        let pid = node.process.id().expect("the node runs");
        let (port, bus_port) = (node.port, node.bus_port);
        let dir = node.dir.path().to_path_buf();
        drop(node);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "round {round}: the dropped node (pid {pid}) has not exited yet"
        );
        for port in [port, bus_port] {
            assert!(
                std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
                "round {round}: port {port} of the dropped node is still taken"
            );
        }
        assert!(!dir.exists(), "round {round}: {} is left", dir.display());
    }
}
