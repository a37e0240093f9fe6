//! The cross-backend conformance suite through the encryption layer, each case in a
//! schema of its own on the server at `FUSION_POSTGRES_URL` (see `support`): every
//! guarantee of the backend holds for encrypted sessions.
//!
//! `cargo test -p fusion-storage-postgres conformance_encrypted_postgres::` runs it;
//! without a server each case prints a skip (or fails under `FUSION_REQUIRE_BACKENDS`).

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use fusion_core::testkit::StorageHarness;
use fusion_core::{ConversationStorage, Intercepted, Result, StorageExt};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};

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

async fn harness() -> Option<Encrypted<support::Harness>> {
    Some(Encrypted(support::harness().await?, layer()))
}

fusion_core::conformance_suite!(conformance_encrypted_postgres, harness);
