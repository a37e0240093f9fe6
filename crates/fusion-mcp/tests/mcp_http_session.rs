//! An HTTP server's session that ends (the server restarted, or expired it): the SDK opens
//! a new one when a request is answered HTTP 404, and the server's tools are listed again
//! then, as after a stdio server's restart, so a server that came back with other tools
//! is offered with those. Against a few axum routes speaking JSON-RPC, whose "restart"
//! forgets the session and changes the tool list.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, Response, StatusCode};
use common::PATIENCE;
use fusion_agent::ToolSource;
use fusion_mcp::{HttpServerConfig, McpOptions, McpServer};
use serde_json::{Value, json};

/// A server on a loopback port whose run (1, 2, …) names its session (`run-1`) and its
/// tools: `echo` and `old` in run 1, `echo` and `new` after.
struct Server {
    url: String,
    run: Arc<AtomicUsize>,
    initialized: Arc<AtomicUsize>,
}

impl Server {
    /// Starts the next run: the old session is unknown from now on.
    fn restart(&self) {
        self.run.fetch_add(1, Ordering::SeqCst);
    }
}

async fn serve() -> Server {
    let run = Arc::new(AtomicUsize::new(1));
    let initialized = Arc::new(AtomicUsize::new(0));
    let (now, count) = (run.clone(), initialized.clone());
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let run = now.load(Ordering::SeqCst);
            let count = count.clone();
            async move { answer(run, &count, &headers, &body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        url,
        run,
        initialized,
    }
}

fn answer(
    run: usize,
    initialized: &AtomicUsize,
    headers: &HeaderMap,
    body: &str,
) -> Response<Body> {
    let session = format!("run-{run}");
    let msg: Value = serde_json::from_str(body).unwrap();
    let method = msg["method"].as_str().unwrap_or("");
    let given = headers.get("mcp-session-id").and_then(|v| v.to_str().ok());
    if method != "initialize" && given != Some(session.as_str()) {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from("session not found"))
            .unwrap();
    }
    let id = msg["id"].clone();
    if id.is_null() {
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
            let names = if run == 1 {
                ["echo", "old"]
            } else {
                ["echo", "new"]
            };
            let tools: Vec<Value> = names
                .iter()
                .map(|name| json!({"name": name, "inputSchema": {"type": "object"}}))
                .collect();
            json!({ "tools": tools })
        }
        "tools/call" => {
            let text = format!("{} in {session}", msg["params"]["name"]);
            json!({"content": [{"type": "text", "text": text}]})
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

fn names(server: &McpServer) -> Vec<String> {
    server.tools().iter().map(|t| t.name().to_owned()).collect()
}

#[tokio::test]
async fn a_session_opened_again_after_a_404_lists_the_tools_again() {
    let web = serve().await;
    let server = McpServer::start(
        "web",
        HttpServerConfig::new(&web.url),
        McpOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(names(&server), ["web__echo", "web__old"]);

    web.restart();
    let revision = server.revision();
    let echo = server.tools()[0].clone();
    // Answered 404 for the old session, the call goes again in a new one.
    let reply = echo.call(json!({})).await.unwrap();
    assert_eq!(reply, r#""echo" in run-2"#);
    assert_eq!(web.initialized.load(Ordering::SeqCst), 2);
    tokio::time::timeout(PATIENCE, server.changed_since(revision))
        .await
        .expect("the tools are listed again in the new session");
    assert_eq!(names(&server), ["web__echo", "web__new"]);
    server.shutdown().await;
}
