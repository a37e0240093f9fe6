//! What a turn reports: [`TaskResult`] and its [`Step`]s when it is over, and
//! [`AgentEvent`]s while it runs, for interfaces that show tool calls as they happen.
//!
//! [`AgentSession::send_message`](crate::AgentSession::send_message) returns every
//! [`Step`] when the turn is over; an observer set with
//! [`SessionBuilder::on_event`](crate::SessionBuilder::on_event) hears about each call as
//! it starts and as it finishes. Observers run inline on the agent's task, so they should
//! be quick: print a line, send on a channel.

use std::sync::Arc;
use std::time::Duration;

/// What one turn ([`AgentSession::send_message`](crate::AgentSession::send_message))
/// produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    /// True when the model gave a final answer; false when the iteration limit stopped it.
    pub success: bool,
    /// The final answer, or, without one, an explanation of why the turn stopped.
    pub result: String,
    /// Every tool call of the turn, in order.
    pub steps: Vec<Step>,
    /// How many LLM requests the turn made.
    pub iterations: usize,
}

/// One tool call made during a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The tool the model called.
    pub tool: String,
    /// The arguments exactly as the model wrote them (possibly invalid JSON).
    pub arguments: String,
    /// What the model was shown: the tool's output or an `Error: ...` explanation.
    pub observation: String,
    /// Whether the tool ran and succeeded.
    pub success: bool,
    /// The iteration (1-based LLM request of the turn) that asked for the call.
    pub iteration: usize,
    /// How long the call took.
    pub duration: Duration,
}

/// Something the agent is doing during a turn.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum AgentEvent<'a> {
    /// The model asked for a tool call, which is about to run. When one reply asks for
    /// several calls, all of them start before any finishes (they run concurrently).
    ToolCallStarted {
        /// The iteration (1-based LLM request of the turn) that asked for the call.
        iteration: usize,
        /// The tool's name, as the model wrote it.
        tool: &'a str,
        /// The arguments exactly as the model wrote them.
        arguments: &'a str,
    },
    /// A tool call finished (or failed, or timed out): the step the turn will report.
    ToolCallFinished(&'a Step),
}

/// A shared observer of [`AgentEvent`]s.
pub(crate) type EventObserver = Arc<dyn Fn(&AgentEvent<'_>) + Send + Sync>;
