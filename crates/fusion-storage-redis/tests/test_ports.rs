//! The ports the crate's tests give the servers they start, from a `LOW-HIGH` range
//! (`FUSION_REDIS_TEST_PORTS`): each held while its server may run, and handed out again
//! once it is dropped.

mod common;

use std::sync::Arc;

use common::{PortRange, TEST_PORTS, env_url};
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
