//! The cross-backend conformance suite on [`FileSystemStorage`] (in a temporary
//! directory) through the encryption layer: every guarantee of the backend holds for
//! encrypted sessions.
//!
//! `cargo test -p fusion-storage-fs conformance_encrypted_fs::` runs it.

use async_trait::async_trait;
use fusion_core::Result;
use fusion_core::testkit::{Layered, StorageHarness};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion_storage_fs::FileSystemStorage;

fn layer() -> EncryptionLayer {
    let keys = EncryptionKeys::new("conformance", &[7; 32]).expect("a valid key id");
    EncryptionLayer::new(keys)
}

struct Fs(tempfile::TempDir);

#[async_trait]
impl StorageHarness for Fs {
    type Storage = FileSystemStorage;
    async fn open(&self) -> Result<FileSystemStorage> {
        FileSystemStorage::connect(self.0.path().join("sessions")).await
    }
}

async fn harness() -> Option<Layered<Fs, EncryptionLayer>> {
    Some(Layered {
        harness: Fs(tempfile::tempdir().unwrap()),
        layer: layer(),
    })
}

fusion_core::conformance_suite!(conformance_encrypted_fs, harness);
