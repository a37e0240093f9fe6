//! What a [`MockLlmServer`](super::MockLlmServer) is scripted with ([`MockReply`],
//! [`MockToolCall`]) and what it records ([`RecordedRequest`]).

use serde_json::Value;

/// One scripted answer of a [`MockLlmServer`](super::MockLlmServer).
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

    /// An error status with an OpenAI-shaped body.
    pub fn status(status: u16) -> Self {
        MockReply::Status {
            status,
            retry_after: None,
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
