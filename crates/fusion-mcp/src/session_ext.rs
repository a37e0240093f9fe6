//! [`McpSessionExt`]: `SessionBuilder::mcp_config(..)`, servers started with the session.

use std::sync::Arc;

use fusion_agent::{SessionBuilder, ToolSource};

use crate::config::McpConfig;
use crate::options::McpOptions;
use crate::servers::McpServers;

/// Adds MCP servers to a [`SessionBuilder`]: their tools join the session's tools (the
/// built-in file tools, or the registry given to `.tools(..)`).
///
/// The servers start when the session is built; one that cannot start fails the build
/// with an error naming it. They live as long as the session and its forks, and are
/// stopped (child processes killed) when the last of them is dropped.
///
/// Give a builder one configuration: [`McpConfig::merge`] makes one of several, and
/// refuses two servers of one name. Each call starts a set of its own, whose tool names
/// are chosen without regard to the other sets' and which has its own
/// [`McpOptions::max_tools`]: a tool of a later set named as one an earlier set (or the
/// session's own tools) offers fails the build with an error naming the tool and both
/// servers, and the sets together may offer more tools than the provider takes.
///
/// ```no_run
/// use fusion_agent::AgentSession;
/// use fusion_mcp::{McpConfig, McpSessionExt};
///
/// # async fn demo(storage: std::sync::Arc<dyn fusion_core::ConversationStorage>) -> fusion_core::Result<()> {
/// let session = AgentSession::builder("user-1")
///     .storage(storage)
///     .mcp_config(McpConfig::from_file("mcp.json")?)
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
pub trait McpSessionExt {
    /// The servers of `config`, with [`McpOptions::default`].
    fn mcp_config(self, config: McpConfig) -> Self;

    /// The servers of `config`, with `options` (timeouts, observation size).
    fn mcp_config_with(self, config: McpConfig, options: McpOptions) -> Self;
}

impl McpSessionExt for SessionBuilder {
    fn mcp_config(self, config: McpConfig) -> Self {
        self.mcp_config_with(config, McpOptions::default())
    }

    fn mcp_config_with(self, config: McpConfig, options: McpOptions) -> Self {
        self.tool_sources_from(async move {
            let servers = McpServers::start(&config, options).await?;
            // Nobody else holds the servers to ask for `skipped_tools`.
            for server in servers.servers() {
                for tool in server.skipped_tools() {
                    tracing::warn!(
                        server = server.name(),
                        tool = %tool.name.escape_debug(),
                        reason = %tool.reason.escape_debug(),
                        "MCP tool left out"
                    );
                }
            }
            Ok(servers
                .servers()
                .iter()
                .map(|server| Arc::new(server.clone()) as Arc<dyn ToolSource>)
                .collect())
        })
    }
}
