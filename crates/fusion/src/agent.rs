//! The agent: [`AgentSession`] and its [`SessionBuilder`], LLM clients, tools and the ReAct
//! loop: the `fusion-agent` crate, whose public items all have their one path here.
//!
//! [`crate::api::session::create_session`] is the one-line way to a session with the LLM
//! from the environment; [`SessionBuilder`] chooses the storage, LLM client, tools, system
//! prompt and workspace roots in code. `.storage(..)` takes a
//! [`StorageType`](crate::storage::StorageType) or an open storage (`Arc<S>`); the LLM
//! defaults to the environment's. `.owner(..)`, `.title(..)`, `.tags(..)` and
//! `.title_policy(TitlePolicy::FirstUserMessage)` give a session the agent creates its
//! metadata in the same write as its first messages; with an owner the session sees only
//! that owner's sessions (see [`OwnerScope`](crate::storage::OwnerScope)).
//!
//! ```no_run
//! use std::sync::Arc;
//! use fusion::agent::{OpenAiClient, SessionBuilder};
//! use fusion::storage::StorageType;
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let session = SessionBuilder::new("user-123")
//!     .storage(StorageType::Sqlite("sqlite://sessions.db".into()))
//!     .llm(Arc::new(OpenAiClient::from_env()?))
//!     .system_prompt("You manage files in the user's project.")
//!     .workspace_roots(["./project"])
//!     .build()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Bring your own model by implementing [`LlmClient`], or use [`OpenAiClient`] with any
//! OpenAI-compatible endpoint. Give the agent abilities by implementing [`Tool`] and
//! registering it in a [`ToolRegistry`]; the built-in file tools are confined to workspace
//! roots. [`ContextPolicy`] shapes what the model sees of a long conversation (sliding
//! window, token budget, pruning, stored summaries) without dropping anything from storage.

#[doc(inline)]
pub use fusion_agent::*;
