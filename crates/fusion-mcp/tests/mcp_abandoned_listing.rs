//! A re-listing of a stdio server's tools that is given up (its timeout passed) cancels its
//! `tools/list` with `notifications/cancelled`, which takes the request out of the requests
//! in flight: left there, never answered, it kept an error without an id (JSON-RPC's
//! parse error) from being tied to the one call really in flight until the server was
//! restarted, and each such call waited out its whole timeout.

mod common;

use std::time::Duration;

use common::PATIENCE;
use fusion_agent::ToolSource;
use fusion_mcp::{McpOptions, McpServer, StdioServerConfig};
use serde_json::json;

/// Answers the first `tools/list` and holds every later one unanswered. Tools: `grow`
/// announces a change of the list (a re-listing starts, and is held); `until_cancelled`
/// answers once a held listing is cancelled; `fine` answers `fine`; `unreadable` answers
/// with an error whose `id` is null, as a server that cannot read a request does.
const SERVER: &str = r#"
let listed = 0, held = new Set(), cancelled = false, waiting = [];
const write = (msg) => process.stdout.write(JSON.stringify(msg) + '\n');
const text = (id, t) => write({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: t }] } });
const tools = ['grow', 'until_cancelled', 'fine', 'unreadable'].map((name) =>
  ({ name, description: 'The ' + name + ' tool.', inputSchema: { type: 'object' } }));
require('readline').createInterface({ input: process.stdin }).on('line', (line) => {
  const msg = JSON.parse(line);
  if (msg.method === 'notifications/cancelled') {
    if (held.has(msg.params.requestId)) {
      cancelled = true;
      for (const id of waiting) text(id, 'cancelled');
      waiting = [];
    }
    return;
  }
  if (msg.id === undefined) return;
  if (msg.method === 'initialize') {
    write({ jsonrpc: '2.0', id: msg.id, result: { protocolVersion: msg.params.protocolVersion,
            capabilities: { tools: { listChanged: true } },
            serverInfo: { name: 'abandoned', version: '1.0.0' } } });
  } else if (msg.method === 'tools/list') {
    listed += 1;
    if (listed === 1) write({ jsonrpc: '2.0', id: msg.id, result: { tools } });
    else held.add(msg.id);
  } else if (msg.params.name === 'grow') {
    write({ jsonrpc: '2.0', method: 'notifications/tools/list_changed' });
    text(msg.id, 'grown');
  } else if (msg.params.name === 'until_cancelled') {
    if (cancelled) text(msg.id, 'cancelled'); else waiting.push(msg.id);
  } else if (msg.params.name === 'unreadable') {
    write({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error at 1:17' } });
  } else {
    text(msg.id, 'fine');
  }
});
"#;

async fn call(server: &McpServer, name: &str) -> Result<String, String> {
    let name = format!("{}__{name}", server.prefix());
    let tools = server.tools();
    let tool = tools.iter().find(|t| t.name() == name).expect("listed");
    tool.call(json!({})).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_relisting_given_up_leaves_an_error_without_an_id_tied_to_the_call_in_flight() {
    let config = StdioServerConfig::new("node").args(["-e", SERVER]);
    // The re-listing is bounded by the startup timeout: short enough for the held one to be
    // given up within the calls' (long) timeout, long enough for Node.js to start.
    let options = McpOptions {
        startup_timeout: Duration::from_secs(8),
        call_timeout: PATIENCE,
        ..McpOptions::default()
    };
    let server = McpServer::start("abandoned", config, options)
        .await
        .unwrap();
    assert_eq!(call(&server, "grow").await.unwrap(), "grown");
    // Answered once the held listing is given up and cancelled; without the cancellation
    // this call waits out its timeout and fails.
    assert_eq!(call(&server, "until_cancelled").await.unwrap(), "cancelled");
    // A request answered after the cancellation: the server has read it.
    assert_eq!(call(&server, "fine").await.unwrap(), "fine");
    // The listing given up is no longer in flight: the error can only answer this call.
    let err = call(&server, "unreadable").await.unwrap_err();
    assert!(err.contains("Parse error at 1:17"), "{err}");
    assert!(!err.contains("did not answer"), "{err}");
    server.shutdown().await;
}
