//! A tool result [`read`] takes only with the id of the call it answers.

use super::super::*;
use crate::{Role, ToolCall};

/// A tool message without `tool_call_id` (or with one empty or of blanks only) was
/// imported, then sent with every request of the session, each refused by the server: it
/// is refused at the import, named as the file counts, in a `jsonl` file and a `json`
/// export alike.
#[test]
fn a_tool_result_without_the_id_of_its_call_is_refused_naming_it() {
    let call = ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("c1", "f", "{}")]);
    let answered = ChatMessage::tool_result("c1", "out");
    let jsonl = |messages: &[&ChatMessage]| -> String {
        let lines = messages.iter().map(|m| serde_json::to_string(m).unwrap());
        lines.map(|line| line + "\n").collect()
    };
    let fine = [&ChatMessage::user("hi"), &call, &answered];
    assert_eq!(read(&jsonl(&fine)).unwrap().messages.len(), 3);

    for unanswering in [
        ChatMessage::new(Role::Tool, "out"),
        ChatMessage::tool_result("", "out"),
        ChatMessage::tool_result(" \t ", "out"),
    ] {
        let messages = [&ChatMessage::user("hi"), &call, &unanswering];
        let err = read(&jsonl(&messages)).unwrap_err();
        assert!(
            matches!(
                err,
                ImportError::ToolResultWithoutCallId {
                    place: MessagePlace::Line(3)
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("line 3 is a tool result without \"tool_call_id\""),
            "{err}"
        );
        let json = serde_json::json!({ "messages": messages }).to_string();
        let err = read(&json).unwrap_err();
        assert!(
            matches!(
                err,
                ImportError::ToolResultWithoutCallId {
                    place: MessagePlace::Message(3)
                }
            ),
            "{err:?}"
        );
    }
}

/// A tool result whose id no earlier assistant tool call has was imported, then sent with
/// every request of the session, each refused by the server: it is refused at the import,
/// naming it and the id. A result before its call is one too. A call left without its
/// result (a turn stopped while its tool ran), a late result and a second result of one
/// call are taken: the agent answers and places them in what it sends.
#[test]
fn a_tool_result_answering_no_earlier_call_is_refused_and_a_call_without_result_is_taken() {
    let call =
        |id: &str| ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new(id, "f", "{}")]);
    let jsonl = |messages: &[ChatMessage]| -> String {
        let lines = messages.iter().map(|m| serde_json::to_string(m).unwrap());
        lines.map(|line| line + "\n").collect()
    };
    let user = ChatMessage::user("hi");
    let taken = [
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
    for messages in taken {
        assert_eq!(read(&jsonl(&messages)).unwrap().messages, messages);
        let json = serde_json::json!({ "messages": messages }).to_string();
        assert_eq!(read(&json).unwrap().messages, messages);
    }

    let refused = [
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
    ];
    for messages in refused {
        let at = messages.iter().position(|m| m.role == Role::Tool).unwrap() + 1;
        let id = messages[at - 1].tool_call_id.clone().unwrap();
        let err = read(&jsonl(&messages)).unwrap_err();
        assert!(
            matches!(
                &err,
                ImportError::ToolResultWithoutCall { place: MessagePlace::Line(line), call_id }
                    if *line == at && *call_id == id
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with(&format!(
                "line {at} is a tool result for the call \"{id}\", and no assistant message \
                 before it makes a tool call of that id"
            )),
            "{err}"
        );
        let json = serde_json::json!({ "messages": messages }).to_string();
        let err = read(&json).unwrap_err();
        assert!(
            matches!(
                &err,
                ImportError::ToolResultWithoutCall { place: MessagePlace::Message(n), .. }
                    if *n == at
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with(&format!("message {at} is")),
            "{err}"
        );
    }
}
