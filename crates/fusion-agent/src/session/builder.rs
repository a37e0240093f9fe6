//! [`SessionBuilder`]: the settings of a new [`AgentSession`], checked and turned into one
//! by [`build`](SessionBuilder::build), which also opens the storage and loads the history.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fusion_core::{Error, Result, SessionId};

use super::turn::check_max_iterations;
use super::{AgentSession, Shared};
use crate::context::counter_for_model;
use crate::context::policy::ContextPolicy;
use crate::context::tokens::TokenCounter;
use crate::events::{AgentEvent, EventObserver};
use crate::executor::{DEFAULT_TOOL_TIMEOUT, ExecutorConfig, ToolExecutor};
use crate::llm::{LlmClient, RequestCache, SamplingOptions};
use crate::openai::OpenAiClient;
use crate::react_text::render_react_prompt;
use crate::storage_source::StorageSource;
use crate::tools::registry::ToolRegistry;

/// The iteration limit of [`AgentSession::send_message`] unless configured otherwise.
pub const DEFAULT_MAX_ITERATIONS: usize = 10;

/// The system prompt unless configured otherwise.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant that can work with \
    files in the user's workspace through the tools you are given. Use a tool when the task \
    needs it, and answer directly when it does not. Paths are relative to the workspace root. \
    When a tool reports an error, read it, fix the call, or explain the problem to the user.";

/// Configures and builds an [`AgentSession`]; see [`AgentSession::builder`].
///
/// `storage` is required; the LLM defaults to [`OpenAiClient::from_env`]. Without
/// [`tools`](Self::tools), the session offers the built-in file tools confined to
/// [`workspace_roots`](Self::workspace_roots) (the current directory unless set).
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

    /// Calls `observer` with every [`AgentEvent`] of every turn (text as it is written,
    /// each tool call as it starts and finishes, ...), however the turn is run, so an
    /// interface can show progress instead of only the [`TaskResult`](crate::TaskResult).
    /// It runs on the agent's task: keep it quick.
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
    pub fn on_event(mut self, observer: impl Fn(&AgentEvent) + Send + Sync + 'static) -> Self {
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
        check_max_iterations(self.max_iterations)?;
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
        // Read with its revision: the session's writes are conditional on it.
        let (history, revision) = storage.load_revision(id.as_str()).await?;
        tracing::info!(
            session_id = %id,
            messages = history.len(),
            generation = revision.generation,
            backend = storage.backend_name(),
            model = llm.model(),
            "session opened"
        );
        let definitions = tools.definitions();
        let react_prompt = render_react_prompt(&definitions);
        let token_counter = self
            .token_counter
            .unwrap_or_else(|| counter_for_model(llm.model()));
        let shared = Shared {
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
            observer: self.observer,
        };
        Ok(AgentSession {
            id,
            history,
            generation: revision.generation,
            in_flight: Arc::default(),
            shared: Arc::new(shared),
            context: self.context,
            token_counter,
            needs_reload: false,
            native_tools_rejected: false,
            request_cache: RequestCache::new(),
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
