//! The cross-backend conformance suite on [`InMemoryStorage`] through the encryption
//! layer: every guarantee of the backend holds for encrypted sessions.
//!
//! `cargo test -p fusion-storage-memory conformance_encrypted_memory::` runs it.

use std::sync::Arc;

use async_trait::async_trait;
use fusion_core::testkit::StorageHarness;
use fusion_core::{ConversationStorage, Intercepted, Result, StorageExt};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion_storage_memory::InMemoryStorage;

/// The storage `H` opens, seen through one [`EncryptionLayer`] (the same key for every
/// instance, as processes sharing a store share its key).
struct Encrypted<H>(H, EncryptionLayer);

#[async_trait]
impl<H: StorageHarness> StorageHarness for Encrypted<H> {
    type Storage = Intercepted<Arc<dyn ConversationStorage>>;
    async fn open(&self) -> Result<Self::Storage> {
        let inner = self.0.open().await?;
        Ok(Intercepted(Arc::new(inner).layer(self.1.clone())))
    }
}

fn layer() -> EncryptionLayer {
    let keys = EncryptionKeys::new("conformance", &[7; 32]).expect("a valid key id");
    EncryptionLayer::new(keys)
}

/// Every instance is a clone of one store, as clones share their sessions.
struct Memory(InMemoryStorage);

#[async_trait]
impl StorageHarness for Memory {
    type Storage = InMemoryStorage;
    async fn open(&self) -> Result<InMemoryStorage> {
        Ok(self.0.clone())
    }
}

async fn harness() -> Option<Encrypted<Memory>> {
    Some(Encrypted(Memory(InMemoryStorage::new()), layer()))
}

fusion_core::conformance_suite!(conformance_encrypted_memory, harness);
