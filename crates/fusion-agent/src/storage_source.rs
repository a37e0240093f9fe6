//! `StorageSource`: what a session builder accepts as storage — an open storage, or a
//! description of one (the facade's `StorageType`) that is opened when the session is built.

use std::sync::Arc;

use async_trait::async_trait;
use fusion_core::{ConversationStorage, Result};

/// Something [`SessionBuilder::storage`](crate::SessionBuilder::storage) can get its
/// storage from. Opening is async because connecting to a database is.
#[async_trait]
pub trait StorageSource: Send {
    /// Opens the storage (or hands over one that is already open).
    async fn open_storage(self: Box<Self>) -> Result<Arc<dyn ConversationStorage>>;
}

#[async_trait]
impl StorageSource for Arc<dyn ConversationStorage> {
    async fn open_storage(self: Box<Self>) -> Result<Arc<dyn ConversationStorage>> {
        Ok(*self)
    }
}

#[async_trait]
impl<S: ConversationStorage + 'static> StorageSource for Arc<S> {
    async fn open_storage(self: Box<Self>) -> Result<Arc<dyn ConversationStorage>> {
        Ok(*self)
    }
}
