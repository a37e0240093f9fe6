//! Every backend a test of the pages' writes runs on: memory, the file system and SQLite
//! always; Redis (`REDIS_URL`) and PostgreSQL (`FUSION_POSTGRES_URL`) when their servers
//! answer, else a skip said on stderr (a failure under `FUSION_REQUIRE_BACKENDS`), each
//! run in a key prefix or schema of its own, removed afterwards, also when it fails.

use std::sync::Arc;

use fusion::storage::{ConversationStorage, InMemoryStorage, StorageType};
use fusion_core::testkit::{clean_up_from_drop, delete_every_session, unavailable, unique_name};
use fusion_storage_postgres::testing as postgres_testing;

/// Runs `check` on a fresh, empty storage of each backend in turn.
pub async fn each_backend(check: impl AsyncFn(Arc<dyn ConversationStorage>)) {
    check(Arc::new(InMemoryStorage::new())).await;
    let dir = tempfile::tempdir().unwrap();
    check(open(&dir.path().join("fs").display().to_string()).await).await;
    check(open(&format!("sqlite://{}", dir.path().join("ui.db").display())).await).await;
    if let Some(redis) = RedisPrefix::new() {
        check(open(&redis.url()).await).await;
    }
    // Its schema is dropped when the harness is, at the end of this block.
    if let Some(schema) = postgres_testing::harness().await {
        check(open(&schema.storage_url()).await).await;
    }
}

/// The storage at `url`, as `fusion ui` opens one.
async fn open(url: &str) -> Arc<dyn ConversationStorage> {
    let storage: StorageType = url.parse().unwrap();
    storage
        .open()
        .await
        .unwrap_or_else(|err| panic!("{url}: {err}"))
}

/// A Redis key prefix of one test's own on the server at `REDIS_URL`; what the test stored
/// under it is deleted when this is dropped.
struct RedisPrefix {
    server: String,
    prefix: String,
}

impl RedisPrefix {
    /// A prefix no other run or test uses, or `None` (a skip) without `REDIS_URL`.
    fn new() -> Option<Self> {
        let Some(server) = std::env::var("REDIS_URL")
            .ok()
            .filter(|url| !url.trim().is_empty())
        else {
            return unavailable("redis", "set REDIS_URL=redis://127.0.0.1:6379");
        };
        Some(Self {
            server: server.trim_end_matches('/').to_string(),
            prefix: unique_name("fusion-ui-test"),
        })
    }

    /// The server's URL with this prefix.
    fn url(&self) -> String {
        format!("{}?key_prefix={}", self.server, self.prefix)
    }
}

impl Drop for RedisPrefix {
    /// Deletes every session stored under the prefix, even when the test failed.
    fn drop(&mut self) {
        let url = self.url();
        clean_up_from_drop(move || async move {
            let storage = url.parse::<StorageType>()?.open().await?;
            delete_every_session(&*storage).await
        });
    }
}
