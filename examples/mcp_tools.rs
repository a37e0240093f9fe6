//! An agent with the tools of an MCP server (by default the reference server
//! `@modelcontextprotocol/server-everything`, started with `npx`), which asks you before
//! any call of a tool that may change something.
//!
//! ```bash
//! cargo run --example mcp_tools -- "Add 2 and 3, then echo the result." ["SERVER COMMAND"]
//! ```
//! The server is stopped when the example ends. The session (`mcp-tools`) is stored under
//! `./sessions`, so a second run remembers the first.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;

use fusion::agent::{
    ApprovalDecision, ApprovalPolicy, ApprovalRequest, OpenAiClient, SessionBuilder, ToolRegistry,
};
use fusion::mcp::{McpConfig, McpOptions, McpServers};
use fusion::storage::StorageType;
use fusion_examples::{exit_code, init_tracing, two_args};

const DEFAULT_SERVER: &str = "npx -y @modelcontextprotocol/server-everything";

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    let (message, server) = two_args("Add 2 and 3 with your tools.", DEFAULT_SERVER);
    exit_code(run(&message, &server).await)
}

async fn run(message: &str, server: &str) -> fusion::Result<()> {
    // The LLM first: without one there is no point starting the server.
    let llm = Arc::new(OpenAiClient::from_env()?);
    let mut config = McpConfig::new();
    let name = config.add_command_line(server)?;
    println!("starting MCP server {name}: {server}");
    let servers = McpServers::start(&config, McpOptions::default()).await?;
    let mut tools = ToolRegistry::new();
    servers.register_into(&mut tools);
    println!("tools: {}", tools.names().join(", "));

    let mut session = SessionBuilder::new("mcp-tools")
        .llm(llm)
        .storage(StorageType::FileSystem("./sessions".into()))
        .tools(tools)
        .approval(ApprovalPolicy::ask_destructive().ask_with(ask_on_stdin))
        .build()
        .await?;
    println!("you> {message}");
    let result = session.send_message(message).await?;
    for step in &result.steps {
        let first_line = step.observation.lines().next().unwrap_or("");
        println!(
            "  -> {}({})\n     <- {first_line}",
            step.tool, step.arguments
        );
    }
    println!("agent> {}", result.result);
    drop(session);
    servers.shutdown().await;
    Ok(())
}

/// Asks on the terminal whether a call that may change something runs.
async fn ask_on_stdin(request: ApprovalRequest) -> ApprovalDecision {
    let question = format!("allow {}? [y/N] ", request.display());
    let answer = tokio::task::spawn_blocking(move || {
        print!("{question}");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        line
    })
    .await
    .unwrap_or_default();
    if answer.trim().eq_ignore_ascii_case("y") {
        ApprovalDecision::Approve
    } else {
        ApprovalDecision::Deny
    }
}
