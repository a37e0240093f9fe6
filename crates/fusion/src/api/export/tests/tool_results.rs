//! A tool result [`read`] takes whatever call it names, as a storage keeps it.

use super::super::*;
use crate::agent::ContextPolicy;
use crate::agent::context::{EstimateCounter, request_view};
use crate::{Role, ToolCall};

/// Whether every tool result of `view` answers a call of the assistant message its run
/// of results follows, one result a call: what a server takes in a request's history.
fn sendable(view: &[std::borrow::Cow<'_, ChatMessage>]) -> bool {
    let mut open: Vec<&str> = Vec::new();
    for message in view {
        if message.role != Role::Tool {
            open = message.tool_calls.iter().map(|c| c.id.as_str()).collect();
            continue;
        }
        let id = message.tool_call_id.as_deref();
        match open.iter().position(|open| Some(*open) == id) {
            Some(at) => drop(open.swap_remove(at)),
            None => return false,
        }
    }
    open.is_empty()
}

/// A tool result whose call is not before it (cut off by a window or another program, a
/// result of another session's call, one stored before its call), and one without
/// `tool_call_id` (absent, empty, blanks only), were refused (f1dcc5f, d50a841, 58458ff),
/// though a storage keeps them, so `fusion sessions export` and `import` of a session a
/// storage held failed. The agent leaves them out of each request it sends: they import
/// as they are now, in a `jsonl` file and a `json` export, and an export of them reads
/// back whole. A call left without its result, a late result and a second result of one
/// call are taken as before.
#[test]
fn a_tool_result_is_taken_whatever_call_it_names_as_the_agent_sends_it() {
    let call =
        |id: &str| ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new(id, "f", "{}")]);
    let jsonl = |messages: &[ChatMessage]| -> String {
        let lines = messages.iter().map(|m| serde_json::to_string(m).unwrap());
        lines.map(|line| line + "\n").collect()
    };
    let user = ChatMessage::user("hi");
    let histories = [
        vec![
            ChatMessage::tool_result("cut", "its call was cut off"),
            user.clone(),
            ChatMessage::assistant("ok"),
        ],
        vec![user.clone(), ChatMessage::tool_result("c1", "out")],
        vec![
            user.clone(),
            call("c1"),
            ChatMessage::tool_result("c2", "out"),
        ],
        vec![
            ChatMessage::tool_result("c1", "early"),
            user.clone(),
            call("c1"),
        ],
        vec![
            user.clone(),
            call("c1"),
            ChatMessage::new(Role::Tool, "out"),
        ],
        vec![
            user.clone(),
            call("c1"),
            ChatMessage::tool_result("", "out"),
        ],
        vec![
            user.clone(),
            call("c1"),
            ChatMessage::tool_result(" \t ", "out"),
        ],
        vec![user.clone(), call("c1")],
        vec![
            user.clone(),
            call("c1"),
            user.clone(),
            ChatMessage::assistant("ok"),
        ],
        vec![
            user.clone(),
            call("c1"),
            ChatMessage::assistant("meanwhile"),
            ChatMessage::tool_result("c1", "late"),
            ChatMessage::tool_result("c1", "twice"),
        ],
    ];
    for messages in histories {
        fusion_core::check_storable("any", "s", &messages).unwrap();
        let view = request_view(&messages, &ContextPolicy::default(), &EstimateCounter, None);
        assert!(sendable(&view), "{view:?}");

        let read_back = |text: &str| {
            read(text)
                .unwrap_or_else(|err| panic!("{err}\n{text}"))
                .messages
        };
        assert_eq!(read_back(&jsonl(&messages)), messages);
        let json = serde_json::json!({ "messages": messages }).to_string();
        assert_eq!(read_back(&json), messages);
        for format in [ExportFormat::Json, ExportFormat::Jsonl] {
            let text = write(format, "s", &SessionMeta::default(), &messages).unwrap();
            assert_eq!(read_back(&text), messages, "{format:?}");
        }
    }
}
