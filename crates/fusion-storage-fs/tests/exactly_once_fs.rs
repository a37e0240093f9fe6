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
use fusion_core::testkit::faults::{Lossy, cases};
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

fn harness() -> Lossy<Fs> {
    Lossy::new(Fs(tempfile::tempdir().unwrap()))
}

fn retry() -> RetryLayer {
    RetryLayer::new()
        .max_attempts(10)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
}

#[tokio::test]
async fn lost_append_replies_are_retried_exactly_once() {
    cases::lost_append_replies_are_retried_exactly_once(&harness(), &retry()).await;
}

#[tokio::test]
async fn a_lost_append_reply_fails_retryably_and_the_same_batch_again_stores_once() {
    cases::a_lost_append_reply_fails_retryably_and_the_same_batch_again_stores_once(&harness())
        .await;
}

#[tokio::test]
async fn lost_replies_of_conditional_writes_and_creations_are_retried_to_success() {
    cases::lost_replies_of_conditional_writes_and_creations_are_retried_to_success(
        &harness(),
        &retry(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_losing_replies_at_random_store_every_message_once() {
    let lost =
        cases::writers_losing_replies_at_random_store_every_message_once(&harness(), &retry(), 18)
            .await;
    eprintln!("fs: {lost} replies lost and retried");
}
