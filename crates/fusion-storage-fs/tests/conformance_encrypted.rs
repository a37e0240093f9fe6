//! The cross-backend conformance suite on [`FileSystemStorage`] (in a temporary
//! directory) through the encryption layer: every guarantee of the backend holds for
//! encrypted sessions.
//!
//! `cargo test -p fusion-storage-fs conformance_encrypted_fs::` runs it.

use std::sync::Arc;

use async_trait::async_trait;
use fusion_core::testkit::StorageHarness;
use fusion_core::{ConversationStorage, Intercepted, Result, StorageExt};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion_storage_fs::FileSystemStorage;

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

struct Fs(tempfile::TempDir);

#[async_trait]
impl StorageHarness for Fs {
    type Storage = FileSystemStorage;
    async fn open(&self) -> Result<FileSystemStorage> {
        FileSystemStorage::connect(self.0.path().join("sessions")).await
    }
}

async fn harness() -> Option<Encrypted<Fs>> {
    Some(Encrypted(Fs(tempfile::tempdir().unwrap()), layer()))
}

fusion_core::conformance_suite!(conformance_encrypted_fs, harness);
