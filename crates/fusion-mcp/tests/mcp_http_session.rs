//! An HTTP server's session that ends (the server restarted, or expired it): the SDK opens
//! a new one when a request is answered HTTP 404, and the server's tools are listed again
//! then, as after a stdio server's restart, so a server that came back with other tools
//! is offered with those. Against a few axum routes speaking JSON-RPC, whose "restart"
//! forgets the session and changes the tool list. Shutting the server down ends its
//! session (HTTP DELETE) before it returns, so a program exiting next leaves none open.

mod common;

use axum::body::Body;
use axum::http::{Response, StatusCode};
use common::PATIENCE;
use common::http_server::{self, Answer, Behaviour, HttpServer, ToolCall, text_result};
use fusion_agent::ToolSource;
use fusion_mcp::{HttpServerConfig, McpOptions, McpServer};
use serde_json::json;

/// A server whose run names its tools: `echo` and `old` in run 1, `echo` and `new` after;
/// a call answers with the tool's name and its session.
struct Restarting;

impl Behaviour for Restarting {
    fn stale(&self) -> Response<Body> {
        http_server::plain(StatusCode::NOT_FOUND, "session not found")
    }

    fn tools(&self, run: usize) -> Vec<&'static str> {
        if run == 1 {
            vec!["echo", "old"]
        } else {
            vec!["echo", "new"]
        }
    }

    fn call(&self, call: &ToolCall<'_>) -> Answer {
        Answer::Result(text_result(&format!("{} in {}", call.name, call.session)))
    }
}

async fn serve() -> HttpServer {
    http_server::serve(Restarting).await
}

/// The MCP server `web` on `web`'s URL, with the default options.
async fn start(web: &HttpServer) -> McpServer {
    let config = HttpServerConfig::new(&web.url);
    McpServer::start("web", config, McpOptions::default())
        .await
        .unwrap()
}

fn names(server: &McpServer) -> Vec<String> {
    server.tools().iter().map(|t| t.name().to_owned()).collect()
}

#[tokio::test]
async fn a_session_opened_again_after_a_404_lists_the_tools_again() {
    let web = serve().await;
    let server = start(&web).await;
    assert_eq!(names(&server), ["web__echo", "web__old"]);

    web.restart();
    let revision = server.revision();
    let echo = server.tools()[0].clone();
    // Answered 404 for the old session, the call goes again in a new one.
    let reply = echo.call(json!({})).await.unwrap();
    assert_eq!(reply, "echo in run-2");
    assert_eq!(web.sessions_opened(), 2);
    tokio::time::timeout(PATIENCE, server.changed_since(revision))
        .await
        .expect("the tools are listed again in the new session");
    assert_eq!(names(&server), ["web__echo", "web__new"]);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_the_http_session_before_it_returns() {
    let web = serve().await;
    let server = start(&web).await;
    assert_eq!(web.sessions_deleted(), 0);
    // A program exits once this returns: a session still to be ended would stay open on
    // the server, with what it holds, until the server expires it (if ever).
    server.shutdown().await;
    assert_eq!(web.sessions_deleted(), 1);
}
