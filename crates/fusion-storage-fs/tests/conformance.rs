//! The cross-backend conformance suite, run against [`FileSystemStorage`] in a temporary
//! directory, once per [`SyncPolicy`] and once with every call on the blocking pool.
//!
//! `cargo test -p fusion-storage-fs conformance_fs::` runs it with the default options,
//! `conformance_fs_sync_every_write::` with an fsync on every append (so no append is made
//! on the task's thread), `conformance_fs_blocking::` with
//! [`FileSystemOptions::inline_calls`] off (no load either).

use async_trait::async_trait;
use fusion_core::Result;
use fusion_core::testkit::StorageHarness;
use fusion_storage_fs::{FileSystemOptions, FileSystemStorage, SyncPolicy};

struct Harness {
    dir: tempfile::TempDir,
    options: FileSystemOptions,
}

#[async_trait]
impl StorageHarness for Harness {
    type Storage = FileSystemStorage;
    async fn open(&self) -> Result<FileSystemStorage> {
        FileSystemStorage::connect_with(self.dir.path().join("sessions"), self.options.clone())
            .await
    }
}

async fn harness() -> Option<Harness> {
    Some(Harness {
        dir: tempfile::tempdir().unwrap(),
        options: FileSystemOptions::new(),
    })
}

async fn harness_sync_every_write() -> Option<Harness> {
    Some(Harness {
        dir: tempfile::tempdir().unwrap(),
        options: FileSystemOptions::new().sync_policy(SyncPolicy::EveryWrite),
    })
}

async fn harness_blocking() -> Option<Harness> {
    Some(Harness {
        dir: tempfile::tempdir().unwrap(),
        options: FileSystemOptions::new().inline_calls(false),
    })
}

fusion_core::conformance_suite!(conformance_fs, harness);
fusion_core::conformance_suite!(conformance_fs_sync_every_write, harness_sync_every_write);
fusion_core::conformance_suite!(conformance_fs_blocking, harness_blocking);
