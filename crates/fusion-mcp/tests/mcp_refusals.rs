//! A JSON-RPC error a server refuses a call with reaches the model with the server's
//! message, held to [`McpOptions::max_observation_bytes`] as a result is: an error message
//! is the server's text as much as a result (a stack trace, the arguments echoed back), and
//! a few megabytes of it in the history would make every later request of the session too
//! long for the model. The server is a few lines of Node.js speaking JSON-RPC over stdio.

mod common;

use fusion_agent::ToolSource;
use fusion_mcp::{McpOptions, McpServer};
use serde_json::json;

/// `refuse` answers a JSON-RPC error whose message is 2 MiB long.
const ON_CALL: &str = r#"
    write({ jsonrpc: '2.0', id: msg.id,
            error: { code: -32602, message: 'Invalid arguments: ' + 'x'.repeat(2 << 20) } });
"#;

#[tokio::test]
async fn a_huge_error_message_is_cut_to_the_observation_limit() {
    let config = common::node_server("refusing", &["refuse"], "", ON_CALL);
    let options = McpOptions {
        max_observation_bytes: 64 * 1024,
        ..McpOptions::default()
    };
    let server = McpServer::start("refusing", config, options).await.unwrap();
    let refuse = server.tools()[0].clone();
    let err = refuse.call(json!({})).await.unwrap_err().to_string();
    assert!(
        err.contains("MCP server `refusing` refused the call: Invalid arguments: xxx"),
        "{}",
        &err[..200]
    );
    assert!(err.len() < 65 * 1024, "{} bytes", err.len());
    assert!(
        err.contains("[output cut: 64.0 KiB of "),
        "{}",
        &err[err.len() - 200..]
    );
    server.shutdown().await;
}
