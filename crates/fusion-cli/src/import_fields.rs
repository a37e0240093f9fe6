//! What `fusion sessions import` would drop of a file: a message field this release does
//! not know; or add to what a store held: the unfinished batch that ends a file-system
//! session file.
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

/// Refuses the import of `text` when it ends inside a batch of a file-system session file,
/// or when a message of it holds something that `messages`, what the export reader made of
/// those messages in order, lost.
pub fn refuse_what_would_be_lost(text: &str, messages: &[ChatMessage]) -> Result<()> {
    let written = messages_as_written(text);
    refuse_unfinished_batch(&written)?;
    for (written, read) in written.into_iter().zip(messages) {
        let kept = serde_json::to_value(read)?;
        let Some(field) = dropped(&written.message, &kept) else {
            continue;
        };
        let place = written.place;
        // Kept, `content` is a string: a path in it is a content part's, of a file another
        // tool wrote (an image, Anthropic's `cache_control`), which no release keeps.
        if field.starts_with("content[") {
            bail!(
                "{place} holds {field:?}, which fusion would drop: it keeps the text of a \
                 message's content parts and nothing else; remove {field:?} to import the text"
            );
        }
        bail!(
            "{place} holds {field:?}, which this release of fusion does not know and would \
             drop (a newer release probably wrote it): import it with that release, or remove \
             {field:?} to import the rest"
        );
    }
    Ok(())
}

/// Refuses a file-system session file whose last lines all carry a batch marker: they
/// begin a batch whose last line was never written (its process stopped mid-append, or
/// the file was copied then). The backend's own load leaves them out, as its next append
/// cuts them off, so that a batch is stored whole or not at all (fusion-storage-fs's
/// `jsonl.rs`, the torn tail); imported, they would be messages the store never held.
fn refuse_unfinished_batch(written: &[Written]) -> Result<()> {
    let continued = written.iter().rev().take_while(|line| line.batch_continues);
    let unfinished = &written[written.len() - continued.count()..];
    let (Some(first), Some(last)) = (unfinished.first(), unfinished.last()) else {
        return Ok(());
    };
    let lines = match first.place == last.place {
        true => format!("{} begins", first.place),
        false => format!("{} to {} begin", first.place, last.place),
    };
    bail!(
        "{lines} a batch of messages whose end is missing (\"{FS_BATCH_MARKER}\" says more \
         lines follow): the file-system backend stopped while appending it, and its own load \
         leaves it out; remove those lines to import the rest"
    )
}

/// A message as written in the import, and where it is.
struct Written {
    /// Where it is: `line 3` of a `jsonl` file, `message 3` of a `json` export.
    place: String,
    /// The message, without the batch marker of a `jsonl` line.
    message: Value,
    /// Whether its `jsonl` line carried the batch marker: more lines of its batch follow.
    batch_continues: bool,
}

/// The key the file-system backend adds to the lines of a batch in its session files
/// (fusion-storage-fs's `jsonl.rs`: how many lines of the batch follow), which every message
/// reader skips: a session file copied out of a store is an import of its messages, not of
/// a field this release does not know. The backend's load reads it for where a batch ends
/// ([`refuse_unfinished_batch`]).
const FS_BATCH_MARKER: &str = "fusion_batch_more";

/// The messages of `text` as written, told apart as [`fusion::api::export::read`] tells
/// the formats apart: a `jsonl` file's first line is a message on its own.
fn messages_as_written(text: &str) -> Vec<Written> {
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
                let marker = message
                    .as_object_mut()
                    .and_then(|fields| fields.remove(FS_BATCH_MARKER));
                Some(Written {
                    place: format!("line {}", index + 1),
                    message,
                    batch_continues: marker.is_some(),
                })
            })
            .collect();
    }
    match parse(text).and_then(|mut doc| doc.get_mut("messages").map(Value::take)) {
        Some(Value::Array(messages)) => (1..)
            .zip(messages)
            .map(|(n, message)| Written {
                place: format!("message {n}"),
                message,
                batch_continues: false,
            })
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
        // No release keeps it: the refusal sends nobody looking for a newer one.
        let line = r#"{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}"#;
        let read = fusion::api::export::read(line).unwrap().messages;
        let err = refuse_what_would_be_lost(line, &read)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"content[0].cache_control\""), "{err}");
        assert!(
            err.contains("keeps the text") && !err.contains("newer"),
            "{err}"
        );
    }

    #[test]
    fn a_file_system_session_file_ending_inside_a_batch_is_refused() {
        let user = r#"{"role":"user","content":"run it"}"#;
        let call = r#"{"role":"assistant","content":"","tool_calls":[{"id":"c","type":"function","function":{"name":"ls","arguments":"{}"}}],"fusion_batch_more":1}"#;
        let result = r#"{"role":"tool","content":"done","tool_call_id":"c"}"#;
        let read = |text: &str| fusion::api::export::read(text).unwrap().messages;
        let whole = format!("{user}\n{call}\n{result}\n");
        refuse_what_would_be_lost(&whole, &read(&whole)).unwrap();
        // The batch's last line (the tool's result) never written: the store loads the
        // user's message alone.
        let torn = format!("{user}\n{call}\n");
        let err = refuse_what_would_be_lost(&torn, &read(&torn)).unwrap_err();
        assert!(
            err.to_string().starts_with("line 2 begins a batch"),
            "{err}"
        );
        let marked = r#"{"role":"user","content":"a","fusion_batch_more":2}"#;
        let torn = format!("{user}\n{marked}\n{call}");
        let err = refuse_what_would_be_lost(&torn, &read(&torn)).unwrap_err();
        assert!(
            err.to_string().starts_with("line 2 to line 3 begin"),
            "{err}"
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
        refuse_what_would_be_lost(session_file, &messages).unwrap();
        let nested = r#"{"role":"user","content":"x","tool_calls":[{"id":"c","type":"function","function":{"name":"ls","arguments":"","fusion_batch_more":1}}]}"#;
        let read: ChatMessage = serde_json::from_str(nested).unwrap();
        let err = refuse_what_would_be_lost(nested, &[read]).unwrap_err();
        assert!(
            err.to_string().contains("function.fusion_batch_more"),
            "{err}"
        );
    }
}
