//! Sessions: persistent multi-turn agent conversations, and the functions that manage them.
//!
//! [`create_session`] is the one-liner from the product description: it opens the named
//! storage, loads the session's history if it has one, and connects to the LLM configured
//! in the environment (`OPENAI_BASE_URL`, `OPENAI_API_KEY`, `FUSION_MODEL`). Use
//! [`SessionBuilder`] to choose the client, tools, system prompt or workspace roots in code.
//!
//! ```no_run
//! use fusion::api::session::{self, StorageType};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let mut session = session::create_session("user-123", StorageType::Memory).await?;
//! let result = session.send_message("What files are in /tmp?").await?;
//! let result = session.send_message("Delete the .txt files you just found").await?;
//! println!("{} ({} steps)", result.result, result.steps.len());
//! # Ok(()) }
//! ```

use fusion_core::{Result, SessionId, SessionInfo};

#[doc(inline)]
pub use crate::storage_type::StorageType;
/// Builds an [`AgentSession`] with explicit storage, LLM client, tools and prompt.
///
/// `.storage(..)` takes a [`StorageType`] or an open storage (`Arc<S>`); the LLM defaults
/// to the environment's.
///
/// ```no_run
/// use std::sync::Arc;
/// use fusion::agent::OpenAiClient;
/// use fusion::api::session::{SessionBuilder, StorageType};
///
/// # async fn demo() -> anyhow::Result<()> {
/// let session = SessionBuilder::new("user-123")
///     .storage(StorageType::Sqlite("sqlite://sessions.db".into()))
///     .llm(Arc::new(OpenAiClient::from_env()?))
///     .system_prompt("You manage files in the user's project.")
///     .workspace_roots(["./project"])
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[doc(inline)]
pub use fusion_agent::SessionBuilder;
#[doc(inline)]
pub use fusion_agent::{AgentSession, Step, TaskResult};

/// Opens (or resumes) session `session_id` on `storage`, with the LLM from the environment.
///
/// The session's stored history is loaded, so a conversation continues across restarts.
/// Fails with [`fusion_core::Error::Config`] when no LLM is configured.
pub async fn create_session(session_id: &str, storage: StorageType) -> Result<AgentSession> {
    SessionBuilder::new(session_id)
        .storage(storage)
        .build()
        .await
}

/// The ids of every session stored in `storage`, sorted.
pub async fn list_all_sessions(storage: &StorageType) -> Result<Vec<String>> {
    let mut ids = storage.open().await?.list_sessions().await?;
    ids.sort();
    Ok(ids)
}

/// Deletes session `session_id` from `storage`. Deleting an unknown session is not an error.
pub async fn delete_session(session_id: &str, storage: &StorageType) -> Result<()> {
    SessionId::validate(session_id)?;
    storage.open().await?.delete(session_id).await
}

/// Message count and timestamps of `session_id`, or `None` if it holds no messages.
pub async fn session_info(session_id: &str, storage: &StorageType) -> Result<Option<SessionInfo>> {
    storage.open().await?.session_info(session_id).await
}
