//! Exactly once when replies are lost: [`InMemoryStorage`] behind
//! [`LoseReplies`](fusion_core::testkit::faults::LoseReplies), whose writes apply and then
//! fail retryably, runs the scenarios of [`fusion_core::testkit::faults::cases`].
//!
//! `cargo test -p fusion-storage-memory --test exactly_once_memory` runs them.

use std::time::Duration;

use async_trait::async_trait;
use fusion_core::Result;
use fusion_core::testkit::StorageHarness;
use fusion_core::testkit::faults::Lossy;
use fusion_layers::RetryLayer;
use fusion_storage_memory::InMemoryStorage;

/// Every instance is a clone of one store, as clones share their sessions.
struct Memory(InMemoryStorage);

#[async_trait]
impl StorageHarness for Memory {
    type Storage = InMemoryStorage;
    async fn open(&self) -> Result<InMemoryStorage> {
        Ok(self.0.clone())
    }
}

async fn harness() -> Option<Lossy<Memory>> {
    Some(Lossy::new(Memory(InMemoryStorage::new())))
}

fn retry() -> RetryLayer {
    RetryLayer::new()
        .max_attempts(10)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
}

fusion_core::lost_reply_suite!(harness, retry());
