//! The [`Tool`] trait: something the model can call.

use async_trait::async_trait;
use fusion_core::Result;
use serde_json::Value;

/// Something the model can call.
///
/// `call` receives arguments that already passed
/// [`check_arguments`](crate::tools::check_arguments) against
/// [`parameters`](Self::parameters). Return [`fusion_core::Error::Tool`] for failures the
/// model should read ("file not found"); the executor shows it to the model and the turn
/// goes on. Calls run concurrently with the other calls of the same assistant message, on
/// the agent's task: CPU-heavy or blocking work belongs in `tokio::task::spawn_blocking`.
#[async_trait]
pub trait Tool: Send + Sync {
    /// The name the model calls the tool by (`[a-zA-Z0-9_-]`, as OpenAI requires).
    fn name(&self) -> &str;

    /// What the tool does and when to use it, for the model.
    fn description(&self) -> &str;

    /// A JSON Schema object describing the arguments.
    ///
    /// Called once per request and per call, so it should be cheap (build a `json!` literal).
    fn parameters(&self) -> Value;

    /// Runs the tool. The returned text is what the model sees.
    async fn call(&self, args: Value) -> Result<String>;
}
