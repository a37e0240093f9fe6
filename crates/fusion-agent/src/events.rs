//! What a turn reports: [`AgentEvent`]s while it runs, for interfaces that show the reply
//! as the model writes it and tool calls as they happen, and [`TaskResult`] with its
//! [`Step`]s when it is over.
//!
//! [`AgentSession::send_message_stream`](crate::AgentSession::send_message_stream) yields
//! every event of a turn, ending with [`AgentEvent::Finished`];
//! [`send_message`](crate::AgentSession::send_message) collects that same stream and
//! returns its [`TaskResult`]. An observer set with
//! [`SessionBuilder::on_event`](crate::SessionBuilder::on_event) hears the same events
//! whichever way the turn runs. Observers run inline on the agent's task, so they should
//! be quick: print a line, send on a channel.

use std::sync::Arc;
use std::time::Duration;

use crate::llm::Usage;

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
    /// Tokens used, summed over the turn's requests that reported usage; `None` when the
    /// server reported none.
    pub usage: Option<Usage>,
    /// Why the model stopped writing the final answer, as the server reported it: `stop`
    /// for an answer it finished; `length` when it reached its output token limit and
    /// `content_filter` when the provider's filter stopped it, both of which leave the
    /// answer cut short or empty ([`answer_is_cut`](Self::answer_is_cut)). `None` without
    /// a final answer or when the server gave no reason.
    pub finish_reason: Option<String>,
}

impl TaskResult {
    /// Whether the final answer stopped before the model finished it, by its
    /// [`finish_reason`](Self::finish_reason): the output token limit (`length`) or the
    /// provider's content filter (`content_filter`). The answer is stored as it came.
    pub fn answer_is_cut(&self) -> bool {
        self.answer_cut_because().is_some()
    }

    /// Why the final answer is cut short, in words for a person (`the model reached its
    /// output token limit`), or `None` when it is not ([`answer_is_cut`](Self::answer_is_cut)).
    pub fn answer_cut_because(&self) -> Option<&'static str> {
        match self.success {
            true => cut_because(self.finish_reason.as_deref()),
            false => None,
        }
    }
}

/// Why a reply that ended for `finish_reason` is incomplete, if it is.
pub(crate) fn cut_because(finish_reason: Option<&str>) -> Option<&'static str> {
    match finish_reason? {
        "length" => Some("the model reached its output token limit"),
        "content_filter" => Some("the provider's content filter stopped it"),
        _ => None,
    }
}

/// One tool call made during a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The tool the model called.
    pub tool: String,
    /// The arguments exactly as the model wrote them (possibly invalid JSON); but a
    /// text-mode action's bare text input given to the tool's one string property
    /// (`Action Input: notes.txt`) is the object the tool got (`{"path":"notes.txt"}`).
    pub arguments: String,
    /// What the model was shown: the tool's output or an `Error: ...` explanation.
    pub observation: String,
    /// Whether the tool ran and succeeded.
    pub success: bool,
    /// The iteration (1-based LLM request of the turn) that asked for the call.
    pub iteration: usize,
    /// How long the call took.
    pub duration: Duration,
    /// How approval went, when the session's [`ApprovalPolicy`](crate::ApprovalPolicy)
    /// asked or refused.
    pub approval: Option<crate::Approval>,
}

/// Something the agent is doing during a turn, in the order it happens.
///
/// A turn's events are, per iteration: [`TextDelta`](Self::TextDelta)s as the reply is
/// written, [`Usage`](Self::Usage) when the reply is complete (if the server reported it),
/// then for each tool call the reply asks for a [`ToolCallStarted`](Self::ToolCallStarted)
/// and later a [`ToolCallFinished`](Self::ToolCallFinished), and
/// [`IterationFinished`](Self::IterationFinished); the stream of
/// [`send_message_stream`](crate::AgentSession::send_message_stream) ends with
/// [`Finished`](Self::Finished).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AgentEvent {
    /// More of the reply's text, as the model writes it. With native tool calling this is
    /// all the text of every reply (including any written alongside tool calls); in text
    /// ReAct mode only the text of the `Final Answer:`, never thoughts or `Action:` lines.
    TextDelta {
        /// The iteration (1-based LLM request of the turn) writing the text.
        iteration: usize,
        /// The next piece of text.
        text: String,
    },
    /// The model asked for a tool call, which is about to run. When one reply asks for
    /// several calls, all of them start before any finishes (they run concurrently).
    ToolCallStarted {
        /// The iteration (1-based LLM request of the turn) that asked for the call.
        iteration: usize,
        /// The tool's name, as the model wrote it.
        tool: String,
        /// The arguments exactly as the model wrote them.
        arguments: String,
    },
    /// A tool call finished (or failed, or timed out): the step the turn will report.
    ToolCallFinished(Step),
    /// Tokens one request used, as the server reported them.
    Usage {
        /// The iteration whose request this was.
        iteration: usize,
        /// The server's figures.
        usage: Usage,
    },
    /// One request and everything it asked for are done and stored.
    IterationFinished {
        /// The iteration that finished.
        iteration: usize,
        /// How many tool calls it ran.
        tool_calls: usize,
    },
    /// The model rejected native tool calling, so this session now describes its tools in
    /// the prompt (text ReAct mode) and the iteration was asked again that way.
    SwitchedToTextReact {
        /// What the server said.
        reason: String,
    },
    /// The turn is over: what it produced. The last event of a turn's stream.
    Finished(TaskResult),
}

/// A shared observer of [`AgentEvent`]s.
pub(crate) type EventObserver = Arc<dyn Fn(&AgentEvent) + Send + Sync>;
