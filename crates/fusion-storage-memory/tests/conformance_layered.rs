//! The conformance suite through a layer that changes nothing ([`fusion_core::Intercept`]
//! with every call forwarded): a layer keeps every guarantee of the storage it wraps,
//! because each call it does not override reaches the backend's own implementation.

use std::sync::Arc;

use async_trait::async_trait;
use fusion_core::testkit::StorageHarness;
use fusion_core::{ConversationStorage, Intercept, Intercepted, Layer, Result, StorageExt};
use fusion_storage_memory::InMemoryStorage;

/// Overrides nothing: every call goes to the inner storage by [`Intercept`]'s defaults.
struct Passing(Arc<dyn ConversationStorage>);

impl Intercept for Passing {
    fn inner(&self) -> &dyn ConversationStorage {
        self.0.as_ref()
    }
}

struct PassingLayer;

impl Layer for PassingLayer {
    fn layer(&self, inner: Arc<dyn ConversationStorage>) -> Arc<dyn ConversationStorage> {
        Arc::new(Intercepted(Passing(inner)))
    }
}

struct Harness(InMemoryStorage);

#[async_trait]
impl StorageHarness for Harness {
    type Storage = Intercepted<Arc<dyn ConversationStorage>>;
    async fn open(&self) -> Result<Self::Storage> {
        // Two layers deep, to check that layers stack.
        let layered = Arc::new(self.0.clone())
            .layer(PassingLayer)
            .layer(PassingLayer);
        Ok(Intercepted(layered))
    }
}

async fn harness() -> Option<Harness> {
    Some(Harness(InMemoryStorage::new()))
}

fusion_core::conformance_suite!(conformance_layered_memory, harness);

#[tokio::test]
async fn a_layer_reports_the_backend_it_wraps() {
    let storage = Arc::new(InMemoryStorage::new()).layer(PassingLayer);
    assert_eq!(storage.backend_name(), "memory");
}
