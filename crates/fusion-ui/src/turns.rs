//! Where a session's turns start, as the agent sees them: what fork and undo cut at.
//!
//! A turn starts at a message the user wrote. Not every `user` message is one: a
//! text-mode (ReAct) agent stores each tool observation as a `user` message starting
//! `Observation: ` right after its own step, and context records are not turns. This is
//! the rule of fusion-agent's `latest_user_message` (private to that crate), restated so
//! the UI's "undo last turn" removes exactly what `AgentSession::undo_last_turn` would.

use std::collections::HashSet;

use fusion::agent::context::is_context_record;
use fusion::agent::{ReactStep, parse_react};
use fusion::{ChatMessage, Role};

/// How a text-mode agent prefixes a tool observation it stores as a user message
/// (fusion-agent's `OBSERVATION_PREFIX`).
const OBSERVATION_PREFIX: &str = "Observation: ";

/// The indices of the messages of `history` that start a turn, oldest first.
pub(crate) fn turn_starts(history: &[ChatMessage]) -> Vec<usize> {
    let mut starts = Vec::new();
    // The latest message before the one looked at that is not a context record.
    let mut previous: Option<&ChatMessage> = None;
    for (at, message) in history.iter().enumerate() {
        if message.role == Role::User && !previous.is_some_and(|p| is_observation(p, message)) {
            starts.push(at);
        }
        if !is_context_record(message) {
            previous = Some(message);
        }
    }
    starts
}

/// Whether `message` is a text-mode tool observation answering `previous`.
fn is_observation(previous: &ChatMessage, message: &ChatMessage) -> bool {
    message.content.starts_with(OBSERVATION_PREFIX)
        && previous.role == Role::Assistant
        && !previous.has_tool_calls()
        && !matches!(
            parse_react(&previous.content),
            ReactStep::FinalAnswer { .. }
        )
}

/// Whether cutting `history` to its first `len` messages keeps every tool call with its
/// result: no result is left without its call, and no call whose result is stored loses
/// it. (A call whose result was never stored, as after an interrupted turn, stays so.)
pub(crate) fn cut_keeps_tool_pairs(history: &[ChatMessage], len: usize) -> bool {
    let len = len.min(history.len());
    let kept_calls: HashSet<&str> = history[..len]
        .iter()
        .flat_map(|message| &message.tool_calls)
        .map(|call| call.id.as_str())
        .collect();
    let answered_later = history[len..]
        .iter()
        .filter_map(|message| message.tool_call_id.as_deref())
        .any(|id| kept_calls.contains(id));
    !answered_later
}

#[cfg(test)]
mod tests {
    use fusion::ToolCall;

    use super::*;

    #[test]
    fn observations_and_records_do_not_start_turns() {
        let history = [
            ChatMessage::system("s"),
            ChatMessage::user("first"),
            ChatMessage::assistant("Thought: look\nAction: ls\nAction Input: {}"),
            ChatMessage::user("Observation: a.txt"),
            ChatMessage::assistant("Final Answer: one file"),
            ChatMessage::user("Observation: typed by a person after an answer"),
        ];
        assert_eq!(turn_starts(&history), [1, 5]);
    }

    #[test]
    fn a_cut_between_a_call_and_its_result_is_detected() {
        let history = [
            ChatMessage::user("go"),
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("c1", "ls", "{}")]),
            ChatMessage::tool_result("c1", "a"),
            ChatMessage::user("again"),
        ];
        assert!(cut_keeps_tool_pairs(&history, 3));
        assert!(cut_keeps_tool_pairs(&history, 1));
        assert!(!cut_keeps_tool_pairs(&history, 2));
    }
}
