//! A stdio server's response that is JSON but not a valid JSON-RPC response (neither
//! `result` nor `error`, an `error` without a `message`, a member too many, a typo) ends
//! the call at once with an observation saying the response was invalid, where the SDK
//! alone skips the line and the call waits out its whole timeout; a JSON log line on
//! stdout that carries a request's id is not such a response, even when its other members
//! are named `result` or `error`. The server is a few lines of Node.js.

mod common;

use common::PATIENCE;
use fusion_agent::ToolSource;
use fusion_mcp::{McpOptions, McpServer};
use serde_json::json;

/// `nothing` answers `{"jsonrpc":"2.0","id":N}`, `no_message` an error with only a code,
/// `extra` such an error with a `data` member beside it, `typo` a `results`; `logged` logs
/// JSON lines carrying the request's id to stdout (as servers using a JSON logger on
/// stdout do), one of them of response members alone, and then answers; `fine` answers a
/// valid result.
const ON_CALL: &str = r#"
    if (msg.params.name === 'nothing') {
      write({ jsonrpc: '2.0', id: msg.id });
    } else if (msg.params.name === 'no_message') {
      write({ jsonrpc: '2.0', id: msg.id, error: { code: -1 } });
    } else if (msg.params.name === 'extra') {
      write({ jsonrpc: '2.0', id: msg.id, error: { code: -1 }, data: 1 });
    } else if (msg.params.name === 'typo') {
      write({ jsonrpc: '2.0', id: msg.id, results: { content: [] } });
    } else if (msg.params.name === 'logged') {
      write({ level: 30, id: msg.id, msg: 'handling tools/call' });
      write({ id: msg.id, result: 'started' });
      write({ id: msg.id, error: 'ENOENT' });
      text(msg.id, 'logged');
    } else {
      text(msg.id, 'fine');
    }
"#;

#[tokio::test]
async fn an_invalid_response_ends_the_call_at_once_saying_so() {
    let config = common::node_server(
        "invalid",
        &["nothing", "no_message", "extra", "typo", "logged", "fine"],
        "",
        ON_CALL,
    );
    // Were the response skipped, the call would end at this timeout, saying the server did
    // not answer; the bound is only for the failure.
    let options = McpOptions {
        call_timeout: PATIENCE,
        ..McpOptions::default()
    };
    let server = McpServer::start("invalid", config, options).await.unwrap();
    let tools = server.tools();
    let tool = |name: &str| tools.iter().find(|t| t.name() == name).unwrap().clone();
    for name in [
        "invalid__nothing",
        "invalid__no_message",
        "invalid__extra",
        "invalid__typo",
    ] {
        let err = tool(name).call(json!({})).await.unwrap_err().to_string();
        assert!(
            err.contains("MCP server `invalid` sent an invalid response"),
            "{name}: {err}"
        );
    }
    // The session goes on.
    assert_eq!(tool("invalid__fine").call(json!({})).await.unwrap(), "fine");
    server.shutdown().await;
}

#[tokio::test]
async fn a_json_log_line_carrying_the_call_id_is_not_taken_for_its_response() {
    let config = common::node_server(
        "invalid",
        &["nothing", "no_message", "extra", "typo", "logged", "fine"],
        "",
        ON_CALL,
    );
    let server = McpServer::start("invalid", config, McpOptions::default())
        .await
        .unwrap();
    let tools = server.tools();
    let logged = tools
        .iter()
        .find(|t| t.name() == "invalid__logged")
        .unwrap();
    assert_eq!(logged.call(json!({})).await.unwrap(), "logged");
    server.shutdown().await;
}
