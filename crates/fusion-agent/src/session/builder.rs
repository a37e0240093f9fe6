//! [`SessionBuilder`]: the settings of a new [`AgentSession`], checked and turned into one
//! by [`build`](SessionBuilder::build), which also opens the storage and loads the history.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fusion_core::{Error, Expiry, Result, SessionId, SessionMeta};
use serde_json::Value;

use super::creation::{Creation, TitlePolicy};
use super::turn::check_max_iterations;
use super::{AgentSession, Shared, ToolView, Unread};
use crate::approval::ApprovalPolicy;
use crate::context::counter_for_model;
use crate::context::policy::ContextPolicy;
use crate::context::tokens::TokenCounter;
use crate::events::{AgentEvent, EventObserver};
use crate::executor::{
    DEFAULT_MAX_TOOL_OUTPUT_BYTES, DEFAULT_TOOL_TIMEOUT, ExecutorConfig, ToolExecutor,
};
use crate::llm::{LlmClient, RequestCache, SamplingOptions};
use crate::openai::OpenAiClient;
use crate::storage_source::StorageSource;
use crate::tools::registry::ToolRegistry;
use crate::tools::tool::ToolSource;
use futures::future::BoxFuture;

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
    max_tool_output_bytes: usize,
    sampling: SamplingOptions,
    context: ContextPolicy,
    token_counter: Option<Arc<dyn TokenCounter>>,
    observer: Option<EventObserver>,
    owner: Option<String>,
    /// Title, tags and data for a session the agent creates.
    meta: SessionMeta,
    title_policy: TitlePolicy,
    approval: Option<ApprovalPolicy>,
    /// Sources of tools started when the session is built (MCP servers).
    source_loaders: Vec<SourceLoader>,
}

/// Starts sources of tools when a session is built: see [`SessionBuilder::tool_sources_from`].
type SourceLoader = BoxFuture<'static, Result<Vec<Arc<dyn ToolSource>>>>;

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
            max_tool_output_bytes: DEFAULT_MAX_TOOL_OUTPUT_BYTES,
            sampling: SamplingOptions::default(),
            context: ContextPolicy::default(),
            token_counter: None,
            observer: None,
            owner: None,
            meta: SessionMeta::new(),
            title_policy: TitlePolicy::default(),
            approval: None,
            source_loaders: Vec::new(),
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

    /// Adds the tool sources `load` resolves to, awaited when the session is built, after
    /// the tools of [`tools`](Self::tools) or the built-in file tools: how servers that
    /// must start first (MCP servers, `fusion_mcp`'s `mcp_config`) join a session. A
    /// failing `load` fails the build with its error.
    pub fn tool_sources_from(
        mut self,
        load: impl Future<Output = Result<Vec<Arc<dyn ToolSource>>>> + Send + 'static,
    ) -> Self {
        self.source_loaders.push(Box::pin(load));
        self
    }

    /// Checks tool calls against `policy` before they run: some wait for a person's
    /// decision, some are refused (see [`ApprovalPolicy`]). Without it every call runs,
    /// as before. Building fails when the policy may ask and has no approver.
    pub fn approval(mut self, policy: ApprovalPolicy) -> Self {
        self.approval = Some(policy);
        self
    }

    /// How long one tool call may run; 30 s unless set.
    pub fn tool_timeout(mut self, timeout: Duration) -> Self {
        self.tool_timeout = timeout;
        self
    }

    /// The most bytes of one tool call's output the session stores and shows the model;
    /// a longer one keeps its start and end around a note of what was left out
    /// ([`ExecutorConfig::max_output_bytes`]). [`DEFAULT_MAX_TOOL_OUTPUT_BYTES`] (1 MiB and
    /// 8 KiB) unless set.
    pub fn max_tool_output_bytes(mut self, bytes: usize) -> Self {
        self.max_tool_output_bytes = bytes;
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

    /// Scopes the session to `owner` (a user or tenant id, checked like a session id): its
    /// storage is wrapped in an [`OwnerScope`](fusion_core::OwnerScope), so the session
    /// only ever reads and writes a session of that owner, and creates it with that owner
    /// in the same write as its first messages. If the id is another owner's session (or
    /// one without an owner), the session starts empty and its first write fails with
    /// [`Error::NotOwner`].
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// The title of the session if the agent creates it. A session that already exists
    /// keeps its own metadata: resuming never rewrites it.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.meta = self.meta.title(title);
        self
    }

    /// Tags for the session if the agent creates it (added to any set before).
    pub fn tags<T: Into<String>>(mut self, tags: impl IntoIterator<Item = T>) -> Self {
        self.meta = self.meta.tags(tags);
        self
    }

    /// One entry of the session's data map, if the agent creates the session.
    pub fn data(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.meta = self.meta.data(key, value);
        self
    }

    /// When the session expires, if the agent creates it: [`Expiry::At`] an instant, or
    /// [`Expiry::Idle`] a span after its last write, which every turn pushes back. Once
    /// expired the session is gone for every reader, and a write starts it afresh; see
    /// [`Expiry`].
    pub fn expiry(mut self, expiry: Expiry) -> Self {
        self.meta = self.meta.expiry(expiry);
        self
    }

    /// Where the title of a session the agent creates comes from when
    /// [`title`](Self::title) sets none: [`TitlePolicy::FirstUserMessage`] titles it
    /// after the first thing the user says. [`TitlePolicy::AsGiven`] unless set.
    ///
    /// Metadata (owner, title, tags, data) is written in the same step as the session's
    /// first messages ([`create_session`](fusion_core::ConversationStorage::create_session)).
    /// A backend that cannot store metadata (a user-written one with only the four methods
    /// of the product description) fails that write with [`Error::Unsupported`] when the
    /// metadata was given here; a title the policy derives is left out there instead.
    pub fn title_policy(mut self, policy: TitlePolicy) -> Self {
        self.title_policy = policy;
        self
    }

    /// Validates the settings, loads the session's stored history and returns the session.
    ///
    /// Fails with [`Error::InvalidSessionId`] for a bad id, [`Error::Config`] for a missing
    /// client or storage, a zero iteration limit, an unusable workspace root or a tool
    /// name offered by two of its tools' owners (a tool source and `.tools(..)`, or two
    /// sources: two MCP servers of one name given in two configurations) or offered by two
    /// tools alike (`functions.read_file` beside a tool named its sendable form) to a
    /// client with native tool calling (the text ReAct mode writes names as they are),
    /// [`Error::InvalidMeta`] for an owner, title, tag or data entry that breaks a rule of
    /// [`SessionMeta::validate`], and with the storage's error if the history cannot be
    /// loaded.
    pub async fn build(self) -> Result<AgentSession> {
        let id = SessionId::new(self.session_id)?;
        let storage = self.storage.ok_or_else(|| {
            Error::Config("an AgentSession needs storage: call .storage(...)".into())
        })?;
        check_max_iterations(self.max_iterations)?;
        if let Some(policy) = &self.approval
            && policy.may_ask()
            && !policy.has_approver()
        {
            return Err(Error::Config(
                "the approval policy asks about some calls but has no approver: set one \
                 with ApprovalPolicy::approver or ask_with"
                    .into(),
            ));
        }
        let llm: Arc<dyn LlmClient> = match self.llm {
            Some(llm) => llm,
            None => Arc::new(OpenAiClient::from_env()?),
        };
        // Checked before storage is opened: a typo in a tag should not cost a connection.
        self.meta.validate()?;
        if let Some(owner) = &self.owner {
            fusion_core::validate_owner(owner)?;
        }
        let (creation, storage) = Creation::new(
            storage.open_storage().await?,
            self.owner,
            self.meta,
            self.title_policy,
        )?;
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
        let mut tools = tools;
        for load in self.source_loaders {
            for source in load.await? {
                tools.register_source(source);
            }
        }
        // Before the names are compared: a tool whose definition panics is an error
        // naming it, not a panic through the caller. Refuses two tools offered alike as
        // native tools too, for a client that offers them so (a session switched to the
        // text ReAct mode later never offers them natively again).
        let tool_view = ToolView::of(&tools)?;
        if llm.supports_native_tools() {
            tool_view.native_definitions()?;
        }
        let tool_view = std::sync::Mutex::new(Arc::new(tool_view));
        tools.refuse_shared_names()?;
        // Read with its revision: the session's writes are conditional on it.
        let (history, revision) = storage.load_revision(id.as_str()).await?;
        tracing::info!(
            session_id = %id,
            owner = creation.owner(),
            messages = history.len(),
            generation = revision.generation,
            backend = storage.backend_name(),
            model = llm.model(),
            "session opened"
        );
        let token_counter = self
            .token_counter
            .unwrap_or_else(|| counter_for_model(llm.model()));
        let shared = Shared {
            llm,
            executor: {
                let executor = ToolExecutor::new(
                    tools,
                    ExecutorConfig {
                        tool_timeout: self.tool_timeout,
                        max_output_bytes: self.max_tool_output_bytes,
                    },
                );
                match self.approval {
                    Some(policy) => executor.with_approval(policy),
                    None => executor,
                }
            },
            storage,
            system_prompt: self.system_prompt,
            max_iterations: self.max_iterations,
            sampling: self.sampling,
            tool_view,
            observer: self.observer,
            creation,
        };
        Ok(AgentSession {
            id,
            history,
            generation: revision.generation,
            unread: Unread::default(),
            in_flight: Arc::default(),
            shared: Arc::new(shared),
            context: self.context,
            token_counter,
            needs_reload: false,
            native_tools_rejected: false,
            request_cache: RequestCache::new(),
            finished_calls: None,
            auto_summary_retry_at: None,
            budget_warned: Default::default(),
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
            .field("max_tool_output_bytes", &self.max_tool_output_bytes)
            .field("context", &self.context)
            .field("observer", &self.observer.is_some())
            .field("owner", &self.owner)
            .field("meta", &self.meta)
            .field("title_policy", &self.title_policy)
            .field("approval", &self.approval)
            .field("tool_source_loaders", &self.source_loaders.len())
            .finish_non_exhaustive()
    }
}
