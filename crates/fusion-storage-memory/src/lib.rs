//! In-memory conversation storage: fast, shared between clones, and gone when the process ends.
//!
//! Use it for tests, for temporary sessions and for single-process apps that do not need
//! history to survive a restart. For persistence pick the file-system, SQLite or Redis
//! backend; the code using the storage stays the same.
//!
//! ```
//! # async fn demo() -> fusion_core::Result<()> {
//! use fusion_core::{ChatMessage, ConversationStorage};
//! use fusion_storage_memory::InMemoryStorage;
//!
//! let storage = InMemoryStorage::new();
//! storage.append("user-123", &[ChatMessage::user("hello")]).await?;
//! let shared = storage.clone(); // clones see the same sessions
//! assert_eq!(shared.load("user-123").await?.len(), 1);
//! # Ok(()) }
//! ```

mod recent;
mod store;

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Expect, MetaUpdate, Result, Revision, SessionId,
    SessionInfo, SessionMeta, SessionPage, SessionQuery, SessionTimes, check_creation,
    check_purge_batch, check_storable, unix_micros,
};

use store::Store;

/// The backend name in errors and logs.
const BACKEND: &str = "memory";

/// Conversation storage in a `HashMap` behind a `RwLock`, with ordered indexes for
/// paged listing (by id and newest first, for all sessions and per owner) and for
/// purging expired sessions. Clones share one store.
#[derive(Debug, Clone, Default)]
pub struct InMemoryStorage {
    sessions: Arc<RwLock<Store>>,
}

impl InMemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    // The lock only guards plain data and no code panics while holding it, so a poisoned
    // lock still holds consistent data and is safe to keep using.
    fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.sessions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.sessions
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates `session_id`, at the times given or now, checking it does not exist under
    /// the same lock of the whole store as the creation.
    fn create(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: Option<SessionTimes>,
    ) -> Result<u64> {
        check_creation(BACKEND, session_id, meta, messages)?;
        let (mut store, at) = (self.write(), now());
        let now = store.revision(session_id, at);
        if now.exists() {
            let absent = Expect::Generation(0);
            return Err(absent.conflict(BACKEND, session_id, now.generation, Some(now.len)));
        }
        let written = times.map_or((at, at), |times| times.stored_at(at));
        Ok(store.create(session_id, meta.clone(), messages.to_vec(), at, written))
    }
}

#[async_trait]
impl ConversationStorage for InMemoryStorage {
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        // Refused here too, though memory could hold it, so behaviour does not depend on
        // the backend and a session can always be migrated to a persistent one.
        check_storable(BACKEND, session_id, history)?;
        self.write().replace(session_id, history, now());
        Ok(())
    }

    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        SessionId::validate(session_id)?;
        Ok(self
            .read()
            .messages(session_id, now())
            .map(<[ChatMessage]>::to_vec)
            .unwrap_or_default())
    }

    async fn delete(&self, session_id: &str) -> Result<()> {
        SessionId::validate(session_id)?;
        self.write().remove(session_id);
        Ok(())
    }

    async fn list_sessions(&self) -> Result<Vec<String>> {
        Ok(self.read().ids(now()))
    }

    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        if messages.is_empty() {
            return Ok(());
        }
        check_storable(BACKEND, session_id, messages)?;
        // Copied before the lock, so that other callers wait only for the move.
        let messages = messages.to_vec();
        self.write().append(session_id, messages, now());
        Ok(())
    }

    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        SessionId::validate(session_id)?;
        self.write().truncate(session_id, len, now());
        Ok(())
    }

    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        SessionId::validate(session_id)?;
        let (store, now) = (self.read(), now());
        let history = store.messages(session_id, now).unwrap_or_default().to_vec();
        Ok((history, store.revision(session_id, now)))
    }

    /// The check and the write happen under one lock of the whole store.
    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        SessionId::validate(session_id)?;
        check_storable(BACKEND, session_id, change.messages())?;
        let (mut store, at) = (self.write(), now());
        let now = store.revision(session_id, at);
        let updated_at = || store.info(session_id, at).and_then(|info| info.updated_at);
        if !expected.is_met_by(now.generation, || now.len, updated_at) {
            return Err(expected.conflict(BACKEND, session_id, now.generation, Some(now.len)));
        }
        match change {
            Change::Append([]) => {}
            Change::Append(messages) => store.append(session_id, messages.to_vec(), at),
            Change::Truncate(len) => store.truncate(session_id, len, at),
            Change::Replace(history) => store.replace(session_id, history, at),
            Change::Rewrite(history) => store.rewrite(session_id, history, at),
        }
        Ok(store.revision(session_id, at).generation)
    }

    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        SessionId::validate(session_id)?;
        Ok(self.read().info(session_id, now()))
    }

    /// The check and the creation happen under one lock of the whole store.
    async fn create_session(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
    ) -> Result<u64> {
        self.create(session_id, meta, messages, None)
    }

    async fn create_session_with_times(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: SessionTimes,
    ) -> Result<u64> {
        times.validate()?;
        self.create(session_id, meta, messages, Some(times))
    }

    async fn update_session(
        &self,
        session_id: &str,
        update: &MetaUpdate,
    ) -> Result<Option<SessionInfo>> {
        SessionId::validate(session_id)?;
        self.write().update(session_id, update, now())
    }

    async fn list_page(&self, query: &SessionQuery) -> Result<SessionPage> {
        query.validate()?;
        let at = now();
        {
            let store = self.read();
            if !store.must_settle_for(query) {
                return store.page(query, at);
            }
        }
        // Sessions moved since the last newest-first listing are re-filed first, under the
        // write lock, and the page read under the same lock sees the order just settled.
        let mut store = self.write();
        store.settle();
        store.page(query, at)
    }

    /// Walks the index of expiry instants: O(batch).
    async fn purge_expired(&self, batch: usize) -> Result<usize> {
        check_purge_batch(batch)?;
        Ok(self.write().purge(batch, now()))
    }

    fn backend_name(&self) -> &'static str {
        BACKEND
    }
}

/// The instant one storage call works at, in Unix microseconds (see [`store`]).
fn now() -> i64 {
    unix_micros(SystemTime::now())
}
