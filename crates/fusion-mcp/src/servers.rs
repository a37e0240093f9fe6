//! [`McpServers`]: every server of an [`McpConfig`], started together, with tool-name
//! prefixes unique across the set.

use std::collections::HashSet;
use std::sync::Arc;

use fusion_agent::{ToolRegistry, ToolSource};
use fusion_core::{Error, Result};

use crate::budget::ToolBudget;
use crate::config::McpConfig;
use crate::naming;
use crate::options::McpOptions;
use crate::server::McpServer;

/// The running servers of one configuration.
///
/// Together they offer at most [`McpOptions::max_tools`] tools: the servers in name order
/// take their share when their tools are first listed, and a later listing of one server
/// takes from what the others leave; the tools past that are left out (see
/// [`McpServer::skipped_tools`]).
///
/// Dropping it stops every server no registry still holds; [`shutdown`](Self::shutdown)
/// stops them all, waiting for their processes to exit.
#[derive(Debug, Clone, Default)]
pub struct McpServers {
    servers: Vec<McpServer>,
}

impl McpServers {
    /// Starts every server of `config` at once. If any fails, the others are shut down
    /// and the error ([`Error::Config`]) names each server that failed and why.
    pub async fn start(config: &McpConfig, options: McpOptions) -> Result<Self> {
        let (servers, mut errors) = Self::start_available(config, options).await;
        if errors.is_empty() {
            return Ok(servers);
        }
        servers.shutdown().await;
        if errors.len() == 1 {
            return Err(errors.remove(0));
        }
        let messages: Vec<String> = errors
            .into_iter()
            .map(|e| match e {
                Error::Config(message) => message,
                other => other.to_string(),
            })
            .collect();
        Err(Error::Config(messages.join("\n")))
    }

    /// Starts every server of `config` at once, keeping those that started: for a caller
    /// that goes on without a broken server after showing its error.
    pub async fn start_available(config: &McpConfig, options: McpOptions) -> (Self, Vec<Error>) {
        let mut taken = HashSet::new();
        let budget = Arc::new(ToolBudget::new(options.max_tools));
        let starts = config.servers().map(|(name, server)| {
            let prefix = naming::unique_prefix(naming::server_prefix(name), name, &taken);
            taken.insert(prefix.clone());
            let (server, options) = (server.clone(), options.clone());
            McpServer::start_in_set(name, prefix, server, options, budget.clone())
        });
        let starts: Vec<_> = starts.collect();
        let mut servers = Vec::new();
        let mut errors = Vec::new();
        for started in futures::future::join_all(starts).await {
            match started {
                Ok(server) => servers.push(server),
                Err(e) => errors.push(e),
            }
        }
        // Their tools are built now, in name order, so the servers that come first take
        // the budget first, whichever finished starting first.
        for server in &servers {
            server.tools();
        }
        (Self { servers }, errors)
    }

    /// Adds every server's tools to `registry`, as sources whose tools follow the servers'
    /// changes.
    pub fn register_into(&self, registry: &mut ToolRegistry) {
        for server in &self.servers {
            registry.register_source(Arc::new(server.clone()));
        }
    }

    /// The servers, in name order.
    pub fn servers(&self) -> &[McpServer] {
        &self.servers
    }

    /// The server called `name`.
    pub fn get(&self, name: &str) -> Option<&McpServer> {
        self.servers.iter().find(|s| s.name() == name)
    }

    /// Stops every server (see [`McpServer::shutdown`]), all at once.
    pub async fn shutdown(&self) {
        futures::future::join_all(self.servers.iter().map(McpServer::shutdown)).await;
    }
}
