//! The `LlmClient` trait and the request and response types every client speaks.
//!
//! The agent loop talks to models only through [`LlmClient`]; `OpenAiClient` is the
//! bundled implementation for any OpenAI-compatible chat-completions endpoint. A request
//! borrows the conversation (`Cow`) so building one from a 10,000-message history costs
//! pointers, not copies.
//!
//! A reply can also be streamed ([`LlmClient::chat_stream`]): a [`ChatStream`] of
//! [`ChatDelta`]s (text and tool-call pieces as the model writes them) that always ends,
//! when it succeeds, with [`ChatDelta::Done`] carrying the whole reply. Clients that cannot
//! stream keep working: the default implementation makes one [`chat`](LlmClient::chat)
//! call and replays its reply as deltas.

use std::any::Any;
use std::borrow::Cow;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use fusion_core::{ChatMessage, Result};
use futures::StreamExt;
use futures::stream::{self, BoxStream};
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
    /// Where the client may keep what it worked out for earlier requests of the same
    /// conversation; `None` for a one-off request. An [`AgentSession`](crate::AgentSession)
    /// passes its own.
    pub cache: Option<&'a RequestCache>,
}

/// Room for a client to keep work from one request of a conversation to the next: for
/// [`OpenAiClient`](crate::OpenAiClient), the JSON of the messages it already encoded, so
/// each request of a growing conversation costs O(new messages) to encode.
///
/// What is kept is the client's business (any `Default` type, made on first use and
/// replaced when another type is asked for); a client must check that what it kept still
/// applies to the request at hand, so a cache can never change what is sent.
#[derive(Default)]
pub struct RequestCache {
    slot: Mutex<Option<Box<dyn Any + Send>>>,
}

impl RequestCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the kept `T` (a new `T::default()` if the cache is empty or holds
    /// something else). Requests sharing one cache take turns.
    pub fn with<T: Default + Send + 'static, R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if !slot.as_ref().is_some_and(|kept| kept.is::<T>()) {
            *slot = Some(Box::new(T::default()));
        }
        let kept = slot
            .as_mut()
            .and_then(|kept| kept.downcast_mut::<T>())
            .expect("the slot was just filled with a T");
        f(kept)
    }

    /// Forgets what was kept (memory is released at once).
    pub fn clear(&self) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl std::fmt::Debug for RequestCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let filled = self.slot.lock().map(|slot| slot.is_some()).unwrap_or(false);
        f.debug_struct("RequestCache")
            .field("filled", &filled)
            .finish()
    }
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

impl std::ops::Add for Usage {
    type Output = Usage;

    /// Both requests' tokens (saturating: a sum is a report, never a reason to panic).
    fn add(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.saturating_add(other.prompt_tokens),
            completion_tokens: self
                .completion_tokens
                .saturating_add(other.completion_tokens),
            total_tokens: self.total_tokens.saturating_add(other.total_tokens),
        }
    }
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

/// One piece of a streamed reply, in the order the model wrote it.
///
/// The pieces are for showing progress; [`Done`](Self::Done), the last item of every
/// stream that succeeds, carries the assembled reply, which is what the agent stores.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ChatDelta {
    /// More of the reply's text.
    Text(String),
    /// A tool call began: its position among the reply's calls, its id and the tool's name.
    ToolCallStarted {
        /// The call's position in the reply (calls may be streamed interleaved).
        index: usize,
        /// The call's id (may be empty: the agent numbers calls without one).
        id: String,
        /// The tool's name.
        name: String,
    },
    /// More of the arguments of call `index`, exactly as the model wrote them.
    ToolCallArguments {
        /// The call's position in the reply.
        index: usize,
        /// The next piece of the arguments (JSON text, possibly cut anywhere).
        fragment: String,
    },
    /// The reply is complete: the whole assistant message, usage and finish reason.
    Done(ChatResponse),
}

/// A streamed reply: [`ChatDelta`]s ending with [`ChatDelta::Done`], or an error.
///
/// After an `Err` the stream has nothing more to give. Dropping it cancels the request.
pub type ChatStream<'a> = BoxStream<'a, Result<ChatDelta>>;

/// The deltas a complete `response` would have streamed as: its text, each tool call, and
/// [`ChatDelta::Done`]. What [`LlmClient::chat_stream`]'s default implementation yields.
pub fn replay_as_deltas(response: ChatResponse) -> Vec<ChatDelta> {
    let message = &response.message;
    let mut deltas = Vec::with_capacity(2 + 2 * message.tool_calls.len());
    if !message.content.is_empty() {
        deltas.push(ChatDelta::Text(message.content.clone()));
    }
    for (index, call) in message.tool_calls.iter().enumerate() {
        deltas.push(ChatDelta::ToolCallStarted {
            index,
            id: call.id.clone(),
            name: call.name.clone(),
        });
        if !call.arguments.is_empty() {
            deltas.push(ChatDelta::ToolCallArguments {
                index,
                fragment: call.arguments.clone(),
            });
        }
    }
    deltas.push(ChatDelta::Done(response));
    deltas
}

/// A chat model the agent can talk to.
///
/// Implementations own retries and timeouts: an `Err` from [`chat`](Self::chat) is final
/// for that request, and so is one from a [`chat_stream`](Self::chat_stream).
#[async_trait]
pub trait LlmClient: Send + Sync {
    /// Sends one request and returns the model's reply.
    async fn chat(&self, request: &ChatRequest<'_>) -> Result<ChatResponse>;

    /// Sends one request and streams the model's reply as it is written.
    ///
    /// The default makes one [`chat`](Self::chat) call and replays the reply with
    /// [`replay_as_deltas`], so a client that cannot stream still works everywhere a
    /// stream is expected. A client that streams should retry only until its first delta
    /// was delivered: after that the caller may have shown text, and a failure is an
    /// `Err` in the stream.
    fn chat_stream<'a>(&'a self, request: &'a ChatRequest<'_>) -> ChatStream<'a> {
        stream::once(self.chat(request))
            .flat_map(|reply| match reply {
                Ok(response) => {
                    stream::iter(replay_as_deltas(response).into_iter().map(Ok)).left_stream()
                }
                Err(error) => stream::iter([Err(error)]).right_stream(),
            })
            .boxed()
    }

    /// The model name requests go to, for logs and token counting.
    fn model(&self) -> &str;

    /// Whether the model supports native tool calling. When false the agent uses the text
    /// ReAct format (Thought / Action / Action Input / Observation / Final Answer) instead.
    fn supports_native_tools(&self) -> bool {
        true
    }
}
