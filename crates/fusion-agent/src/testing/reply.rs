//! What a [`MockLlmServer`](super::MockLlmServer) is scripted with ([`MockReply`],
//! [`MockToolCall`], [`MockDelta`], [`MockStreamEnd`]) and what it records
//! ([`RecordedRequest`]).

use std::time::Duration;

use serde_json::Value;

/// One scripted answer of a [`MockLlmServer`](super::MockLlmServer).
///
/// `Text` and `ToolCalls` are served whole to a plain request and as server-sent events to
/// a request with `"stream": true`; `Status` and `Raw` are never streamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MockReply {
    /// A 200 with an assistant message holding this text.
    Text(String),
    /// A 200 with an assistant message that calls tools (`content` may be empty).
    ToolCalls {
        /// Text sent alongside the calls; empty sends `null`.
        content: String,
        /// The calls.
        calls: Vec<MockToolCall>,
    },
    /// An OpenAI-shaped error body with this status, and `Retry-After` when given.
    Status {
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` header's value, sent verbatim: delta-seconds (`"2"`) or an
        /// HTTP date (`"Wed, 21 Oct 2015 07:28:00 GMT"`).
        retry_after: Option<String>,
    },
    /// Exactly this status and body (served as `application/json` whatever it is).
    Raw {
        /// The HTTP status.
        status: u16,
        /// The body, verbatim.
        body: String,
    },
    /// A reply that breaks off partway, for testing how a client copes with a stream that
    /// never finishes.
    ///
    /// To a streaming request: the role chunk, one chunk per delta (exactly as given, not
    /// split further), then `end` — no `finish_reason`, no usage, no `[DONE]`. To a plain
    /// request there are no deltas to show, so only `end` applies: `Stall` never answers,
    /// `Close` drops the connection before the body is complete, `Error` is a 500 with
    /// that message.
    Partial {
        /// What is sent before the stream breaks off.
        deltas: Vec<MockDelta>,
        /// How it breaks off.
        end: MockStreamEnd,
    },
    /// `reply`, late: a slow first token.
    ///
    /// To a streaming request the status and headers go out at once and the first chunk
    /// after `delay`; to a plain request (or when `reply` is an error, which is never
    /// streamed) the whole answer comes after `delay`.
    Delayed {
        /// How long the server waits before the first chunk (or the whole answer).
        delay: Duration,
        /// What it then sends.
        reply: Box<MockReply>,
    },
}

impl MockReply {
    /// A text reply.
    pub fn text(text: impl Into<String>) -> Self {
        MockReply::Text(text.into())
    }

    /// A reply calling one tool with `arguments` sent verbatim (they need not be valid JSON).
    pub fn tool_call(name: impl Into<String>, arguments: impl Into<String>) -> Self {
        MockReply::ToolCalls {
            content: String::new(),
            calls: vec![MockToolCall::new(name, arguments)],
        }
    }

    /// A whole (not streamed) reply of `content` that ended for `finish_reason`, such as
    /// `length` (the output token limit) or `content_filter`: a [`MockReply::Raw`], so
    /// only for a client that does not stream.
    pub fn finished(content: &str, finish_reason: &str) -> Self {
        let body = serde_json::json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "model": "mock-model",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }],
        });
        MockReply::Raw {
            status: 200,
            body: body.to_string(),
        }
    }

    /// An error status with an OpenAI-shaped body.
    pub fn status(status: u16) -> Self {
        MockReply::Status {
            status,
            retry_after: None,
        }
    }

    /// A reply that sends `deltas` and then breaks off as `end` says.
    pub fn partial(deltas: impl IntoIterator<Item = MockDelta>, end: MockStreamEnd) -> Self {
        MockReply::Partial {
            deltas: deltas.into_iter().collect(),
            end,
        }
    }

    /// `reply` with its first chunk (or, unstreamed, all of it) sent after `delay`.
    pub fn delayed(delay: Duration, reply: MockReply) -> Self {
        MockReply::Delayed {
            delay,
            reply: Box::new(reply),
        }
    }
}

/// One tool call in a [`MockReply::ToolCalls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockToolCall {
    /// The call id; `None` lets the server number it (`call_1`, `call_2`, ...).
    pub id: Option<String>,
    /// The tool's name.
    pub name: String,
    /// The raw arguments string.
    pub arguments: String,
}

impl MockToolCall {
    /// A call with a server-assigned id.
    pub fn new(name: impl Into<String>, arguments: impl Into<String>) -> Self {
        Self {
            id: None,
            name: name.into(),
            arguments: arguments.into(),
        }
    }
}

/// One chunk of a streamed reply, as [`MockReply::Partial`] scripts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MockDelta {
    /// A piece of the assistant's text: `"delta": {"content": ...}`.
    Text(String),
    /// The opening of a tool call: its index, id, type `function`, name and empty
    /// arguments.
    ToolCallStart {
        /// The call's position in the reply's `tool_calls`.
        index: usize,
        /// The call id.
        id: String,
        /// The tool's name.
        name: String,
    },
    /// A piece of the arguments of the call at `index`, sent verbatim.
    ToolCallArguments {
        /// The call's position in the reply's `tool_calls`.
        index: usize,
        /// The piece of the arguments string.
        fragment: String,
    },
}

impl MockDelta {
    /// A piece of text.
    pub fn text(text: impl Into<String>) -> Self {
        MockDelta::Text(text.into())
    }

    /// The opening of tool call `index`.
    pub fn tool_call_start(index: usize, id: impl Into<String>, name: impl Into<String>) -> Self {
        MockDelta::ToolCallStart {
            index,
            id: id.into(),
            name: name.into(),
        }
    }

    /// A piece of the arguments of tool call `index`.
    pub fn tool_call_arguments(index: usize, fragment: impl Into<String>) -> Self {
        MockDelta::ToolCallArguments {
            index,
            fragment: fragment.into(),
        }
    }
}

/// How a [`MockReply::Partial`] breaks off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MockStreamEnd {
    /// The connection stays open and nothing more is sent until the client goes away, as
    /// when a model hangs: for testing cancellation mid-reply.
    Stall,
    /// The connection is dropped mid-reply, as when a proxy or the server dies.
    Close,
    /// An error event, `data: {"error": {"message": ..., "type": "server_error"}}`, then the
    /// stream ends normally (no `[DONE]`), as OpenAI-compatible servers report a failure
    /// after the status line has gone out.
    Error(String),
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The JSON body (a JSON string holding the raw text if the body was not JSON).
    pub body: Value,
    /// The request headers, names lowercase, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
