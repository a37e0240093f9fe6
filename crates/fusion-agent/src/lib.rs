//! The Fusion agent: an LLM client trait and OpenAI-compatible client, tools, the ReAct
//! loop, and `AgentSession`, which keeps a persistent multi-turn conversation.

mod agent_loop;
pub mod context;
pub mod events;
pub mod executor;
pub mod llm;
pub mod openai;
pub mod react_text;
pub mod session;
mod session_context;
mod storage_source;
#[cfg(feature = "mock-server")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock-server")))]
pub mod testing;
pub mod tools;
pub mod view;

pub use context::{ContextPolicy, PruneReport, SummaryReport, TokenCounter};
pub use events::AgentEvent;
pub use executor::{ExecutorConfig, ToolExecutor, ToolOutcome};
pub use llm::{ChatRequest, ChatResponse, LlmClient, SamplingOptions, ToolDefinition, Usage};
pub use openai::{OpenAiClient, OpenAiConfig};
pub use react_text::{ReactStep, parse_react, render_react_prompt};
pub use session::{AgentSession, SessionBuilder, Step, TaskResult};
pub use storage_source::StorageSource;
pub use tools::{Tool, ToolRegistry, Workspace};
