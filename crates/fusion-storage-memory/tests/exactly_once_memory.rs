//! Exactly once when replies are lost: [`InMemoryStorage`] behind
//! [`LoseReplies`](fusion_core::testkit::faults::LoseReplies), whose writes apply and then
//! fail retryably, runs the scenarios of [`fusion_core::testkit::faults::cases`].
//!
//! `cargo test -p fusion-storage-memory --test exactly_once_memory` runs them.

use std::time::Duration;

use fusion_core::testkit::Clones;
use fusion_core::testkit::faults::Lossy;
use fusion_layers::RetryLayer;
use fusion_storage_memory::InMemoryStorage;

/// Every instance is a clone of one store, as clones share their sessions.
async fn harness() -> Option<Lossy<Clones<InMemoryStorage>>> {
    Some(Lossy::new(Clones(InMemoryStorage::new())))
}

fn retry() -> RetryLayer {
    RetryLayer::new()
        .max_attempts(10)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
}

fusion_core::lost_reply_suite!(harness, retry());
