//! What [`read`](super::read) would drop of a message: a field this release does not know,
//! or what a content part holds besides its text.
//!
//! A `jsonl` file has no version to say which release wrote it (it is the file-system
//! backend's own session file, one message per line), and a [`ChatMessage`] is read keeping
//! the fields it knows: a field a newer release adds to messages would be dropped without a
//! word, and the session imported without it. So each message is parsed once, as written
//! (a [`Written`] value), read from that, and what was read compared with what was written:
//! an import keeps every message whole or is refused, naming the field, where it is and how
//! to go on; the same for the messages of a `json` export, whose version says nothing of
//! fields added to messages. A field that holds nothing (`null`, `[]`, `{}`) loses nothing
//! and is let through, as the known empty ones (`"name": null`) are.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

use super::error::{ImportError, MessagePlace};
use crate::ChatMessage;

/// The key the file-system backend adds to the lines of a batch in its session files
/// (fusion-storage-fs's `jsonl.rs`: how many lines of the batch follow), which every message
/// reader skips: a session file copied out of a store is an import of its messages, not of
/// a field this release does not know. [`read`](super::read) takes it off a `jsonl` line,
/// and refuses a file whose last lines carry it: they begin a batch whose last line was
/// never written ([`ImportError::UnfinishedBatch`]).
pub(super) const FS_BATCH_MARKER: &str = "fusion_batch_more";

/// A message as written: its JSON, parsed once. Unlike a [`Value`], which keeps the last
/// of two equal keys of an object, a key written twice is refused (as reading a message
/// refuses a field of its own written twice): the first value would be lost.
pub(super) struct Written(pub(super) Value);

impl<'de> Deserialize<'de> for Written {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WrittenVisitor).map(Written)
    }
}

/// Builds a [`Value`] as serde_json's own visitor does, refusing a key written twice.
struct WrittenVisitor;

impl<'de> Visitor<'de> for WrittenVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Written::deserialize(deserializer).map(|written| written.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut values = Vec::with_capacity(items.size_hint().unwrap_or(0));
        while let Some(Written(value)) = items.next_element()? {
            values.push(value);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: MapAccess<'de>>(self, entries: A) -> Result<Value, A::Error> {
        written_map(entries).map(Value::Object)
    }
}

/// The entries of an object as written, refusing a key written twice (at any depth).
fn written_map<'de, A: MapAccess<'de>>(mut entries: A) -> Result<Map<String, Value>, A::Error> {
    let mut fields = Map::new();
    while let Some(key) = entries.next_key::<String>()? {
        match fields.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(entries.next_value::<Written>()?.0);
            }
            Entry::Occupied(slot) => {
                return Err(de::Error::custom(format!(
                    "the key {:?} is written twice",
                    slot.key()
                )));
            }
        }
    }
    Ok(fields)
}

/// Reads a JSON object as written, refusing a key written twice at any depth, as a
/// message's is: the `data` of a `json` export's `meta`, whose first value would be lost.
pub(super) fn written_object<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Map<String, Value>, D::Error> {
    struct ObjectVisitor;

    impl<'de> Visitor<'de> for ObjectVisitor {
        type Value = Map<String, Value>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, entries: A) -> Result<Self::Value, A::Error> {
            written_map(entries)
        }
    }

    deserializer.deserialize_map(ObjectVisitor)
}

/// Takes the batch marker off `written`, a `jsonl` line's message; whether it had one
/// (more lines of its batch follow).
pub(super) fn take_batch_marker(written: &mut Value) -> bool {
    let fields = written.as_object_mut();
    fields
        .and_then(|fields| fields.remove(FS_BATCH_MARKER))
        .is_some()
}

/// What reading `written`, the message at `place`, as `read` dropped of it, if anything:
/// the first field of it that holds something and is missing from what was read.
pub(super) fn lost(
    written: &Value,
    read: &ChatMessage,
    place: MessagePlace,
) -> Option<ImportError> {
    // Only string keys and JSON values: nothing in a message fails to serialize.
    let kept = serde_json::to_value(read).expect("a message serializes to JSON");
    let field = dropped(written, &kept)?;
    // Kept, `content` is a string: a path in it is a content part's, of a file another
    // tool wrote (an image, Anthropic's `cache_control`), which no release keeps.
    Some(match field.starts_with("content[") {
        true => ImportError::ContentPart { place, field },
        false => ImportError::UnknownField { place, field },
    })
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
        let calls = vec![crate::ToolCall::new("c1", "ls", "{}")];
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
    fn a_key_written_twice_is_refused_where_it_is() {
        let parse = |text: &str| serde_json::from_str::<Written>(text).map(|written| written.0);
        let err = parse(r#"{"a": {"b": 1, "b": 2}}"#).unwrap_err().to_string();
        assert!(
            err.starts_with("the key \"b\" is written twice at line 1"),
            "{err}"
        );
        let text = r#"{"a":[1,-2,3.5,"x",null,true,{}],"b":{"c":[]}}"#;
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(parse(text).unwrap(), expected);
    }
}
