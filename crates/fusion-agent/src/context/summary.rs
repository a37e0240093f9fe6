//! Summaries: the request that asks the model to condense older messages into a summary.
//!
//! The result is stored as a summary record ([`super::records`]): a system message whose
//! text is the summary and whose metadata says how much of the history it covers. It is
//! appended like any message, so the summary is computed once, survives restarts, and
//! everything it covers stays in storage. A newer record replaces an older one in the view;
//! each new summary is written from the previous summary plus the messages since, so its
//! cost grows with what is new, not with the whole conversation.
//!
//! `covers` is a stored position: the session builds the request from a fresh read of
//! storage (other writers' messages included) and appends the record only if the session
//! was not rewritten during the model call, so what the summary hides is what it read.

use fusion_core::{ChatMessage, Role};

use super::groups::{Layout, is_loop_observation};
use super::records::summary_text;
use crate::react_text::OBSERVATION_PREFIX;

/// Tool output and tool-call arguments longer than this are cut in the transcript the
/// summarizer reads: what a file contained matters less than what was done with it.
const TOOL_TEXT_CAP: usize = 1_000;
/// Any other message longer than this is cut in the transcript.
const MESSAGE_CAP: usize = 8_000;

const INSTRUCTIONS: &str = "You maintain the memory of a conversation between a user and \
    an AI assistant that uses tools. Summarize the conversation you are given so the \
    assistant can continue it without the original messages. Keep every fact the user \
    stated, their goals and preferences, decisions made, names of files and what was done \
    to them, tool results that still matter, and open questions or unfinished tasks. Drop \
    pleasantries and anything later superseded. If an earlier summary is given, merge it \
    with the new messages into one summary. Write compact notes in the conversation's \
    language, with no preamble.";

/// What `AgentSession::summarize_history` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryReport {
    /// The summary now covers history indices `0..covers` (except the system prompt).
    pub covers: usize,
    /// How many messages this call condensed (besides an earlier summary it folded in).
    pub summarized: usize,
    /// The summary text the model wrote.
    pub summary: String,
}

/// A summarization to run: the request to send and where the summary will end.
pub(crate) struct SummaryJob {
    /// The new record's `covers`.
    pub covers: usize,
    /// How many messages the request condenses.
    pub summarized: usize,
    /// The instructions and the transcript to condense.
    pub request: Vec<ChatMessage>,
}

/// The summarization that leaves the last `keep_last` visible messages as they are, or
/// `None` if there is nothing new to condense.
///
/// The boundary moves back to the start of a group so a kept tool result never loses its
/// call to the summary.
pub(crate) fn summary_request(history: &[ChatMessage], keep_last: usize) -> Option<SummaryJob> {
    plan(history, keep_last, false)
}

/// [`summary_request`] that also leaves the latest user message, and what follows it, as
/// they are: every view carries that message (the model cannot continue the turn without
/// it), so a summary must not be the only place it is left in. For a summary asked for by
/// hand; an automatic one is made on the history before the turn's own message.
pub(crate) fn summary_request_sparing_latest_turn(
    history: &[ChatMessage],
    keep_last: usize,
) -> Option<SummaryJob> {
    plan(history, keep_last, true)
}

fn plan(history: &[ChatMessage], keep_last: usize, spare_latest_turn: bool) -> Option<SummaryJob> {
    let layout = Layout::new(history);
    let mut keep_from = layout.body.len().saturating_sub(keep_last);
    if spare_latest_turn && let Some(unit) = layout.turn_starts_newest_first().next() {
        keep_from = keep_from.min(layout.units[unit].start);
    }
    if keep_from < layout.body.len() {
        let unit = layout.units.partition_point(|u| u.end <= keep_from);
        keep_from = layout.units[unit].start;
    }
    if keep_from == 0 {
        return None;
    }
    let covers = match layout.body.get(keep_from) {
        Some(&index) => index,
        None => history.len(),
    };
    let messages = layout.body[..keep_from].iter().map(|&i| &history[i]);
    let previous = layout.summary.map(summary_text);
    Some(SummaryJob {
        covers,
        summarized: keep_from,
        request: vec![
            ChatMessage::system(INSTRUCTIONS),
            ChatMessage::user(transcript(previous, messages)),
        ],
    })
}

/// The conversation as plain text, one labelled paragraph per message. Plain text rather
/// than the messages themselves, because a request that replays tool calls must also
/// declare the tools, and the summarizer should not call any.
fn transcript<'m>(
    previous: Option<&str>,
    messages: impl Iterator<Item = &'m ChatMessage>,
) -> String {
    let mut out = String::new();
    if let Some(previous) = previous {
        out.push_str("Earlier summary:\n");
        out.push_str(previous);
        out.push_str("\n\nThe conversation since then:\n\n");
    } else {
        out.push_str("The conversation:\n\n");
    }
    let mut prev: Option<&ChatMessage> = None;
    for message in messages {
        match message.role {
            Role::System => push_line(&mut out, "System", &message.content, MESSAGE_CAP),
            // A text-mode observation is a tool's output sent as a user message: shown as
            // what it is, so the summarizer never records a file's contents as something
            // the user said, and cut like any tool output.
            Role::User if is_loop_observation(prev, message) => {
                let output = message.content.strip_prefix(OBSERVATION_PREFIX);
                let output = output.unwrap_or(&message.content);
                push_line(&mut out, "Tool result", output, TOOL_TEXT_CAP);
            }
            Role::User => push_line(&mut out, "User", &message.content, MESSAGE_CAP),
            Role::Tool => push_line(&mut out, "Tool result", &message.content, TOOL_TEXT_CAP),
            Role::Assistant => {
                if !message.content.trim().is_empty() {
                    push_line(&mut out, "Assistant", &message.content, MESSAGE_CAP);
                }
                for call in &message.tool_calls {
                    let label = format!("Assistant called {}", call.name);
                    // A call a server encoded twice shown with the object it ran with.
                    let arguments = crate::executor::object_encoded_twice(&call.arguments);
                    let arguments = arguments.as_deref().unwrap_or(&call.arguments);
                    push_line(&mut out, &label, arguments, TOOL_TEXT_CAP);
                }
            }
        }
        prev = Some(message);
    }
    out
}

fn push_line(out: &mut String, label: &str, text: &str, cap: usize) {
    out.push_str(label);
    out.push_str(": ");
    let text = text.trim();
    if text.len() > cap {
        let cut = text.floor_char_boundary(cap);
        out.push_str(&text[..cut]);
        out.push_str(&format!(" [... {} more bytes]", text.len() - cut));
    } else {
        out.push_str(text);
    }
    out.push_str("\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::records::summary_record;
    use fusion_core::ToolCall;

    #[test]
    fn the_boundary_never_splits_a_call_from_its_results() {
        let history = vec![
            ChatMessage::system("sys"),
            ChatMessage::user("go"),
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("a", "t", "{}")]),
            ChatMessage::tool_result("a", "x"),
            ChatMessage::assistant("done"),
        ];
        // Keeping 2 would start at the result; the call comes along instead.
        let job = summary_request(&history, 2).unwrap();
        assert_eq!(job.covers, 2);
        assert_eq!(job.summarized, 1);
        assert!(summary_request(&history, 4).is_none());
        assert_eq!(summary_request(&history, 0).unwrap().covers, 5);
    }

    #[test]
    fn a_summary_by_hand_never_covers_the_latest_user_message() {
        let history = vec![
            ChatMessage::system("sys"),
            ChatMessage::user("my name is Ada"),
            ChatMessage::assistant("hello Ada"),
            ChatMessage::user("read a"),
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("a", "t", "{}")]),
            ChatMessage::tool_result("a", "x"),
            ChatMessage::assistant("done"),
        ];
        for keep_last in 0..4 {
            let job = summary_request_sparing_latest_turn(&history, keep_last).unwrap();
            assert_eq!((job.covers, job.summarized), (3, 2), "keep {keep_last}");
            assert!(!job.request[1].content.contains("read a"));
        }
        assert_eq!(
            summary_request_sparing_latest_turn(&history, 5)
                .unwrap()
                .covers,
            2
        );
        // Nothing before the latest user message: nothing to condense.
        assert!(summary_request_sparing_latest_turn(&history[3..], 0).is_none());
    }

    #[test]
    fn a_new_summary_folds_in_the_previous_one_and_only_newer_messages() {
        let mut history = vec![
            ChatMessage::system("sys"),
            ChatMessage::user("my name is Ada"),
            ChatMessage::assistant("hello Ada"),
        ];
        history.push(summary_record("User is Ada.", 3));
        history.push(ChatMessage::user("I like tea"));
        history.push(ChatMessage::assistant("noted"));
        let job = summary_request(&history, 0).unwrap();
        assert_eq!(job.covers, 6);
        assert_eq!(job.summarized, 2);
        let text = &job.request[1].content;
        assert!(text.starts_with("Earlier summary:\nUser is Ada."), "{text}");
        assert!(text.contains("User: I like tea") && !text.contains("my name is Ada"));
    }

    #[test]
    fn text_mode_observations_are_tool_results_in_the_transcript() {
        let output = "x".repeat(3 * TOOL_TEXT_CAP);
        let history = vec![
            ChatMessage::user("read a.txt"),
            ChatMessage::assistant("Action: read_file\nAction Input: {\"path\": \"a.txt\"}"),
            ChatMessage::user(crate::render_observation(&output)),
            ChatMessage::assistant("Final Answer: done"),
            ChatMessage::user("Observation: my own words"),
        ];
        let job = summary_request(&history, 0).unwrap();
        let text = &job.request[1].content;
        assert!(
            text.contains(&format!(
                "Tool result: {} [... {} more bytes]",
                "x".repeat(TOOL_TEXT_CAP),
                2 * TOOL_TEXT_CAP
            )),
            "{text}"
        );
        assert!(!text.contains("User: Observation: x"), "{text}");
        // A user who starts a message so is still the user.
        assert!(text.contains("User: Observation: my own words"), "{text}");
    }

    #[test]
    fn long_tool_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(TOOL_TEXT_CAP);
        let history = vec![
            ChatMessage::user("go"),
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("a", "t", "{}")]),
            ChatMessage::tool_result("a", &long),
        ];
        let job = summary_request(&history, 0).unwrap();
        let text = &job.request[1].content;
        assert!(text.contains(&format!("[... {} more bytes]", long.len() - TOOL_TEXT_CAP)));
        assert!(text.contains("Assistant called t: {}"));
    }

    /// Found by a review of 84e989d: the transcript showed a call whose arguments a
    /// server encoded twice as the string, not the object it ran with.
    #[test]
    fn the_transcript_shows_a_call_encoded_twice_with_the_object_it_ran_with() {
        let twice = serde_json::to_string(r#"{"path": "a.txt"}"#).unwrap();
        let messages = [
            ChatMessage::assistant_with_tool_calls(
                "",
                vec![ToolCall::new("a", "read_file", twice)],
            ),
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("b", "t", r#""[1]""#)]),
        ];
        let text = transcript(None, messages.iter());
        assert!(
            text.contains("Assistant called read_file: {\"path\": \"a.txt\"}\n"),
            "{text}"
        );
        assert!(text.contains("Assistant called t: \"[1]\"\n"), "{text}");
    }
}
