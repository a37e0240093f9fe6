//! What `fusion sessions import` would drop of a file: a message field this release does
//! not know.
//!
//! A `jsonl` file has no version to say which release wrote it (it is the file-system
//! backend's own session file, one message per line), and a message is read keeping the
//! fields it knows: a field a newer release adds to messages would be dropped without a
//! word, and the session imported without it. An import keeps every message whole or is
//! refused, naming the field, where it is and how to go on; the same for the messages of a
//! `json` export, whose version says nothing of fields added to messages. A field that
//! holds nothing (`null`, `[]`, `{}`) loses nothing and is let through, as the known empty
//! ones (`"name": null`) are.

use anyhow::{Result, bail};
use fusion::ChatMessage;
use serde_json::Value;

/// Refuses the import of `text` when a message of it holds something that `messages`, what
/// the export reader made of those messages in order, lost.
pub fn refuse_dropped_fields(text: &str, messages: &[ChatMessage]) -> Result<()> {
    for ((place, written), read) in messages_as_written(text).into_iter().zip(messages) {
        let kept = serde_json::to_value(read)?;
        if let Some(field) = dropped(&written, &kept) {
            bail!(
                "{place} holds {field:?}, which this release of fusion does not know and would \
                 drop (a newer release probably wrote it): import it with that release, or \
                 remove {field:?} to import the rest"
            );
        }
    }
    Ok(())
}

/// The key the file-system backend adds to the lines of a batch in its session files
/// (fusion-storage-fs's `jsonl.rs`: how many lines of the batch follow), which every reader
/// skips: a session file copied out of a store is an import of its messages, not of a
/// field this release does not know.
const FS_BATCH_MARKER: &str = "fusion_batch_more";

/// The messages of `text` as written, each with where it is (`line 3`, `message 3`), told
/// apart as [`fusion::api::export::read`] tells the formats apart: a `jsonl` file's first
/// line is a message on its own.
fn messages_as_written(text: &str) -> Vec<(String, Value)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let parse = |line: &str| serde_json::from_str::<Value>(line).ok();
    let first = text.lines().find(|line| !line.trim().is_empty());
    if first
        .and_then(parse)
        .is_some_and(|value| value.get("role").is_some())
    {
        let lines = text.lines().enumerate();
        let lines = lines.filter(|(_, line)| !line.trim().is_empty());
        return lines
            .filter_map(|(index, line)| {
                let mut message = parse(line)?;
                if let Some(fields) = message.as_object_mut() {
                    fields.remove(FS_BATCH_MARKER);
                }
                Some((format!("line {}", index + 1), message))
            })
            .collect();
    }
    match parse(text).and_then(|mut doc| doc.get_mut("messages").map(Value::take)) {
        Some(Value::Array(messages)) => (1..)
            .map(|n| format!("message {n}"))
            .zip(messages)
            .collect(),
        _ => Vec::new(),
    }
}

/// The path (`reasoning`, `tool_calls[0].function.strict`) of the first field of `written`
/// that holds something and is missing from `kept`, what was read of it.
fn dropped(written: &Value, kept: &Value) -> Option<String> {
    let path = match (written, kept) {
        (Value::Object(written), Value::Object(kept)) => {
            written.iter().find_map(|(key, value)| match kept.get(key) {
                None if holds_something(value) => Some(key.clone()),
                None => None,
                Some(kept) => dropped(value, kept).map(|inner| format!("{key}.{inner}")),
            })
        }
        (Value::Array(written), Value::Array(kept)) if written.len() == kept.len() => written
            .iter()
            .zip(kept)
            .enumerate()
            .find_map(|(index, (written, kept))| {
                dropped(written, kept).map(|inner| format!("[{index}].{inner}"))
            }),
        // Content parts read as their texts joined: what a part holds besides its type and
        // text (an image's `image_url`, an audio's `input_audio`) is dropped.
        (Value::Array(parts), Value::String(_)) => {
            parts.iter().enumerate().find_map(|(index, part)| {
                let fields = part.as_object()?.iter();
                let mut others = fields.filter(|(key, _)| !matches!(key.as_str(), "type" | "text"));
                let (key, _) = others.find(|(_, value)| holds_something(value))?;
                Some(format!("[{index}].{key}"))
            })
        }
        // A value read in another shape (`"content": null` as "") is read, not dropped.
        _ => None,
    };
    path.map(|path| path.replace(".[", "["))
}

fn holds_something(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Array(items) => !items.is_empty(),
        Value::Object(fields) => !fields.is_empty(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_field_read_is_kept_and_a_field_unknown_is_named_with_its_path() {
        let calls = vec![fusion::ToolCall::new("c1", "ls", "{}")];
        let message = ChatMessage::assistant_with_tool_calls("hi", calls);
        let kept = serde_json::to_value(&message).unwrap();
        assert_eq!(dropped(&kept, &kept), None);
        let mut written = kept.clone();
        written["reasoning"] = json!("because");
        assert_eq!(dropped(&written, &kept).as_deref(), Some("reasoning"));
        let mut written = kept.clone();
        written["tool_calls"][0]["function"]["strict"] = json!(true);
        assert_eq!(
            dropped(&written, &kept).as_deref(),
            Some("tool_calls[0].function.strict")
        );
        let mut written = kept.clone();
        written["name"] = Value::Null;
        written["content"] = json!([{"type": "text", "text": "hi"}]);
        assert_eq!(
            dropped(&written, &kept),
            None,
            "known, read in another shape"
        );
    }

    #[test]
    fn what_a_content_part_holds_besides_its_text_is_named() {
        let written = json!({"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]});
        let kept = serde_json::to_value(ChatMessage::user("what is this?")).unwrap();
        assert_eq!(
            dropped(&written, &kept).as_deref(),
            Some("content[1].image_url")
        );
    }

    #[test]
    fn a_file_system_session_files_batch_markers_are_no_field_dropped() {
        let session_file = concat!(
            r#"{"role":"user","content":"run it","fusion_batch_more":1}"#,
            "\n",
            r#"{"role":"assistant","content":"done"}"#,
            "\n",
        );
        let messages = [ChatMessage::user("run it"), ChatMessage::assistant("done")];
        refuse_dropped_fields(session_file, &messages).unwrap();
        let nested = r#"{"role":"user","content":"x","tool_calls":[{"id":"c","type":"function","function":{"name":"ls","arguments":"","fusion_batch_more":1}}]}"#;
        let read: ChatMessage = serde_json::from_str(nested).unwrap();
        let err = refuse_dropped_fields(nested, &[read]).unwrap_err();
        assert!(
            err.to_string().contains("function.fusion_batch_more"),
            "{err}"
        );
    }
}
