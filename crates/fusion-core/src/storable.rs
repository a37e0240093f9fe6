//! The check every backend runs before writing: a message it stores must read back.
//!
//! Writing JSON has no nesting limit but reading it has: `serde_json` refuses input
//! nested 128 containers deep. A message whose `metadata` nests deeper than that would be
//! stored and then make its whole session unreadable, so [`check_storable`] refuses it
//! first, the same way on every backend (memory included, so behaviour never depends on
//! where a session lives). Only `metadata` can nest; the other fields are strings.
//!
//! It also refuses two messages with the same id in one write: an id names one message,
//! and a backend that stores each id once could not tell which of the two was meant.

use std::collections::HashSet;

use crate::{ChatMessage, Error, MessageId, Result};

/// How deeply a message's metadata values may nest: arrays and objects inside one
/// another, a string or number counting 0 and `{"covers": 3}` counting 1.
///
/// Reading stops at 128 nested containers, and the stored form wraps each value in
/// envelopes: the message object and the metadata map (2 levels) everywhere, a JSON
/// array around a batch or a history where SQLite binds or assembles one, an export
/// file's object and array. 100 leaves room for all of those with more than 20 levels
/// to spare, so an envelope added later does not make stored sessions unreadable.
pub const MAX_METADATA_DEPTH: usize = 100;

/// Refuses `messages` unless every one can be stored and read back by any backend.
///
/// Backends call this at the start of `save` and `append`, before writing anything, and
/// the trait's default `append` does too; a user-written backend should call it in its
/// own `save`. The error is [`Error::InvalidMessage`] naming `backend`, `session_id`, the
/// index of the first refused message within `messages` and the limit, and is not
/// retryable.
///
/// It also refuses a write in which two messages share an [`id`](ChatMessage::id).
///
/// Cost: one branch per message without metadata, so it is free on an ordinary turn;
/// metadata values are walked once, never further than [`MAX_METADATA_DEPTH`] + 1
/// levels, so even absurdly deep input cannot exhaust the stack here.
///
/// ```
/// use fusion_core::{ChatMessage, Error, MAX_METADATA_DEPTH, check_storable};
/// use serde_json::json;
///
/// let summary = ChatMessage::system("s").with_metadata("covers", json!({"upto": 3}));
/// check_storable("custom", "user-1", &[summary])?;
///
/// let mut deep = json!(0);
/// for _ in 0..=MAX_METADATA_DEPTH {
///     deep = json!([deep]);
/// }
/// let refused = [ChatMessage::user("hi"), ChatMessage::user("x").with_metadata("k", deep)];
/// let err = check_storable("custom", "user-1", &refused).unwrap_err();
/// assert!(matches!(err, Error::InvalidMessage { index: 1, .. }), "{err}");
/// # Ok::<(), Error>(())
/// ```
pub fn check_storable(
    backend: &'static str,
    session_id: &str,
    messages: &[ChatMessage],
) -> Result<()> {
    for (index, message) in messages.iter().enumerate() {
        if message.metadata.is_empty() {
            continue;
        }
        let too_deep = message
            .metadata
            .iter()
            .find(|(_, value)| nests_deeper_than(value, MAX_METADATA_DEPTH));
        if let Some((key, _)) = too_deep {
            return Err(Error::InvalidMessage {
                backend,
                session_id: session_id.to_string(),
                index,
                detail: format!(
                    "metadata {key:?} nests deeper than {MAX_METADATA_DEPTH} levels of arrays \
                     and objects, the most a stored message can be read back with"
                ),
            });
        }
    }
    if let Some((index, id)) = repeated_id(messages) {
        return Err(Error::InvalidMessage {
            backend,
            session_id: session_id.to_string(),
            index,
            detail: format!("its id {id} is the id of an earlier message of the same write"),
        });
    }
    Ok(())
}

/// The first message whose id an earlier message of `messages` already has.
///
/// A turn's few messages are compared pairwise; a long history goes through a set.
fn repeated_id(messages: &[ChatMessage]) -> Option<(usize, &MessageId)> {
    let ids = || {
        messages
            .iter()
            .enumerate()
            .filter_map(|(i, m)| Some((i, m.id.as_ref()?)))
    };
    if messages.len() <= 16 {
        ids().find(|&(i, id)| messages[..i].iter().any(|m| m.id.as_ref() == Some(id)))
    } else {
        let mut seen = HashSet::new();
        ids().find(|&(_, id)| !seen.insert(id))
    }
}

/// Whether `value` nests more than `limit` arrays and objects inside one another.
///
/// Recursion stops at `limit` + 1 levels whatever the input holds.
pub(crate) fn nests_deeper_than(value: &serde_json::Value, limit: usize) -> bool {
    use serde_json::Value;
    match value {
        Value::Array(items) => limit == 0 || items.iter().any(|v| nests_deeper_than(v, limit - 1)),
        Value::Object(map) => limit == 0 || map.values().any(|v| nests_deeper_than(v, limit - 1)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// A value `depth` containers deep, arrays and objects alternating.
    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!("leaf"), |inner, level| {
            if level % 2 == 0 {
                json!([1, inner])
            } else {
                json!({"a": 1, "b": inner})
            }
        })
    }

    fn deep_message(depth: usize) -> ChatMessage {
        ChatMessage::user("deep").with_metadata("tree", nested(depth))
    }

    #[test]
    fn depth_counts_nested_containers() {
        assert!(!nests_deeper_than(&json!("s"), 0));
        assert!(nests_deeper_than(&json!([]), 0));
        assert!(!nests_deeper_than(&json!({"covers": 3}), 1));
        assert!(nests_deeper_than(&json!({"covers": [3]}), 1));
        for depth in [1, 7, MAX_METADATA_DEPTH] {
            assert!(!nests_deeper_than(&nested(depth), depth), "{depth}");
            assert!(nests_deeper_than(&nested(depth), depth - 1), "{depth}");
        }
    }

    #[test]
    fn a_message_too_deep_to_read_back_is_refused_naming_session_index_and_limit() {
        let batch = [
            ChatMessage::user("plain"),
            deep_message(MAX_METADATA_DEPTH),
            deep_message(MAX_METADATA_DEPTH + 1),
        ];
        check_storable("fs", "s-1", &batch[..2]).unwrap();
        let err = check_storable("fs", "s-1", &batch).unwrap_err();
        let shown = err.to_string();
        assert!(
            matches!(&err, Error::InvalidMessage { backend: "fs", session_id, index: 2, .. } if session_id == "s-1"),
            "{err:?}"
        );
        assert!(
            shown.contains("\"s-1\"") && shown.contains("message 3 (index 2)"),
            "{shown}"
        );
        assert!(shown.contains(&MAX_METADATA_DEPTH.to_string()), "{shown}");
        assert!(shown.contains("\"tree\""), "{shown}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn the_limit_reads_back_inside_every_envelope_with_room_to_spare() {
        // The stored forms: a message alone (fs line, Redis element, SQLite row), in a
        // batch or history array (SQLite), in an export file's object and array.
        let message = deep_message(MAX_METADATA_DEPTH);
        let history = json!({"id": "s", "messages": [message]});
        let text = serde_json::to_string(&history).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, history);
        // The margin: twenty more levels still read back...
        let margin = deep_message(MAX_METADATA_DEPTH + 20);
        let text = serde_json::to_string(&json!({"messages": [margin]})).unwrap();
        serde_json::from_str::<Value>(&text).unwrap();
        // ...while the depth of the issue's report does not, even as a lone message.
        let unreadable = serde_json::to_string(&deep_message(126)).unwrap();
        let err = serde_json::from_str::<ChatMessage>(&unreadable).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }

    #[test]
    fn two_messages_with_one_id_are_refused_in_short_and_long_writes() {
        let id = MessageId::parse("m-1").unwrap();
        for len in [2, 40] {
            let mut batch: Vec<ChatMessage> = (0..len)
                .map(|_| ChatMessage::user("x").with_new_id())
                .collect();
            batch.push(ChatMessage::user("no id"));
            batch.push(ChatMessage::user("no id"));
            check_storable("fs", "s", &batch).unwrap();
            batch[0].id = Some(id.clone());
            batch[len - 1].id = Some(id.clone());
            let err = check_storable("fs", "s", &batch).unwrap_err();
            let index = len - 1;
            assert!(
                matches!(&err, Error::InvalidMessage { index: i, .. } if *i == index),
                "{err:?}"
            );
            assert!(err.to_string().contains("m-1"), "{err}");
        }
    }

    #[test]
    fn absurd_depth_is_refused_without_walking_it_all() {
        // Deeper than any stack would allow a recursive walk of; built and dropped
        // iteratively so the test itself does not recurse.
        let mut value = json!(0);
        for _ in 0..100_000 {
            value = Value::Array(vec![value]);
        }
        assert!(nests_deeper_than(&value, MAX_METADATA_DEPTH));
        let mut inner = value;
        while let Value::Array(mut items) = inner {
            inner = items.pop().unwrap_or(Value::Null);
        }
    }
}
