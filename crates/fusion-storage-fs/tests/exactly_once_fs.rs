//! Exactly once when replies are lost: [`FileSystemStorage`] (in a temporary directory)
//! behind [`LoseReplies`](fusion_core::testkit::faults::LoseReplies), whose writes apply
//! and then fail retryably, runs the scenarios of [`fusion_core::testkit::faults::cases`].
//! Every instance opens the same directory, as separate processes would.
//!
//! `cargo test -p fusion-storage-fs --test exactly_once_fs` runs them.

use std::time::Duration;

use async_trait::async_trait;
use fusion_core::Result;
use fusion_core::testkit::StorageHarness;
use fusion_core::testkit::faults::Lossy;
use fusion_layers::RetryLayer;
use fusion_storage_fs::FileSystemStorage;

struct Fs(tempfile::TempDir);

#[async_trait]
impl StorageHarness for Fs {
    type Storage = FileSystemStorage;
    async fn open(&self) -> Result<FileSystemStorage> {
        FileSystemStorage::connect(self.0.path().join("sessions")).await
    }
}

async fn harness() -> Option<Lossy<Fs>> {
    Some(Lossy::new(Fs(tempfile::tempdir().unwrap())))
}

fn retry() -> RetryLayer {
    RetryLayer::new()
        .max_attempts(10)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
}

fusion_core::lost_reply_suite!(harness, retry());
