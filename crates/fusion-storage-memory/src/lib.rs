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

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Expect, Result, Revision, SessionId, SessionInfo,
    check_storable, new_generation,
};

/// The backend name in errors and logs.
const BACKEND: &str = "memory";

/// A stored session: its messages, its generation (see [`Revision`]) and when it was
/// created and last written.
#[derive(Debug, Clone)]
struct Entry {
    messages: Vec<ChatMessage>,
    generation: u64,
    created_at: SystemTime,
    updated_at: SystemTime,
}

/// Conversation storage in a `HashMap` behind a `RwLock`. Clones share one store.
#[derive(Debug, Clone, Default)]
pub struct InMemoryStorage {
    sessions: Arc<RwLock<HashMap<String, Entry>>>,
}

impl InMemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    // The lock only guards plain data and no code panics while holding it, so a poisoned
    // lock still holds consistent data and is safe to keep using.
    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.sessions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.sessions
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl ConversationStorage for InMemoryStorage {
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        // Refused here too, though memory could hold it, so behaviour does not depend on
        // the backend and a session can always be migrated to a persistent one.
        check_storable(BACKEND, session_id, history)?;
        let mut sessions = self.write();
        replace(&mut sessions, session_id, history);
        Ok(())
    }

    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        SessionId::validate(session_id)?;
        Ok(self
            .read()
            .get(session_id)
            .map(|e| e.messages.clone())
            .unwrap_or_default())
    }

    async fn delete(&self, session_id: &str) -> Result<()> {
        SessionId::validate(session_id)?;
        self.write().remove(session_id);
        Ok(())
    }

    async fn list_sessions(&self) -> Result<Vec<String>> {
        Ok(self.read().keys().cloned().collect())
    }

    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        if messages.is_empty() {
            return Ok(());
        }
        check_storable(BACKEND, session_id, messages)?;
        append(&mut self.write(), session_id, messages);
        Ok(())
    }

    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        SessionId::validate(session_id)?;
        truncate(&mut self.write(), session_id, len);
        Ok(())
    }

    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        SessionId::validate(session_id)?;
        Ok(self.read().get(session_id).map_or_else(
            || (Vec::new(), Revision::ABSENT),
            |e| (e.messages.clone(), revision(e)),
        ))
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
        let mut sessions = self.write();
        let now = sessions.get(session_id).map_or(Revision::ABSENT, revision);
        if !expected.is_met_by(now.generation, || now.len) {
            return Err(expected.conflict(BACKEND, session_id, now.generation, Some(now.len)));
        }
        match change {
            Change::Append(messages) => append(&mut sessions, session_id, messages),
            Change::Truncate(len) => truncate(&mut sessions, session_id, len),
            Change::Replace(history) => replace(&mut sessions, session_id, history),
        }
        Ok(sessions.get(session_id).map_or(0, |e| e.generation))
    }

    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        SessionId::validate(session_id)?;
        Ok(self.read().get(session_id).map(|e| {
            let mut info = SessionInfo::new(session_id.to_string(), e.messages.len());
            info.created_at = Some(e.created_at);
            info.updated_at = Some(e.updated_at);
            info
        }))
    }

    fn backend_name(&self) -> &'static str {
        BACKEND
    }
}

fn revision(entry: &Entry) -> Revision {
    Revision {
        generation: entry.generation,
        len: entry.messages.len(),
    }
}

/// Adds `messages` to a session, creating it with a fresh generation if needed.
fn append(sessions: &mut HashMap<String, Entry>, session_id: &str, messages: &[ChatMessage]) {
    if messages.is_empty() {
        return;
    }
    let now = SystemTime::now();
    let entry = sessions
        .entry(session_id.to_string())
        .or_insert_with(|| Entry {
            messages: Vec::new(),
            generation: new_generation(),
            created_at: now,
            updated_at: now,
        });
    entry.messages.extend_from_slice(messages);
    entry.updated_at = now;
}

/// Keeps the first `len` messages; a shorter history gets a new generation.
fn truncate(sessions: &mut HashMap<String, Entry>, session_id: &str, len: usize) {
    if len == 0 {
        sessions.remove(session_id);
    } else if let Some(entry) = sessions.get_mut(session_id)
        && entry.messages.len() > len
    {
        entry.messages.truncate(len);
        entry.generation = new_generation();
        entry.updated_at = SystemTime::now();
    }
}

/// Replaces a session's history (an empty one removes it), with a new generation.
fn replace(sessions: &mut HashMap<String, Entry>, session_id: &str, history: &[ChatMessage]) {
    if history.is_empty() {
        sessions.remove(session_id);
        return;
    }
    let now = SystemTime::now();
    let created_at = sessions.get(session_id).map_or(now, |e| e.created_at);
    sessions.insert(
        session_id.to_string(),
        Entry {
            messages: history.to_vec(),
            generation: new_generation(),
            created_at,
            updated_at: now,
        },
    );
}
