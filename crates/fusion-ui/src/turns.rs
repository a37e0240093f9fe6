//! Where a session's turns start, as the agent sees them: what fork and undo cut at.
//!
//! A turn starts at a message the user wrote. Not every `user` message is one: a
//! text-mode (ReAct) agent stores each tool observation as a `user` message starting
//! `Observation: ` right after its own step, and context records are not turns. The rule
//! is the agent's own ([`is_observation`]), so the UI's "undo last turn" removes exactly
//! what `AgentSession::undo_last_turn` would.

use std::collections::HashMap;

use fusion::agent::context::{is_context_record, is_observation, observed_reply};
use fusion::{ChatMessage, Role};

/// The indices of the messages of `history` that start a turn, oldest first.
pub(crate) fn turn_starts(history: &[ChatMessage]) -> Vec<usize> {
    let mut starts = Vec::new();
    // The latest message before the one looked at that is not a context record.
    let mut previous: Option<&ChatMessage> = None;
    for (at, message) in history.iter().enumerate() {
        // A named text-mode observation answers its reply wherever it landed (after a
        // summary record too); an unnamed one only the reply right before it.
        let observation = observed_reply(message).is_some()
            || previous.is_some_and(|p| is_observation(p, message));
        if message.role == Role::User && !observation {
            starts.push(at);
        }
        if !is_context_record(message) {
            previous = Some(message);
        }
    }
    starts
}

/// Whether cutting `history` to its first `len` messages keeps every tool call with its
/// result: no result is left without its call, and no call whose result is stored loses
/// it. (A call whose result was never stored, as after an interrupted turn, stays so.)
pub(crate) fn cut_keeps_tool_pairs(history: &[ChatMessage], len: usize) -> bool {
    safe_cuts(history)[len.min(history.len())]
}

/// [`cut_keeps_tool_pairs`] for every length from 0 to `history.len()`, in one pass: the
/// transcript asks it for every turn in a window, and asking one length at a time cost a
/// pass over the whole history per turn.
///
/// A result at `r` answers the nearest call before it with its id, at `c < r` (servers
/// that give every turn's calls the same ids make an id name several calls); any cut to a
/// length in `c + 1..=r` separates the two. The cuts no such range covers are safe.
pub(crate) fn safe_cuts(history: &[ChatMessage]) -> Vec<bool> {
    // +1 where a separating range starts, -1 after it ends; the running sum counts the
    // pairs a cut to each length would separate.
    let mut change = vec![0i64; history.len() + 2];
    let mut latest_call: HashMap<&str, usize> = HashMap::new();
    for (result_at, message) in history.iter().enumerate() {
        let call_at = message
            .tool_call_id
            .as_deref()
            .and_then(|id| latest_call.get(id).copied());
        if let Some(call_at) = call_at {
            change[call_at + 1] += 1;
            change[result_at + 1] -= 1;
        }
        for call in &message.tool_calls {
            latest_call.insert(call.id.as_str(), result_at);
        }
    }
    let mut separated = 0;
    change[..=history.len()]
        .iter()
        .map(|step| {
            separated += step;
            separated == 0
        })
        .collect()
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
            ChatMessage::assistant("Hello there."),
            ChatMessage::user("Observation: typed after a plain (native) answer"),
        ];
        assert_eq!(turn_starts(&history), [1, 5, 7]);
    }

    #[test]
    fn a_named_observation_starts_no_turn_even_with_nothing_before_it() {
        let named = |text: &str| {
            ChatMessage::user(text).with_metadata(
                fusion::agent::context::OBSERVED_REPLY_METADATA_KEY,
                "reply-1".into(),
            )
        };
        // A compaction left a summary record where the action was; the late observation
        // that answers it is the first message the turns are read from.
        let history = [
            fusion::agent::context::summary_record("earlier turns", 2),
            named("Observation: late result"),
            ChatMessage::assistant("Final Answer: done"),
            ChatMessage::user("next"),
        ];
        assert_eq!(turn_starts(&history), [3]);
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
        assert_eq!(safe_cuts(&history), [true, true, false, true, true]);
    }

    #[test]
    fn overlapping_calls_repeated_ids_and_unanswered_calls() {
        let call = |id: &str| {
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new(id, "ls", "{}")])
        };
        let history = [
            ChatMessage::user("go"),           // 0
            call("a"),                         // 1
            call("b"),                         // 2
            ChatMessage::tool_result("a", ""), // 3: separates cuts 2..=3
            ChatMessage::tool_result("b", ""), // 4: separates cuts 3..=4
            call("never answered"),            // 5
            ChatMessage::tool_result("z", ""), // 6: no call anywhere
            ChatMessage::tool_result("a", ""), // 7: a again, first called at 1: cuts 2..=7
            call("a"),                         // 8: a called again (ids repeat)...
            ChatMessage::user("more"),         // 9
            ChatMessage::tool_result("a", ""), // 10: ...answered here: cuts 9..=10
        ];
        let expected: Vec<bool> = (0..=history.len())
            .map(|len| !(2..=7).contains(&len) && !(9..=10).contains(&len))
            .collect();
        assert_eq!(safe_cuts(&history), expected);
    }
}
