//! `--mcp-config FILE` and `--mcp "COMMAND"`: MCP servers whose tools join the built-in
//! file tools for this chat.
//!
//! The servers start before the chat does, so a server that cannot start stops `fusion
//! chat` with an error naming it rather than failing the first turn that needs it. They
//! stop (their processes killed) when the chat ends.

use std::path::PathBuf;

use anyhow::{Context, Result};
use fusion::agent::ToolRegistry;
use fusion::mcp::{McpConfig, McpOptions, McpServers};

use crate::ChatArgs;

/// The tools of this chat: the file tools confined to the current directory, then the
/// tools of the MCP servers `args` names, which are started here. The servers are
/// returned too, to stop them at the end.
pub async fn tools(args: &ChatArgs) -> Result<(ToolRegistry, Option<McpServers>)> {
    let here = std::env::current_dir().context("the current directory cannot be used")?;
    let mut tools = ToolRegistry::with_file_tools([here])?;
    let Some(config) = config(args.mcp_config.as_ref(), &args.mcp)? else {
        return Ok((tools, None));
    };
    let servers = McpServers::start(&config, McpOptions::default())
        .await
        .context("cannot start the MCP servers")?;
    for server in servers.servers() {
        for skipped in server.skipped_tools() {
            eprintln!(
                "note: MCP server {} offers tool `{}`, which is left out: {}",
                server.name(),
                skipped.name,
                skipped.reason
            );
        }
    }
    servers.register_into(&mut tools);
    Ok((tools, Some(servers)))
}

/// The servers of `--mcp-config` and of each `--mcp`, if any.
fn config(file: Option<&PathBuf>, lines: &[String]) -> Result<Option<McpConfig>> {
    let mut config = match file {
        Some(path) => McpConfig::from_file(path)?,
        None => McpConfig::new(),
    };
    for line in lines {
        config
            .add_command_line(line)
            .with_context(|| format!("--mcp {line:?}"))?;
    }
    Ok((!config.is_empty()).then_some(config))
}
