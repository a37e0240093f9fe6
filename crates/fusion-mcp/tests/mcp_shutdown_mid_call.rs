//! A server shut down while a call of its tools runs: the call ends saying the server was
//! shut down, not that it exited and will be started again on the next call (it will not:
//! later calls fail, saying it was shut down). The server is a few lines of Node.js.

mod common;

use common::PATIENCE;
use fusion_agent::ToolSource;
use fusion_mcp::{McpOptions, McpServer};
use serde_json::json;

/// `hang` announces a change of its tool list (so the test knows the call arrived) and
/// never answers.
const ON_CALL: &str = r#"
    write({ jsonrpc: '2.0', method: 'notifications/tools/list_changed' });
"#;

#[tokio::test]
async fn a_call_running_when_its_server_is_shut_down_says_so() {
    let config = common::node_server("hanging", &["hang"], "", ON_CALL);
    let options = McpOptions {
        call_timeout: PATIENCE,
        ..McpOptions::default()
    };
    let server = McpServer::start("hanging", config, options).await.unwrap();
    let hang = server.tools()[0].clone();
    let revision = server.revision();
    let call = tokio::spawn(async move { hang.call(json!({})).await });
    tokio::time::timeout(PATIENCE, server.changed_since(revision))
        .await
        .expect("the call reaches the server");
    server.shutdown().await;
    let message = call.await.unwrap().unwrap_err().to_string();
    assert!(
        message.contains("MCP server `hanging` was shut down during the call"),
        "{message}"
    );
    assert!(!message.contains("restarted"), "{message}");
}
