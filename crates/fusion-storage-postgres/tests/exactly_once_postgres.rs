//! Exactly once when replies are lost, on the PostgreSQL server at `FUSION_POSTGRES_URL`
//! (a private schema per test, see `support`) reached through a [`FaultProxy`]: the proxy
//! lets a statement naming the session through (the id travels in its `Bind` message),
//! waits for the server's answer, then drops it and closes the connection. Runs the
//! scenarios of [`fusion_core::testkit::faults::cases`], with the retry layer outside and
//! inside the encryption layer too.
//!
//! An append is one statement, so its answer comes once it committed. A conditional
//! write is a transaction whose first statement names the session: cutting there rolls
//! it back, so one more case loses the answer to its `COMMIT` instead.
//!
//! `cargo test -p fusion-storage-postgres --test exactly_once_postgres` runs them; without a
//! server each prints a skip (or fails under `FUSION_REQUIRE_BACKENDS`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fusion_core::testkit::StorageHarness;
use fusion_core::testkit::exactly_once::with_ids;
use fusion_core::testkit::faults::{FaultProxy, LosesRepliesThrough, ReplyFault, cases};
use fusion_core::{Change, Expect, StorageExt};
use fusion_layers::RetryLayer;
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion_storage_postgres::{PostgresOptions, PostgresStorage};

/// A private schema on the server (dropped by `support::Harness`), every instance
/// connected through one proxy.
struct Proxied {
    harness: support::Harness,
    proxy: FaultProxy,
    /// The server's URL with the proxy's address, without TLS: the proxy must see the
    /// session id go by.
    url: String,
}

#[async_trait]
impl StorageHarness for Proxied {
    type Storage = PostgresStorage;
    async fn open(&self) -> fusion_core::Result<PostgresStorage> {
        let options = PostgresOptions::new(&self.url)
            .schema(&self.harness.schema)
            .max_connections(4);
        PostgresStorage::connect_with(options).await
    }
}

impl LosesRepliesThrough for Proxied {
    fn reply_fault(&self) -> &dyn ReplyFault {
        &self.proxy
    }
}

async fn harness() -> Option<Proxied> {
    let harness = support::harness().await?;
    let (proxy, url) = FaultProxy::start_for_url(&harness.url, 5432).await;
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}sslmode=disable");
    Some(Proxied {
        harness,
        proxy,
        url,
    })
}

/// More attempts than the other backends' suites give: a retry whose first attempt was
/// stored takes the locked path, four statements that name the session (the refused
/// append, the lock, the read of the last ids, the guarded write), and the random case
/// loses each one's reply with probability 0.2. An attempt then succeeds with 0.8^4 ≈
/// 0.41, and a message exhausts 20 with about 0.59^19 ≈ 4e-5: less than the 0.36^9 ≈
/// 1e-4 of the two-statement retry path this suite had with 10.
fn retry() -> RetryLayer {
    RetryLayer::new()
        .max_attempts(20)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
}

fusion_core::lost_reply_suite!(harness, retry());

#[tokio::test]
async fn a_conditional_append_whose_commit_answer_was_lost_succeeds_once() {
    let Some(h) = harness().await else { return };
    let store = Arc::new(h.open().await.unwrap()).layer(retry());
    let opening = with_ids("open", 2);
    store.append("committed", &opening).await.unwrap();
    let (_, revision) = store.load_revision("committed").await.unwrap();
    let more = with_ids("more", 2);
    h.proxy.cut_after_reply_to(b"COMMIT");
    let generation = store
        .write_if(
            "committed",
            Expect::Exactly(revision),
            Change::Append(&more),
        )
        .await
        .expect("the retry finds its committed append");
    assert_eq!(h.proxy.cuts(), 1, "the answer to COMMIT was lost");
    assert_eq!(generation, revision.generation);
    let history = store.load("committed").await.unwrap();
    assert_eq!(history[..2], opening);
    assert_eq!(history[2..], more, "appended once");
}

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
