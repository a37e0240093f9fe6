//! `MockLlmServer`: a real loopback HTTP server that speaks the OpenAI chat-completions
//! protocol with scripted replies, for tests and benchmarks (feature `mock-server`).
//!
//! Unlike a mock [`LlmClient`](crate::LlmClient), it exercises the real
//! [`OpenAiClient`](crate::OpenAiClient): HTTP, JSON, retries and tool calling all run for
//! real. Replies are queued and served in order; when the queue runs dry the server gives
//! a default reply if one is set, else a 500 saying "mock script exhausted". Every request
//! body is recorded for assertions. Benchmarks use [`MockLlmServer::start_with`], which
//! answers each request from a rule, and [`MockLlmServer::server_time`] to subtract the
//! server's own work from the client's measured time.
//!
//! ```no_run
//! use fusion_agent::testing::MockLlmServer;
//! use fusion_agent::OpenAiConfig;
//!
//! # async fn demo() -> fusion_core::Result<()> {
//! let server = MockLlmServer::start().await;
//! server.push_tool_call("read_file", r#"{"path":"a.txt"}"#).push_text("The file says hi.");
//! let client = OpenAiConfig::new("mock-model").with_base_url(server.base_url()).build()?;
//! // ... run the agent with `client` ...
//! assert_eq!(server.request_count(), 2);
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// One scripted answer of a [`MockLlmServer`].
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
        /// Seconds for the `Retry-After` header.
        retry_after: Option<u64>,
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

type Rule = Arc<dyn Fn(&Value) -> MockReply + Send + Sync>;

/// Mutable script and records, behind one short-held lock.
struct Script {
    queue: VecDeque<MockReply>,
    default: Option<MockReply>,
    rule: Option<Rule>,
    api_key: Option<String>,
    record: bool,
    requests: Vec<RecordedRequest>,
}

struct Shared {
    script: Mutex<Script>,
    count: AtomicUsize,
    /// Nanoseconds spent inside the handler, summed over requests.
    server_nanos: AtomicU64,
    next_call_id: AtomicU64,
}

impl Shared {
    fn script(&self) -> MutexGuard<'_, Script> {
        // A panic while holding the lock cannot leave the script half-updated in a way
        // that matters to a test, so a poisoned lock is still usable.
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A scripted OpenAI-compatible server on `127.0.0.1`, shut down when dropped.
///
/// Methods take `&self`, so a test can keep scripting while a client is talking to it.
/// Must be started inside a tokio runtime.
pub struct MockLlmServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl MockLlmServer {
    /// Starts a server on a free loopback port with an empty script.
    ///
    /// # Panics
    /// If no loopback port can be bound (a broken test environment).
    pub async fn start() -> MockLlmServer {
        let shared = Arc::new(Shared {
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
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            // A 10,000-message history is several MB; axum's 2 MB default would refuse it.
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("MockLlmServer: could not bind a loopback port");
        let addr = listener
            .local_addr()
            .expect("MockLlmServer: bound socket has no address");
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = server.await {
                tracing::warn!(error = %e, "MockLlmServer stopped with an error");
            }
        });
        MockLlmServer {
            addr,
            shared,
            shutdown: Some(shutdown),
        }
    }

    /// Starts a server that answers every request from `rule(request_body)` once the
    /// queue is empty ("fast mode" for benchmarks: no scripting per request).
    pub async fn start_with<F>(rule: F) -> MockLlmServer
    where
        F: Fn(&Value) -> MockReply + Send + Sync + 'static,
    {
        let server = Self::start().await;
        server.shared.script().rule = Some(Arc::new(rule));
        server
    }

    /// The API root to use as `OPENAI_BASE_URL`, e.g. `http://127.0.0.1:43817/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues a reply.
    pub fn push(&self, reply: MockReply) -> &Self {
        self.shared.script().queue.push_back(reply);
        self
    }

    /// Queues a text reply.
    pub fn push_text(&self, text: impl Into<String>) -> &Self {
        self.push(MockReply::text(text))
    }

    /// Queues a reply calling one tool; `arguments` are sent verbatim.
    pub fn push_tool_call(&self, name: impl Into<String>, arguments: impl Into<String>) -> &Self {
        self.push(MockReply::tool_call(name, arguments))
    }

    /// Queues one reply calling several tools, given as `(name, arguments)` pairs.
    pub fn push_tool_calls<N, A>(&self, calls: impl IntoIterator<Item = (N, A)>) -> &Self
    where
        N: Into<String>,
        A: Into<String>,
    {
        self.push(MockReply::ToolCalls {
            content: String::new(),
            calls: calls
                .into_iter()
                .map(|(name, arguments)| MockToolCall::new(name, arguments))
                .collect(),
        })
    }

    /// Queues an error status with an OpenAI-shaped body.
    pub fn push_status(&self, status: u16) -> &Self {
        self.push(MockReply::status(status))
    }

    /// Queues an error status with a `Retry-After: secs` header.
    pub fn push_status_with_retry_after(&self, status: u16, secs: u64) -> &Self {
        self.push(MockReply::Status {
            status,
            retry_after: Some(secs),
        })
    }

    /// Queues exactly this status and body.
    pub fn push_raw(&self, status: u16, body: impl Into<String>) -> &Self {
        self.push(MockReply::Raw {
            status,
            body: body.into(),
        })
    }

    /// The reply given whenever the queue is empty (instead of a "script exhausted" 500).
    pub fn set_default(&self, reply: MockReply) -> &Self {
        self.shared.script().default = Some(reply);
        self
    }

    /// Answers 401 to any request without `Authorization: Bearer {key}`, before the script.
    pub fn require_api_key(&self, key: impl Into<String>) -> &Self {
        self.shared.script().api_key = Some(key.into());
        self
    }

    /// Turns recording of request bodies on (the default) or off. Benchmarks with large
    /// histories turn it off so memory stays flat; [`request_count`](Self::request_count)
    /// still counts.
    pub fn set_record_requests(&self, record: bool) -> &Self {
        self.shared.script().record = record;
        self
    }

    /// Every recorded request body, in arrival order.
    pub fn requests(&self) -> Vec<Value> {
        let script = self.shared.script();
        script.requests.iter().map(|r| r.body.clone()).collect()
    }

    /// Every recorded request with its headers, in arrival order.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.shared.script().requests.clone()
    }

    /// How many requests arrived (including rejected ones).
    pub fn request_count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// How many queued replies have not been served yet.
    pub fn pending(&self) -> usize {
        self.shared.script().queue.len()
    }

    /// Total time spent inside the request handler (parsing the request, recording it,
    /// building the reply), so a benchmark can subtract the server's share.
    pub fn server_time(&self) -> Duration {
        Duration::from_nanos(self.shared.server_nanos.load(Ordering::SeqCst))
    }
}

impl Drop for MockLlmServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

impl std::fmt::Debug for MockLlmServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockLlmServer")
            .field("addr", &self.addr)
            .field("request_count", &self.request_count())
            .finish_non_exhaustive()
    }
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

fn error_response(status: u16, message: &str, code: &str, retry_after: Option<u64>) -> Response {
    let body = json!({"error": {"message": message, "type": code, "code": code}}).to_string();
    let mut response = (
        status_code(status),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
