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
//! let client = OpenAiConfig::new("mock-model").base_url(server.base_url()).build()?;
//! // ... run the agent with `client` ...
//! assert_eq!(server.request_count(), 2);
//! # Ok(()) }
//! ```
//!
//! # Streaming
//!
//! A request with `"stream": true` gets its `Text` or `ToolCalls` reply as server-sent
//! events (`text/event-stream`) in OpenAI's `chat.completion.chunk` format: a chunk with
//! `role: assistant`, the text one word (with its following whitespace) a chunk, each tool
//! call as an opening chunk (index, id, type, name, empty arguments) and its arguments in a
//! few fragments — one cut inside an escape sequence of the JSON text when there is one —
//! then a chunk with the `finish_reason` (`stop` or `tool_calls`), a usage chunk with empty
//! `choices` when `stream_options.include_usage` is set, and `data: [DONE]`. Error replies
//! (`Status`, `Raw`) are never streamed, and a request without `"stream": true` is
//! answered whole, as before. Streamed requests are recorded like the others.
//!
//! For testing how a client copes with streams that go wrong or slowly:
//! - [`MockReply::Partial`] ([`push_partial`](MockLlmServer::push_partial)) sends some
//!   [`MockDelta`]s, then breaks off as its [`MockStreamEnd`] says: stall with the
//!   connection open (for cancellation tests; [`replies_finished`](MockLlmServer::replies_finished)
//!   shows when the client has hung up), drop the connection, or send an error event.
//! - [`MockReply::Delayed`] ([`push_delayed`](MockLlmServer::push_delayed)) is a slow
//!   first token: the headers go out at once, the first chunk after the delay.
//! - [`hold_next_stream`](MockLlmServer::hold_next_stream) returns a [`StreamGate`]: the
//!   next streamed reply sends its first word and waits for
//!   [`release`](StreamGate::release); [`first_part_sent`](StreamGate::first_part_sent)
//!   says when that word is out.
//! - [`reject_streaming`](MockLlmServer::reject_streaming) and
//!   [`reject_tools`](MockLlmServer::reject_tools) refuse streaming requests or requests
//!   offering tools with a 400, as servers without those features do, for testing a
//!   client's fallback. A refused request leaves the queue untouched.
//! - [`buffer_streams`](MockLlmServer::buffer_streams) sends each streamed reply as one
//!   body with a `Content-Length`, the way a proxy that buffers responses delivers it.
//!
//! ```no_run
//! use fusion_agent::testing::{MockDelta, MockLlmServer, MockStreamEnd};
//!
//! # async fn demo() {
//! let server = MockLlmServer::start().await;
//! // A reply that stops mid-arguments and hangs, for a cancellation test.
//! server.push_partial(
//!     [MockDelta::tool_call_start(0, "call_1", "read_file"),
//!      MockDelta::tool_call_arguments(0, r#"{"pa"#)],
//!     MockStreamEnd::Stall,
//! );
//! // ... start a streaming turn, cancel it once the call has begun ...
//! server.replies_finished().await; // the client hung up
//!
//! // A reply whose last words wait for the test.
//! let gate = server.hold_next_stream();
//! server.push_text("Hello there, world.");
//! // ... start a streaming turn ...
//! gate.first_part_sent().await;
//! // ... check that "Hello " is on screen ...
//! gate.release();
//! # }
//! ```

mod gate;
mod handler;
mod reply;
mod sse;
mod state;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use axum::serve::ListenerExt;
use serde_json::Value;
use tokio::sync::oneshot;

use self::gate::GateState;
pub use self::gate::StreamGate;
pub use self::reply::{MockDelta, MockReply, MockStreamEnd, MockToolCall, RecordedRequest};
use self::state::Shared;

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
        let shared = Arc::new(Shared::new());
        let app = handler::router(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("MockLlmServer: could not bind a loopback port");
        let addr = listener
            .local_addr()
            .expect("MockLlmServer: bound socket has no address");
        let (shutdown, stopped) = oneshot::channel::<()>();
        let counted = shared.clone();
        let listener = listener.tap_io(move |tcp| {
            counted.connections.fetch_add(1, Ordering::SeqCst);
            // As HTTP servers in front of models do (uvicorn, vLLM, Ollama): a streamed
            // reply's small writes go out at once instead of waiting for the client's
            // acknowledgement of the previous one (Nagle's algorithm).
            let _ = tcp.set_nodelay(true);
        });
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
            retry_after: Some(secs.to_string()),
        })
    }

    /// Queues an error status with a `Retry-After` header giving `when` as an HTTP date
    /// (IMF-fixdate, whole seconds), as some proxies and CDNs send it.
    pub fn push_status_with_retry_at(&self, status: u16, when: SystemTime) -> &Self {
        self.push(MockReply::Status {
            status,
            retry_after: Some(httpdate::fmt_http_date(when)),
        })
    }

    /// Queues exactly this status and body.
    pub fn push_raw(&self, status: u16, body: impl Into<String>) -> &Self {
        self.push(MockReply::Raw {
            status,
            body: body.into(),
        })
    }

    /// Queues a reply that sends `deltas` when streamed, then breaks off as `end` says
    /// (see [`MockReply::Partial`]).
    pub fn push_partial(
        &self,
        deltas: impl IntoIterator<Item = MockDelta>,
        end: MockStreamEnd,
    ) -> &Self {
        self.push(MockReply::partial(deltas, end))
    }

    /// Queues `reply` with its first chunk (or, unstreamed, all of it) sent after `delay`
    /// (see [`MockReply::Delayed`]).
    pub fn push_delayed(&self, delay: Duration, reply: MockReply) -> &Self {
        self.push(MockReply::delayed(delay, reply))
    }

    /// Holds the next streamed reply after its first part (the role chunk and the first
    /// word or tool-call opening) until the returned gate is released or dropped.
    ///
    /// Calling it again holds the stream after that one, and so on. Plain requests and
    /// error replies pass by without taking a gate.
    pub fn hold_next_stream(&self) -> StreamGate {
        let state = GateState::new();
        self.shared.script().held_streams.push_back(state.clone());
        StreamGate::new(state)
    }

    /// Refuses (`true`) or accepts (`false`, the default) requests with `"stream": true`.
    ///
    /// A refused request gets a 400,
    /// `{"error": {"message": "stream is not supported by this server", "type": "invalid_request_error", ...}}`,
    /// and the queued reply stays for the client's retry without streaming.
    pub fn reject_streaming(&self, reject: bool) -> &Self {
        self.shared.script().reject_streaming = reject;
        self
    }

    /// Sends streamed replies (`true`) as one body with a `Content-Length` holding all their
    /// events, the way a proxy that buffers responses (nginx with `proxy_buffering on`)
    /// delivers a stream; `false` (the default) sends each event as its own chunk. A reply
    /// with a delay, a gate or a break-off is still sent in pieces, as scripted.
    pub fn buffer_streams(&self, buffer: bool) -> &Self {
        self.shared.script().buffer_streams = buffer;
        self
    }

    /// Refuses (`true`) or accepts (`false`, the default) requests offering tools (a
    /// non-empty `tools` array), as Ollama does for a model without tool support.
    ///
    /// A refused request gets a 400 with Ollama's wording,
    /// `{"error": {"message": "registry.ollama.ai/library/mock does not support tools", "type": "invalid_request_error", ...}}`,
    /// and the queued reply stays for the client's retry without tools.
    pub fn reject_tools(&self, reject: bool) -> &Self {
        self.shared.script().reject_tools = reject;
        self
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

    /// How many TCP connections the server accepted: with a client that reuses its
    /// connections, one for any number of requests made one after another.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// How many replies are still in progress: streams not yet ended, and answers waiting
    /// out a delay or a stall. A reply whose client goes away stops being in progress.
    pub fn replies_in_progress(&self) -> usize {
        *self.shared.in_progress.borrow()
    }

    /// Waits until no reply is in progress: each was sent in full or its client went
    /// away. A cancellation test awaits this after a [`MockStreamEnd::Stall`] to see that
    /// the client really hung up (under a timeout, as it never resolves otherwise).
    pub async fn replies_finished(&self) {
        let mut in_progress = self.shared.in_progress.subscribe();
        // The sender lives as long as `self.shared`, so the wait cannot fail.
        let _ = in_progress.wait_for(|n| *n == 0).await;
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
