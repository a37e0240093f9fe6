//! The encoded messages of one conversation, kept from one request to the next so a
//! request costs O(new messages) to encode rather than O(history).
//!
//! An agent's requests grow by a message or two each: encoding the whole history again
//! took 0.5 ms per request at 1,000 messages and 4.5–9 ms at 10,000. [`EncodedPrefix`]
//! keeps each message's JSON and a copy of what it encoded. A request reuses the JSON of
//! its longest prefix that is the same on the wire as what was kept (compared field by
//! field, which is a plain memory comparison and far cheaper than encoding) and encodes
//! only the rest. A history rewritten anywhere (undo, a summary, pruning, another writer's
//! messages read back) just keeps a shorter prefix, so the bytes sent never depend on
//! what was kept.
//!
//! The cost is memory: a second copy of the sent messages (without `metadata`) and their
//! JSON, for as long as the [`RequestCache`](crate::RequestCache) lives.

use std::borrow::Cow;

use fusion_core::ChatMessage;

use super::sendable::CallIds;

/// The JSON of the messages sent last, one after another with commas between (what goes
/// inside a request's `"messages":[...]`), and the messages it encodes.
#[derive(Default)]
pub(super) struct EncodedPrefix {
    /// What was encoded, as sent: each message without its `metadata`.
    sent: Vec<ChatMessage>,
    /// `json[..ends[i]]` encodes `sent[..=i]`.
    ends: Vec<usize>,
    json: Vec<u8>,
    /// How the kept JSON sends call ids; a request that sends them otherwise keeps none
    /// of it (clients of one cache may be configured apart).
    ids: Option<CallIds>,
}

impl EncodedPrefix {
    /// Brings the kept JSON up to date with `messages` and returns it: the JSON of every
    /// message, comma-separated, as `encode` writes one with call ids sent as `ids` say.
    ///
    /// On an error nothing is kept, so a failed request cannot leave half a message behind.
    pub(super) fn update(
        &mut self,
        messages: &[Cow<'_, ChatMessage>],
        ids: CallIds,
        encode: impl Fn(&mut Vec<u8>, &ChatMessage) -> serde_json::Result<()>,
    ) -> serde_json::Result<&[u8]> {
        if self.ids != Some(ids) {
            *self = Self {
                ids: Some(ids),
                ..Self::default()
            };
        }
        let kept = self
            .sent
            .iter()
            .zip(messages)
            .take_while(|(sent, message)| same_on_wire(sent, message))
            .count();
        self.sent.truncate(kept);
        self.ends.truncate(kept);
        self.json.truncate(self.ends.last().copied().unwrap_or(0));
        for message in &messages[kept..] {
            if !self.json.is_empty() {
                self.json.push(b',');
            }
            if let Err(error) = encode(&mut self.json, message) {
                *self = Self {
                    ids: Some(ids),
                    ..Self::default()
                };
                return Err(error);
            }
            self.ends.push(self.json.len());
            self.sent.push(ChatMessage {
                metadata: Default::default(),
                ..ChatMessage::clone(message)
            });
        }
        Ok(&self.json)
    }
}

/// Whether `a` and `b` are sent as the same JSON: every field but `metadata` is equal.
fn same_on_wire(a: &ChatMessage, b: &ChatMessage) -> bool {
    a.role == b.role
        && a.content == b.content
        && a.tool_calls == b.tool_calls
        && a.tool_call_id == b.tool_call_id
        && a.name == b.name
}

#[cfg(test)]
mod tests {
    use fusion_core::ToolCall;
    use serde_json::json;

    use super::*;

    fn encode(out: &mut Vec<u8>, message: &ChatMessage) -> serde_json::Result<()> {
        serde_json::to_writer(out, &json!([message.role.as_str(), message.content]))
    }

    fn encoded(prefix: &mut EncodedPrefix, messages: &[ChatMessage]) -> String {
        let messages: Vec<_> = messages.iter().map(Cow::Borrowed).collect();
        String::from_utf8(
            prefix
                .update(&messages, CallIds::AsStored, encode)
                .unwrap()
                .to_vec(),
        )
        .unwrap()
    }

    #[test]
    fn appends_reuse_the_prefix_and_rewrites_reencode_from_the_change() {
        let mut prefix = EncodedPrefix::default();
        let mut history = vec![ChatMessage::system("s"), ChatMessage::user("a")];
        assert_eq!(
            encoded(&mut prefix, &history),
            r#"["system","s"],["user","a"]"#
        );
        history.push(ChatMessage::assistant("b"));
        assert_eq!(
            encoded(&mut prefix, &history),
            r#"["system","s"],["user","a"],["assistant","b"]"#
        );
        history[1] = ChatMessage::user("changed");
        assert_eq!(
            encoded(&mut prefix, &history),
            r#"["system","s"],["user","changed"],["assistant","b"]"#
        );
        history.truncate(1);
        assert_eq!(encoded(&mut prefix, &history), r#"["system","s"]"#);
        assert_eq!(encoded(&mut prefix, &[]), "");
    }

    #[test]
    fn metadata_is_not_part_of_the_comparison_and_is_not_kept() {
        let mut prefix = EncodedPrefix::default();
        let first = [ChatMessage::user("a").with_metadata("k", json!(1))];
        encoded(&mut prefix, &first);
        assert!(prefix.sent[0].metadata.is_empty());
        let second = [ChatMessage::user("a").with_metadata("k", json!(2))];
        let calls = std::cell::Cell::new(0);
        let messages: Vec<_> = second.iter().map(Cow::Borrowed).collect();
        prefix
            .update(&messages, CallIds::AsStored, |out, m| {
                calls.set(calls.get() + 1);
                encode(out, m)
            })
            .unwrap();
        assert_eq!(calls.get(), 0, "a metadata change must not re-encode");
    }

    #[test]
    fn a_changed_tool_call_is_a_change() {
        let call = |args: &str| {
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("c", "t", args)])
        };
        let mut prefix = EncodedPrefix::default();
        encoded(&mut prefix, &[call("{}")]);
        let messages = [call(r#"{"x":1}"#)];
        let borrowed: Vec<_> = messages.iter().map(Cow::Borrowed).collect();
        let calls = std::cell::Cell::new(0);
        prefix
            .update(&borrowed, CallIds::AsStored, |out, m| {
                calls.set(calls.get() + 1);
                encode(out, m)
            })
            .unwrap();
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn a_failed_encoding_keeps_nothing() {
        let mut prefix = EncodedPrefix::default();
        encoded(&mut prefix, &[ChatMessage::user("a")]);
        let messages = [ChatMessage::user("a"), ChatMessage::user("b")];
        let borrowed: Vec<_> = messages.iter().map(Cow::Borrowed).collect();
        let failing = |_: &mut Vec<u8>, _: &ChatMessage| Err(serde::ser::Error::custom("refused"));
        assert!(
            prefix
                .update(&borrowed, CallIds::AsStored, failing)
                .is_err()
        );
        assert!(prefix.sent.is_empty() && prefix.ends.is_empty() && prefix.json.is_empty());
        assert_eq!(
            encoded(&mut prefix, &messages),
            r#"["user","a"],["user","b"]"#
        );
    }
}
