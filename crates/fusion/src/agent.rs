//! The agent: LLM clients, tools and the ReAct loop behind [`crate::api::session::AgentSession`].
//!
//! Bring your own model by implementing [`LlmClient`], or use [`OpenAiClient`] with any
//! OpenAI-compatible endpoint. Give the agent abilities by implementing [`Tool`] and
//! registering it in a [`ToolRegistry`]; the built-in file tools are confined to workspace
//! roots.

#[doc(inline)]
pub use fusion_agent::{
    AgentSession, ChatRequest, ChatResponse, ExecutorConfig, LlmClient, OpenAiClient, OpenAiConfig,
    ReactStep, SamplingOptions, Step, StorageSource, TaskResult, Tool, ToolDefinition,
    ToolExecutor, ToolOutcome, ToolRegistry, Usage, Workspace, parse_react, render_react_prompt,
};
