//! `AgentSession`: one persistent multi-turn conversation between a user and the agent.
//!
//! A session owns the history of one session id, an LLM client, the tools and the
//! storage. Unlike a bare [`LlmClient`], which answers one request, a session remembers:
//! [`AgentSession::send_message`] runs the agent loop over the whole conversation and
//! stores every message as it is produced, so a later turn, or a later process on the
//! same storage, continues where the last one stopped.
//!
//! ```no_run
//! use std::sync::Arc;
//! use fusion_agent::{AgentSession, OpenAiClient};
//! use fusion_storage_memory::InMemoryStorage;
//!
//! # async fn demo() -> fusion_core::Result<()> {
//! let mut session = AgentSession::builder("user-123")
//!     .llm(Arc::new(OpenAiClient::from_env()?))
//!     .storage(Arc::new(InMemoryStorage::new()))
//!     .workspace_roots(["./project"])
//!     .build()
//!     .await?;
//! let result = session.send_message("Create notes.txt saying hello").await?;
//! let result = session.send_message("Now read the file back").await?;
//! println!("{} ({} steps)", result.result, result.steps.len());
//! # Ok(()) }
//! ```
//!
//! The type, its fields and accessors are here; [`SessionBuilder`] makes one (`builder`),
//! `turn` runs [`send_message`](AgentSession::send_message), and `context_ops` holds what
//! changes the history outside a turn (policies, pruning, summaries, undo, fork, clear).

mod builder;
mod context_ops;
mod turn;

pub use builder::{DEFAULT_MAX_ITERATIONS, DEFAULT_SYSTEM_PROMPT, SessionBuilder};

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use fusion_core::{ChatMessage, ConversationStorage, Result, SessionId};

use crate::context::policy::ContextPolicy;
use crate::context::request_view;
use crate::context::tokens::TokenCounter;
use crate::events::EventObserver;
use crate::executor::ToolExecutor;
use crate::llm::{LlmClient, SamplingOptions, ToolDefinition};
use crate::tools::registry::ToolRegistry;

/// A persistent conversation with the agent, for one session id.
///
/// Built with [`AgentSession::builder`]. Every message is appended to storage as soon as
/// it exists; the copy in memory ([`history`](Self::history)) is what the session has
/// stored. If a turn fails or its future is dropped mid-flight, the next turn first
/// re-reads the history from storage, so the two never drift apart.
pub struct AgentSession {
    id: SessionId,
    history: Vec<ChatMessage>,
    /// What the builder fixed, shared with every fork of this session.
    shared: Arc<Shared>,
    /// What part of the history requests carry (see [`crate::context`]); per session,
    /// because the setters change it.
    context: ContextPolicy,
    /// Counts tokens for the context policy's budget and thresholds.
    token_counter: Arc<dyn TokenCounter>,
    /// Set while a turn runs; still set at the next turn when the last one failed or was
    /// cancelled, in which case memory may disagree with storage and is reloaded.
    needs_reload: bool,
}

/// The settings a [`SessionBuilder`] fixes, which never change afterwards: a fork shares
/// them through an `Arc` instead of copying them.
struct Shared {
    llm: Arc<dyn LlmClient>,
    executor: ToolExecutor,
    storage: Arc<dyn ConversationStorage>,
    system_prompt: String,
    max_iterations: usize,
    sampling: SamplingOptions,
    /// Computed once: tools do not change during a session.
    definitions: Vec<ToolDefinition>,
    /// The text ReAct instructions for these tools, for a client without native tools.
    react_prompt: String,
    /// Hears about tool calls as they run (see [`crate::events`]).
    observer: Option<EventObserver>,
}

impl AgentSession {
    /// A builder for session `session_id` (validated when built).
    pub fn builder(session_id: impl Into<String>) -> SessionBuilder {
        SessionBuilder::new(session_id)
    }

    /// The session id.
    pub fn session_id(&self) -> &str {
        self.id.as_str()
    }

    /// How many messages the session holds (0 for a new session).
    pub fn message_count(&self) -> usize {
        self.history.len()
    }

    /// The stored conversation, oldest first.
    pub fn history(&self) -> &[ChatMessage] {
        &self.history
    }

    /// The tools offered to the model.
    pub fn tools(&self) -> &ToolRegistry {
        self.shared.executor.tools()
    }

    /// The system prompt a new conversation starts with.
    pub fn system_prompt(&self) -> &str {
        &self.shared.system_prompt
    }

    /// The default iteration limit of [`send_message`](Self::send_message).
    pub fn max_iterations(&self) -> usize {
        self.shared.max_iterations
    }

    /// Whether turns use the text ReAct format (the client has no native tool calling).
    pub fn uses_text_react(&self) -> bool {
        !self.shared.llm.supports_native_tools()
    }

    /// The view: the messages the next LLM request would carry, built by
    /// [`context::request_view`](crate::context::request_view) with this session's
    /// policy, token counter and mode.
    ///
    /// It borrows the history, so it costs a pointer per message (plus token counts for
    /// the messages a token budget keeps).
    pub fn request_view(&self) -> Vec<Cow<'_, ChatMessage>> {
        let react = self.uses_text_react();
        request_view(
            &self.history,
            &self.context,
            self.token_counter.as_ref(),
            react.then_some(self.shared.react_prompt.as_str()),
        )
    }

    /// Re-reads the history from storage, dropping anything in memory that was not stored.
    pub async fn reload(&mut self) -> Result<()> {
        self.history = self.shared.storage.load(self.id.as_str()).await?;
        self.needs_reload = false;
        Ok(())
    }
}

impl fmt::Debug for AgentSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSession")
            .field("session_id", &self.id.as_str())
            .field("messages", &self.history.len())
            .field("model", &self.shared.llm.model())
            .field("storage", &self.shared.storage.backend_name())
            .field("tools", self.shared.executor.tools())
            .field("max_iterations", &self.shared.max_iterations)
            .field("context", &self.context)
            .field("observer", &self.shared.observer.is_some())
            .finish_non_exhaustive()
    }
}
