//! HTTP errors from a streamable-HTTP server, hand-written here (a few axum routes speaking
//! JSON-RPC, as any server may): a request answered with an HTTP error status fails that
//! call alone, with the status, and the session goes on; it is not reported as a closed
//! connection to be reconnected. Messages say what went wrong without the Rust types of
//! the SDK's transport. A redirect to another origin is not followed: the configured
//! headers, secrets all, would go with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{Response, StatusCode};
use fusion_agent::{Tool, ToolSource};
use fusion_core::Error;
use fusion_mcp::{HttpServerConfig, McpOptions, McpServer};
use serde_json::{Value, json};

/// The token the server takes.
const TOKEN: &str = "tok-right";

/// A server on a loopback port, and what it has seen.
struct Server {
    url: String,
    /// `initialize` requests.
    initialized: Arc<AtomicUsize>,
    /// Requests that carried an `X-Api-Key` header.
    api_keys: Arc<AtomicUsize>,
}

/// Answers a request without `Authorization: Bearer tok-right` with HTTP 401; `initialize`
/// and `tools/list` with JSON; `tools/call` of `broken` with HTTP 500 and a text body, of
/// any other tool with a text result.
async fn serve() -> Server {
    let initialized = Arc::new(AtomicUsize::new(0));
    let api_keys = Arc::new(AtomicUsize::new(0));
    let (count, keys) = (initialized.clone(), api_keys.clone());
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (count, keys) = (count.clone(), keys.clone());
            async move {
                if headers.contains_key("x-api-key") {
                    keys.fetch_add(1, Ordering::SeqCst);
                }
                let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
                if authorization != Some(&format!("Bearer {TOKEN}")) {
                    return Response::builder()
                        .status(StatusCode::UNAUTHORIZED)
                        .body(Body::from("invalid token"))
                        .unwrap();
                }
                let msg: Value = serde_json::from_str(&body).unwrap();
                let id = msg["id"].clone();
                if id.is_null() {
                    // A notification.
                    return Response::builder()
                        .status(StatusCode::ACCEPTED)
                        .body(Body::empty())
                        .unwrap();
                }
                let result = match msg["method"].as_str().unwrap_or("") {
                    "initialize" => {
                        count.fetch_add(1, Ordering::SeqCst);
                        json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                               "serverInfo": {"name": "web", "version": "1.0.0"}})
                    }
                    "tools/list" => {
                        let tool = |name| json!({"name": name, "inputSchema": {"type": "object"}});
                        json!({"tools": [tool("broken"), tool("fine")]})
                    }
                    "tools/call" if msg["params"]["name"] == "broken" => {
                        return Response::builder()
                            .status(StatusCode::INTERNAL_SERVER_ERROR)
                            .body(Body::from("database down"))
                            .unwrap();
                    }
                    "tools/call" => json!({"content": [{"type": "text", "text": "fine"}]}),
                    _ => json!({}),
                };
                Response::builder()
                    .header("content-type", "application/json")
                    .header("mcp-session-id", "session-1")
                    .body(Body::from(
                        json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string(),
                    ))
                    .unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        url,
        initialized,
        api_keys,
    }
}

fn tool(server: &McpServer, name: &str) -> Arc<dyn Tool> {
    let tools = server.tools();
    tools.iter().find(|t| t.name() == name).unwrap().clone()
}

#[tokio::test]
async fn an_http_error_fails_the_call_alone_and_the_session_goes_on() {
    let web = serve().await;
    let config = HttpServerConfig::new(&web.url).bearer_token(TOKEN);
    let server = McpServer::start("web", config, McpOptions::default())
        .await
        .unwrap();
    let Err(Error::Tool { message, .. }) = tool(&server, "web__broken").call(json!({})).await
    else {
        panic!("the call should fail")
    };
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
    assert_eq!(
        web.initialized.load(Ordering::SeqCst),
        1,
        "one session throughout"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_refused_token_fails_the_start_with_the_status_in_plain_words() {
    let web = serve().await;
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
    assert_eq!(web.initialized.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_redirect_to_another_origin_is_refused_and_the_headers_stay_home() {
    let elsewhere = serve().await;
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
        elsewhere.api_keys.load(Ordering::SeqCst),
        0,
        "the key went to another origin"
    );
    let Err(Error::Config(message)) = started else {
        panic!("the start should fail")
    };
    assert!(message.contains("another origin"), "{message}");
    assert!(!message.contains("key-SECRET"), "{message}");
}
