//! Tools from Model Context Protocol servers: the `fusion-mcp` crate, whose public items
//! all have their one path here (feature `mcp`).
//!
//! A server is a command this library starts (stdio) or a URL (streamable HTTP); its
//! tools join the session's tools under `{server}__{tool}` names, and calls of those that
//! may change something can wait for a person's approval
//! ([`ApprovalPolicy`](crate::agent::ApprovalPolicy)). Configuration is the
//! `{"mcpServers": {...}}` JSON desktop MCP clients use:
//!
//! ```no_run
//! use fusion::agent::SessionBuilder;
//! use fusion::mcp::{McpConfig, McpSessionExt};
//! use fusion::storage::StorageType;
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let mut servers = McpConfig::new();
//! servers.add_command_line("npx -y @modelcontextprotocol/server-everything")?;
//! let mut session = SessionBuilder::new("user-123")
//!     .storage(StorageType::Sqlite("sqlite://sessions.db".into()))
//!     .mcp_config(servers)
//!     .build()
//!     .await?;
//! session.send_message("Add 2 and 3 with the everything server's tool.").await?;
//! # Ok(()) }
//! ```

#[doc(inline)]
pub use fusion_mcp::*;
