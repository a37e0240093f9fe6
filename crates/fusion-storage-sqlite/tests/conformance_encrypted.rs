//! The cross-backend conformance suite on a SQLite database file through the encryption
//! layer: every guarantee of the backend holds for encrypted sessions.
//!
//! `cargo test -p fusion-storage-sqlite conformance_encrypted_sqlite::` runs it.

use async_trait::async_trait;
use fusion_core::Result;
use fusion_core::testkit::{Layered, StorageHarness};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion_storage_sqlite::SqliteStorage;

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

async fn harness() -> Option<Layered<File, EncryptionLayer>> {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    Some(Layered {
        harness: File { _dir: dir, url },
        layer: layer(),
    })
}

fusion_core::conformance_suite!(conformance_encrypted_sqlite, harness);
