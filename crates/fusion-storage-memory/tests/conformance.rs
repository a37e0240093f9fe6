//! The cross-backend conformance suite, run against [`InMemoryStorage`].
//!
//! `cargo test -p fusion-storage-memory conformance_memory::` runs it. Every instance the
//! harness opens is a clone of one store, as clones share their sessions.

use fusion_core::testkit::Clones;
use fusion_storage_memory::InMemoryStorage;

async fn harness() -> Option<Clones<InMemoryStorage>> {
    Some(Clones(InMemoryStorage::new()))
}

fusion_core::conformance_suite!(conformance_memory, harness);
