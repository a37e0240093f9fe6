//! A result holding a content block of a type this client does not know (one a newer
//! revision of MCP added) keeps the rest of the result, with a note for that block: the
//! tool ran, and the model reads what it returned rather than a vague failure. The server
//! is a few lines of Node.js speaking JSON-RPC over stdio, as any server may.

use fusion_agent::ToolSource;
use fusion_mcp::{McpOptions, McpServer, StdioServerConfig};
use serde_json::json;

/// Answers `initialize` and lists two tools: `scan` returns a text block and a `hologram`
/// block, `quiet` a result of only `resultType`.
const SERVER: &str = r#"
const rl = require('readline').createInterface({ input: process.stdin });
const send = (id, result) => process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id, result }) + '\n');
rl.on('line', (line) => {
  const msg = JSON.parse(line);
  if (msg.id === undefined) return;
  if (msg.method === 'initialize') {
    send(msg.id, { protocolVersion: msg.params.protocolVersion, capabilities: { tools: {} },
                   serverInfo: { name: 'future', version: '1.0.0' } });
  } else if (msg.method === 'tools/list') {
    send(msg.id, { tools: [{ name: 'scan', description: 'Scans.', inputSchema: { type: 'object' } },
                           { name: 'quiet', description: 'Says nothing.', inputSchema: { type: 'object' } }] });
  } else if (msg.method === 'tools/call' && msg.params.name === 'quiet') {
    send(msg.id, { resultType: 'complete' });
  } else if (msg.method === 'tools/call') {
    send(msg.id, { content: [{ type: 'text', text: 'important text result' },
                             { type: 'hologram', data: 'AAAA' }] });
  } else {
    process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id: msg.id,
      error: { code: -32601, message: 'no such method' } }) + '\n');
  }
});
"#;

#[tokio::test]
async fn an_unknown_content_type_becomes_a_note_and_the_text_is_kept() {
    // Node.js is needed here as by the npm servers' tests (`cargo xtask test-all-backends`
    // says so when it is missing).
    let config = StdioServerConfig::new("node").args(["-e", SERVER]);
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
