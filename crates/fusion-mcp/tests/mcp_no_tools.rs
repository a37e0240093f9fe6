//! A server that offers no tools (one of prompts or resources only, as desktop MCP
//! configurations hold) declares no `tools` capability and may refuse `tools/list` ("method
//! not found"): it starts with no tools rather than failing the start, and with it every
//! other server of the set. A server that declares tools and refuses to list them still
//! fails the start, saying why. The server is a few lines of Node.js speaking JSON-RPC
//! over stdio, as any server may.

use fusion_agent::ToolSource;
use fusion_mcp::{McpConfig, McpOptions, McpServer, McpServers, StdioServerConfig};

/// Declares the capabilities given as its argument (JSON) and refuses `tools/list`, as a
/// server without tools does (the TypeScript SDK's answer to a method it has no handler
/// for).
const SERVER: &str = r#"
const capabilities = JSON.parse(process.argv[1]);
const write = (msg) => process.stdout.write(JSON.stringify(msg) + '\n');
require('readline').createInterface({ input: process.stdin }).on('line', (line) => {
  const msg = JSON.parse(line);
  if (msg.id === undefined) return;
  if (msg.method === 'initialize') {
    write({ jsonrpc: '2.0', id: msg.id, result: { protocolVersion: msg.params.protocolVersion,
            capabilities, serverInfo: { name: 'prompts-only', version: '1.0.0' } } });
  } else {
    write({ jsonrpc: '2.0', id: msg.id, error: { code: -32601, message: 'Method not found' } });
  }
});
"#;

fn server(capabilities: &str) -> StdioServerConfig {
    StdioServerConfig::new("node").args(["-e", SERVER, capabilities])
}

#[tokio::test]
async fn a_server_without_the_tools_capability_starts_with_no_tools() {
    let config = McpConfig::new()
        .with("prompts", server(r#"{"prompts": {}}"#))
        .with("bare", server("{}"));
    let servers = McpServers::start(&config, McpOptions::default())
        .await
        .expect("servers that offer no tools start");
    for server in servers.servers() {
        assert!(server.tools().is_empty(), "{}", server.name());
        assert!(server.skipped_tools().is_empty(), "{}", server.name());
    }
    servers.shutdown().await;
}

#[tokio::test]
async fn a_server_declaring_tools_that_refuses_to_list_them_fails_the_start() {
    let err = McpServer::start("liar", server(r#"{"tools": {}}"#), McpOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("MCP server `liar`") && err.contains("tools/list failed"),
        "{err}"
    );
    assert!(err.contains("Method not found"), "{err}");
}
