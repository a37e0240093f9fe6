//! Shared support for the MCP suites: the stdio test server of this crate, a hand-written
//! HTTP one ([`http_server`]) and an agent session on the loopback LLM server. The npm reference servers and the check that a
//! process is gone are `fusion_mcp::testing`'s, shared with the CLI's tests.

#![allow(dead_code, unused_imports)] // Each test binary uses a different subset.

pub mod http_server;

use std::sync::Arc;

use fusion_agent::testing::MockLlmServer;
use fusion_agent::{AgentSession, OpenAiConfig, SessionBuilder, ToolRegistry};
use fusion_storage_memory::InMemoryStorage;

pub use fusion_mcp::testing::{PATIENCE, assert_process_ends};

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
