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
//! Storage, not the copy in memory, is the truth: what that means when several writers
//! share a session is on [`AgentSession`] ("Memory, storage and other writers").
//!
//! The type, its fields and accessors are here; [`SessionBuilder`] makes one (`builder`),
//! `store` writes to storage, `turn` runs [`send_message`](AgentSession::send_message),
//! `auto_summary` the summary a turn makes past the policy's threshold, and `context_ops`
//! holds what changes the history outside a turn (policies, pruning, summaries, undo,
//! fork, clear).

mod auto_summary;
mod builder;
mod context_ops;
mod creation;
mod opening;
mod store;
mod stream;
mod tool_calls;
mod turn;

pub use builder::{DEFAULT_MAX_ITERATIONS, DEFAULT_SYSTEM_PROMPT, SessionBuilder};
pub use creation::{AUTO_TITLE_CHARS, TitlePolicy, title_from_message};
pub use stream::TurnStream;

use store::Unread;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use fusion_core::{
    ChatMessage, ConversationStorage, MetaUpdate, Result, Revision, Role, SessionId, SessionInfo,
};
use tokio::sync::Mutex;

use crate::context::policy::ContextPolicy;
use crate::context::request_view_with_tools;
use crate::context::tokens::TokenCounter;
use crate::events::EventObserver;
use crate::executor::ToolExecutor;
use crate::llm::{LlmClient, RequestCache, SamplingOptions, ToolDefinition};
use crate::tools::registry::ToolRegistry;

/// A persistent conversation with the agent, for one session id.
///
/// Built with [`AgentSession::builder`]. Every message is appended to storage as soon as
/// it exists; the copy in memory ([`history`](Self::history)) is what storage held when
/// the session last read it plus what the session stored since (other writers' messages
/// appear at the next reload). If a turn fails or its future is dropped mid-flight, the
/// next operation first re-reads the history from storage, so the two never drift apart.
///
/// # Memory, storage and other writers
///
/// Storage is the single source of truth; the history in memory is a copy read at one
/// [`Revision`] (its generation is kept beside it). Several writers may share a session (a
/// second process chatting, a worker, an import, a delete), so every write is conditional
/// on what the copy was read at ([`ConversationStorage::write_if`]):
/// - a turn's appends require that the session was not deleted, expired, replaced or
///   truncated since; other writers' appends in between are fine, so concurrent chats on
///   one session keep working, each seeing the others' messages from its next reload. If
///   the session is deleted or rewritten while a turn runs, the turn ends with a clear
///   error and stores nothing more: the session is not resurrected as a fragment, and the
///   next turn starts from what storage holds (a deleted session starts over, system
///   prompt first);
/// - the first message of a new session is written only if the session still does not
///   exist, so the system prompt is stored once whoever starts it;
/// - undo truncates only if nothing at all was written since, so it never removes
///   another writer's messages;
/// - summaries and prune marks are computed from a fresh read and record stored
///   positions, which stay true while others append;
/// - fork writes its copy only into an id that does not exist.
///
/// When a condition fails, nothing is written, the operation reports
/// [`Error::Conflict`](fusion_core::Error::Conflict) (a turn's opening instead rereads and
/// retries, as nothing of the turn is stored yet), and the session rereads storage, at
/// once or (after a turn) when the next operation starts. Each write runs as its own task,
/// and [`reload`](AgentSession::reload) and every operation wait for a write a cancelled
/// future left running before they read, so a cancelled turn's last write never races the
/// next read.
pub struct AgentSession {
    id: SessionId,
    history: Vec<ChatMessage>,
    /// The generation storage had when `history` was read (0: no session), kept by this
    /// session's appends: what its conditional writes require.
    generation: u64,
    /// What storage holds at `generation` beyond `history`: other writers' messages a turn
    /// read but keeps out of memory (see [`Unread`]).
    unread: Unread,
    /// Held by the task running this session's storage write; a write whose caller was
    /// dropped keeps it until it lands, and reads wait for it (see `store`).
    in_flight: Arc<Mutex<()>>,
    /// What the builder fixed, shared with every fork of this session.
    shared: Arc<Shared>,
    /// What part of the history requests carry (see [`crate::context`]); per session,
    /// because the setters change it.
    context: ContextPolicy,
    /// Counts tokens for the context policy's budget and thresholds.
    token_counter: Arc<dyn TokenCounter>,
    /// Set while a turn or a storage write runs; still set at the next operation when the
    /// last one failed or was cancelled, in which case memory may disagree with storage
    /// and is reloaded.
    needs_reload: bool,
    /// Set when the model answered a request offering tools with "does not support
    /// tools": from then on this session uses the text ReAct format.
    native_tools_rejected: bool,
    /// What the LLM client keeps between this conversation's requests (see
    /// [`RequestCache`]); not shared with forks.
    request_cache: RequestCache,
    /// The results of the tool calls that finished while their reply's other calls still
    /// ran, until the turn stores them all. A turn cancelled then leaves them here, and
    /// the next write stores them in place of "interrupted" ones ([`Self::interrupted_repairs`]).
    finished_calls: Option<FinishedCalls>,
    /// After an automatic summary failed in a way retrying cannot help: how many messages
    /// the conversation must hold before the next is tried (see `auto_summary`).
    auto_summary_retry_at: Option<usize>,
    /// Whether the last request's token budget held no more than the latest turn, warned
    /// of then: a session says it once while it lasts, not at every request.
    budget_warned: AtomicBool,
}

/// Results of some of the calls of one stored reply, not stored yet.
struct FinishedCalls {
    /// The id of the reply whose calls they answer.
    reply: fusion_core::MessageId,
    /// One tool-result message per finished call, in the order they finished.
    results: Vec<ChatMessage>,
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
    /// The tool definitions requests carry, rebuilt when the registry's tools change (an
    /// MCP server's list did).
    tool_view: std::sync::Mutex<Arc<ToolView>>,
    /// Hears about tool calls as they run (see [`crate::events`]).
    observer: Option<EventObserver>,
    /// The metadata a session created by these settings starts with, and its owner.
    creation: creation::Creation,
}

impl Shared {
    /// The same settings for a fork, with approvals of its own: an "always" given in one
    /// session does not carry over to its forks, nor theirs back to it.
    fn for_fork(&self) -> Self {
        Self {
            llm: Arc::clone(&self.llm),
            executor: self.executor.with_own_approvals(),
            storage: Arc::clone(&self.storage),
            system_prompt: self.system_prompt.clone(),
            max_iterations: self.max_iterations,
            sampling: self.sampling.clone(),
            tool_view: std::sync::Mutex::new(Arc::clone(
                &self.tool_view.lock().unwrap_or_else(|e| e.into_inner()),
            )),
            observer: self.observer.clone(),
            creation: self.creation.clone(),
        }
    }
}

/// What requests say about the tools, for one revision of the registry.
struct ToolView {
    revision: u64,
    definitions: Vec<ToolDefinition>,
    /// The text ReAct instructions for these tools, for a client without native tools.
    react_prompt: String,
    /// Why these tools cannot be offered as native tools, naming the two whose names are
    /// offered alike ([`shared_sendable_name`](crate::tools::registry::shared_sendable_name));
    /// no matter in text ReAct mode, where the names are written as they are.
    sendable_clash: Option<String>,
}

impl ToolView {
    /// Fails, naming the tool, when a tool's definition panics
    /// ([`checked_definitions`](crate::ToolRegistry::checked_definitions)): when the
    /// session is built, and whenever a source's tools change (an MCP server that lists a
    /// tool anew). Two tools offered alike are refused by
    /// [`native_definitions`](Self::native_definitions) only.
    fn of(tools: &crate::ToolRegistry) -> Result<Self> {
        // The revision first: a change while the list is read is seen by the next look.
        let revision = tools.revision();
        let definitions = tools.checked_definitions()?;
        Ok(Self {
            revision,
            react_prompt: crate::react_text::render_react_prompt(&definitions),
            sendable_clash: crate::tools::registry::shared_sendable_name(&definitions),
            definitions,
        })
    }

    /// The definitions a request offers as native tools. Fails naming both when two
    /// tools would be offered under one name, so that a call never runs a tool the model
    /// did not mean; the text ReAct mode, whose calls name tools as they are, never asks.
    fn native_definitions(&self) -> Result<&[ToolDefinition]> {
        match &self.sendable_clash {
            Some(clash) => Err(fusion_core::Error::Config(clash.clone())),
            None => Ok(&self.definitions),
        }
    }
}

impl Shared {
    /// The tool definitions for the registry as it is now: the cached ones unless a
    /// source's tools changed since they were built. Fails when they cannot be built (a
    /// tool's definition panics), keeping the cached ones.
    fn tool_view(&self) -> Result<Arc<ToolView>> {
        let tools = self.executor.tools();
        let mut view = self.tool_view.lock().unwrap_or_else(|e| e.into_inner());
        if view.revision != tools.revision() {
            *view = Arc::new(ToolView::of(tools)?);
        }
        Ok(view.clone())
    }

    /// [`tool_view`](Self::tool_view) for a caller that cannot fail: the last view built
    /// when the new one cannot be (the turn reports that error itself, before it asks).
    fn last_good_tool_view(&self) -> Arc<ToolView> {
        self.tool_view().unwrap_or_else(|err| {
            tracing::warn!(
                error = %err,
                "the tools' definitions could not be rebuilt; using the last ones"
            );
            Arc::clone(&self.tool_view.lock().unwrap_or_else(|e| e.into_inner()))
        })
    }
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

    /// The owner the session is scoped to ([`SessionBuilder::owner`]), if any.
    pub fn owner(&self) -> Option<&str> {
        self.shared.creation.owner()
    }

    /// What storage knows of the session now: message count, timestamps and metadata
    /// (owner, title, tags, data); `None` while it holds no messages. One read of storage.
    pub async fn info(&self) -> Result<Option<SessionInfo>> {
        self.shared.storage.session_info(self.id.as_str()).await
    }

    /// Changes the session's stored metadata ([`ConversationStorage::update_session`]):
    /// retitle it, add or remove tags, set data. Returns what storage holds after it, or
    /// `None` (writing nothing) while the session holds no messages. An owner-scoped
    /// session cannot change its owner ([`Error::InvalidMeta`](fusion_core::Error::InvalidMeta)).
    pub async fn update_meta(&self, update: &MetaUpdate) -> Result<Option<SessionInfo>> {
        self.shared
            .storage
            .update_session(self.id.as_str(), update)
            .await
    }

    /// How many messages the session holds (0 for a new session), as of its last read or
    /// write: another writer's messages count once a turn, [`catch_up`](Self::catch_up)
    /// or [`reload`](Self::reload) has read them.
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

    /// Whether turns use the text ReAct format: the client has no native tool calling, or
    /// the model rejected it during an earlier turn of this session.
    pub fn uses_text_react(&self) -> bool {
        self.native_tools_rejected || !self.shared.llm.supports_native_tools()
    }

    /// What answers the calls a cancelled turn left unanswered, for the next write to
    /// store first: per native call without a result, the result it got if it finished
    /// before the cancel (marked [`LATE_RESULT_METADATA_KEY`](crate::context::LATE_RESULT_METADATA_KEY)),
    /// else an "interrupted" one; or an "interrupted" observation for a text-mode `Action:`
    /// reply left last, known by the mark the loop stored on it
    /// ([`interrupted_observation`](crate::context::interrupted_observation)). The results
    /// kept are used only while the reply whose calls they answer is still the last one
    /// storage holds.
    pub(crate) fn interrupted_repairs(&self) -> Vec<ChatMessage> {
        let mut repairs = crate::context::interrupted_results(&self.history);
        let last_reply = self.history.iter().rev().find(|m| m.role != Role::Tool);
        let kept = self.finished_calls.as_ref().filter(|finished| {
            last_reply.is_some_and(|reply| reply.id.as_ref() == Some(&finished.reply))
        });
        if let Some(finished) = kept {
            for repair in &mut repairs {
                let real = finished
                    .results
                    .iter()
                    .find(|result| result.tool_call_id == repair.tool_call_id);
                if let Some(real) = real {
                    *repair = real.clone().with_metadata(
                        crate::context::LATE_RESULT_METADATA_KEY,
                        serde_json::Value::Bool(true),
                    );
                }
            }
        }
        // By the mark the loop stored on the reply, whatever this session's mode and tools.
        repairs.extend(crate::context::interrupted_observation(&self.history));
        repairs
    }

    /// The view: the messages the next LLM request would carry, built by
    /// [`context::request_view`](crate::context::request_view) with this session's
    /// policy, token counter and mode; a token budget also counts the tools a native-mode
    /// request offers.
    ///
    /// It borrows the history, so it costs a pointer per message (plus token counts for
    /// the messages a token budget keeps).
    pub fn request_view(&self) -> Vec<Cow<'_, ChatMessage>> {
        self.with_offered_tools(|react_prompt, native| {
            request_view_with_tools(
                &self.history,
                &self.context,
                self.token_counter.as_ref(),
                react_prompt,
                native,
                Some(&self.budget_warned),
            )
        })
    }

    /// `f` of the tools the next request offers, as a token budget counts them: the text
    /// ReAct prompt in text mode, else the definitions, which native mode sends.
    fn with_offered_tools<R>(&self, f: impl FnOnce(Option<&str>, &[ToolDefinition]) -> R) -> R {
        let react = self.uses_text_react();
        let tools = self.shared.last_good_tool_view();
        let native: &[ToolDefinition] = if react { &[] } else { &tools.definitions };
        f(react.then_some(tools.react_prompt.as_str()), native)
    }

    /// What memory holds: the generation the history was read at (0 for a session not
    /// stored yet) and the number of messages in memory. Equal to storage's
    /// [`load_revision`](ConversationStorage::load_revision) unless another writer wrote
    /// since the session last read.
    pub fn revision(&self) -> Revision {
        Revision {
            generation: self.generation,
            len: self.history.len(),
        }
    }

    /// Re-reads the history from storage, dropping anything in memory that was not stored.
    ///
    /// Waits first for a storage write of this session that is still running because the
    /// future that started it was dropped (a cancelled turn), so what it reads includes
    /// that write if it landed.
    pub async fn reload(&mut self) -> Result<()> {
        self.refresh().await?;
        self.needs_reload = false;
        Ok(())
    }

    /// Re-reads the history if storage holds what memory does not: messages another
    /// writer (another process, another front end) stored since this session last read or
    /// wrote, or a rewrite or delete. Returns whether it re-read. Each turn does this
    /// first, so the model sees the whole stored conversation; call it before showing
    /// [`history`](Self::history) between turns.
    ///
    /// Costs one [`session_info`](ConversationStorage::session_info) call, and a load only
    /// when something changed.
    pub async fn catch_up(&mut self) -> Result<bool> {
        drop(self.in_flight.lock().await);
        let stored = self.shared.storage.session_info(self.id.as_str()).await?;
        let mine = self.revision();
        let unchanged = match stored {
            Some(info) => info.generation == mine.generation && info.message_count == mine.len,
            None => mine.len == 0,
        };
        if !unchanged {
            self.reload().await?;
        }
        Ok(!unchanged)
    }
}

impl fmt::Debug for AgentSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSession")
            .field("session_id", &self.id.as_str())
            .field("messages", &self.history.len())
            .field("generation", &self.generation)
            .field("model", &self.shared.llm.model())
            .field("storage", &self.shared.storage.backend_name())
            .field("tools", self.shared.executor.tools())
            .field("max_iterations", &self.shared.max_iterations)
            .field("context", &self.context)
            .field("observer", &self.shared.observer.is_some())
            .finish_non_exhaustive()
    }
}
