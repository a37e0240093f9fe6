//! HTTP errors from a streamable-HTTP server, hand-written here (a few axum routes speaking
//! JSON-RPC, as any server may): a request answered with an HTTP error status fails that
//! call alone, with the status, and the session goes on; it is not reported as a closed
//! connection to be reconnected. A session the server refuses (a restarted server's HTTP
//! 400 for the id it no longer knows, in plain text or as a JSON-RPC error with no id), or
//! in which two calls in a row fail, is given up: the next call opens a new one and the
//! tools are listed again. An error status carrying a JSON-RPC error with no id fails the
//! call at once rather than at the call timeout, and so does one in the SSE stream a call
//! is answered with (HTTP 200), with the server's message. Messages say what went wrong
//! without the Rust types of the SDK's transport. A redirect to another origin is not
//! followed: the configured headers, secrets all, would go with it. A key in the server's
//! URL (`?api_key=`) never shows in a message, to the model or the person.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, Response, StatusCode};
use common::PATIENCE;
use common::http_server::{self, Answer, Behaviour, HttpServer, ToolCall, plain, text_result};
use fusion_agent::{Tool, ToolSource};
use fusion_core::Error;
use fusion_core::testkit::logs::Logs;
use fusion_mcp::{HttpServerConfig, McpOptions, McpServer};
use serde_json::{Value, json};

/// The token the server takes.
const TOKEN: &str = "tok-right";

/// What the server answers a session id it does not know: the TypeScript SDK's stock
/// Express example, in its two forms.
#[derive(Clone, Copy, Debug)]
enum Stale {
    /// HTTP 400, "No valid session ID provided" in plain text.
    Text,
    /// HTTP 400, a JSON-RPC error with `"id": null`.
    Json,
}

/// Answers a request without `Authorization: Bearer tok-right` with HTTP 401, one in a
/// session not of this run as `stale` says; lists the tool `added` too after a restart;
/// answers `tools/call` of `broken` with HTTP 500 and a text body, of `broken_json` with
/// HTTP 500 and a JSON-RPC error with no id (as the TypeScript SDK answers when it fails),
/// of `unreadable_sse` with an SSE stream holding a parse error with no id, of `fine_sse`
/// with an SSE stream holding the result, of any other tool with a text result. Counts
/// the requests that carried an `X-Api-Key` header in `api_keys`.
struct Failing {
    stale: Stale,
    api_keys: Arc<AtomicUsize>,
}

impl Behaviour for Failing {
    fn screen(&self, headers: &HeaderMap) -> Option<Response<Body>> {
        if headers.contains_key("x-api-key") {
            self.api_keys.fetch_add(1, Ordering::SeqCst);
        }
        let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
        (authorization != Some(&format!("Bearer {TOKEN}")))
            .then(|| plain(StatusCode::UNAUTHORIZED, "invalid token"))
    }

    fn stale(&self) -> Response<Body> {
        match self.stale {
            Stale::Text => plain(StatusCode::BAD_REQUEST, "No valid session ID provided"),
            Stale::Json => no_id_error(
                StatusCode::BAD_REQUEST,
                -32000,
                "Bad Request: No valid session ID provided",
            ),
        }
    }

    fn tools(&self, run: usize) -> Vec<&'static str> {
        let mut names = vec![
            "broken",
            "broken_json",
            "fine",
            "fine_sse",
            "unreadable_sse",
        ];
        if run > 1 {
            names.push("added");
        }
        names
    }

    fn call(&self, call: &ToolCall<'_>) -> Answer {
        Answer::Raw(match call.name {
            "broken" => plain(StatusCode::INTERNAL_SERVER_ERROR, "database down"),
            "broken_json" => no_id_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                -32603,
                "Internal server error",
            ),
            "unreadable_sse" => {
                // JSON-RPC 2.0's answer to a request whose id the server could not read.
                let error = json!({"jsonrpc": "2.0", "id": null,
                                   "error": {"code": -32700, "message": "Parse error: unreadable"}});
                sse(call.session, &error)
            }
            "fine_sse" => {
                let result =
                    json!({"jsonrpc": "2.0", "id": call.id, "result": text_result("fine")});
                sse(call.session, &result)
            }
            _ => return Answer::Result(text_result("fine")),
        })
    }
}

async fn serve(stale: Stale) -> HttpServer {
    let api_keys = Arc::default();
    http_server::serve(Failing { stale, api_keys }).await
}

/// HTTP 200 with an SSE stream holding `message` alone.
fn sse(session: &str, message: &Value) -> Response<Body> {
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("mcp-session-id", session)
        .body(Body::from(format!("event: message\ndata: {message}\n\n")))
        .unwrap()
}

/// `status` with a JSON-RPC error carrying `"id": null`, as the TypeScript and Python SDKs
/// answer a request they refuse before reading it.
fn no_id_error(status: StatusCode, code: i64, message: &str) -> Response<Body> {
    let error = json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": null});
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(error.to_string()))
        .unwrap()
}

/// Options whose call timeout only a failing test reaches: a call that would wait it out
/// fails the test, by its message, rather than slowing it.
fn patient() -> McpOptions {
    McpOptions {
        call_timeout: PATIENCE,
        ..McpOptions::default()
    }
}

async fn start(web: &HttpServer) -> McpServer {
    let config = HttpServerConfig::new(&web.url).bearer_token(TOKEN);
    McpServer::start("web", config, patient()).await.unwrap()
}

/// The message of the failed call of `name`.
async fn failure(server: &McpServer, name: &str) -> String {
    match tool(server, name).call(json!({})).await {
        Err(Error::Tool { message, .. }) => message,
        other => panic!("the call of {name} should fail: {other:?}"),
    }
}

fn names(server: &McpServer) -> Vec<String> {
    server.tools().iter().map(|t| t.name().to_owned()).collect()
}

fn tool(server: &McpServer, name: &str) -> Arc<dyn Tool> {
    let tools = server.tools();
    tools.iter().find(|t| t.name() == name).unwrap().clone()
}

#[tokio::test]
async fn an_http_error_fails_the_call_alone_and_the_session_goes_on() {
    let web = serve(Stale::Text).await;
    let server = start(&web).await;
    let message = failure(&server, "web__broken").await;
    assert!(message.contains("MCP server `web`"), "{message}");
    assert!(message.contains("HTTP 500"), "{message}");
    assert!(!message.contains("rmcp::"), "{message}");
    // The session is as it was: nothing closed, nothing to reconnect.
    assert!(!message.contains("closed the connection"), "{message}");
    assert!(!message.contains("reconnected"), "{message}");
    assert_eq!(
        tool(&server, "web__fine").call(json!({})).await.unwrap(),
        "fine"
    );
    assert_eq!(web.sessions_opened(), 1, "one session throughout");
    server.shutdown().await;
}

#[tokio::test]
async fn a_session_the_restarted_server_refuses_with_a_400_is_opened_again() {
    for stale in [Stale::Text, Stale::Json] {
        let web = serve(stale).await;
        let server = start(&web).await;
        assert_eq!(
            tool(&server, "web__fine").call(json!({})).await.unwrap(),
            "fine"
        );
        web.restart();
        // The call in the old session fails, saying why (at once, also when the 400's
        // JSON-RPC error carries no id), and the session is given up.
        let message = failure(&server, "web__fine").await;
        assert!(message.contains("MCP server `web`"), "{stale:?}: {message}");
        assert!(
            message.contains("No valid session ID provided"),
            "{stale:?}: {message}"
        );
        assert!(!message.contains("did not answer"), "{stale:?}: {message}");
        assert!(
            message.contains("a new session is opened on the next call"),
            "{stale:?}: {message}"
        );
        // The next call opens a new session, and the tools are listed again.
        assert_eq!(
            tool(&server, "web__fine").call(json!({})).await.unwrap(),
            "fine"
        );
        assert_eq!(web.sessions_opened(), 2, "{stale:?}");
        assert!(
            names(&server).contains(&"web__added".to_owned()),
            "{stale:?}: {:?}",
            names(&server)
        );
        server.shutdown().await;
    }
}

#[tokio::test]
async fn an_error_status_whose_json_rpc_error_has_no_id_fails_the_call_at_once() {
    let web = serve(Stale::Text).await;
    let server = start(&web).await;
    // Passed on as it is, the error answers no request and the call waits out its timeout.
    let message = failure(&server, "web__broken_json").await;
    assert!(message.contains("Internal server error"), "{message}");
    assert!(message.contains("-32603"), "{message}");
    assert!(!message.contains("did not answer"), "{message}");
    // A server failing once is no reason to give its session up.
    assert!(!message.contains("new session"), "{message}");
    assert_eq!(
        tool(&server, "web__fine").call(json!({})).await.unwrap(),
        "fine"
    );
    assert_eq!(web.sessions_opened(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_json_rpc_error_with_no_id_in_a_calls_sse_stream_fails_the_call_at_once() {
    let web = serve(Stale::Text).await;
    let server = start(&web).await;
    // The stream answers this call's POST alone. Dropped as answering no request, the
    // error would leave the call failing without the server's words ("Transport closed")
    // when the stream ends, or at its timeout ("did not answer") if it stayed open.
    let message = failure(&server, "web__unreadable_sse").await;
    assert!(message.contains("Parse error: unreadable"), "{message}");
    assert!(message.contains("-32700"), "{message}");
    assert!(!message.contains("did not answer"), "{message}");
    // A result in such a stream is the call's, as before; the session goes on.
    assert_eq!(
        tool(&server, "web__fine_sse")
            .call(json!({}))
            .await
            .unwrap(),
        "fine"
    );
    assert_eq!(web.sessions_opened(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_second_failure_in_a_row_gives_the_session_up() {
    let web = serve(Stale::Text).await;
    let server = start(&web).await;
    let first = failure(&server, "web__broken").await;
    assert!(!first.contains("new session"), "{first}");
    let second = failure(&server, "web__broken_json").await;
    assert!(second.contains("Internal server error"), "{second}");
    assert!(
        second.contains("a new session is opened on the next call"),
        "{second}"
    );
    assert_eq!(
        tool(&server, "web__fine").call(json!({})).await.unwrap(),
        "fine"
    );
    assert_eq!(web.sessions_opened(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn a_refused_token_fails_the_start_with_the_status_in_plain_words() {
    let web = serve(Stale::Text).await;
    let config = HttpServerConfig::new(&web.url).bearer_token("tok-wrong");
    let Err(Error::Config(message)) = McpServer::start("web", config, McpOptions::default()).await
    else {
        panic!("the start should fail")
    };
    assert!(message.contains("MCP server `web`"), "{message}");
    assert!(message.contains("401"), "{message}");
    assert!(message.contains("invalid token"), "{message}");
    assert!(!message.contains("rmcp::"), "{message}");
    assert!(!message.contains("tok-wrong"), "{message}");
    assert_eq!(web.sessions_opened(), 0);
}

#[tokio::test]
async fn a_redirect_to_another_origin_is_refused_and_the_headers_stay_home() {
    let api_keys = Arc::new(AtomicUsize::new(0));
    let failing = Failing {
        stale: Stale::Text,
        api_keys: api_keys.clone(),
    };
    let elsewhere = http_server::serve(failing).await;
    // The configured server sends every request there, keeping the method and body.
    let target = elsewhere.url.clone();
    let redirect = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move || {
            let target = target.clone();
            async move {
                Response::builder()
                    .status(StatusCode::TEMPORARY_REDIRECT)
                    .header("location", target)
                    .body(Body::empty())
                    .unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirect).await });

    let config = HttpServerConfig::new(url)
        .header("X-Api-Key", "key-SECRET")
        .bearer_token(TOKEN);
    let started = McpServer::start("web", config, McpOptions::default()).await;
    assert_eq!(
        api_keys.load(Ordering::SeqCst),
        0,
        "the key went to another origin"
    );
    let Err(Error::Config(message)) = started else {
        panic!("the start should fail")
    };
    assert!(message.contains("another origin"), "{message}");
    assert!(!message.contains("key-SECRET"), "{message}");
}

#[test]
fn a_key_in_the_servers_url_never_shows_in_a_message() {
    // The server runs on a runtime of its own, dropped to take it away, connections and all.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let web = server_runtime.block_on(serve(Stale::Text));
    let url = format!("{}?api_key=SUPERSECRET&team=7", web.url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The client's tasks run on this thread, so this catches what it logs.
    let logs = Logs::new();
    let _logging = tracing::subscriber::set_default(logs.subscriber(tracing::Level::DEBUG));
    runtime.block_on(async move {
        let config = HttpServerConfig::new(&url).bearer_token(TOKEN);
        let server = McpServer::start("web", config, patient()).await.unwrap();
        assert_eq!(
            tool(&server, "web__fine").call(json!({})).await.unwrap(),
            "fine"
        );
        let debug = format!("{server:?}");
        assert!(!debug.contains("SUPERSECRET"), "{debug}");
        server_runtime.shutdown_background();
        // The call fails, then a second one, which gives the session up; the third cannot
        // open another. Each message names the URL, its key hidden.
        for _ in 0..3 {
            let gone = failure(&server, "web__fine").await;
            assert!(gone.contains("/mcp?api_key=***&team=***"), "{gone}");
            assert!(!gone.contains("SUPERSECRET"), "{gone}");
        }
        let start = McpServer::start("web", HttpServerConfig::new(&url), patient()).await;
        let start = start.unwrap_err().to_string();
        assert!(start.contains("/mcp?api_key=***&team=***"), "{start}");
        assert!(!start.contains("SUPERSECRET"), "{start}");
    });
    // Nor in the log: the error a session was given up for, and whatever the SDK logged of
    // the errors the client gave it (a session it could not end, its worker's fatal error).
    let logs = logs.text();
    assert!(logs.contains("taken as over"), "{logs}");
    for line in logs.lines() {
        assert!(!line.contains("SUPERSECRET"), "{line}");
    }
}

/// A header given as `curl -H` takes it, name and value in the name, fails the start
/// naming the header up to its `:`, never the token after it.
#[tokio::test]
async fn a_header_name_holding_its_value_fails_the_start_without_the_value() {
    for (name, shown) in [
        ("Authorization: Bearer tok-SUPERSECRET", "`Authorization…`"),
        ("Bearer tok-SUPERSECRET", "`Bearer…`"),
        ("", "an empty name"),
    ] {
        // Refused before any request: nothing listens there.
        let config = HttpServerConfig::new("http://127.0.0.1:9/mcp").header(name, "x");
        let started = McpServer::start("web", config, patient()).await;
        let Err(Error::Config(message)) = started else {
            panic!("{name:?}: the start should fail")
        };
        assert!(message.contains(shown), "{message}");
        assert!(!message.contains("SUPERSECRET"), "{message}");
    }
}

/// A token or header value read from a file with its line break fails the start saying
/// so, not with reqwest's "builder error: failed to parse header value" at every request.
#[tokio::test]
async fn a_token_or_header_value_with_a_line_break_fails_the_start_saying_so() {
    let web = serve(Stale::Text).await;
    let token = HttpServerConfig::new(&web.url).bearer_token(format!("{TOKEN}\n"));
    let header = HttpServerConfig::new(&web.url).header("X-Api-Key", format!("{TOKEN}\n"));
    for (config, says) in [
        (token, "its bearer token is not a valid header value"),
        (
            header,
            "the value of header `X-Api-Key` is not a valid header value",
        ),
    ] {
        let started = McpServer::start("web", config, patient()).await;
        let Err(Error::Config(message)) = started else {
            panic!("the start should fail")
        };
        assert!(
            message.contains(says) && message.contains("line break"),
            "{message}"
        );
        assert!(!message.contains(TOKEN), "{message}");
    }
}

/// Found by a review: an HTTP server's URL was shown in the errors of its start with its
/// secrets hidden but its control characters as they are, where a command's are escaped
/// (`shown`): a URL read from a file with a line break in it, or holding an escape
/// sequence, forged a log line or drove the terminal the error was printed on.
#[tokio::test]
async fn control_characters_of_the_url_are_shown_escaped() {
    // Nothing listens there (this crate's tests' ports): the connection is refused.
    let url = "http://127.0.0.1:36201/m\u{1b}[2Jcp\n";
    let started = McpServer::start("web", HttpServerConfig::new(url), patient()).await;
    let Err(Error::Config(message)) = started else {
        panic!("the start should fail: {:?}", started.map(|_| ()))
    };
    assert!(message.contains("/m\\u{1b}[2Jcp\\n"), "{message}");
    assert!(!message.contains('\u{1b}'), "{message:?}");
}
