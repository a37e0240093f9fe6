//! The cross-backend conformance suite through the encryption layer, on the Redis server
//! at `REDIS_URL` and on the Redis Cluster at `FUSION_REDIS_CLUSTER_URL`: every guarantee
//! of the backend holds for encrypted sessions.
//!
//! `cargo test -p fusion-storage-redis conformance_encrypted_redis::` (or
//! `conformance_encrypted_redis_cluster::`) runs one; without a server each case prints a
//! skip (or fails under `FUSION_REQUIRE_BACKENDS`).

mod common;

use fusion_core::testkit::Layered;
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};

fn layer() -> EncryptionLayer {
    let keys = EncryptionKeys::new("conformance", &[7; 32]).expect("a valid key id");
    EncryptionLayer::new(keys)
}

async fn harness() -> Option<Layered<common::Harness, EncryptionLayer>> {
    Some(Layered {
        harness: common::harness().await?,
        layer: layer(),
    })
}

async fn cluster_harness() -> Option<Layered<common::Harness, EncryptionLayer>> {
    Some(Layered {
        harness: common::cluster_harness().await?,
        layer: layer(),
    })
}

fusion_core::conformance_suite!(conformance_encrypted_redis, harness);
fusion_core::conformance_suite!(conformance_encrypted_redis_cluster, cluster_harness);
