//! Shared support for the MCP suites: the stdio test server of this crate, a hand-written
//! HTTP one ([`http_server`]) and an agent session on the loopback LLM server. The npm reference servers and the check that a
//! process is gone are `fusion_mcp::testing`'s, shared with the CLI's tests.

#![allow(dead_code, unused_imports)] // Each test binary uses a different subset.

pub mod http_server;

use std::sync::Arc;

use fusion_agent::testing::MockLlmServer;
use fusion_agent::{AgentSession, OpenAiConfig, SessionBuilder, ToolRegistry};
use fusion_storage_memory::InMemoryStorage;

use fusion_mcp::StdioServerConfig;
pub use fusion_mcp::testing::{PATIENCE, assert_process_ends};

/// A stdio MCP server of a few lines of Node.js speaking JSON-RPC, as any server may
/// (`NAME`, `TOOLS`, `PRELUDE` and `ON_CALL` are [`node_server`]'s).
const NODE_SERVER: &str = r#"
const write = (msg) => process.stdout.write(JSON.stringify(msg) + '\n');
const text = (id, text) => write({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text }] } });
PRELUDE
require('readline').createInterface({ input: process.stdin }).on('line', (line) => {
  const msg = JSON.parse(line);
  if (msg.id === undefined) return;
  if (msg.method === 'initialize') {
    write({ jsonrpc: '2.0', id: msg.id, result: { protocolVersion: msg.params.protocolVersion,
            capabilities: { tools: { listChanged: true } },
            serverInfo: { name: NAME, version: '1.0.0' } } });
  } else if (msg.method === 'tools/list') {
    write({ jsonrpc: '2.0', id: msg.id, result: { tools: TOOLS.map(
      (name) => ({ name, description: 'The ' + name + ' tool.', inputSchema: { type: 'object' } })) } });
  } else {
ON_CALL
  }
});
"#;

/// A stdio MCP server named `name` in a few lines of Node.js: it lists `tools` (each
/// taking an object) and answers every other request (a `tools/call`) with `on_call`,
/// JavaScript run with the request as `msg` and `write(message)` (one JSON line to
/// stdout) and `text(id, text)` (a result of one text block) in scope, after `prelude`
/// (what the calls share).
pub fn node_server(name: &str, tools: &[&str], prelude: &str, on_call: &str) -> StdioServerConfig {
    let script = NODE_SERVER
        .replace("NAME", &serde_json::json!(name).to_string())
        .replace("TOOLS", &serde_json::json!(tools).to_string())
        .replace("PRELUDE", prelude)
        .replace("ON_CALL", on_call);
    StdioServerConfig::new("node").args(["-e".to_string(), script])
}

/// The stdio test server of this crate (`src/bin/test_server.rs`).
pub fn test_server() -> &'static str {
    env!("CARGO_BIN_EXE_fusion-mcp-test-server")
}

/// A session builder talking to `llm` (a scripted loopback server), storing in memory.
pub fn builder(llm: &MockLlmServer) -> SessionBuilder {
    let client = OpenAiConfig::new("mock-model")
        .base_url(llm.base_url())
        .max_retries(0)
        .build()
        .unwrap();
    AgentSession::builder("mcp-user")
        .llm(Arc::new(client))
        .storage(Arc::new(InMemoryStorage::new()))
        .system_prompt("You are a test agent.")
}

/// A session with `tools`, talking to `llm`.
pub async fn session(llm: &MockLlmServer, tools: ToolRegistry) -> AgentSession {
    builder(llm).tools(tools).build().await.unwrap()
}

/// The names of the tools offered in request `n` the LLM server received.
pub fn offered(llm: &MockLlmServer, n: usize) -> Vec<String> {
    llm.requests()[n]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
        .collect()
}
