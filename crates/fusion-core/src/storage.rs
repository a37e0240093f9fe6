//! The `ConversationStorage` trait every backend implements.
//!
//! The first four methods are exactly the product description's trait, so a backend
//! written from that description compiles unchanged. Everything else has a default
//! implementation built on those four; backends override the defaults when they can do
//! better, above all [`ConversationStorage::append`], which runs on every turn.
//!
//! Every method validates its `session_id` with [`crate::SessionId`] before touching
//! storage, so a hostile id is rejected the same way by every backend.

use std::time::SystemTime;

use async_trait::async_trait;

use crate::{ChatMessage, Result, SessionId};

/// Facts about one stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session id.
    pub id: String,
    /// How many messages the session holds.
    pub message_count: usize,
    /// When the session was first written, where the backend keeps it.
    pub created_at: Option<SystemTime>,
    /// When the session was last written, where the backend keeps it.
    pub updated_at: Option<SystemTime>,
}

/// Persistent storage for conversation histories, keyed by session id.
///
/// Implementations must be safe to share between tasks (`Send + Sync`) and must keep
/// every session independent: a failure reading one session never affects another.
///
/// Semantics every backend shares (checked by the conformance suite in `testkit`):
/// - `load` of a session that was never written returns an empty history;
/// - a session with no messages does not exist: `save(id, &[])` behaves like `delete`;
/// - `delete` of an unknown session is `Ok`;
/// - `list_sessions` returns each stored session exactly once, in no particular order;
/// - concurrent `append`s to one session, from tasks or processes, lose nothing and keep
///   each writer's own order.
#[async_trait]
pub trait ConversationStorage: Send + Sync {
    /// Replaces the whole history of `session_id` with `history`, atomically: a reader
    /// sees the old history or the new one, never a mix.
    ///
    /// Cost: O(len of `history`). Use [`append`](Self::append) for new messages.
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()>;

    /// Returns the history of `session_id` in order, or an empty vector if it has none.
    ///
    /// Cost: O(len of history).
    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>>;

    /// Removes `session_id` and all its messages. Unknown sessions are not an error.
    async fn delete(&self, session_id: &str) -> Result<()>;

    /// The ids of every stored session.
    ///
    /// Cost: O(number of sessions); never a scan of all messages.
    async fn list_sessions(&self) -> Result<Vec<String>>;

    /// Adds `messages` to the end of the history of `session_id`, creating the session if
    /// needed. All of `messages` are stored, contiguously and in order, or none are.
    ///
    /// This runs inline on every agent turn, so backends should make it cost
    /// O(`messages.len()`), independent of history length. The default loads, extends and
    /// saves the whole history (O(history)) and is not safe against concurrent appenders;
    /// every bundled backend overrides it.
    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        if messages.is_empty() {
            return SessionId::validate(session_id);
        }
        let mut history = self.load(session_id).await?;
        history.extend_from_slice(messages);
        self.save(session_id, &history).await
    }

    /// Keeps only the first `len` messages of `session_id` (used to undo a turn).
    ///
    /// The default loads and saves the shorter history; backends may do it in place.
    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        let mut history = self.load(session_id).await?;
        if history.len() > len {
            history.truncate(len);
            self.save(session_id, &history).await?;
        }
        Ok(())
    }

    /// Facts about `session_id`, or `None` if it holds no messages.
    ///
    /// The default counts a full `load` and knows no timestamps.
    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        let history = self.load(session_id).await?;
        Ok((!history.is_empty()).then(|| SessionInfo {
            id: session_id.to_string(),
            message_count: history.len(),
            created_at: None,
            updated_at: None,
        }))
    }

    /// A short name for messages and logs (`memory`, `fs`, `sqlite`, `redis`, ...).
    fn backend_name(&self) -> &'static str {
        "custom"
    }
}
