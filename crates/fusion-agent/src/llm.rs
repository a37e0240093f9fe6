//! The `LlmClient` trait and the request and response types every client speaks.
//!
//! The agent loop talks to models only through [`LlmClient`]; `OpenAiClient` is the
//! bundled implementation for any OpenAI-compatible chat-completions endpoint. A request
//! borrows the conversation (`Cow`) so building one from a 10,000-message history costs
//! pointers, not copies.

use std::borrow::Cow;

use async_trait::async_trait;
use fusion_core::{ChatMessage, Result};
use serde::{Deserialize, Serialize};

/// A tool the model may call, as advertised in the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// The tool's name, as the model must spell it.
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// A JSON Schema object describing the arguments.
    pub parameters: serde_json::Value,
}

/// Sampling options for one request. `None` leaves the server's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingOptions {
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Upper bound on generated tokens.
    pub max_tokens: Option<u32>,
}

/// One chat-completions request: the messages to send, the tools on offer, and options.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest<'a> {
    /// The conversation as the model should see it (already shaped by context policies).
    pub messages: Vec<Cow<'a, ChatMessage>>,
    /// Tools the model may call; empty means no tool calling.
    pub tools: Vec<ToolDefinition>,
    /// Sampling options.
    pub options: SamplingOptions,
}

/// Token accounting reported by the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
}

/// The model's answer: one assistant message, possibly with tool calls.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The assistant message (role is always `assistant`).
    pub message: ChatMessage,
    /// Token usage, when the server reports it.
    pub usage: Option<Usage>,
    /// Why generation stopped (`stop`, `tool_calls`, `length`, ...), when reported.
    pub finish_reason: Option<String>,
}

/// A chat model the agent can talk to.
///
/// Implementations own retries and timeouts: an `Err` from [`chat`](Self::chat) is final
/// for that request.
#[async_trait]
pub trait LlmClient: Send + Sync {
    /// Sends one request and returns the model's reply.
    async fn chat(&self, request: &ChatRequest<'_>) -> Result<ChatResponse>;

    /// The model name requests go to, for logs and token counting.
    fn model(&self) -> &str;

    /// Whether the model supports native tool calling. When false the agent uses the text
    /// ReAct format (Thought / Action / Action Input / Observation / Final Answer) instead.
    fn supports_native_tools(&self) -> bool {
        true
    }
}
