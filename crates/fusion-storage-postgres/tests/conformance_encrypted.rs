//! The cross-backend conformance suite through the encryption layer, each case in a
//! schema of its own on the server at `FUSION_POSTGRES_URL` (see `support`): every
//! guarantee of the backend holds for encrypted sessions.
//!
//! `cargo test -p fusion-storage-postgres conformance_encrypted_postgres::` runs it;
//! without a server each case prints a skip (or fails under `FUSION_REQUIRE_BACKENDS`).

mod support;

use fusion_core::testkit::Layered;
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};

fn layer() -> EncryptionLayer {
    let keys = EncryptionKeys::new("conformance", &[7; 32]).expect("a valid key id");
    EncryptionLayer::new(keys)
}

async fn harness() -> Option<Layered<support::Harness, EncryptionLayer>> {
    Some(Layered {
        harness: support::harness().await?,
        layer: layer(),
    })
}

fusion_core::conformance_suite!(conformance_encrypted_postgres, harness);
