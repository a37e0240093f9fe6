//! The chat message model, serialised in the OpenAI chat-completions message shape.
//!
//! Stored JSON is the same JSON an OpenAI-compatible endpoint accepts, so a person (or
//! another tool) can read a stored session without knowing Fusion. The only additions are
//! an optional `id` (first, so a backend finds it without parsing the rest: see
//! [`MessageId`]) and an optional `metadata` object for Fusion's own annotations (for
//! example a stored history summary); LLM clients leave both out of requests.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::MessageId;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the whole conversation.
    System,
    /// The human (or calling program).
    User,
    /// The model.
    Assistant,
    /// The result of a tool call, answering an assistant's [`ToolCall`].
    Tool,
}

impl Role {
    /// The role's wire name: `system`, `user`, `assistant` or `tool`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tool invocation requested by the model.
///
/// `arguments` is the raw string the model produced. It is kept verbatim, even when it is
/// not valid JSON, so a stored history is lossless and the agent can tell the model exactly
/// what was wrong with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The call id the matching tool-result message refers to.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments exactly as the model emitted them (normally a JSON object).
    pub arguments: String,
}

impl ToolCall {
    /// Builds a tool call.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }
}

/// The wire shape when writing: `{"id", "type": "function", "function": {"name", "arguments"}}`.
#[derive(Serialize)]
struct WireToolCallRef<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    function: WireFunctionRef<'a>,
}

#[derive(Serialize)]
struct WireFunctionRef<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// The wire shape when reading; `type` is ignored and `arguments` may be missing.
#[derive(Deserialize)]
struct WireToolCall {
    id: String,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    arguments: String,
}

/// Reads `null` as the type's default (`""`, no tool calls): OpenAI's own clients write
/// absent fields as `null` (the Python SDK's `model_dump()` gives `"tool_calls": null`),
/// which means the same as leaving them out.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

impl Serialize for ToolCall {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireToolCallRef {
            id: &self.id,
            kind: "function",
            function: WireFunctionRef {
                name: &self.name,
                arguments: &self.arguments,
            },
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ToolCall {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireToolCall::deserialize(deserializer)?;
        Ok(ToolCall {
            id: wire.id,
            name: wire.function.name,
            arguments: wire.function.arguments,
        })
    }
}

/// One message of a conversation.
///
/// Serialises as an OpenAI chat-completions message. `content` is always a string here;
/// on input `null` (an assistant message that only calls tools) reads as `""`, and an array
/// of text parts reads as their concatenation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The message's stable id, if it has one: what lets storage recognise an append it
    /// already stored ([`DEDUP_WINDOW`](crate::DEDUP_WINDOW)). The agent's sessions give
    /// every message they create one; [`ChatMessage::with_new_id`] gives one by hand.
    /// Serialised first, and not at all when `None`, so histories written before ids
    /// existed load unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<MessageId>,
    /// Who wrote the message.
    pub role: Role,
    /// The text. Empty for an assistant message that only calls tools.
    #[serde(default, deserialize_with = "content_text")]
    pub content: String,
    /// Tool calls requested by an assistant message. `null` reads as none.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tool_calls: Vec<ToolCall>,
    /// For a [`Role::Tool`] message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Optional participant name (OpenAI's `name` field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Fusion's own annotations, kept in storage and never sent to the LLM.
    ///
    /// Values may nest at most [`MAX_METADATA_DEPTH`](crate::MAX_METADATA_DEPTH) arrays
    /// and objects deep; storage refuses deeper ones, which it could not read back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

impl ChatMessage {
    /// About how many bytes the JSON of `messages` takes: their texts and tool calls, and
    /// room for field names and the rest. For sizing a buffer before serialising into it,
    /// so it does not grow step by step; neither a bound nor exact (escapes, metadata).
    pub fn json_len_hint(messages: &[ChatMessage]) -> usize {
        let one = |m: &ChatMessage| {
            let calls = m.tool_calls.iter();
            let calls = calls.map(|c| c.id.len() + c.name.len() + c.arguments.len() + 64);
            m.content.len() + calls.sum::<usize>() + 96
        };
        messages.iter().map(one).sum()
    }

    /// A message with `role` and `content` and nothing else.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            id: None,
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            metadata: BTreeMap::new(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message without tool calls.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// An assistant message that requests tool calls.
    pub fn assistant_with_tool_calls(
        content: impl Into<String>,
        tool_calls: Vec<ToolCall>,
    ) -> Self {
        Self {
            tool_calls,
            ..Self::new(Role::Assistant, content)
        }
    }

    /// The result of the tool call `tool_call_id`.
    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(tool_call_id.into()),
            ..Self::new(Role::Tool, content)
        }
    }

    /// Sets the participant name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the message's id.
    pub fn with_id(mut self, id: MessageId) -> Self {
        self.id = Some(id);
        self
    }

    /// Gives the message a fresh id ([`MessageId::new`]), replacing any it had.
    pub fn with_new_id(self) -> Self {
        self.with_id(MessageId::new())
    }

    /// The message's id, giving it a fresh one first if it has none.
    pub fn ensure_id(&mut self) -> &MessageId {
        self.id.get_or_insert_with(MessageId::new)
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }

    /// True when this is an assistant message that requests at least one tool call.
    pub fn has_tool_calls(&self) -> bool {
        !self.tool_calls.is_empty()
    }
}

/// Reads `content` as a string from a string, `null`, or an array of `{"type":"text","text":..}` parts.
///
/// A visitor rather than an untagged enum: an untagged enum buffers every value before
/// trying its variants, and this runs for every message of every history loaded.
fn content_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct ContentVisitor;

    impl<'de> serde::de::Visitor<'de> for ContentVisitor {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string, null, or an array of text parts")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<String, E> {
            Ok(text.to_owned())
        }

        fn visit_string<E: serde::de::Error>(self, text: String) -> Result<String, E> {
            Ok(text)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut parts: A) -> Result<String, A::Error> {
            #[derive(Deserialize)]
            struct Part {
                #[serde(default)]
                text: String,
            }
            let mut text = String::new();
            while let Some(part) = parts.next_element::<Part>()? {
                text.push_str(&part.text);
            }
            Ok(text)
        }
    }

    deserializer.deserialize_any(ContentVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_json_length_hint_covers_plain_messages_and_tool_calls() {
        let call = ToolCall::new("call_9", "read_file", r#"{"path":"notes.txt"}"#);
        let messages = [
            ChatMessage::user("x".repeat(300)).with_new_id(),
            ChatMessage::assistant_with_tool_calls("", vec![call]),
            ChatMessage::tool_result("call_9", "first line\nsecond line"),
        ];
        let json: usize = messages
            .iter()
            .map(|m| serde_json::to_vec(m).unwrap().len())
            .sum();
        let hint = ChatMessage::json_len_hint(&messages);
        assert!(
            hint >= json && hint < json * 2,
            "hint {hint} for {json} bytes"
        );
    }

    #[test]
    fn serialises_in_the_openai_message_shape() {
        let msg = ChatMessage::assistant_with_tool_calls(
            "",
            vec![ToolCall::new("call_1", "read_file", r#"{"path":"a.txt"}"#)],
        );
        let value = serde_json::to_value(&msg).unwrap();
        assert_eq!(
            value,
            json!({
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "read_file", "arguments": "{\"path\":\"a.txt\"}"}}]
            })
        );
        let result = serde_json::to_value(ChatMessage::tool_result("call_1", "hello")).unwrap();
        assert_eq!(
            result,
            json!({"role": "tool", "content": "hello", "tool_call_id": "call_1"})
        );
    }

    #[test]
    fn invalid_json_arguments_survive_a_round_trip() {
        let msg =
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("c", "t", "{not json")]);
        let text = serde_json::to_string(&msg).unwrap();
        assert_eq!(serde_json::from_str::<ChatMessage>(&text).unwrap(), msg);
    }

    #[test]
    fn null_and_array_content_read_as_text() {
        let null: ChatMessage =
            serde_json::from_str(r#"{"role":"assistant","content":null}"#).unwrap();
        assert_eq!(null.content, "");
        let missing: ChatMessage = serde_json::from_str(r#"{"role":"assistant"}"#).unwrap();
        assert_eq!(missing.content, "");
        let parts: ChatMessage = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"ab"},{"type":"text","text":"c"}]}"#,
        )
        .unwrap();
        assert_eq!(parts.content, "abc");
    }

    /// What OpenAI's Python SDK dumps for a message: absent fields as `null`.
    #[test]
    fn null_tool_calls_and_arguments_read_as_none() {
        let plain: ChatMessage = serde_json::from_str(
            r#"{"role":"assistant","content":"hi","tool_calls":null,"name":null}"#,
        )
        .unwrap();
        assert_eq!(plain, ChatMessage::assistant("hi"));
        let call: ChatMessage = serde_json::from_str(
            r#"{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"t","arguments":null}}]}"#,
        )
        .unwrap();
        assert_eq!(
            call,
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("c1", "t", "")])
        );
    }

    #[test]
    fn metadata_is_kept_and_omitted_when_empty() {
        let plain = serde_json::to_string(&ChatMessage::user("hi")).unwrap();
        assert_eq!(plain, r#"{"role":"user","content":"hi"}"#);
        let tagged = ChatMessage::system("s").with_metadata("kind", json!("summary"));
        let back: ChatMessage =
            serde_json::from_str(&serde_json::to_string(&tagged).unwrap()).unwrap();
        assert_eq!(back, tagged);
    }

    #[test]
    fn an_id_is_written_first_and_only_when_there_is_one() {
        let id = MessageId::parse("m-1").unwrap();
        let text = serde_json::to_string(&ChatMessage::user("hi").with_id(id.clone())).unwrap();
        assert_eq!(text, r#"{"id":"m-1","role":"user","content":"hi"}"#);
        let back: ChatMessage = serde_json::from_str(&text).unwrap();
        assert_eq!(back.id, Some(id));
        let mut fresh = ChatMessage::user("x");
        let given = fresh.ensure_id().clone();
        assert_eq!(fresh.ensure_id(), &given, "kept once given");
        let err = serde_json::from_str::<ChatMessage>(r#"{"id":"a b","role":"user"}"#).unwrap_err();
        assert!(err.to_string().contains("invalid message id"), "{err}");
    }
}
