//! A result holding a content block of a type this client does not know (one a newer
//! revision of MCP added) keeps the rest of the result, with a note for that block: the
//! tool ran, and the model reads what it returned rather than a vague failure. The server
//! is a few lines of Node.js speaking JSON-RPC over stdio, as any server may.

mod common;

use fusion_agent::ToolSource;
use fusion_mcp::{McpOptions, McpServer};
use serde_json::json;

/// `scan` returns a text block and a `hologram` block, `quiet` a result of only
/// `resultType`.
const ON_CALL: &str = r#"
    const result = msg.params.name === 'quiet'
      ? { resultType: 'complete' }
      : { content: [{ type: 'text', text: 'important text result' }, { type: 'hologram', data: 'AAAA' }] };
    write({ jsonrpc: '2.0', id: msg.id, result });
"#;

#[tokio::test]
async fn an_unknown_content_type_becomes_a_note_and_the_text_is_kept() {
    // Node.js is needed here as by the npm servers' tests (`cargo xtask test-all-backends`
    // says so when it is missing).
    let config = common::node_server("future", &["scan", "quiet"], "", ON_CALL);
    let server = McpServer::start("future", config, McpOptions::default())
        .await
        .unwrap();
    let tools = server.tools();
    let scan = tools.iter().find(|t| t.name() == "future__scan").unwrap();
    let out = scan.call(json!({})).await.unwrap();
    assert_eq!(
        out,
        "important text result\n[content of a type this client cannot read (\"hologram\"), not shown]"
    );
    // A result of only `resultType` is a call that returned nothing, as the SDK reads it.
    let quiet = tools.iter().find(|t| t.name() == "future__quiet").unwrap();
    let out = quiet.call(json!({})).await.unwrap();
    assert_eq!(out, "(the tool returned no content)");
    server.shutdown().await;
}
