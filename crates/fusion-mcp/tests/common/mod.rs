//! Shared support for the MCP suites (the npm reference servers are in
//! `fusion_mcp::testing`): the stdio test server of this crate, an agent session on the
//! loopback LLM server, and a check that a process is gone.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fusion_agent::testing::MockLlmServer;
use fusion_agent::{AgentSession, OpenAiConfig, SessionBuilder, ToolRegistry};
use fusion_storage_memory::InMemoryStorage;

/// A bound for things that should happen promptly; generous for a busy CI machine. Only a
/// failure bound: nothing asserts how long anything took.
pub const PATIENCE: Duration = Duration::from_secs(60);

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

/// Whether process `pid` is gone (or a zombie, which runs nothing and is only waiting to
/// be reaped by its parent).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses: "123 (sleep) S ...".
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Panics unless process `pid` is gone within [`PATIENCE`]. A killed process disappears
/// asynchronously, and nothing announces it to a process that is not its parent, so this
/// looks every few milliseconds.
pub fn assert_process_ends(pid: u32) {
    let deadline = Instant::now() + PATIENCE;
    while !process_gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}
