//! Exactly once when replies are lost: [`SqliteStorage`] (a database file) behind
//! [`LoseReplies`](fusion_core::testkit::faults::LoseReplies), whose writes apply and then
//! fail retryably, runs the scenarios of [`fusion_core::testkit::faults::cases`]. Every
//! instance is a new pool on the same file, as separate processes would open it.
//!
//! `cargo test -p fusion-storage-sqlite --test exactly_once_sqlite` runs them.

use std::time::Duration;

use async_trait::async_trait;
use fusion_core::Result;
use fusion_core::testkit::StorageHarness;
use fusion_core::testkit::faults::Lossy;
use fusion_layers::RetryLayer;
use fusion_storage_sqlite::SqliteStorage;

struct Sqlite {
    _dir: tempfile::TempDir,
    url: String,
}

#[async_trait]
impl StorageHarness for Sqlite {
    type Storage = SqliteStorage;
    async fn open(&self) -> Result<SqliteStorage> {
        SqliteStorage::connect(&self.url).await
    }
}

async fn harness() -> Option<Lossy<Sqlite>> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    Some(Lossy::new(Sqlite { _dir: dir, url }))
}

fn retry() -> RetryLayer {
    RetryLayer::new()
        .max_attempts(10)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
}

fusion_core::lost_reply_suite!(harness, retry());
