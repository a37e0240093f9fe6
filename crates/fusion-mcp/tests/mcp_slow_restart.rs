//! A restart slower than a call (`npx -y` downloading the server again, say) goes on after
//! the call that started it has ended with its timeout error, and a later call uses it
//! rather than start the server again from scratch; a server shut down or dropped while it
//! restarts leaves no process behind; a call timeout of `Duration::MAX` is no bound, the
//! restart a call waits for included. The server is a few lines of Node.js whose restarts
//! wait for a file the test writes, so whether a restart outlasts a call does not depend
//! on how fast anything runs.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{PATIENCE, assert_process_ends};
use fusion_agent::ToolSource;
use fusion_core::Error;
use fusion_mcp::{McpOptions, McpServer};
use serde_json::json;

/// Notes each start's pid in `STARTS`; a start after the first waits until `GATE` exists
/// before it reads anything, as a server being downloaded does.
const PRELUDE: &str = r#"
  const fs = require('fs');
  const started = fs.existsSync(STARTS);
  fs.appendFileSync(STARTS, process.pid + '\n');
  const pause = new Int32Array(new SharedArrayBuffer(4));
  while (started && !fs.existsSync(GATE)) Atomics.wait(pause, 0, 0, 20);
"#;

const ON_CALL: &str = r#"
    if (msg.params.name === 'exit') process.exit(3);
    text(msg.id, 'up');
"#;

/// The server `slow`, its starts noted in `dir`, restarts waiting for [`open_gate`].
async fn start(dir: &Path, options: McpOptions) -> McpServer {
    let quoted = |name: &str| json!(dir.join(name).to_str().unwrap()).to_string();
    let prelude = PRELUDE
        .replace("STARTS", &quoted("starts"))
        .replace("GATE", &quoted("gate"));
    let config = common::node_server("slow", &["exit", "echo"], &prelude, ON_CALL);
    McpServer::start("slow", config, options).await.unwrap()
}

fn open_gate(dir: &Path) {
    std::fs::write(dir.join("gate"), "open").unwrap();
}

/// The pids of the starts so far, waiting (up to [`PATIENCE`]) until there are `n`.
async fn starts(dir: &Path, n: usize) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(dir.join("starts")).unwrap_or_default();
        let pids: Vec<u32> = text.lines().map(|l| l.parse().unwrap()).collect();
        if pids.len() >= n || tokio::time::Instant::now() > deadline {
            return pids;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn call(server: &McpServer, tool: &str) -> fusion_core::Result<String> {
    let tools = server.tools();
    let tool = tools.iter().find(|t| t.name() == tool).unwrap().clone();
    // The session's tool timeout would cancel the call here; the bound is only for the
    // failure, since the call's own timeout is far shorter.
    tokio::time::timeout(PATIENCE, tool.call(json!({})))
        .await
        .expect("the call ends at its own timeout")
}

/// The server crashed and its restart is under way, held at the gate: the call that
/// started it has ended at its timeout, saying so.
async fn crash_and_restart(dir: &Path, server: &McpServer) {
    let exit = call(server, "slow__exit").await.unwrap_err().to_string();
    assert!(exit.contains("exited"), "{exit}");
    let Err(Error::Tool { message, .. }) = call(server, "slow__echo").await else {
        panic!("the restart cannot finish before the gate opens")
    };
    assert!(
        message.contains("MCP server `slow` is being restarted"),
        "{message}"
    );
    assert!(message.contains("a later call"), "{message}");
    assert_eq!(starts(dir, 2).await.len(), 2);
}

fn options(startup_timeout: Duration) -> McpOptions {
    McpOptions {
        // Ends the call while the restart waits at the gate; generous for a call to a
        // running server on a busy machine.
        call_timeout: Duration::from_secs(10),
        startup_timeout,
        ..McpOptions::default()
    }
}

#[tokio::test]
async fn a_restart_slower_than_the_call_goes_on_and_a_later_call_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), options(PATIENCE)).await;
    crash_and_restart(dir.path(), &server).await;
    let revision = server.revision();

    open_gate(dir.path());
    // The restart that call started lists the tools when it is done.
    tokio::time::timeout(PATIENCE, server.changed_since(revision))
        .await
        .unwrap();
    assert_eq!(call(&server, "slow__echo").await.unwrap(), "up");
    let pids = starts(dir.path(), 2).await;
    assert_eq!(
        pids.len(),
        2,
        "started once again, not once a call: {pids:?}"
    );
    assert_eq!(server.process_id().await, Some(pids[1]));
    server.shutdown().await;
    assert_process_ends(pids[1]);
}

#[tokio::test]
async fn a_server_shut_down_or_dropped_while_it_restarts_leaves_no_process() {
    for shut_down in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        // Longer than the test waits for the process to end: the restart must be stopped,
        // not time out.
        let server = start(dir.path(), options(10 * PATIENCE)).await;
        crash_and_restart(dir.path(), &server).await;
        let restarted = starts(dir.path(), 2).await[1];
        if shut_down {
            server.shutdown().await;
            let message = call(&server, "slow__echo").await.unwrap_err().to_string();
            assert!(message.contains("shut down"), "{message}");
            assert_process_ends(restarted);
        } else {
            drop(server);
            // The restart's task is stopped on this runtime, which a blocking wait would
            // hold up.
            tokio::task::spawn_blocking(move || assert_process_ends(restarted))
                .await
                .unwrap();
        }
    }
}

/// A call timeout of `Duration::MAX` (no bound) bounds neither a call nor the restart it
/// waits for, where the deadline counted from the call's start overflowed the clock.
#[tokio::test]
async fn a_call_timeout_of_duration_max_is_no_bound() {
    let dir = tempfile::tempdir().unwrap();
    open_gate(dir.path());
    let options = McpOptions {
        call_timeout: Duration::MAX,
        ..options(PATIENCE)
    };
    let server = start(dir.path(), options).await;
    assert_eq!(call(&server, "slow__echo").await.unwrap(), "up");
    let exit = call(&server, "slow__exit").await.unwrap_err().to_string();
    assert!(exit.contains("exited"), "{exit}");
    assert_eq!(call(&server, "slow__echo").await.unwrap(), "up");
    assert_eq!(starts(dir.path(), 2).await.len(), 2, "restarted");
    server.shutdown().await;
}
