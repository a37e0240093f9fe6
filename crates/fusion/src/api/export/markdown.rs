//! The `markdown` export: a transcript for people, and the label of each message, which
//! other renderings of a transcript (`fusion sessions show`) share.
//!
//! Every message is shown, tool calls with their raw arguments and tool results labelled
//! with the tool that produced them, because "what did the agent actually do" is the usual
//! reason to read a transcript.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::api::time;
use crate::storage::{SessionMeta, SessionTimes};
use crate::{ChatMessage, Role};

/// The Markdown transcript: a heading with the id, the title, owner, tags, expiry and
/// times, the message count, then one section per message, tool calls and results in
/// code blocks.
pub(super) fn markdown(
    id: &str,
    meta: &SessionMeta,
    times: Option<SessionTimes>,
    messages: &[ChatMessage],
) -> String {
    let mut out = format!("# Session `{id}`\n\n");
    if let Some(title) = &meta.title {
        let _ = writeln!(out, "Title: {title}  ");
    }
    if let Some(owner) = &meta.owner {
        let _ = writeln!(out, "Owner: `{owner}`  ");
    }
    if !meta.tags.is_empty() {
        let tags: Vec<String> = meta.tags.iter().map(|tag| format!("`{tag}`")).collect();
        let _ = writeln!(out, "Tags: {}  ", tags.join(", "));
    }
    if let Some(expiry) = &meta.expiry {
        let _ = writeln!(out, "Expires: {}  ", time::describe_expiry(expiry));
    }
    if let Some(times) = times {
        let _ = writeln!(out, "Created: {}  ", time::rfc3339(times.created_at));
        let _ = writeln!(out, "Last written: {}  ", time::rfc3339(times.updated_at));
    }
    let noun = if messages.len() == 1 {
        "message"
    } else {
        "messages"
    };
    let _ = writeln!(out, "{} {noun}", messages.len());
    for ((index, message), heading) in messages.iter().enumerate().zip(message_headings(messages)) {
        let _ = write!(out, "\n## {}. {heading}\n\n", index + 1);
        if !message.content.is_empty() {
            if message.role == Role::Tool {
                // Tool output is usually file contents or listings: keep it verbatim.
                out.push_str(&fenced(&message.content, ""));
            } else {
                out.push_str(message.content.trim_end());
                out.push('\n');
            }
        }
        for (nth, call) in message.tool_calls.iter().enumerate() {
            if nth > 0 || !message.content.is_empty() {
                out.push('\n');
            }
            let _ = write!(out, "Tool call `{}` (id `{}`):\n\n", call.name, call.id);
            out.push_str(&fenced(&call.arguments, "json"));
        }
    }
    out
}

/// The label of each message of a transcript, in order: its role, or for a tool result
/// the tool and call it answers (`tool result (read_file, call c1)`), then the sender's
/// name in brackets and a stored `kind` in angle brackets (`assistant <summary>`), since a
/// summary would otherwise look like any other message.
///
/// The `markdown` export heads its sections with these; a transcript rendered another way
/// uses them too, so a message is called the same everywhere.
///
/// ```
/// use fusion::{ChatMessage, ToolCall};
/// use fusion::api::export::message_headings;
///
/// let messages = [
///     ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("c1", "ls", "{}")]),
///     ChatMessage::tool_result("c1", "notes.txt"),
/// ];
/// assert_eq!(message_headings(&messages), ["assistant", "tool result (ls, call c1)"]);
/// ```
pub fn message_headings(messages: &[ChatMessage]) -> Vec<String> {
    // Tool call id -> tool name, so a result can say which tool produced it.
    let tools: HashMap<&str, &str> = messages
        .iter()
        .flat_map(|message| &message.tool_calls)
        .map(|call| (call.id.as_str(), call.name.as_str()))
        .collect();
    messages
        .iter()
        .map(|message| heading(message, &tools))
        .collect()
}

/// "user", "assistant", or "tool result (read_file, call call_1)", with a name and a kind.
fn heading(message: &ChatMessage, tools: &HashMap<&str, &str>) -> String {
    let mut heading = match (&message.role, &message.tool_call_id) {
        (Role::Tool, Some(call_id)) => match tools.get(call_id.as_str()) {
            Some(tool) => format!("tool result ({tool}, call {call_id})"),
            None => format!("tool result (call {call_id})"),
        },
        (role, _) => role.as_str().to_string(),
    };
    if let Some(name) = &message.name {
        let _ = write!(heading, " [{name}]");
    }
    if let Some(kind) = message.metadata.get("kind").and_then(|kind| kind.as_str()) {
        let _ = write!(heading, " <{kind}>");
    }
    heading
}

/// A fenced code block whose fence is longer than any backtick run inside `text`, so no
/// output can close it early.
fn fenced(text: &str, lang: &str) -> String {
    let longest_run = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run.max(2) + 1);
    format!("{fence}{lang}\n{}\n{fence}\n", text.trim_end_matches('\n'))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ToolCall;
    use crate::storage::Expiry;

    fn sample() -> Vec<ChatMessage> {
        let call = ToolCall::new("call_1", "list_directory", r#"{"path":"/tmp"}"#);
        vec![
            ChatMessage::user("What is in /tmp?"),
            ChatMessage::assistant_with_tool_calls("", vec![call]),
            ChatMessage::tool_result("call_1", "notes.txt\n```x```"),
            ChatMessage::assistant("Just notes.txt.").with_metadata("kind", "summary".into()),
        ]
    }

    #[test]
    fn markdown_fences_outlast_backticks_in_tool_output() {
        let text = markdown("s1", &SessionMeta::new(), None, &sample());
        assert!(text.starts_with("# Session `s1`\n\n4 messages\n"), "{text}");
        assert!(text.contains("## 2. assistant"), "{text}");
        assert!(
            text.contains("## 3. tool result (list_directory, call call_1)"),
            "{text}"
        );
        assert!(text.contains("````\nnotes.txt\n```x```\n````"), "{text}");
        assert!(
            text.contains(
                "Tool call `list_directory` (id `call_1`):\n\n```json\n{\"path\":\"/tmp\"}\n```"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("## 4. assistant <summary>\n\nJust notes.txt.\n"),
            "{text}"
        );
    }

    #[test]
    fn markdown_heads_with_the_metadata_that_is_set() {
        let meta = SessionMeta::new()
            .title("T")
            .owner("ann")
            .tags(["b", "a"])
            .expiry(Expiry::Idle(Duration::from_secs(30 * 86_400)));
        let text = markdown("s-1", &meta, None, &sample()[..1]);
        assert!(
            text.starts_with(
                "# Session `s-1`\n\nTitle: T  \nOwner: `ann`  \nTags: `a`, `b`  \n\
                 Expires: after 30d idle  \n1 message\n\n## 1. user\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_result_without_its_call_still_names_the_call() {
        let orphan = ChatMessage::tool_result("gone", "");
        assert_eq!(message_headings(&[orphan]), ["tool result (call gone)"]);
    }
}
