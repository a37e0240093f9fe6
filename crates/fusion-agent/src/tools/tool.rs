//! The [`Tool`] trait: something the model can call, with [`ToolEffects`] saying what a
//! call may change; and [`ToolSource`]: tools that come and go while a session runs.

use std::sync::Arc;

use async_trait::async_trait;
use fusion_core::Result;
use serde_json::Value;

/// Something the model can call.
///
/// `call` receives arguments that already passed
/// [`check_arguments`](crate::tools::check_arguments) against
/// [`parameters`](Self::parameters), with an integral float given for an `"integer"`
/// property (`2.0`) written as an integer (`2`), so `as_i64()` reads it. Return
/// [`fusion_core::Error::Tool`] for failures the model should read ("file not found"); the
/// executor shows it to the model and the turn goes on. Calls run concurrently with the
/// other calls of the same assistant message, on the agent's task: CPU-heavy or blocking
/// work belongs in `tokio::task::spawn_blocking`.
#[async_trait]
pub trait Tool: Send + Sync {
    /// The name the model calls the tool by (`[a-zA-Z0-9_-]`, at most 64 characters, as
    /// OpenAI requires).
    fn name(&self) -> &str;

    /// What the tool does and when to use it, for the model.
    fn description(&self) -> &str;

    /// A JSON Schema object describing the arguments.
    ///
    /// Called once per request and per call, so it should be cheap (build a `json!` literal).
    fn parameters(&self) -> Value;

    /// What a call may change, for approval policies. The default says nothing is known
    /// ([`ToolEffects::UNKNOWN`]): neither read-only nor destructive.
    fn effects(&self) -> ToolEffects {
        ToolEffects::UNKNOWN
    }

    /// Runs the tool. The returned text is what the model sees, as the session stores it:
    /// a text longer than the executor's bound
    /// ([`ExecutorConfig::max_output_bytes`](crate::ExecutorConfig::max_output_bytes)) keeps
    /// its start and its end around a note, so a tool that can return more than a model
    /// should read sets a smaller bound of its own, where it knows what to leave out.
    async fn call(&self, args: Value) -> Result<String>;
}

/// What calling a tool may change, as the tool declares it (MCP's `readOnlyHint` and
/// `destructiveHint`). Approval policies use it to decide which calls a person confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ToolEffects {
    /// The tool only reads: calling it changes nothing.
    pub read_only: bool,
    /// A call may destroy or overwrite something (delete a file, replace its contents).
    pub destructive: bool,
}

impl ToolEffects {
    /// Nothing declared: neither read-only nor destructive.
    pub const UNKNOWN: Self = Self {
        read_only: false,
        destructive: false,
    };
    /// The tool only reads.
    pub const READ_ONLY: Self = Self {
        read_only: true,
        destructive: false,
    };
    /// A call may destroy or overwrite something.
    pub const DESTRUCTIVE: Self = Self {
        read_only: false,
        destructive: true,
    };
}

/// Tools that can change while a session runs, such as an MCP server's, which it may
/// announce with `notifications/tools/list_changed`.
///
/// A [`ToolRegistry`](crate::ToolRegistry) holding a source offers its current tools on
/// every request: a session compares [`revision`](Self::revision) before each request and
/// rebuilds the tool definitions it sends only when it moved.
pub trait ToolSource: Send + Sync {
    /// A short name for the source, for logs and `Debug` (an MCP server's configured name).
    fn source_name(&self) -> &str;

    /// The tools offered now, in a stable order. Cheap: a clone of a shared snapshot.
    fn tools(&self) -> Arc<[Arc<dyn Tool>]>;

    /// A number that changes whenever [`tools`](Self::tools) would return a different list.
    fn revision(&self) -> u64;
}
