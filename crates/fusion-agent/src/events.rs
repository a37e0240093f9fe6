//! Live progress of a turn, for interfaces that show tool calls while they run.
//!
//! [`AgentSession::send_message`](crate::AgentSession::send_message) returns every
//! [`Step`] when the turn is over; an observer set with
//! [`SessionBuilder::on_event`](crate::SessionBuilder::on_event) hears about each call as
//! it starts and as it finishes. Observers run inline on the agent's task, so they should
//! be quick: print a line, send on a channel.

use std::sync::Arc;

use crate::session::Step;

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
