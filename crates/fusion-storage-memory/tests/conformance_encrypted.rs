//! The cross-backend conformance suite on [`InMemoryStorage`] through the encryption
//! layer: every guarantee of the backend holds for encrypted sessions.
//!
//! `cargo test -p fusion-storage-memory conformance_encrypted_memory::` runs it.

use fusion_core::testkit::{Clones, Layered};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion_storage_memory::InMemoryStorage;

fn layer() -> EncryptionLayer {
    let keys = EncryptionKeys::new("conformance", &[7; 32]).expect("a valid key id");
    EncryptionLayer::new(keys)
}

/// Every instance is a clone of one store, as clones share their sessions.
async fn harness() -> Option<Layered<Clones<InMemoryStorage>, EncryptionLayer>> {
    Some(Layered {
        harness: Clones(InMemoryStorage::new()),
        layer: layer(),
    })
}

fusion_core::conformance_suite!(conformance_encrypted_memory, harness);
