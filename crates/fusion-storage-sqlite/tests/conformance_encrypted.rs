//! The cross-backend conformance suite on a SQLite database file through the encryption
//! layer: every guarantee of the backend holds for encrypted sessions.
//!
//! `cargo test -p fusion-storage-sqlite conformance_encrypted_sqlite::` runs it.

use std::sync::Arc;

use async_trait::async_trait;
use fusion_core::testkit::StorageHarness;
use fusion_core::{ConversationStorage, Intercepted, Result, StorageExt};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion_storage_sqlite::SqliteStorage;

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

/// A fresh database file per case; every `open` is a new pool on that file.
struct File {
    _dir: tempfile::TempDir,
    url: String,
}

#[async_trait]
impl StorageHarness for File {
    type Storage = SqliteStorage;
    async fn open(&self) -> Result<SqliteStorage> {
        SqliteStorage::connect(&self.url).await
    }
}

async fn harness() -> Option<Encrypted<File>> {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    Some(Encrypted(File { _dir: dir, url }, layer()))
}

fusion_core::conformance_suite!(conformance_encrypted_sqlite, harness);
