//! `--layer`: the storage layer (crates/fusion-layers) every backend's storage is wrapped
//! in, so a run measures what the layer adds beside a plain run of the same workloads.
//! The stress checker (`fusion-stress --layer`) wraps its storages the same way, to check
//! the layers under writers that share sessions.
//!
//! Only the library side is wrapped (the runner's `Backend::open`); the raw-driver floor
//! stays bare, so with a layer the library/floor ratios include the layer's cost.

use std::sync::Arc;

use fusion_core::{ConversationStorage, StorageExt};
use fusion_layers::{EncryptionKeys, EncryptionLayer, ObservabilityLayer, RetryLayer};

/// The benchmark's fixed master key: every process of a run (W5's workers, the stress
/// checker's) must read what the others wrote, and a benchmark protects nothing, so a
/// constant is enough.
const BENCH_KEY: [u8; 32] = [0x5a; 32];

/// The key id the benchmark's messages are stored under.
const BENCH_KEY_ID: &str = "bench";

/// Which layer wraps the storage the workloads use.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum StorageLayer {
    /// The backend's storage as it is.
    #[default]
    None,
    /// `EncryptionLayer`: AES-256-GCM, a key per session (HKDF of a fixed master
    /// key and the session id).
    Encryption,
    /// `ObservabilityLayer` with its defaults; the runner installs no `tracing`
    /// subscriber or `metrics` recorder, so this is its cost when nothing collects.
    Observability,
    /// `RetryLayer` with its defaults: it gives every message without an id one before
    /// the first attempt, so this measures ids and the layer (a fault-free run never
    /// retries).
    Retry,
}

impl StorageLayer {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            StorageLayer::None => "none",
            StorageLayer::Encryption => "encryption",
            StorageLayer::Observability => "observability",
            StorageLayer::Retry => "retry",
        }
    }

    /// `storage` wrapped in this layer (unchanged for [`StorageLayer::None`]).
    pub fn wrap(self, storage: Arc<dyn ConversationStorage>) -> Arc<dyn ConversationStorage> {
        match self {
            StorageLayer::None => storage,
            StorageLayer::Encryption => storage.layer(encryption()),
            StorageLayer::Observability => storage.layer(ObservabilityLayer::new()),
            StorageLayer::Retry => storage.layer(RetryLayer::new()),
        }
    }
}

/// The encryption layer under the benchmark's fixed key.
fn encryption() -> EncryptionLayer {
    // The id is a short constant and the key has the right length: `new` cannot refuse them.
    let keys = EncryptionKeys::new(BENCH_KEY_ID, &BENCH_KEY).expect("the benchmark key is valid");
    EncryptionLayer::new(keys)
}

#[cfg(test)]
mod tests {
    use fusion_core::ChatMessage;
    use fusion_storage_memory::InMemoryStorage;

    use super::*;

    /// What the layer writes, read back under it and around it.
    async fn round_trip(layer: StorageLayer) -> (Vec<ChatMessage>, Vec<ChatMessage>) {
        let raw: Arc<dyn ConversationStorage> = Arc::new(InMemoryStorage::new());
        let wrapped = layer.wrap(raw.clone());
        let turn = [
            ChatMessage::user("marker-7f3a"),
            ChatMessage::assistant("ok"),
        ];
        wrapped.append("s", &turn).await.unwrap();
        (
            wrapped.load("s").await.unwrap(),
            raw.load("s").await.unwrap(),
        )
    }

    #[tokio::test]
    async fn encryption_stores_no_clear_text_and_loads_what_was_appended() {
        let (through, stored) = round_trip(StorageLayer::Encryption).await;
        assert_eq!(through[0].content, "marker-7f3a");
        assert_eq!(stored.len(), 2);
        let stored = serde_json::to_string(&stored).unwrap();
        assert!(!stored.contains("marker-7f3a"), "stored in clear: {stored}");
    }

    #[tokio::test]
    async fn none_and_observability_store_the_messages_as_they_are() {
        for layer in [StorageLayer::None, StorageLayer::Observability] {
            let (through, stored) = round_trip(layer).await;
            assert_eq!(through, stored, "{}", layer.name());
            assert_eq!(stored[0].content, "marker-7f3a");
        }
    }
}
