//! `notifications/tools/list_changed`, against a few lines of Node.js speaking JSON-RPC
//! over stdio (as any server may): a flood of them costs at most two listings, not one
//! `tools/list` per notification; and a model-facing name stays with the tool it was
//! given to when the list changes, so a call (or an "always" approval) given under that
//! name never reaches another tool. A re-listing the server is slow to answer does not
//! keep a server that is dropped meanwhile, and its process, alive.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::PATIENCE;
use fusion_agent::testing::MockLlmServer;
use fusion_agent::{
    ApprovalDecision, ApprovalPolicy, ApprovalRequest, Tool, ToolRegistry, ToolSource,
};
use fusion_mcp::{McpOptions, McpServer, StdioServerConfig};
use serde_json::json;

/// Takes the tool lists it gives as its argument (JSON: listing `k` gives the `k`-th list,
/// or the last). Tools: `flood` sends 20,000 `list_changed` notifications and then holds
/// every `tools/list` unanswered until `release` answers them; `count` says how many
/// `tools/list` requests came after the first; `grow` announces one change; every other
/// tool answers `called NAME`.
const SERVER: &str = r#"
const lists = JSON.parse(process.argv[1]);
let listed = 0, hold = false, held = [];
const write = (msg) => process.stdout.write(JSON.stringify(msg) + '\n');
const send = (id, result) => write({ jsonrpc: '2.0', id, result });
const text = (id, t) => send(id, { content: [{ type: 'text', text: t }] });
const changed = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/tools/list_changed' }) + '\n';
const list = (id, names) => send(id, { tools: names.map((name) =>
  ({ name, description: 'The ' + name + ' tool.', inputSchema: { type: 'object' } })) });
require('readline').createInterface({ input: process.stdin }).on('line', (line) => {
  const msg = JSON.parse(line);
  if (msg.id === undefined) return;
  if (msg.method === 'initialize') {
    send(msg.id, { protocolVersion: msg.params.protocolVersion,
                   capabilities: { tools: { listChanged: true } },
                   serverInfo: { name: 'changing', version: '1.0.0' } });
  } else if (msg.method === 'tools/list') {
    const names = lists[Math.min(listed, lists.length - 1)];
    listed += 1;
    if (hold) held.push([msg.id, names]); else list(msg.id, names);
  } else if (msg.method === 'tools/call') {
    const name = msg.params.name;
    if (name === 'flood') {
      hold = true;
      process.stdout.write(changed.repeat(20000));
      text(msg.id, 'flooded');
    } else if (name === 'count') {
      text(msg.id, String(listed - 1));
    } else if (name === 'release') {
      hold = false;
      for (const [id, names] of held) list(id, names);
      held = [];
      text(msg.id, 'released');
    } else if (name === 'grow') {
      process.stdout.write(changed);
      text(msg.id, 'grown');
    } else {
      text(msg.id, 'called ' + name);
    }
  } else {
    write({ jsonrpc: '2.0', id: msg.id, error: { code: -32601, message: 'no such method' } });
  }
});
"#;

/// The server giving `lists`, started as `py`. Node.js is needed here as by the npm
/// servers' tests.
async fn start(lists: serde_json::Value) -> McpServer {
    let config = StdioServerConfig::new("node").args(["-e", SERVER, &lists.to_string()]);
    // Re-listing is bounded by the startup timeout: long, so a held listing stays held.
    let options = McpOptions {
        startup_timeout: Duration::from_secs(600),
        ..McpOptions::default()
    };
    McpServer::start("py", config, options).await.unwrap()
}

fn tool(server: &McpServer, name: &str) -> Arc<dyn Tool> {
    let tools = server.tools();
    let found = tools.iter().find(|t| t.name() == name).cloned();
    found.unwrap_or_else(|| {
        let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
        panic!("no tool {name} among {names:?}")
    })
}

async fn call(server: &McpServer, name: &str) -> String {
    tool(server, name).call(json!({})).await.unwrap()
}

/// How many `tools/list` requests the server received after the first.
async fn relistings(server: &McpServer) -> usize {
    call(server, "py__count").await.parse().unwrap()
}

#[tokio::test]
async fn a_flood_of_list_changed_notifications_costs_at_most_two_listings() {
    let server = start(json!([
        ["flood", "count", "release"],
        ["flood", "count", "release", "after"]
    ]))
    .await;
    let revision = server.revision();
    assert_eq!(call(&server, "py__flood").await, "flooded");
    // The re-listing starts in the background.
    let count = until_a_listing_is_held(&server).await;
    // Every notification has been handled by now (they came before the flood's answer):
    // one listing is outstanding, and none other was sent meanwhile.
    assert_eq!(count, 1, "tools/list requests while one is outstanding");
    assert_eq!(relistings(&server).await, 1);

    assert_eq!(call(&server, "py__release").await, "released");
    tokio::time::timeout(PATIENCE, server.changed_since(revision))
        .await
        .expect("the held listing is published once answered");
    assert!(server.tools().iter().any(|t| t.name() == "py__after"));
    // The notifications that came while it was held ask for one listing more, at most.
    assert!(relistings(&server).await <= 2);
    server.shutdown().await;
}

/// Waits (within a generous bound) for the re-listing the flood started to reach the
/// server, which holds it unanswered.
async fn until_a_listing_is_held(server: &McpServer) -> usize {
    let deadline = Instant::now() + PATIENCE;
    let mut count = relistings(server).await;
    while count == 0 {
        assert!(Instant::now() < deadline, "no tools/list after the flood");
        tokio::time::sleep(Duration::from_millis(10)).await;
        count = relistings(server).await;
    }
    count
}

#[tokio::test]
async fn a_server_dropped_while_its_tools_are_listed_again_stops() {
    let server = start(json!([["flood", "count"]])).await;
    let pid = server.process_id().await.unwrap();
    assert_eq!(call(&server, "py__flood").await, "flooded");
    until_a_listing_is_held(&server).await;
    // The listing is bounded by the startup timeout alone (600 s here): it must not keep
    // the server and its process for that long once the last handle is gone.
    drop(server);
    tokio::task::spawn_blocking(move || common::assert_process_ends(pid))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_and_its_always_approval_stay_with_their_tool_when_the_list_changes() {
    let server = start(json!([["safe.op", "grow"], ["safe.op", "safe_op", "grow"]])).await;
    let llm = MockLlmServer::start().await;
    let asked = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = asked.clone();
    let policy = ApprovalPolicy::ask_destructive().ask_with(move |request: ApprovalRequest| {
        seen.lock().unwrap().push(request.tool);
        async { ApprovalDecision::AlwaysApprove }
    });
    let mut tools = ToolRegistry::new();
    tools.register_source(Arc::new(server.clone()));
    let mut session = common::builder(&llm)
        .tools(tools)
        .approval(policy)
        .build()
        .await
        .unwrap();

    // `safe.op` is offered as `py__safe_op` and approved "always"; then the server adds
    // `safe_op`, whose plain name would be the same.
    let revision = server.revision();
    llm.push_tool_call("py__safe_op", "{}")
        .push_tool_call("py__grow", "{}")
        .push_text("done");
    let first = session.send_message("go").await.unwrap();
    assert!(first.steps[0].observation.contains("called safe.op"));
    tokio::time::timeout(PATIENCE, server.changed_since(revision))
        .await
        .expect("the new list is published");

    let names: Vec<String> = server.tools().iter().map(|t| t.name().to_owned()).collect();
    let new = names.iter().find(|n| n.starts_with("py__safe_op_"));
    let new = new.unwrap_or_else(|| panic!("no hashed name for safe_op in {names:?}"));
    llm.push_tool_call("py__safe_op", "{}")
        .push_tool_call(new, "{}")
        .push_text("done");
    let second = session.send_message("again").await.unwrap();
    // The approved name still runs `safe.op` without a question; the new tool, under its
    // own name, is asked about.
    let observations: Vec<&str> = second
        .steps
        .iter()
        .map(|s| s.observation.as_str())
        .collect();
    assert!(
        observations[0].contains("called safe.op"),
        "{observations:?}"
    );
    assert!(
        observations[1].contains("called safe_op"),
        "{observations:?}"
    );
    assert_eq!(
        *asked.lock().unwrap(),
        ["py__safe_op", "py__grow", new.as_str()]
    );
    server.shutdown().await;
}
