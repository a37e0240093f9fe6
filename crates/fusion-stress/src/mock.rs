//! The loopback LLM's rule: how the coordinator's `MockLlmServer` answers each request.
//!
//! - A summary request (one sent without tools: the summarizer reads a transcript and must
//!   not call any) is answered with every tag the request holds, so a summary that covers
//!   a message always names it and the checker can tell when one hides a message.
//! - A turn whose latest message is the tagged user message is answered with the final
//!   answer `ack <tag>`, or for one turn in three first with a `list_directory` call on
//!   the worker's own workspace root (which exists), so that turn makes four appends.
//! - After a tool result, the final answer names the tag the tool call was made for.

use fusion_agent::testing::{MockReply, MockToolCall};
use serde_json::Value;

use crate::tags::{Tag, answer, tags_in};

/// The text a tool-calling reply carries; names the turn so the answer after it can too.
const CALL_PREFIX: &str = "Listing the workspace for";

/// The reply to the chat-completions request `body`.
pub fn rule(body: &Value) -> MockReply {
    let messages = body["messages"].as_array().map_or(&[][..], Vec::as_slice);
    let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    if !has_tools {
        return MockReply::text(summary(messages));
    }
    let Some(last) = messages.last() else {
        return MockReply::text("ack none");
    };
    match last["role"].as_str() {
        Some("tool") => MockReply::text(after_tool(messages)),
        _ => {
            let Some(tag) = latest_user_tag(messages) else {
                return MockReply::text("ack none");
            };
            if tag.turn % 3 == 0 {
                MockReply::ToolCalls {
                    content: format!("{CALL_PREFIX} {tag}"),
                    calls: vec![MockToolCall::new("list_directory", r#"{"path":"."}"#)],
                }
            } else {
                MockReply::text(answer(tag))
            }
        }
    }
}

/// "Summary: notes t1 t2 ..." naming every distinct tag in the request, in first-seen
/// order; never empty, since the agent refuses an empty summary.
fn summary(messages: &[Value]) -> String {
    let mut seen = Vec::new();
    for message in messages {
        for tag in tags_in(message["content"].as_str().unwrap_or_default()) {
            if !seen.contains(&tag) {
                seen.push(tag);
            }
        }
    }
    let names: Vec<String> = seen.iter().map(Tag::to_string).collect();
    format!("Summary: notes {}.", names.join(" "))
}

/// The answer after a tool result: the tag of the latest tool-calling reply, else of the
/// latest user message.
fn after_tool(messages: &[Value]) -> String {
    let call_tag = messages
        .iter()
        .rev()
        .filter(|m| m["role"] == "assistant" && m["tool_calls"].is_array())
        .find_map(|m| {
            let content = m["content"].as_str()?.strip_prefix(CALL_PREFIX)?;
            tags_in(content).into_iter().next()
        });
    match call_tag.or_else(|| latest_user_tag(messages)) {
        Some(tag) => answer(tag),
        None => "ack none".into(),
    }
}

fn latest_user_tag(messages: &[Value]) -> Option<Tag> {
    messages
        .iter()
        .rev()
        .filter(|m| m["role"] == "user")
        .find_map(|m| tags_in(m["content"].as_str()?).into_iter().next())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool() -> Value {
        json!([{"type": "function", "function": {"name": "list_directory"}}])
    }

    #[test]
    fn a_turn_is_answered_with_its_tag_directly_or_after_one_tool_call() {
        let direct = json!({"tools": tool(), "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "Please remember note w1-s0-k4."},
        ]});
        assert_eq!(rule(&direct), MockReply::text("ack w1-s0-k4"));

        let calling = json!({"tools": tool(), "messages": [
            {"role": "user", "content": "Please remember note w1-s0-k3."},
        ]});
        let MockReply::ToolCalls { content, calls } = rule(&calling) else {
            panic!("expected a tool call");
        };
        assert_eq!(calls[0].name, "list_directory");
        let after = json!({"tools": tool(), "messages": [
            {"role": "user", "content": "Please remember note w1-s0-k3."},
            {"role": "assistant", "content": content, "tool_calls": []},
            {"role": "tool", "content": "notes.txt"},
        ]});
        assert_eq!(rule(&after), MockReply::text("ack w1-s0-k3"));
    }

    #[test]
    fn a_summary_names_every_tag_it_was_shown() {
        let request = json!({"messages": [
            {"role": "system", "content": "You maintain the memory of a conversation..."},
            {"role": "user", "content": "Earlier summary:\nnotes w0-s0-k1.\n\nUser: note \
                w2-s0-k5\n\nAssistant: ack w2-s0-k5\n\nUser: note w0-s0-k2"},
        ]});
        assert_eq!(
            rule(&request),
            MockReply::text("Summary: notes w0-s0-k1 w2-s0-k5 w0-s0-k2.")
        );
    }
}
