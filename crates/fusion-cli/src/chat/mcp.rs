//! `--mcp-config FILE` and `--mcp "COMMAND"`: MCP servers whose tools join the built-in
//! file tools for this chat, and the flags that set what the servers are given and may
//! offer ([`McpArgs`]).
//!
//! The servers start before the chat does, so a server that cannot start stops `fusion
//! chat` with an error naming it rather than failing the first turn that needs it. They
//! stop (their processes killed) when the chat ends. `--tool-timeout` bounds a call of any
//! of these tools, built-in or a server's. A stdio server is given only a few variables of
//! chat's environment (`PATH`, `HOME`, …): `--mcp-env NAME` passes more on to the servers
//! of `--mcp`, as `"inheritEnv"` does for those of a file. `--mcp-max-tools` and
//! `--mcp-max-description` set the limits of [`McpOptions`] on what the servers offer the
//! model; a note on a tool left out for a limit names the flag that raises it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{ArgGroup, Args};
use fusion::agent::{ToolRegistry, escape_hidden};
use fusion::mcp::{McpConfig, McpOptions, McpServerConfig, McpServers, SkippedTool, ToolLimit};

use crate::{ChatArgs, render};

/// The MCP options of `fusion chat`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("mcp_servers").multiple(true).args(["config", "commands"])))]
pub struct McpArgs {
    /// MCP servers whose tools the agent gets, from a JSON file in the desktop clients'
    /// format: {"mcpServers": {NAME: {"command", "args", "env"} | {"url", "headers"}}}.
    #[arg(long = "mcp-config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// An MCP server to start, as a command line (repeat for more), e.g.
    /// --mcp "npx -y @modelcontextprotocol/server-filesystem ./docs"; a URL is a
    /// streamable-HTTP server.
    #[arg(long = "mcp", value_name = "COMMAND")]
    pub commands: Vec<String>,
    /// A variable of this environment to pass on to the --mcp servers (repeat it, or
    /// separate names with commas), e.g. --mcp-env GITHUB_TOKEN; they get only PATH, HOME
    /// and a few more otherwise.
    #[arg(
        long = "mcp-env",
        value_name = "NAME",
        value_delimiter = ',',
        requires = "commands"
    )]
    pub env: Vec<String>,
    /// The most tools the MCP servers offer the model together (default 120); the tools
    /// past it are left out, with a note. Count chat's own 4 too: a provider refuses a
    /// request offering more tools than it takes (OpenAI: 128).
    #[arg(long = "mcp-max-tools", value_name = "N", requires = "mcp_servers",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tools: Option<u32>,
    /// The longest description of an MCP tool offered to the model, in characters
    /// (default 1024, OpenAI's limit); a longer one is cut, saying so.
    #[arg(long = "mcp-max-description", value_name = "CHARS", requires = "mcp_servers",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_description: Option<u32>,
}

impl McpArgs {
    /// The options the servers run with: the limits of these flags, and as the bound on
    /// each call one a little below `tool_timeout` (`--tool-timeout`,
    /// [`McpOptions::call_timeout_within`]).
    fn options(&self, tool_timeout: Option<Duration>) -> McpOptions {
        let mut options = McpOptions::default();
        if let Some(timeout) = tool_timeout {
            // The servers' own bound on `tools/call` follows: raising --tool-timeout must
            // let a slow server's call finish too, not end at the servers' default 25 s. It
            // stays a little below, so a call that does not end is reported by MCP's
            // message naming the server rather than by the session's vaguer one.
            options.call_timeout = McpOptions::call_timeout_within(timeout);
        }
        if let Some(max) = self.max_tools {
            options.max_tools = max as usize;
        }
        if let Some(max) = self.max_description {
            options.max_description_chars = max as usize;
        }
        options
    }
}

/// The tools of this chat: the file tools confined to the current directory, then the
/// tools of the MCP servers `args` names, which are started here. The servers are
/// returned too, to stop them at the end.
pub async fn tools(args: &ChatArgs) -> Result<(ToolRegistry, Option<McpServers>)> {
    let here = std::env::current_dir().context("the current directory cannot be used")?;
    let mut tools = ToolRegistry::with_file_tools([here])?;
    let mcp = &args.mcp;
    let Some(config) = config(mcp.config.as_ref(), &mcp.commands, &mcp.env)? else {
        return Ok((tools, None));
    };
    let servers = McpServers::start(&config, mcp.options(args.tool_timeout))
        .await
        .context("cannot start the MCP servers")?;
    note_skipped(&servers);
    servers.register_into(&mut tools);
    Ok((tools, Some(servers)))
}

/// Says on stderr which tools each server leaves out, one line per reason: the tools
/// past the servers' limit on tools (120 together), all left out for that one reason,
/// make one line rather than a line each. A limit's note says which flag raises it.
fn note_skipped(servers: &McpServers) {
    for server in servers.servers() {
        let mut reasons: Vec<(String, Vec<String>)> = Vec::new();
        for skipped in server.skipped_tools() {
            // A server's words: shown on the terminal as they are, never obeyed.
            let (name, reason) = (shown(&skipped.name), reason(&skipped));
            match reasons.iter_mut().find(|(known, _)| *known == reason) {
                Some((_, names)) => names.push(name),
                None => reasons.push((reason, vec![name])),
            }
        }
        let server = server.name();
        for (reason, names) in reasons {
            match names.as_slice() {
                [name] => render::note(format_args!(
                    "note: MCP server {server} offers tool `{name}`, which is left out: {reason}"
                )),
                _ => render::note(format_args!(
                    "note: MCP server {server} offers {} tools that are left out ({}): {reason}",
                    names.len(),
                    some_names(&names)
                )),
            }
        }
    }
}

/// Why `skipped` is left out, shown safely, and for a limit the flag that raises it: the
/// library's reason names none, as only chat knows its flags.
fn reason(skipped: &SkippedTool) -> String {
    let reason = shown(&skipped.reason);
    match skipped.limit {
        Some(ToolLimit::MaxTools) => format!(
            "{reason}; --mcp-max-tools N raises the limit, for a model whose provider takes \
             more tools a request"
        ),
        _ => reason,
    }
}

/// A tool's name or a reason it is left out, which hold what a server chose, safe to
/// print: controls written visibly, what a terminal hides or reorders escaped, cut.
fn shown(text: &str) -> String {
    escape_hidden(&render::shorten(text, 300))
}

/// "`a`, `b`, `c`", or the first few and how many more.
fn some_names(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let shown: Vec<String> = names.iter().take(SHOWN).map(|n| format!("`{n}`")).collect();
    match names.len().checked_sub(SHOWN) {
        Some(more) if more > 0 => format!("{} and {more} more", shown.join(", ")),
        _ => shown.join(", "),
    }
}

/// The servers of `--mcp-config` and of each `--mcp`, if any; the stdio servers of `--mcp`
/// inherit the variables `inherit` names.
fn config(
    file: Option<&PathBuf>,
    lines: &[String],
    inherit: &[String],
) -> Result<Option<McpConfig>> {
    let mut config = match file {
        Some(path) => McpConfig::from_file(path)?,
        None => McpConfig::new(),
    };
    for name in inherit {
        // What is refused is most often `NAME=VALUE`, a value (a token) meant for the
        // server: it is named without its value.
        let named = match name.split_once('=') {
            Some((name, _value)) => format!("{name}=…"),
            None => name.clone(),
        };
        check_variable_name(name).with_context(|| format!("--mcp-env {named:?}"))?;
        if std::env::var_os(name).is_none() {
            render::note(format_args!(
                "note: --mcp-env {name}: it is not set here, so no server is given it"
            ));
        }
    }
    for line in lines {
        // fusion-mcp's error quotes the line itself, its passwords hidden and its controls
        // escaped; quoting it here as written would show them.
        let name = config.add_command_line(line).context("--mcp")?;
        if let Some(McpServerConfig::Stdio(stdio)) = config.get(&name) {
            let stdio = inherit
                .iter()
                .fold(stdio.clone(), |stdio, variable| stdio.inherit_env(variable));
            config.add(name, stdio);
        }
    }
    Ok((!config.is_empty()).then_some(config))
}

/// Refuses what cannot be a variable's name: `--mcp-env` names variables whose values come
/// from chat's environment, and `NAME=VALUE` is likely a value meant for the server.
fn check_variable_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains(['=', '\0']) {
        anyhow::bail!(
            "not a variable's name: --mcp-env names a variable of this environment, whose \
             value the servers are given (--mcp-env GITHUB_TOKEN); a value of their own goes \
             in the \"env\" of a --mcp-config file"
        );
    }
    Ok(())
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
    fn a_long_list_of_names_is_cut_after_a_few() {
        let names: Vec<String> = (1..=8).map(|n| format!("t{n}")).collect();
        assert_eq!(some_names(&names[..2]), "`t1`, `t2`");
        assert_eq!(some_names(&names[..5]), "`t1`, `t2`, `t3`, `t4`, `t5`");
        assert_eq!(
            some_names(&names),
            "`t1`, `t2`, `t3`, `t4`, `t5` and 3 more"
        );
    }

    /// `fusion chat ARGS`'s MCP options, or clap's error.
    fn parsed(args: &[&str]) -> Result<McpArgs, clap::Error> {
        use clap::{FromArgMatches, Parser};
        #[derive(Parser)]
        struct Chat {
            #[command(flatten)]
            mcp: McpArgs,
        }
        let argv = std::iter::once("chat").chain(args.iter().copied());
        let matches = <Chat as clap::CommandFactory>::command().try_get_matches_from(argv)?;
        Chat::from_arg_matches(&matches).map(|chat| chat.mcp)
    }

    #[test]
    fn a_line_that_cannot_be_split_is_quoted_without_its_password() {
        let line = "'postgresql://app:s3cret@db/x".to_owned();
        let error = config(None, &[line], &[]).unwrap_err();
        let said = format!("{error:#}");
        assert!(said.starts_with("--mcp: "), "{said}");
        assert!(said.contains("postgresql://app:***@db/x"), "{said}");
        assert!(!said.contains("s3cret"), "{said}");
    }

    #[test]
    fn a_value_given_to_mcp_env_is_not_quoted() {
        // `--mcp-env NAME=VALUE` was refused quoting it whole, the token it most often
        // holds with it, where --mcp's refusal hides a line's password.
        let error = config(None, &[], &["GITHUB_TOKEN=ghp_s3cret".to_owned()]).unwrap_err();
        let said = format!("{error:#}");
        assert!(
            said.starts_with("--mcp-env \"GITHUB_TOKEN=…\": not a variable's name"),
            "{said}"
        );
        assert!(!said.contains("s3cret"), "{said}");
    }

    #[test]
    fn the_limit_flags_set_the_servers_options() {
        let args = ["--mcp", "srv", "--mcp-max-tools", "200"];
        let options = parsed(&args).unwrap().options(None);
        assert_eq!(options.max_tools, 200);
        assert_eq!(
            options.max_description_chars,
            McpOptions::default().max_description_chars
        );
        let args = ["--mcp-config", "m.json", "--mcp-max-description", "4000"];
        let options = parsed(&args)
            .unwrap()
            .options(Some(Duration::from_secs(90)));
        assert_eq!(options.max_description_chars, 4000);
        assert_eq!(options.max_tools, McpOptions::default().max_tools);
        assert_eq!(options.call_timeout, Duration::from_secs(85));
        assert_eq!(parsed(&[]).unwrap().options(None), McpOptions::default());
    }

    #[test]
    fn a_limit_needs_a_server_and_at_least_one() {
        for (args, says) in [
            (&["--mcp-max-tools", "10"][..], "--mcp"),
            (&["--mcp-max-description", "10"][..], "--mcp"),
            (
                &["--mcp", "srv", "--mcp-max-tools", "0"][..],
                "--mcp-max-tools",
            ),
            (
                &["--mcp", "srv", "--mcp-max-description", "0"][..],
                "--mcp-max-description",
            ),
            (
                &["--mcp", "srv", "--mcp-max-tools", "many"][..],
                "--mcp-max-tools",
            ),
        ] {
            let err = parsed(args).unwrap_err().to_string();
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }

    #[test]
    fn a_tool_left_out_for_the_limit_is_told_the_flag_that_raises_it() {
        let past = SkippedTool {
            name: "t".into(),
            reason: "MCP servers offer at most 120 tools together".into(),
            limit: Some(ToolLimit::MaxTools),
        };
        let said = reason(&past);
        assert!(said.starts_with("MCP servers offer at most 120"), "{said}");
        assert!(
            said.contains("--mcp-max-tools N raises the limit"),
            "{said}"
        );
        let broken = SkippedTool {
            limit: None,
            reason: "its inputSchema has no \"type\": \"object\"".into(),
            ..past
        };
        assert!(!reason(&broken).contains("--mcp-max-tools"));
    }

    #[test]
    fn mcp_env_takes_names_not_values() {
        assert!(check_variable_name("GITHUB_TOKEN").is_ok());
        for bad in ["", "GITHUB_TOKEN=ghp_x", "A\0B"] {
            assert!(check_variable_name(bad).is_err(), "{bad:?}");
        }
    }

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
