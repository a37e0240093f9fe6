//! The request handler of [`MockLlmServer`](super::MockLlmServer): the shared script,
//! the `POST /v1/chat/completions` route, and how a [`MockReply`] becomes an HTTP reply.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::reply::{MockReply, RecordedRequest};

pub(super) type Rule = Arc<dyn Fn(&Value) -> MockReply + Send + Sync>;

/// Mutable script and records, behind one short-held lock.
pub(super) struct Script {
    pub queue: VecDeque<MockReply>,
    pub default: Option<MockReply>,
    pub rule: Option<Rule>,
    pub api_key: Option<String>,
    pub record: bool,
    pub requests: Vec<RecordedRequest>,
}

/// The state the handler and the [`MockLlmServer`](super::MockLlmServer) share.
pub(super) struct Shared {
    script: Mutex<Script>,
    /// Requests received, including rejected ones.
    pub count: AtomicUsize,
    /// Nanoseconds spent inside the handler, summed over requests.
    pub server_nanos: AtomicU64,
    next_call_id: AtomicU64,
}

impl Shared {
    /// An empty script that records requests.
    pub fn new() -> Self {
        Shared {
            script: Mutex::new(Script {
                queue: VecDeque::new(),
                default: None,
                rule: None,
                api_key: None,
                record: true,
                requests: Vec::new(),
            }),
            count: AtomicUsize::new(0),
            server_nanos: AtomicU64::new(0),
            next_call_id: AtomicU64::new(1),
        }
    }

    /// The script and records, locked.
    pub fn script(&self) -> MutexGuard<'_, Script> {
        // A panic while holding the lock cannot leave the script half-updated in a way
        // that matters to a test, so a poisoned lock is still usable.
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The chat-completions route over `shared`.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        // A 10,000-message history is several MB; axum's 2 MB default would refuse it.
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let response = handle(&shared, &headers, &body);
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    shared.server_nanos.fetch_add(nanos, Ordering::SeqCst);
    response
}

fn handle(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    shared.count.fetch_add(1, Ordering::SeqCst);
    let request: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    let (reply, rule) = {
        let mut script = shared.script();
        if script.record {
            script.requests.push(RecordedRequest {
                body: request.clone(),
                headers: headers
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
            });
        }
        if let Some(key) = &script.api_key {
            let expected = format!("Bearer {key}");
            let given = headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes);
            if given != Some(expected.as_bytes()) {
                return error_response(401, "Incorrect API key provided.", "invalid_api_key", None);
            }
        }
        if !request.is_object() {
            return error_response(
                400,
                "mock: the request body is not a JSON object",
                "invalid_request_error",
                None,
            );
        }
        match script.queue.pop_front() {
            Some(reply) => (Some(reply), None),
            None => (script.default.clone(), script.rule.clone()),
        }
    };
    // The rule runs outside the lock: it may be slow, and must not block other requests.
    let reply = match (reply, rule) {
        (Some(reply), _) => reply,
        (None, Some(rule)) => rule(&request),
        (None, None) => {
            return error_response(
                500,
                "mock script exhausted: the test queued fewer replies than the client asked \
                 for (queue more with push_* or set a default with set_default)",
                "mock_script_exhausted",
                None,
            );
        }
    };
    reply_response(shared, &request, reply, body.len())
}

fn reply_response(
    shared: &Shared,
    request: &Value,
    reply: MockReply,
    request_len: usize,
) -> Response {
    let (message, finish_reason) = match reply {
        MockReply::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
        MockReply::ToolCalls { content, calls } => {
            let calls: Vec<Value> = calls
                .into_iter()
                .map(|call| {
                    let id = call.id.unwrap_or_else(|| {
                        format!(
                            "call_{}",
                            shared.next_call_id.fetch_add(1, Ordering::SeqCst)
                        )
                    });
                    json!({"id": id, "type": "function",
                           "function": {"name": call.name, "arguments": call.arguments}})
                })
                .collect();
            let content = if content.is_empty() {
                Value::Null
            } else {
                Value::String(content)
            };
            (
                json!({"role": "assistant", "content": content, "tool_calls": calls}),
                "tool_calls",
            )
        }
        MockReply::Status {
            status,
            retry_after,
        } => {
            let message = format!("mock error: HTTP {status}");
            return error_response(status, &message, "mock_error", retry_after);
        }
        MockReply::Raw { status, body } => {
            return (
                status_code(status),
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
    };
    // Rough token counts (4 bytes a token) so clients that log usage have something real.
    let completion_len = message.to_string().len();
    let (prompt_tokens, completion_tokens) = (request_len / 4, completion_len / 4 + 1);
    let body = json!({
        "id": format!("chatcmpl-mock-{}", shared.count.load(Ordering::SeqCst)),
        "object": "chat.completion",
        "created": 0,
        "model": request.get("model").cloned().unwrap_or(Value::from("mock")),
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(status: u16, message: &str, code: &str, retry_after: Option<String>) -> Response {
    let body = json!({"error": {"message": message, "type": code, "code": code}}).to_string();
    let mut response = (
        status_code(status),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    // A value that is not a valid header (a test's typo) is left out rather than
    // failing the reply: the client then sees a plain error status.
    if let Some(value) = retry_after.and_then(|v| HeaderValue::try_from(v).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
