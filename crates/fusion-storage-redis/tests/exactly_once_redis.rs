//! Exactly once when replies are lost, on the Redis server at `REDIS_URL` reached through
//! a [`FaultProxy`]: the proxy lets a script call naming the session through, waits for
//! the server's answer, then drops it and closes the connection. Runs the scenarios of
//! [`fusion_core::testkit::faults::cases`], with the retry layer outside and inside the
//! encryption layer too.
//!
//! Not on a Redis Cluster: its nodes tell clients their own addresses, so the client
//! would leave the proxy behind after the first redirection.
//!
//! `cargo test -p fusion-storage-redis --test exactly_once_redis` runs them; without
//! `REDIS_URL` each prints a skip (or fails under `FUSION_REQUIRE_BACKENDS`).

mod common;

use std::time::Duration;

use async_trait::async_trait;
use fusion_core::testkit::StorageHarness;
use fusion_core::testkit::faults::{FaultProxy, LosesRepliesThrough, ReplyFault, cases};
use fusion_layers::RetryLayer;
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion_storage_redis::RedisStorage;

/// A private key prefix on the server (cleaned up by `common::Harness`), every instance
/// connected through one proxy.
struct Proxied {
    harness: common::Harness,
    proxy: FaultProxy,
    /// `REDIS_URL` with the proxy's address.
    url: String,
}

#[async_trait]
impl StorageHarness for Proxied {
    type Storage = RedisStorage;
    async fn open(&self) -> fusion_core::Result<RedisStorage> {
        RedisStorage::connect_with(&self.url, self.harness.options()).await
    }
}

impl LosesRepliesThrough for Proxied {
    fn reply_fault(&self) -> &dyn ReplyFault {
        &self.proxy
    }
}

async fn harness() -> Option<Proxied> {
    let harness = common::harness().await?;
    let (proxy, url) = FaultProxy::start_for_url(&harness.url, 6379).await;
    Some(Proxied {
        harness,
        proxy,
        url,
    })
}

fn retry() -> RetryLayer {
    RetryLayer::new()
        .max_attempts(10)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
}

fusion_core::lost_reply_suite!(harness, retry());

#[tokio::test]
async fn retry_outside_or_inside_encryption_stores_one_copy() {
    let Some(h) = harness().await else { return };
    let keys = EncryptionKeys::new("exactly-once", &[3; 32]).expect("a valid key id");
    cases::retry_outside_or_inside_encryption_stores_one_copy(
        &h,
        &retry(),
        &EncryptionLayer::new(keys),
    )
    .await;
}
