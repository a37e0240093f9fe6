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

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fusion_core::{ChatMessage, ConversationStorage, Error, Result, SessionId};

use crate::context::{ContextPolicy, TokenCounter, build_view, counter_for_model};
use crate::events::{AgentEvent, EventObserver};
use crate::executor::{DEFAULT_TOOL_TIMEOUT, ExecutorConfig, ToolExecutor};
use crate::llm::{LlmClient, SamplingOptions, ToolDefinition};
use crate::openai::OpenAiClient;
use crate::react_text::render_react_prompt;
use crate::storage_source::StorageSource;
use crate::tools::ToolRegistry;
use crate::view::complete_view;

/// The iteration limit of [`AgentSession::send_message`] unless configured otherwise.
pub const DEFAULT_MAX_ITERATIONS: usize = 10;

/// The system prompt unless configured otherwise.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant that can work with \
    files in the user's workspace through the tools you are given. Use a tool when the task \
    needs it, and answer directly when it does not. Paths are relative to the workspace root. \
    When a tool reports an error, read it, fix the call, or explain the problem to the user.";

/// What one turn ([`AgentSession::send_message`]) produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    /// True when the model gave a final answer; false when the iteration limit stopped it.
    pub success: bool,
    /// The final answer, or, without one, an explanation of why the turn stopped.
    pub result: String,
    /// Every tool call of the turn, in order.
    pub steps: Vec<Step>,
    /// How many LLM requests the turn made.
    pub iterations: usize,
}

/// One tool call made during a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The tool the model called.
    pub tool: String,
    /// The arguments exactly as the model wrote them (possibly invalid JSON).
    pub arguments: String,
    /// What the model was shown: the tool's output or an `Error: ...` explanation.
    pub observation: String,
    /// Whether the tool ran and succeeded.
    pub success: bool,
    /// The iteration (1-based LLM request of the turn) that asked for the call.
    pub iteration: usize,
    /// How long the call took.
    pub duration: Duration,
}

/// A persistent conversation with the agent, for one session id.
///
/// Built with [`AgentSession::builder`]. Every message is appended to storage as soon as
/// it exists; the copy in memory ([`history`](Self::history)) is what the session has
/// stored. If a turn fails or its future is dropped mid-flight, the next turn first
/// re-reads the history from storage, so the two never drift apart.
pub struct AgentSession {
    pub(crate) id: SessionId,
    pub(crate) history: Vec<ChatMessage>,
    pub(crate) llm: Arc<dyn LlmClient>,
    pub(crate) executor: ToolExecutor,
    pub(crate) storage: Arc<dyn ConversationStorage>,
    pub(crate) system_prompt: String,
    pub(crate) max_iterations: usize,
    pub(crate) sampling: SamplingOptions,
    /// Computed once: tools do not change during a session.
    pub(crate) definitions: Vec<ToolDefinition>,
    /// The text ReAct instructions for these tools, used when the client lacks native tools.
    pub(crate) react_prompt: String,
    /// Set while a turn runs; still set at the next turn when the last one failed or was
    /// cancelled, in which case memory may disagree with storage and is reloaded.
    pub(crate) needs_reload: bool,
    /// What part of the history requests carry (see [`crate::context`]).
    pub(crate) context: ContextPolicy,
    /// Counts tokens for the context policy's budget and thresholds.
    pub(crate) token_counter: Arc<dyn TokenCounter>,
    /// Hears about tool calls as they run (see [`crate::events`]).
    pub(crate) observer: Option<EventObserver>,
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
        self.executor.tools()
    }

    /// The system prompt a new conversation starts with.
    pub fn system_prompt(&self) -> &str {
        &self.system_prompt
    }

    /// The default iteration limit of [`send_message`](Self::send_message).
    pub fn max_iterations(&self) -> usize {
        self.max_iterations
    }

    /// Whether turns use the text ReAct format (the client has no native tool calling).
    pub fn uses_text_react(&self) -> bool {
        !self.llm.supports_native_tools()
    }

    /// Runs one turn with the default iteration limit; see
    /// [`send_message_with_iterations`](Self::send_message_with_iterations).
    pub async fn send_message(&mut self, message: &str) -> Result<TaskResult> {
        self.send_message_with_iterations(message, self.max_iterations)
            .await
    }

    /// Runs one turn: stores `message`, then asks the model, runs the tools it calls and
    /// asks again, until it answers without calling a tool or `max_iterations` requests
    /// were made.
    ///
    /// Tool failures are shown to the model, not returned. `Err` means the LLM or the
    /// storage failed (or `max_iterations` is 0); everything stored before that stays
    /// stored and consistent, and the session can be used again.
    pub async fn send_message_with_iterations(
        &mut self,
        message: &str,
        max_iterations: usize,
    ) -> Result<TaskResult> {
        self.run_turn(message, max_iterations).await
    }

    /// Deletes the conversation, in storage and in memory. The next message starts a new
    /// one, with the system prompt.
    pub async fn clear_history(&mut self) -> Result<()> {
        self.storage.delete(self.id.as_str()).await?;
        self.history.clear();
        self.needs_reload = false;
        tracing::info!(session_id = %self.id, "history cleared");
        Ok(())
    }

    /// Re-reads the history from storage, dropping anything in memory that was not stored.
    pub async fn reload(&mut self) -> Result<()> {
        self.history = self.storage.load(self.id.as_str()).await?;
        self.needs_reload = false;
        Ok(())
    }

    /// The messages the next LLM request would carry.
    ///
    /// This is the single place where the stored history is shaped into what the model
    /// sees: the [context policy](crate::context) first, then [`crate::view`]. It borrows
    /// the history, so it costs a pointer per message (plus token counts for the messages a
    /// token budget keeps).
    pub fn request_view(&self) -> Vec<Cow<'_, ChatMessage>> {
        let react = self.uses_text_react().then_some(self.react_prompt.as_str());
        let shaped = build_view(&self.history, &self.context, self.token_counter.as_ref());
        complete_view(shaped, react)
    }
}

impl fmt::Debug for AgentSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSession")
            .field("session_id", &self.id.as_str())
            .field("messages", &self.history.len())
            .field("model", &self.llm.model())
            .field("storage", &self.storage.backend_name())
            .field("tools", self.executor.tools())
            .field("max_iterations", &self.max_iterations)
            .field("context", &self.context)
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

/// Configures and builds an [`AgentSession`]; see [`AgentSession::builder`].
///
/// `storage` is required; the LLM defaults to [`OpenAiClient::from_env`]. Without [`tools`](Self::tools), the session offers
/// the built-in file tools confined to [`workspace_roots`](Self::workspace_roots) (the
/// current directory unless set).
#[must_use]
pub struct SessionBuilder {
    session_id: String,
    llm: Option<Arc<dyn LlmClient>>,
    storage: Option<Box<dyn StorageSource>>,
    tools: Option<ToolRegistry>,
    system_prompt: String,
    workspace_roots: Option<Vec<PathBuf>>,
    max_iterations: usize,
    tool_timeout: Duration,
    sampling: SamplingOptions,
    context: ContextPolicy,
    token_counter: Option<Arc<dyn TokenCounter>>,
    observer: Option<EventObserver>,
}

impl SessionBuilder {
    /// A builder for session `session_id` with default settings.
    pub fn new(session_id: impl Into<String>) -> Self {
        Self {
            session_id: session_id.into(),
            llm: None,
            storage: None,
            tools: None,
            system_prompt: DEFAULT_SYSTEM_PROMPT.to_owned(),
            workspace_roots: None,
            max_iterations: DEFAULT_MAX_ITERATIONS,
            tool_timeout: DEFAULT_TOOL_TIMEOUT,
            sampling: SamplingOptions::default(),
            context: ContextPolicy::default(),
            token_counter: None,
            observer: None,
        }
    }

    /// The LLM the session talks to; [`OpenAiClient::from_env`] unless set.
    pub fn llm(mut self, llm: Arc<dyn LlmClient>) -> Self {
        self.llm = Some(llm);
        self
    }

    /// Where the conversation is stored (required): an open storage (`Arc<S>` or
    /// `Arc<dyn ConversationStorage>`), or any other [`StorageSource`], such as the
    /// facade's `StorageType`, which is opened by [`build`](Self::build).
    pub fn storage(mut self, storage: impl StorageSource + 'static) -> Self {
        self.storage = Some(Box::new(storage));
        self
    }

    /// The tools offered to the model, instead of the built-in file tools.
    pub fn tools(mut self, tools: ToolRegistry) -> Self {
        self.tools = Some(tools);
        self
    }

    /// The system prompt, stored once as the first message of a new conversation. An empty
    /// prompt stores none.
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = prompt.into();
        self
    }

    /// Confines the built-in file tools to these directories (the first one resolves
    /// relative paths). Cannot be combined with [`tools`](Self::tools).
    pub fn workspace_roots<P: Into<PathBuf>>(mut self, roots: impl IntoIterator<Item = P>) -> Self {
        self.workspace_roots = Some(roots.into_iter().map(Into::into).collect());
        self
    }

    /// The default iteration limit (LLM requests per turn); 10 unless set.
    pub fn max_iterations(mut self, iterations: usize) -> Self {
        self.max_iterations = iterations;
        self
    }

    /// How long one tool call may run; 30 s unless set.
    pub fn tool_timeout(mut self, timeout: Duration) -> Self {
        self.tool_timeout = timeout;
        self
    }

    /// Sampling options sent with every request.
    pub fn sampling(mut self, options: SamplingOptions) -> Self {
        self.sampling = options;
        self
    }

    /// What part of the history requests carry: everything unless set. See
    /// [`crate::context`] and [`AgentSession::set_max_history_length`] and friends.
    pub fn context_policy(mut self, policy: ContextPolicy) -> Self {
        self.context = policy;
        self
    }

    /// How the context policy counts tokens; [`counter_for_model`] of the client's model
    /// unless set.
    pub fn token_counter(mut self, counter: Arc<dyn TokenCounter>) -> Self {
        self.token_counter = Some(counter);
        self
    }

    /// Calls `observer` as each tool call starts and finishes, so an interface can show
    /// progress during a turn instead of only its [`TaskResult`]. It runs on the agent's
    /// task: keep it quick.
    ///
    /// ```
    /// use fusion_agent::{AgentEvent, SessionBuilder};
    ///
    /// let builder = SessionBuilder::new("user-123").on_event(|event| match event {
    ///     AgentEvent::ToolCallStarted { tool, arguments, .. } => eprintln!("-> {tool}({arguments})"),
    ///     AgentEvent::ToolCallFinished(step) => eprintln!("<- {}", step.observation),
    ///     _ => {}
    /// });
    /// ```
    pub fn on_event(mut self, observer: impl Fn(&AgentEvent<'_>) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Validates the settings, loads the session's stored history and returns the session.
    ///
    /// Fails with [`Error::InvalidSessionId`] for a bad id, [`Error::Config`] for a missing
    /// client or storage, a zero iteration limit or an unusable workspace root, and with
    /// the storage's error if the history cannot be loaded.
    pub async fn build(self) -> Result<AgentSession> {
        let id = SessionId::new(self.session_id)?;
        let storage = self.storage.ok_or_else(|| {
            Error::Config("an AgentSession needs storage: call .storage(...)".into())
        })?;
        if self.max_iterations == 0 {
            return Err(Error::Config("max_iterations must be at least 1".into()));
        }
        let llm: Arc<dyn LlmClient> = match self.llm {
            Some(llm) => llm,
            None => Arc::new(OpenAiClient::from_env()?),
        };
        let storage = storage.open_storage().await?;
        let tools = match (self.tools, self.workspace_roots) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "workspace_roots configures the built-in file tools, which .tools(...) \
                     replaces; add them to your registry with \
                     ToolRegistry::with_file_tools(roots) instead"
                        .into(),
                ));
            }
            (Some(tools), None) => tools,
            (None, Some(roots)) => ToolRegistry::with_file_tools(roots)?,
            (None, None) => {
                let dir = std::env::current_dir().map_err(|e| {
                    Error::Config(format!("the current directory cannot be used: {e}"))
                })?;
                ToolRegistry::with_file_tools([dir])?
            }
        };
        let history = storage.load(id.as_str()).await?;
        tracing::info!(
            session_id = %id,
            messages = history.len(),
            backend = storage.backend_name(),
            model = llm.model(),
            "session opened"
        );
        let definitions = tools.definitions();
        let react_prompt = render_react_prompt(&definitions);
        let token_counter = self
            .token_counter
            .unwrap_or_else(|| counter_for_model(llm.model()));
        Ok(AgentSession {
            id,
            history,
            llm,
            executor: ToolExecutor::new(
                tools,
                ExecutorConfig {
                    tool_timeout: self.tool_timeout,
                },
            ),
            storage,
            system_prompt: self.system_prompt,
            max_iterations: self.max_iterations,
            sampling: self.sampling,
            definitions,
            react_prompt,
            needs_reload: false,
            context: self.context,
            token_counter,
            observer: self.observer,
        })
    }
}

impl fmt::Debug for SessionBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionBuilder")
            .field("session_id", &self.session_id)
            .field("tools", &self.tools)
            .field("workspace_roots", &self.workspace_roots)
            .field("max_iterations", &self.max_iterations)
            .field("tool_timeout", &self.tool_timeout)
            .field("context", &self.context)
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}
