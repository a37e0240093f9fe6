//! `--mcp-config FILE` and `--mcp "COMMAND"`: MCP servers whose tools join the built-in
//! file tools for this chat.
//!
//! The servers start before the chat does, so a server that cannot start stops `fusion
//! chat` with an error naming it rather than failing the first turn that needs it. They
//! stop (their processes killed) when the chat ends. `--tool-timeout` bounds a call of any
//! of these tools, built-in or a server's.

use std::path::PathBuf;
use std::time::Duration;

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
    let mut options = McpOptions::default();
    if let Some(timeout) = args.tool_timeout {
        // The servers' own bound on `tools/call` follows: raising --tool-timeout must let
        // a slow server's call finish too, not end at the servers' default 30 s.
        options.call_timeout = timeout;
    }
    let servers = McpServers::start(&config, options)
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

/// Parses `--tool-timeout`: a whole number of seconds, at least 1.
pub fn parse_tool_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    match text.parse::<u64>() {
        Ok(0) => Err("must be at least 1 second (0 would stop every call at once)".to_owned()),
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) if text.starts_with('-') => Err("must be at least 1 second".to_owned()),
        Err(_) => Err("not a whole number of seconds (30 is the default)".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_timeout_is_a_positive_whole_number_of_seconds() {
        assert_eq!(parse_tool_timeout("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_tool_timeout("120"), Ok(Duration::from_secs(120)));
        for bad in ["0", "-1", "-0.5"] {
            let err = parse_tool_timeout(bad).unwrap_err();
            assert!(err.contains("at least 1 second"), "{bad}: {err}");
        }
        for bad in ["1.5", "30s", "", "soon"] {
            let err = parse_tool_timeout(bad).unwrap_err();
            assert!(
                err.contains("not a whole number of seconds"),
                "{bad}: {err}"
            );
        }
    }
}
