//! Tools from Model Context Protocol servers for the Fusion agent, on the official `rmcp`
//! SDK: stdio servers (a command this crate starts and stops) and streamable-HTTP servers
//! (a URL, optional headers and bearer token).
//!
//! Where `fusion-agent`'s file tools are written in Rust and compiled in, these tools come
//! from other programs at run time: each server's tools join a
//! [`ToolRegistry`](fusion_agent::ToolRegistry) as a
//! [`ToolSource`](fusion_agent::ToolSource), and follow the server when its list changes.
//!
//! ```no_run
//! use std::sync::Arc;
//! use fusion_agent::{AgentSession, OpenAiConfig, ToolRegistry};
//! use fusion_mcp::{McpConfig, McpOptions, McpServers};
//!
//! # async fn demo() -> fusion_core::Result<()> {
//! let mut config = McpConfig::from_json_str(
//!     r#"{"mcpServers": {"everything": {"command": "npx",
//!          "args": ["-y", "@modelcontextprotocol/server-everything"]}}}"#,
//! )?;
//! config.add_command_line("npx -y @modelcontextprotocol/server-filesystem ./docs")?;
//! let servers = McpServers::start(&config, McpOptions::default()).await?;
//! let mut registry = ToolRegistry::with_file_tools(["."])?;
//! servers.register_into(&mut registry);
//! let mut session = AgentSession::builder("user-1")
//!     .llm(Arc::new(OpenAiConfig::new("gpt-4o-mini").build()?))
//!     .tools(registry)
//!     .build()
//!     .await?;
//! session.send_message("Echo 'hello' with the everything server.").await?;
//! servers.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Configuration
//! [`McpConfig`] reads the `{"mcpServers": {NAME: {"command", "args", "env"} | {"url",
//! "headers"}}}` JSON of desktop MCP clients (`"disabled": true` honoured, other extra
//! fields ignored, a name given twice refused), or takes servers in code, or one command
//! line such as `npx -y @modelcontextprotocol/server-filesystem ./docs`
//! ([`McpConfig::add_command_line`]).
//! A stdio server is given its `env` and, of this program's environment, only
//! [`DEFAULT_INHERITED_ENV`] (`PATH`, `HOME`, …) and what its `"inheritEnv"` names
//! ([`InheritEnv`]): the agent's own keys and passwords stay with the agent. On Windows a
//! bare command without an extension is looked for with the extensions of `PATHEXT`
//! (`"command": "npx"` runs `npx.cmd`), which Rust's std alone does not do.
//! [`McpOptions`] sets the per-call timeout (30 s), the startup timeout (30 s, since `npx
//! -y` may download first), the most text one result may give the model (256 KiB), the
//! longest tool description offered (1,024 characters, OpenAI's limit) and the most tools
//! the servers offer together (120, within OpenAI's 128 a request; the tools past it are
//! left out, [`SkippedTool::limit`] saying so, for the program to say how to raise it).
//!
//! # Names
//! A tool is offered as `{server}__{tool}`, sanitized to OpenAI's `[a-zA-Z0-9_-]{1,64}`;
//! a name that is too long or taken is cut and given a short stable hash. The rules are in
//! [`naming`]. A name once given to a tool stays with that tool while the server runs,
//! also when its list changes, and no other tool is given it: a call, or an "always"
//! approval, made under a name reaches the tool it was given to. A tool whose input
//! schema is not a JSON object schema, well formed throughout (`"properties": {"x": 5}`
//! and `"required": "x"` are not), of at most [`MAX_SCHEMA_BYTES`], is not offered: a
//! provider refuses a request with one such schema whole. [`McpServer::skipped_tools`]
//! says which and why.
//!
//! # Effects
//! [`Tool::effects`](fusion_agent::Tool::effects) comes from the tool's annotations:
//! read-only when `readOnlyHint` is true; destructive when `destructiveHint` is true or the
//! tool is not marked read-only. Approval policies decide from these.
//!
//! # Observations
//! A result's text content is joined with newlines; `structuredContent` is shown as JSON
//! when there is no text; images, audio and binary resources become a short note (`[image
//! image/png, 12.3 KiB, not shown]`), never base64; resource links become `[resource
//! URI]`. A result over the size limit is cut with a note, and so is the observation of
//! a failed call, which quotes the server (the message of a JSON-RPC error). `isError: true` becomes
//! [`fusion_core::Error::Tool`] carrying the content, which the agent shows the model.
//!
//! # Faults
//! Nothing a server does ends a turn or the program:
//! - a server that cannot start fails [`McpServers::start`] with an
//!   [`Error::Config`](fusion_core::Error::Config) naming the server, the command and the
//!   reason (the command, its `#!` interpreter or its working directory not found;
//!   exited, with its status and last stderr lines; no handshake within the startup
//!   timeout; the HTTP error);
//! - a stdio server's response that is JSON but not a valid JSON-RPC response (neither a
//!   result nor an error, an error without a message), which the SDK skips, ends the call
//!   at once with an observation saying the response was invalid, rather than at the
//!   per-call timeout (for lines up to 64 KiB; HTTP servers' responses are the SDK's); a
//!   line is taken for a response when it says `"jsonrpc":"2.0"` and has an `id` and no
//!   `method`, so a JSON log line carrying an `id` is not one, whatever its members;
//! - a call past the per-call timeout is cancelled (`notifications/cancelled`) and the
//!   model is told; a server that exits mid-call gives an observation saying so, with its
//!   exit status, and is started again on the next call, its tools listed again (a restart
//!   that fails says why, its stderr going to the log, not to the model, which is told the
//!   command by its program alone, since its arguments may hold a key, and the next call
//!   tries again; the per-call timeout counts a restart the call waits for, and one slower
//!   goes on in a task of its own, one at a time, for a later call to use); an HTTP
//!   server's error status (a 500, a 401) fails that call alone, saying so, and the
//!   session goes on; a session an HTTP server no longer knows (HTTP 404: it restarted,
//!   or expired it) is opened again by the SDK, the request sent again, and the tools
//!   are listed again; a session the server refuses otherwise (a 4xx other than 401, 403
//!   and 429: a restarted TypeScript SDK example answers 400), or in which two requests in
//!   a row fail, is given up: that call fails saying so, and the next opens a new session
//!   and lists the tools again; an error status carrying a JSON-RPC error with no id (how
//!   the TypeScript and Python SDKs refuse a request), which the SDK would drop, fails the
//!   call at once with the server's message rather than at the per-call timeout, and so
//!   does one in the SSE stream a call is answered with (JSON-RPC 2.0's answer to a
//!   request whose id the server could not read);
//! - a result is cut to the limit, up to what the SDK reads: over stdio one JSON-RPC line
//!   of at most 16 MiB (rmcp discards a longer one; the call then fails at once, saying the
//!   answer was too large, when the line's `id` can be read at its start or its end, as
//!   the official SDKs write it, else at the per-call timeout), over HTTP the SDK's largest
//!   response body;
//! - a tool list is read to at most [`MAX_LIST_PAGES`] pages, and one that comes back to a
//!   page it gave is refused: a list that never ends fails the start (or, on a change, is
//!   not taken) instead of filling the memory; an empty `nextCursor` ends a list, as a
//!   missing one does; a server that declares no `tools` capability (prompts or resources
//!   only) and refuses `tools/list` starts with no tools;
//! - `notifications/tools/list_changed` starts at most one re-listing at a time; more
//!   notifications while it runs make it list once more when it finishes, so a server
//!   sending thousands costs two listings, not a request (and a task) each; a re-listing
//!   the server is slow to answer does not keep a server dropped meanwhile (nor its
//!   process) alive;
//! - child processes run in their own process group, killed when the server is shut down
//!   or dropped, so nothing is left behind (see [`McpServer`]); on Unix a watchdog in the
//!   group stops it also when the program is killed outright (SIGKILL), with no chance to
//!   clean up.
//!
//! [`McpSessionExt`] gives `SessionBuilder` an `mcp_config(..)`: the servers start with
//! the session and their tools join its own.
//!
//! Inside, modules form layers: `options`, `budget`, `command_line`, `environment`,
//! `server_config`, `pathext` (Windows), `config`, `naming`, `result`, `schema`,
//! `http_client`, `http_session` and `watchdog` at the bottom; `process`, `open_failure`,
//! `checked` and `connection` over them; `core` (the connection, restarts and calls);
//! `tool` and `server`; `servers` and `session_ext` on top.

mod budget;
mod call;
mod checked;
mod command_line;
mod config;
mod connection;
mod core;
mod environment;
mod http_client;
mod http_session;
mod in_flight;
mod json_members;
pub mod naming;
mod open_failure;
mod options;
#[cfg(any(windows, test))]
mod pathext;
mod process;
mod relisting;
mod result;
mod schema;
mod server;
mod server_config;
mod servers;
mod session_ext;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod tool;
#[cfg(unix)]
mod watchdog;

pub use config::McpConfig;
pub use connection::MAX_LIST_PAGES;
pub use environment::{DEFAULT_INHERITED_ENV, InheritEnv};
pub use options::{
    DEFAULT_CALL_TIMEOUT, DEFAULT_MAX_DESCRIPTION_CHARS, DEFAULT_MAX_OBSERVATION_BYTES,
    DEFAULT_MAX_TOOLS, DEFAULT_STARTUP_TIMEOUT, McpOptions, ToolLimit,
};
pub use schema::MAX_SCHEMA_BYTES;
pub use server::{McpServer, SkippedTool};
pub use server_config::{HttpServerConfig, McpServerConfig, StdioServerConfig};
pub use servers::McpServers;
pub use session_ext::McpSessionExt;
