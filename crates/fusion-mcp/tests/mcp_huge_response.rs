//! A stdio server's response longer than the SDK reads as one message (16 MiB), which the
//! SDK discards, ends the call at once with an observation saying it was too large, rather
//! than at the per-call timeout as a server that did not answer; whichever end of the line
//! its id is written at (the TypeScript SDK writes `result` first, the Python SDK `id`
//! first). The session goes on. The server is a few lines of Node.js.

mod common;

use common::PATIENCE;
use fusion_agent::ToolSource;
use fusion_mcp::{McpOptions, McpServer};
use serde_json::json;

/// `id_last` answers 17 MiB of text with the id after the result, `id_first` with the id
/// before it; `fine` answers a short text.
const PRELUDE: &str =
    r#"const huge = () => ({ content: [{ type: 'text', text: 'x'.repeat(17 << 20) }] });"#;

const ON_CALL: &str = r#"
    if (msg.params.name === 'id_last') {
      write({ result: huge(), jsonrpc: '2.0', id: msg.id });
    } else if (msg.params.name === 'id_first') {
      write({ jsonrpc: '2.0', id: msg.id, result: huge() });
    } else {
      text(msg.id, 'fine');
    }
"#;

#[tokio::test]
async fn a_response_larger_than_the_sdk_reads_ends_the_call_at_once_saying_so() {
    let config = common::node_server("huge", &["id_last", "id_first", "fine"], PRELUDE, ON_CALL);
    // Were the response only discarded, the call would end at this timeout, saying the
    // server did not answer; the bound is only for the failure.
    let options = McpOptions {
        call_timeout: PATIENCE,
        ..McpOptions::default()
    };
    let server = McpServer::start("huge", config, options).await.unwrap();
    let tools = server.tools();
    let tool = |name: &str| tools.iter().find(|t| t.name() == name).unwrap().clone();
    for name in ["huge__id_last", "huge__id_first"] {
        let err = tool(name).call(json!({})).await.unwrap_err().to_string();
        assert!(
            err.contains("MCP server `huge` answered the call with more than 16 MiB"),
            "{name}: {err}"
        );
    }
    assert_eq!(tool("huge__fine").call(json!({})).await.unwrap(), "fine");
    server.shutdown().await;
}
