//! [`McpServer`]: one connected MCP server, whose tools join a
//! [`ToolRegistry`](fusion_agent::ToolRegistry) as a [`ToolSource`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use fusion_agent::ToolRegistry;
//! use fusion_mcp::{McpOptions, McpServer, StdioServerConfig};
//!
//! # async fn demo() -> fusion_core::Result<()> {
//! let config = StdioServerConfig::new("npx").args(["-y", "@modelcontextprotocol/server-everything"]);
//! let server = McpServer::start("everything", config, McpOptions::default()).await?;
//! for skipped in server.skipped_tools() {
//!     eprintln!("skipped {}: {}", skipped.name, skipped.reason);
//! }
//! let mut registry = ToolRegistry::new();
//! registry.register_source(Arc::new(server.clone()));
//! // ... run sessions ...
//! server.shutdown().await;
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex};

use fusion_agent::{Tool, ToolSource};
use fusion_core::{Error, Result};

use crate::budget::ToolBudget;
use crate::core::Core;
use crate::naming;
use crate::options::{McpOptions, ToolLimit};
use crate::server_config::{McpServerConfig, shown};
use crate::tool::McpTool;

/// A tool a server listed that is not offered to the model, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedTool {
    /// The tool's name on the server.
    pub name: String,
    /// Why it is not offered (a malformed schema, say): what the tool or the set broke,
    /// in words for a person.
    pub reason: String,
    /// The limit of [`McpOptions`] it was left out for, which raising would offer it;
    /// `None` when it is left out for what it is (a broken schema, a name listed twice),
    /// which no option changes. The reason does not say how to raise a limit, since only
    /// the program knows how its user does (chat: `--mcp-max-tools`).
    pub limit: Option<ToolLimit>,
}

/// One connected MCP server and its tools.
///
/// Cheap to clone: clones share the connection. The server's process is stopped by
/// [`shutdown`](Self::shutdown), or when the last clone is dropped (including the ones a
/// [`ToolRegistry`](fusion_agent::ToolRegistry) holds, so a session's servers live as long
/// as its registry).
///
/// A stdio server that exits is started again on the next call, and its tools listed
/// again; a restart slower than the call's timeout goes on after it, for a later call.
/// When the server announces `notifications/tools/list_changed`, its tools are listed
/// again in the background and [`revision`](ToolSource::revision) moves, so sessions offer
/// the new list from their next request. A tool keeps the name it was
/// first offered under for as long as the server runs, and no other tool is given that
/// name (rule 4 of [`naming`](crate::naming)).
#[derive(Clone)]
pub struct McpServer {
    inner: Arc<Inner>,
}

struct Inner {
    core: Arc<Core>,
    prefix: String,
    /// Shared by the servers of one set: how many tools they may offer together.
    budget: Arc<ToolBudget>,
    view: Mutex<View>,
}

/// The tools built from one listing.
#[derive(Default)]
struct View {
    revision: u64,
    tools: Option<Arc<[Arc<dyn Tool>]>>,
    skipped: Vec<SkippedTool>,
    /// The names given so far, kept from listing to listing (a name stays with its tool).
    names: naming::ToolNames,
}

/// Whether a server name may not hold `c`: a control character, a line or paragraph
/// separator, or a bidirectional embedding, override or isolate (what reorders the rest of
/// a line, as rustc's lint of them in source reads it).
fn refused_in_name(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

impl McpServer {
    /// Starts the server called `name` and lists its tools, named `{name}__{tool}` (see
    /// [`naming`](crate::naming)). It offers at most
    /// [`max_tools`](McpOptions::max_tools) of them.
    ///
    /// Fails with [`fusion_core::Error::Config`] naming the server and the reason: a
    /// command not found, a process that exited (with its status and last stderr lines),
    /// a handshake that did not finish within the startup timeout, an HTTP error.
    pub async fn start(
        name: &str,
        config: impl Into<McpServerConfig>,
        options: McpOptions,
    ) -> Result<Self> {
        let prefix = naming::server_prefix(name);
        let budget = Arc::new(ToolBudget::new(options.max_tools));
        Self::start_in_set(name, prefix, config.into(), options, budget).await
    }

    /// Starts a server of a set, whose servers share `budget`.
    pub(crate) async fn start_in_set(
        name: &str,
        prefix: String,
        config: McpServerConfig,
        options: McpOptions,
        budget: Arc<ToolBudget>,
    ) -> Result<Self> {
        // Every message and log line about the server names it: one holding a control
        // character (a line break, an escape sequence) would forge or garble them. The
        // marks of right-to-left text (U+200E, U+200F, U+061C), which `shown` escapes
        // too, reorder no more than a Hebrew or Arabic letter does: a name may hold them.
        if name.chars().any(refused_in_name) {
            return Err(Error::Config(format!(
                "MCP server name `{}` holds a control character, a line or paragraph \
                 separator or a bidirectional control; name the server without it",
                shown(name)
            )));
        }
        let core = Core::start(name, config, options).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                core,
                prefix,
                budget,
                view: Mutex::new(View::default()),
            }),
        })
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        self.inner.core.name()
    }

    /// The prefix of its tools' names (`{prefix}__{tool}`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// How the server is reached.
    pub fn config(&self) -> &McpServerConfig {
        self.inner.core.config()
    }

    /// The tools the server listed that are not offered, with the reason for each.
    ///
    /// This is how they are reported: the program shows them to its user (chat prints a
    /// note). The crate logs them only at `debug`, so a program that shows them does not
    /// say the same thing twice, once as its own message and once as a log warning.
    pub fn skipped_tools(&self) -> Vec<SkippedTool> {
        self.view(|view| view.skipped.clone())
    }

    /// Waits until the tools have changed since [`revision`](ToolSource::revision) was
    /// `revision`: re-listed after `notifications/tools/list_changed` or a restart.
    pub async fn changed_since(&self, revision: u64) {
        self.inner.core.changed_since(revision).await;
    }

    /// The process id of a stdio server's current process (a new one after a restart);
    /// `None` for HTTP servers and after shutdown.
    pub async fn process_id(&self) -> Option<u32> {
        self.inner.core.process_id().await
    }

    /// Ends the session and stops the server's process (closing its stdin, then killing
    /// its process group if it has not exited within two seconds); an HTTP server's session
    /// is ended (HTTP DELETE) before this returns, waiting up to five seconds for it. A call
    /// of its tools running meanwhile, and every later one, fails with an observation
    /// saying the server was shut down.
    pub async fn shutdown(&self) {
        self.inner.core.shutdown().await;
    }

    /// Runs `read` on the tools of the latest listing, building them first if it is new.
    fn view<T>(&self, read: impl FnOnce(&View) -> T) -> T {
        let listing = self.inner.core.listing();
        let mut view = self.inner.view.lock().unwrap_or_else(|e| e.into_inner());
        if view.tools.is_none() || view.revision != listing.revision {
            let relisted = view.tools.is_some();
            let names = std::mem::take(&mut view.names);
            *view = self.build(&listing, names, relisted);
        }
        read(&view)
    }

    fn build(
        &self,
        listing: &crate::core::Listing,
        mut names: naming::ToolNames,
        relisted: bool,
    ) -> View {
        let server = self.name();
        let listed: Vec<&rmcp::model::Tool> = listing
            .tools
            .iter()
            .filter_map(|t| t.as_ref().ok())
            .collect();
        let listed_names: Vec<&str> = listed.iter().map(|t| t.name.as_ref()).collect();
        let fusion_names = names.assign(&self.inner.prefix, &listed_names);
        let mut tools: Vec<Arc<McpTool>> = Vec::new();
        let mut skipped = Vec::new();
        for failed in listing.tools.iter().filter_map(|t| t.as_ref().err()) {
            skipped.push(SkippedTool {
                name: failed.0.clone(),
                reason: failed.1.clone(),
                limit: None,
            });
        }
        for (tool, name) in listed.into_iter().zip(fusion_names) {
            let Some(name) = name else {
                skipped.push(SkippedTool {
                    name: tool.name.to_string(),
                    reason: "it is listed twice, or no unique name could be made for it".into(),
                    limit: None,
                });
                continue;
            };
            let max_description = self.inner.core.options().max_description_chars;
            match McpTool::new(
                name,
                tool,
                max_description,
                Arc::downgrade(&self.inner.core),
            ) {
                Ok(tool) => tools.push(Arc::new(tool)),
                Err(reason) => skipped.push(SkippedTool {
                    name: tool.name.to_string(),
                    reason,
                    limit: None,
                }),
            }
        }
        self.keep_within_budget(&mut tools, &mut skipped);
        // At the start, `skipped_tools` tells whoever connected (chat's note; the session
        // builder's `mcp_config` logs them); the tools of a later listing (the server's
        // list changed) are left out unseen but for this warning.
        for tool in &skipped {
            let (name, reason) = (tool.name.escape_debug(), tool.reason.escape_debug());
            if relisted {
                tracing::warn!(server, tool = %name, %reason, "MCP tool left out");
            } else {
                tracing::debug!(server, tool = %name, %reason, "MCP tool left out");
            }
        }
        View {
            revision: listing.revision,
            tools: Some(tools.into_iter().map(|t| t as Arc<dyn Tool>).collect()),
            skipped,
            names,
        }
    }

    /// Leaves out the tools past what the set's budget grants this server (the last
    /// listed), as [`ToolLimit::MaxTools`].
    fn keep_within_budget(&self, tools: &mut Vec<Arc<McpTool>>, skipped: &mut Vec<SkippedTool>) {
        let budget = &self.inner.budget;
        let granted = budget.take(self.name(), tools.len());
        if granted == tools.len() {
            return;
        }
        let max = budget.max();
        // Why a set has a limit at all; how to raise it is the program's to say.
        let reason = format!(
            "MCP servers offer at most {max} tools together (a provider refuses a request \
             offering more than it takes; OpenAI takes 128), and that many were listed before"
        );
        let left_out = tools.split_off(granted);
        tracing::debug!(
            server = self.name(),
            listed = granted + left_out.len(),
            left_out = left_out.len(),
            max,
            "MCP tools past McpOptions::max_tools left out"
        );
        skipped.extend(left_out.iter().map(|tool| SkippedTool {
            name: tool.mcp_name().to_owned(),
            reason: reason.clone(),
            limit: Some(ToolLimit::MaxTools),
        }));
    }
}

impl ToolSource for McpServer {
    fn source_name(&self) -> &str {
        self.name()
    }

    fn tools(&self) -> Arc<[Arc<dyn Tool>]> {
        self.view(|view| view.tools.clone().unwrap_or_else(|| Arc::from(Vec::new())))
    }

    fn revision(&self) -> u64 {
        self.inner.core.listing().revision
    }
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer")
            .field("name", &self.name())
            .field("config", self.config())
            .finish_non_exhaustive()
    }
}
