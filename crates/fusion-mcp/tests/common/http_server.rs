//! A streamable-HTTP MCP server written by hand, for the suites that need a server to
//! answer in ways the SDK's own never does: one axum route speaking JSON-RPC on a loopback
//! port. Its run (1, 2, …) names its session (`run-1`); a restart begins the next run,
//! which no longer knows the old session, as a restarted server does not. What differs
//! between suites (what is refused, which tools are listed, what a call answers) is their
//! [`Behaviour`]; the protocol around it (sessions, notifications, `initialize`, the
//! reply's envelope) is here once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, Response, StatusCode};
use serde_json::{Value, json};

/// What a suite's server does where servers differ.
pub trait Behaviour: Send + Sync + 'static {
    /// A response to send before the request is read (a refused token, say), or `None`
    /// to go on with it.
    fn screen(&self, _headers: &HeaderMap) -> Option<Response<Body>> {
        None
    }

    /// The answer to a request in a session this run does not know.
    fn stale(&self) -> Response<Body>;

    /// The tools `tools/list` gives in run `run`.
    fn tools(&self, run: usize) -> Vec<&'static str>;

    /// The answer to `call`.
    fn call(&self, call: &ToolCall<'_>) -> Answer;
}

/// What a tool call is answered with.
pub enum Answer {
    /// This result, in the usual JSON reply.
    Result(Value),
    /// This whole response, sent as it is.
    Raw(Response<Body>),
}

/// A `tools/call` request in run `run`'s session.
pub struct ToolCall<'a> {
    pub run: usize,
    pub session: &'a str,
    pub id: &'a Value,
    pub name: &'a str,
}

/// A running server.
pub struct HttpServer {
    pub url: String,
    run: Arc<AtomicUsize>,
    initialized: Arc<AtomicUsize>,
    deleted: Arc<AtomicUsize>,
}

impl HttpServer {
    /// Starts the next run: the old session is unknown from now on.
    pub fn restart(&self) {
        self.run.fetch_add(1, Ordering::SeqCst);
    }

    /// The `initialize` requests answered: one per session opened.
    pub fn sessions_opened(&self) -> usize {
        self.initialized.load(Ordering::SeqCst)
    }

    /// The sessions of the current run ended by the client (HTTP DELETE).
    pub fn sessions_deleted(&self) -> usize {
        self.deleted.load(Ordering::SeqCst)
    }
}

/// Serves `behaviour` on a free loopback port until the test's runtime ends.
pub async fn serve(behaviour: impl Behaviour) -> HttpServer {
    let behaviour = Arc::new(behaviour);
    let run = Arc::new(AtomicUsize::new(1));
    let initialized = Arc::new(AtomicUsize::new(0));
    let deleted = Arc::new(AtomicUsize::new(0));
    let (now, count) = (run.clone(), initialized.clone());
    let (then, ended) = (run.clone(), deleted.clone());
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let run = now.load(Ordering::SeqCst);
            let (behaviour, count) = (behaviour.clone(), count.clone());
            async move { answer(behaviour.as_ref(), run, &count, &headers, &body) }
        })
        .delete(move |headers: HeaderMap| {
            let session = format!("run-{}", then.load(Ordering::SeqCst));
            let given = headers.get("mcp-session-id").and_then(|v| v.to_str().ok());
            let known = given == Some(session.as_str());
            if known {
                ended.fetch_add(1, Ordering::SeqCst);
            }
            let status = if known {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            async move { status }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    HttpServer {
        url,
        run,
        initialized,
        deleted,
    }
}

fn answer(
    behaviour: &dyn Behaviour,
    run: usize,
    initialized: &AtomicUsize,
    headers: &HeaderMap,
    body: &str,
) -> Response<Body> {
    if let Some(refused) = behaviour.screen(headers) {
        return refused;
    }
    let session = format!("run-{run}");
    let msg: Value = serde_json::from_str(body).unwrap();
    let method = msg["method"].as_str().unwrap_or("");
    let given = headers.get("mcp-session-id").and_then(|v| v.to_str().ok());
    if method != "initialize" && given != Some(session.as_str()) {
        return behaviour.stale();
    }
    let id = &msg["id"];
    if id.is_null() {
        // A notification.
        return Response::builder()
            .status(StatusCode::ACCEPTED)
            .body(Body::empty())
            .unwrap();
    }
    let result = match method {
        "initialize" => {
            initialized.fetch_add(1, Ordering::SeqCst);
            json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                   "serverInfo": {"name": "web", "version": "1.0.0"}})
        }
        "tools/list" => {
            let tools: Vec<Value> = (behaviour.tools(run).into_iter())
                .map(|name| json!({"name": name, "inputSchema": {"type": "object"}}))
                .collect();
            json!({ "tools": tools })
        }
        "tools/call" => {
            let name = msg["params"]["name"].as_str().unwrap_or("");
            let call = ToolCall {
                run,
                session: &session,
                id,
                name,
            };
            match behaviour.call(&call) {
                Answer::Result(result) => result,
                Answer::Raw(response) => return response,
            }
        }
        _ => json!({}),
    };
    Response::builder()
        .header("content-type", "application/json")
        .header("mcp-session-id", session)
        .body(Body::from(
            json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string(),
        ))
        .unwrap()
}

/// A tool's result holding `text`.
pub fn text_result(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}

/// `status` with `text` as a plain body.
pub fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(text))
        .unwrap()
}
