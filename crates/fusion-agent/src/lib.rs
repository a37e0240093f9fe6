//! The Fusion agent: an LLM client trait and OpenAI-compatible client, tools, the ReAct
//! loop, and `AgentSession`, which keeps a persistent multi-turn conversation.
//!
//! # Public surface
//!
//! Every public item has one path. The crate root holds what building and driving a
//! session needs:
//! - the session: [`AgentSession`], [`SessionBuilder`], [`StorageSource`],
//!   [`DEFAULT_MAX_ITERATIONS`], [`DEFAULT_SYSTEM_PROMPT`]; how a new session is titled:
//!   [`TitlePolicy`], [`title_from_message`], [`AUTO_TITLE_CHARS`];
//! - what a turn reports: [`TaskResult`], [`Step`], [`AgentEvent`];
//! - the model: [`LlmClient`], [`ChatRequest`], [`ChatResponse`], [`SamplingOptions`],
//!   [`ToolDefinition`], [`Usage`], and the bundled [`OpenAiClient`] with [`OpenAiConfig`],
//!   [`DEFAULT_BASE_URL`], [`DEFAULT_MODEL`], [`OLLAMA_BASE_URL`], and [`http_client_builder`],
//!   where every HTTP client of Fusion gets its TLS set-up;
//! - tools: [`Tool`] with its [`ToolEffects`], [`ToolSource`], [`ToolRegistry`],
//!   [`Workspace`], and the [`ToolExecutor`] that runs
//!   calls ([`ExecutorConfig`], [`ToolOutcome`], [`DEFAULT_TOOL_TIMEOUT`],
//!   [`DEFAULT_MAX_TOOL_OUTPUT_BYTES`]);
//! - approval before a call runs: [`ApprovalPolicy`], [`ApprovalMode`], [`Approver`],
//!   [`ApprovalRequest`], [`ApprovalDecision`], [`Approval`], and [`escape_hidden`] for
//!   showing a call to a person as it is;
//! - the text ReAct format: [`ReactStep`], [`parse_react`], [`render_react_prompt`],
//!   [`render_observation`];
//! - the context types a session takes and returns: [`ContextPolicy`], [`PruneSettings`],
//!   [`TokenCounter`], [`PruneReport`], [`SummaryReport`].
//!
//! Two modules are namespaces for going further, and hold nothing the root also holds:
//! - [`context`]: the view (what the model is sent for a request) and the functions
//!   behind the context policies: token counters, context records, pruning plans;
//! - [`tools`]: the built-in file tools and argument checking against a schema.
//!
//! With the `mock-server` feature, [`testing`] has a scripted OpenAI-compatible server.
//!
//! Inside, modules form layers: `llm`, `events`, `escape` and `storage_source` at the bottom;
//! `react_text`, `tools`, `approval`, `executor`, `context` and `openai` over them; `session` on top.

mod approval;
pub mod context;
mod escape;
mod events;
mod executor;
mod http;
mod llm;
mod openai;
mod panics;
mod react_text;
mod session;
mod storage_source;
#[cfg(feature = "mock-server")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock-server")))]
pub mod testing;
pub mod tools;

pub use approval::{
    Approval, ApprovalDecision, ApprovalMode, ApprovalPolicy, ApprovalRequest, Approver,
    DISPLAY_VALUE_CHARS,
};
pub use context::policy::{ContextPolicy, PruneSettings};
pub use context::prune::PruneReport;
pub use context::summary::SummaryReport;
pub use context::tokens::TokenCounter;
pub use escape::escape_hidden;
pub use events::{AgentEvent, Step, TaskResult};
pub use executor::{
    DEFAULT_MAX_TOOL_OUTPUT_BYTES, DEFAULT_TOOL_TIMEOUT, ExecutorConfig, ToolExecutor, ToolOutcome,
};
pub use http::http_client_builder;
pub use llm::{
    ChatDelta, ChatRequest, ChatResponse, ChatStream, LlmClient, RequestCache, SamplingOptions,
    ToolDefinition, Usage, replay_as_deltas,
};
pub use openai::{
    DEFAULT_BASE_URL, DEFAULT_MODEL, OLLAMA_BASE_URL, OpenAiClient, OpenAiConfig,
    rejects_native_tools,
};
pub use react_text::{ReactStep, parse_react, render_observation, render_react_prompt};
pub use session::{
    AUTO_TITLE_CHARS, AgentSession, DEFAULT_MAX_ITERATIONS, DEFAULT_SYSTEM_PROMPT, SessionBuilder,
    TitlePolicy, TurnStream, title_from_message,
};
pub use storage_source::StorageSource;
pub use tools::registry::ToolRegistry;
pub use tools::tool::{Tool, ToolEffects, ToolSource};
pub use tools::workspace::Workspace;
