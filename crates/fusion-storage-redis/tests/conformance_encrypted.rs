//! The cross-backend conformance suite through the encryption layer, on the Redis server
//! at `REDIS_URL` and on the Redis Cluster at `FUSION_REDIS_CLUSTER_URL`: every guarantee
//! of the backend holds for encrypted sessions.
//!
//! `cargo test -p fusion-storage-redis conformance_encrypted_redis::` (or
//! `conformance_encrypted_redis_cluster::`) runs one; without a server each case prints a
//! skip (or fails under `FUSION_REQUIRE_BACKENDS`).

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use fusion_core::testkit::StorageHarness;
use fusion_core::{ConversationStorage, Intercepted, Result, StorageExt};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};

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

async fn harness() -> Option<Encrypted<common::Harness>> {
    Some(Encrypted(common::harness().await?, layer()))
}

async fn cluster_harness() -> Option<Encrypted<common::Harness>> {
    Some(Encrypted(common::cluster_harness().await?, layer()))
}

fusion_core::conformance_suite!(conformance_encrypted_redis, harness);
fusion_core::conformance_suite!(conformance_encrypted_redis_cluster, cluster_harness);
