//! Layers: storage that wraps any other storage and adds something to every call —
//! encryption at rest, retries, tracing and metrics — the way tower layers wrap any
//! service and OpenDAL layers any backend. A user-written backend gets every layer for
//! free, and layers stack: `storage.layer(a).layer(b)` puts `b` outside `a`.
//!
//! A layer is two small pieces:
//! - a [`Layer`], which makes the wrapping storage from the inner one;
//! - the wrapping storage: an [`Intercept`] (which changes only the calls it cares about,
//!   every other call going to the inner storage unchanged) inside [`Intercepted`], which
//!   makes it a [`ConversationStorage`].
//!
//! Forwarding by default is what keeps a layer correct: a call the layer does not
//! override still reaches the inner backend's own implementation (its atomic append, its
//! conditional writes, its paged listing), never the trait's slower defaults.
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use fusion_core::{ChatMessage, ConversationStorage, Intercept, Intercepted, Layer, Result, StorageExt};
//!
//! /// Counts the messages appended through it.
//! struct Counting {
//!     inner: Arc<dyn ConversationStorage>,
//!     appended: Arc<std::sync::atomic::AtomicUsize>,
//! }
//!
//! #[async_trait]
//! impl Intercept for Counting {
//!     fn inner(&self) -> &dyn ConversationStorage {
//!         self.inner.as_ref()
//!     }
//!     async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
//!         self.inner.append(session_id, messages).await?;
//!         self.appended.fetch_add(messages.len(), std::sync::atomic::Ordering::Relaxed);
//!         Ok(())
//!     }
//! }
//!
//! struct CountingLayer(Arc<std::sync::atomic::AtomicUsize>);
//!
//! impl Layer for CountingLayer {
//!     fn layer(&self, inner: Arc<dyn ConversationStorage>) -> Arc<dyn ConversationStorage> {
//!         Arc::new(Intercepted(Counting { inner, appended: self.0.clone() }))
//!     }
//! }
//!
//! # fn demo(storage: Arc<dyn ConversationStorage>) {
//! let appended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
//! let storage = storage.layer(CountingLayer(appended.clone()));
//! # }
//! ```

use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    Change, ChatMessage, ConversationStorage, Expect, MetaUpdate, Result, Revision, SessionInfo,
    SessionMeta, SessionPage, SessionQuery, SessionTimes,
};

/// Makes a storage that wraps `inner` and adds something to its calls.
pub trait Layer {
    /// The wrapping storage.
    fn layer(&self, inner: Arc<dyn ConversationStorage>) -> Arc<dyn ConversationStorage>;
}

/// `.layer(..)` on any storage: `storage.layer(a).layer(b)` wraps `a` around the storage
/// and `b` around that, so a call goes through `b`, then `a`, then the storage.
pub trait StorageExt {
    /// This storage wrapped by `layer`.
    fn layer(self, layer: impl Layer) -> Arc<dyn ConversationStorage>;
}

impl StorageExt for Arc<dyn ConversationStorage> {
    fn layer(self, layer: impl Layer) -> Arc<dyn ConversationStorage> {
        layer.layer(self)
    }
}

impl<S: ConversationStorage + 'static> StorageExt for Arc<S> {
    fn layer(self, layer: impl Layer) -> Arc<dyn ConversationStorage> {
        layer.layer(self)
    }
}

/// The calls of a wrapping storage, each forwarding to [`inner`](Self::inner) unless the
/// layer overrides it. Wrapped in [`Intercepted`] it is a [`ConversationStorage`].
///
/// Override what the layer changes, and keep the rest: an encryption layer overrides the
/// calls that carry messages, a metrics layer every call.
#[async_trait]
pub trait Intercept: Send + Sync {
    /// The storage the calls go to.
    fn inner(&self) -> &dyn ConversationStorage;

    /// See [`ConversationStorage::save`].
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        self.inner().save(session_id, history).await
    }

    /// See [`ConversationStorage::load`].
    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        self.inner().load(session_id).await
    }

    /// See [`ConversationStorage::delete`].
    async fn delete(&self, session_id: &str) -> Result<()> {
        self.inner().delete(session_id).await
    }

    /// See [`ConversationStorage::list_sessions`].
    async fn list_sessions(&self) -> Result<Vec<String>> {
        self.inner().list_sessions().await
    }

    /// See [`ConversationStorage::append`].
    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        self.inner().append(session_id, messages).await
    }

    /// See [`ConversationStorage::truncate`].
    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        self.inner().truncate(session_id, len).await
    }

    /// See [`ConversationStorage::load_revision`].
    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        self.inner().load_revision(session_id).await
    }

    /// See [`ConversationStorage::write_if`].
    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        self.inner().write_if(session_id, expected, change).await
    }

    /// See [`ConversationStorage::session_info`].
    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        self.inner().session_info(session_id).await
    }

    /// See [`ConversationStorage::create_session`].
    async fn create_session(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
    ) -> Result<u64> {
        self.inner()
            .create_session(session_id, meta, messages)
            .await
    }

    /// See [`ConversationStorage::create_session_with_times`].
    async fn create_session_with_times(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: SessionTimes,
    ) -> Result<u64> {
        self.inner()
            .create_session_with_times(session_id, meta, messages, times)
            .await
    }

    /// See [`ConversationStorage::update_session`].
    async fn update_session(
        &self,
        session_id: &str,
        update: &MetaUpdate,
    ) -> Result<Option<SessionInfo>> {
        self.inner().update_session(session_id, update).await
    }

    /// See [`ConversationStorage::list_page`].
    async fn list_page(&self, query: &SessionQuery) -> Result<SessionPage> {
        self.inner().list_page(query).await
    }

    /// See [`ConversationStorage::purge_expired`].
    async fn purge_expired(&self, batch: usize) -> Result<usize> {
        self.inner().purge_expired(batch).await
    }

    /// See [`ConversationStorage::backend_name`]: the inner backend's, so errors and
    /// logs keep naming the real backend.
    fn backend_name(&self) -> &'static str {
        self.inner().backend_name()
    }
}

/// An [`Intercept`] as a [`ConversationStorage`]: every call goes to the intercept's
/// version of it.
///
/// `Intercepted(storage)` of an `Arc<dyn ConversationStorage>` (which intercepts
/// nothing) is that storage under a concrete type, for code that needs one, such as a
/// test harness running the conformance suite on a layered storage.
pub struct Intercepted<I>(pub I);

/// Every call to the storage itself: what makes `Intercepted(layered_storage)` a
/// concrete storage type.
impl Intercept for Arc<dyn ConversationStorage> {
    fn inner(&self) -> &dyn ConversationStorage {
        self.as_ref()
    }
}

#[async_trait]
impl<I: Intercept> ConversationStorage for Intercepted<I> {
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        self.0.save(session_id, history).await
    }

    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        self.0.load(session_id).await
    }

    async fn delete(&self, session_id: &str) -> Result<()> {
        self.0.delete(session_id).await
    }

    async fn list_sessions(&self) -> Result<Vec<String>> {
        self.0.list_sessions().await
    }

    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        self.0.append(session_id, messages).await
    }

    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        self.0.truncate(session_id, len).await
    }

    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        self.0.load_revision(session_id).await
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        self.0.write_if(session_id, expected, change).await
    }

    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        self.0.session_info(session_id).await
    }

    async fn create_session(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
    ) -> Result<u64> {
        self.0.create_session(session_id, meta, messages).await
    }

    async fn create_session_with_times(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: SessionTimes,
    ) -> Result<u64> {
        self.0
            .create_session_with_times(session_id, meta, messages, times)
            .await
    }

    async fn update_session(
        &self,
        session_id: &str,
        update: &MetaUpdate,
    ) -> Result<Option<SessionInfo>> {
        self.0.update_session(session_id, update).await
    }

    async fn list_page(&self, query: &SessionQuery) -> Result<SessionPage> {
        self.0.list_page(query).await
    }

    async fn purge_expired(&self, batch: usize) -> Result<usize> {
        self.0.purge_expired(batch).await
    }

    fn backend_name(&self) -> &'static str {
        self.0.backend_name()
    }
}

impl<I> std::fmt::Debug for Intercepted<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intercepted")
            .field("layer", &std::any::type_name::<I>())
            .finish_non_exhaustive()
    }
}
