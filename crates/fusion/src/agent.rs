//! The agent: LLM clients, tools and the ReAct loop behind [`crate::api::session::AgentSession`].
//!
//! Bring your own model by implementing [`LlmClient`], or use [`OpenAiClient`] with any
//! OpenAI-compatible endpoint. Give the agent abilities by implementing [`Tool`] and
//! registering it in a [`ToolRegistry`]; the built-in file tools are confined to workspace
//! roots. [`context`] shapes what the model sees of a long conversation (sliding window,
//! token budget, pruning, stored summaries) without dropping anything from storage.

#[doc(inline)]
pub use fusion_agent::context;
#[doc(inline)]
pub use fusion_agent::{
    AgentEvent, AgentSession, ChatRequest, ChatResponse, ContextPolicy, ExecutorConfig, LlmClient,
    OpenAiClient, OpenAiConfig, PruneReport, ReactStep, SamplingOptions, Step, StorageSource,
    SummaryReport, TaskResult, TokenCounter, Tool, ToolDefinition, ToolExecutor, ToolOutcome,
    ToolRegistry, Usage, Workspace, parse_react, render_react_prompt,
};
