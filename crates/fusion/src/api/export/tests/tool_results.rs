//! A tool result [`read`] takes only with the id of the call it answers.

use super::super::*;
use crate::ToolCall;

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
