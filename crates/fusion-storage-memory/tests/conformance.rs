//! The cross-backend conformance suite, run against [`InMemoryStorage`].
//!
//! `cargo test -p fusion-storage-memory conformance_memory::` runs it. Every instance the
//! harness opens is a clone of one store, as clones share their sessions.

use async_trait::async_trait;
use fusion_core::Result;
use fusion_core::testkit::StorageHarness;
use fusion_storage_memory::InMemoryStorage;

struct Harness(InMemoryStorage);

#[async_trait]
impl StorageHarness for Harness {
    type Storage = InMemoryStorage;
    async fn open(&self) -> Result<InMemoryStorage> {
        Ok(self.0.clone())
    }
}

async fn harness() -> Option<Harness> {
    Some(Harness(InMemoryStorage::new()))
}

fusion_core::conformance_suite!(conformance_memory, harness);
