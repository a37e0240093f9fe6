//! The chat-completions wire format: borrowed request structs and a tolerant reply parser.
//!
//! Requests are written from borrowed [`ChatMessage`]s without copying them and without
//! their `metadata` (Fusion's own annotations are not for the model), and with every
//! stored tool call's arguments a JSON object ([`sendable_arguments`]) and no reply empty
//! ([`EMPTY_REPLY`]). Replies are read
//! leniently because "OpenAI-compatible" servers differ in details: missing tool-call ids,
//! arguments sent as an object, content as an array of parts, usage without a total.
//! Streamed replies arrive as chunks ([`WireChunk`]) whose pieces the stream assembler
//! reads with the same lenient helpers as whole replies.

use std::borrow::Cow;

use fusion_core::{ChatMessage, Role, ToolCall};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::prefix::EncodedPrefix;
use crate::llm::{ChatRequest, ChatResponse, ToolDefinition, Usage};

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: WireMessages<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    // Last and left out when not streaming, so a plain request's body stays as it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

/// Asks for token usage in a last chunk of a streamed reply, as OpenAI does not send it
/// by default when streaming.
#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// Serialises the messages as a sequence straight from the request, with no intermediate Vec.
struct WireMessages<'a>(&'a [Cow<'a, ChatMessage>]);

impl Serialize for WireMessages<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|m| WireMessage::from(&**m)))
    }
}

/// One message as sent: `ChatMessage` minus `metadata`.
#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    /// `None` writes `null`, which OpenAI expects for a tool-calls-only assistant message.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "WireCalls::is_empty")]
    tool_calls: WireCalls<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

impl<'a> From<&'a ChatMessage> for WireMessage<'a> {
    fn from(m: &'a ChatMessage) -> Self {
        let content = if m.content.is_empty() && m.has_tool_calls() {
            None
        } else if m.role == Role::Assistant && m.content.trim().is_empty() {
            Some(EMPTY_REPLY)
        } else {
            Some(m.content.as_str())
        };
        Self {
            role: m.role.as_str(),
            content,
            tool_calls: WireCalls(&m.tool_calls),
            tool_call_id: m.tool_call_id.as_deref(),
            name: m.name.as_deref(),
        }
    }
}

/// What a stored reply with no text and no tool calls is sent back as in later requests.
///
/// Models do write nothing (a reasoning model whose output limit ran out while it thought,
/// a small model that stops at once), and storage keeps the reply as it came. But servers
/// refuse a request whose history holds an empty assistant message: vLLM ("Invalid
/// assistant message", a 400) and Anthropic's endpoint ("all messages must have non-empty
/// content"), so sent back empty it failed every later request of the session. Dropping
/// it instead would put two user messages in a row, which chat templates that want the
/// roles to alternate (Mistral's) refuse.
const EMPTY_REPLY: &str = "(no reply)";

/// A message's tool calls as sent: `{"id", "type": "function", "function": {"name",
/// "arguments"}}`, the arguments made sendable.
struct WireCalls<'a>(&'a [ToolCall]);

impl WireCalls<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for WireCalls<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|call| WireCall {
            id: &call.id,
            kind: "function",
            function: WireCallFunction {
                name: &call.name,
                arguments: sendable_arguments(&call.arguments),
            },
        }))
    }
}

#[derive(Serialize)]
struct WireCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireCallFunction<'a>,
}

#[derive(Serialize)]
struct WireCallFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// The arguments a stored call is sent back with in later requests: the model's text when
/// it is a JSON object, else `{}`.
///
/// Storage keeps what the model wrote, invalid JSON included (a reply cut mid-call, a
/// small model's slip), and the call's result already tells the model what was wrong,
/// quoting it. But servers parse the arguments of the calls in the history: Ollama
/// refuses the whole request ("invalid tool call arguments", a 400) and vLLM fails in
/// `json.loads`, so one bad call sent back verbatim made every later request of the
/// session fail. `{}` is also what the executor ran a call with empty arguments with.
fn sendable_arguments(arguments: &str) -> &str {
    let is_object = arguments.trim_start().starts_with('{')
        && serde_json::from_str::<serde::de::IgnoredAny>(arguments).is_ok();
    if is_object { arguments } else { "{}" }
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// `ToolDefinition` already serialises as `{name, description, parameters}`.
    function: &'a ToolDefinition,
}

/// The JSON body for `request`. Tools are left out when `native_tools` is off, since a
/// server for a model without tool calling may reject the field. `stream` adds
/// `"stream": true` and `"stream_options": {"include_usage": true}`.
///
/// With a [`RequestCache`](crate::RequestCache) in the request, the messages' JSON comes
/// from the conversation's [`EncodedPrefix`], so only messages not sent before are encoded;
/// the body is byte for byte what it would be without the cache.
pub(super) fn encode_request(
    model: &str,
    request: &ChatRequest<'_>,
    native_tools: bool,
    stream: bool,
) -> serde_json::Result<Vec<u8>> {
    let Some(cache) = request.cache else {
        return encode_body(model, &request.messages, request, native_tools, stream);
    };
    // Without messages the body reads `{"model":M,"messages":[]...}`; the kept JSON goes
    // between those brackets.
    let empty = encode_body(model, &[], request, native_tools, stream)?;
    let at = br#"{"model":"#.len() + serde_json::to_vec(model)?.len() + br#","messages":["#.len();
    if empty.get(at - 1..=at) != Some(b"[]") {
        // Not the layout this splice was written for: encode everything rather than guess.
        return encode_body(model, &request.messages, request, native_tools, stream);
    }
    cache.with(|prefix: &mut EncodedPrefix| {
        let messages = prefix.update(&request.messages, encode_message)?;
        let mut body = Vec::with_capacity(empty.len() + messages.len());
        body.extend_from_slice(&empty[..at]);
        body.extend_from_slice(messages);
        body.extend_from_slice(&empty[at..]);
        Ok(body)
    })
}

/// The JSON body with `messages` as its messages.
fn encode_body(
    model: &str,
    messages: &[Cow<'_, ChatMessage>],
    request: &ChatRequest<'_>,
    native_tools: bool,
    stream: bool,
) -> serde_json::Result<Vec<u8>> {
    let tools = if native_tools {
        request
            .tools
            .iter()
            .map(|function| WireTool {
                kind: "function",
                function,
            })
            .collect()
    } else {
        Vec::new()
    };
    serde_json::to_vec(&WireRequest {
        model,
        messages: WireMessages(messages),
        tools,
        temperature: request.options.temperature,
        max_tokens: request.options.max_tokens,
        stream: stream.then_some(true),
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
    })
}

/// Appends one message's JSON, as it appears in a request's `messages`, to `out`.
fn encode_message(out: &mut Vec<u8>, message: &ChatMessage) -> serde_json::Result<()> {
    serde_json::to_writer(out, &WireMessage::from(message))
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    choices: Option<Vec<WireChoice>>,
    #[serde(default, deserialize_with = "lenient_usage")]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    message: Option<WireReply>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireReply {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
}

/// Token counts. Bookkeeping, never worth a reply: a count that is missing, `null`,
/// negative, fractional or past `u32` reads as unknown (0, or no total), and a `usage`
/// that is not an object as no usage ([`lenient_usage`]).
#[derive(Deserialize)]
pub(super) struct WireUsage {
    #[serde(default, deserialize_with = "lenient_count")]
    prompt_tokens: Option<u32>,
    #[serde(default, deserialize_with = "lenient_count")]
    completion_tokens: Option<u32>,
    #[serde(default, deserialize_with = "lenient_count")]
    total_tokens: Option<u32>,
}

/// `usage` if it reads as one, else none: a reply the model finished is not thrown away
/// for its token counts.
fn lenient_usage<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<WireUsage>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(value.and_then(|value| serde_json::from_value(value).ok()))
}

/// A token count if the value is one (a whole number from 0 to `u32::MAX`), else none.
fn lenient_count<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u32>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(value
        .as_ref()
        .and_then(Value::as_u64)
        .and_then(|count| u32::try_from(count).ok()))
}

/// Why a 200 reply is no chat completion.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Undecodable {
    /// The body reports an error (an `error` object, with or without `choices`): a server
    /// that had already answered 200 when its model failed (OpenRouter sends an upstream's
    /// 502 so), whose code says whether a retry may help, as in a stream.
    Reported,
    /// Anything else, described.
    Malformed(String),
}

/// Parses a 200 reply. `Err` says why it is not a chat completion.
pub(super) fn decode_response(body: &[u8]) -> Result<ChatResponse, Undecodable> {
    let wire: WireResponse = serde_json::from_slice(body).map_err(|e| {
        Undecodable::Malformed(if serde_json::from_slice::<Value>(body).is_ok() {
            format!("the JSON does not have the chat-completions shape ({e})")
        } else {
            format!("the body is not JSON ({e})")
        })
    })?;
    // Checked before the choices: with its error, a server may send a choice with an
    // empty message (finish reason `error`), which is no answer to store.
    if wire.error.as_ref().is_some_and(reports_error) {
        return Err(Undecodable::Reported);
    }
    let Some(choice) = wire.choices.and_then(|choices| choices.into_iter().next()) else {
        return Err(Undecodable::Malformed(
            "the reply has no `choices`".to_owned(),
        ));
    };
    let reply = choice
        .message
        .ok_or_else(|| Undecodable::Malformed("the first choice has no `message`".to_owned()))?;

    let mut content = reply.content.map(content_text).unwrap_or_default();
    if content.is_empty() {
        // A refusal is the model's answer; dropping it would leave an empty reply.
        content = reply.refusal.unwrap_or_default();
    }
    let tool_calls = reply
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|call| ToolCall {
            id: call_id(call.id),
            name: call.function.name,
            arguments: call
                .function
                .arguments
                .and_then(arguments_text)
                .unwrap_or_else(|| "{}".to_owned()),
        })
        .collect();
    Ok(ChatResponse {
        message: ChatMessage::assistant_with_tool_calls(content, tool_calls),
        usage: wire.usage.map(Usage::from),
        finish_reason: choice.finish_reason,
    })
}

/// Whether an `error` field reports one: text, or an object with a field that says
/// something (`{"message": ""}` or `{"code": null}` beside a reply says nothing).
fn reports_error(error: &Value) -> bool {
    match error {
        Value::Object(fields) => fields.values().any(reports_error),
        Value::String(text) => !text.trim().is_empty(),
        Value::Bool(flag) => *flag,
        Value::Null => false,
        Value::Array(items) => items.iter().any(reports_error),
        Value::Number(_) => true,
    }
}

/// The call's id, or a fresh one: some local servers omit ids, and the tool result must
/// still name its call.
pub(super) fn call_id(id: Option<String>) -> String {
    id.filter(|id| !id.is_empty())
        .unwrap_or_else(|| format!("call_{:016x}", rand::random::<u64>()))
}

/// Tool-call arguments as text: the model's text kept verbatim (even when it is invalid
/// JSON, the common case for a cut-off reply), an object written out, `null` as `None`.
pub(super) fn arguments_text(arguments: Value) -> Option<String> {
    match arguments {
        Value::String(text) => Some(text),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl From<WireUsage> for Usage {
    /// Some servers leave out the total; it is the sum.
    fn from(usage: WireUsage) -> Self {
        let prompt_tokens = usage.prompt_tokens.unwrap_or(0);
        let completion_tokens = usage.completion_tokens.unwrap_or(0);
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: usage
                .total_tokens
                .unwrap_or(prompt_tokens.saturating_add(completion_tokens)),
        }
    }
}

/// One event of a streamed reply (`chat.completion.chunk`). Every field may be missing:
/// the role comes only in the first chunk, the finish reason and the usage may each come
/// in a chunk of their own (the usage one with empty `choices`), and a server may send an
/// `error` object instead.
#[derive(Deserialize)]
pub(super) struct WireChunk {
    #[serde(default)]
    pub choices: Option<Vec<WireChunkChoice>>,
    #[serde(default, deserialize_with = "lenient_usage")]
    pub usage: Option<WireUsage>,
    #[serde(default)]
    pub error: Option<Value>,
}

/// One choice of a chunk; Fusion asks for one, so only `index` 0 (or none) counts.
#[derive(Deserialize)]
pub(super) struct WireChunkChoice {
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(default)]
    pub delta: Option<WireDelta>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The new pieces of the message in one chunk.
#[derive(Deserialize)]
pub(super) struct WireDelta {
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<WireToolCallDelta>>,
    /// Reasoning some servers stream before the answer: `reasoning_content` (DeepSeek,
    /// vLLM, llama.cpp), `reasoning` and `reasoning_details` (OpenRouter, Ollama). Not
    /// kept, but it shows the model is writing.
    #[serde(default)]
    reasoning_content: Option<Value>,
    #[serde(default)]
    reasoning: Option<Value>,
    #[serde(default)]
    reasoning_details: Option<Value>,
}

impl WireDelta {
    /// Whether the piece carries some reasoning (not an empty string, array or object).
    pub fn has_reasoning(&self) -> bool {
        let some = |value: &Option<Value>| match value {
            None | Some(Value::Null) => false,
            Some(Value::String(text)) => !text.is_empty(),
            Some(Value::Array(items)) => !items.is_empty(),
            Some(Value::Object(fields)) => !fields.is_empty(),
            Some(_) => true,
        };
        some(&self.reasoning_content) || some(&self.reasoning) || some(&self.reasoning_details)
    }
}

/// A piece of one tool call: `index` says which; `id` and the name usually come only in
/// the first piece, the arguments in many.
#[derive(Deserialize)]
pub(super) struct WireToolCallDelta {
    #[serde(default)]
    pub index: Option<usize>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<WireFunctionDelta>,
}

/// The function part of a tool-call piece.
#[derive(Deserialize)]
pub(super) struct WireFunctionDelta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<Value>,
}

/// Parses the data of one stream event. `Err` describes what is wrong with it.
pub(super) fn decode_chunk(data: &str) -> Result<WireChunk, String> {
    serde_json::from_str(data).map_err(|e| {
        if serde_json::from_str::<Value>(data).is_ok() {
            format!("an event does not have the chat-completion chunk shape ({e})")
        } else {
            format!("an event's data is not JSON ({e})")
        }
    })
}

/// Content as text from a string, `null`, or an array of `{"type":"text","text":..}` parts.
pub(super) fn content_text(value: Value) -> String {
    match value {
        Value::String(text) => text,
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// The human-readable message of an error body, from the shapes servers use:
/// `{"error":{"message":..}}` (OpenAI, vLLM, Ollama), `{"error":".."}`, `{"message":..}`,
/// `{"detail":..}` (FastAPI-based servers); otherwise the raw text.
pub(super) fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            let found = value
                .get("error")
                .map(error_text)
                .or_else(|| value.get("message").map(error_text))
                .or_else(|| value.get("detail").map(error_text));
            found.unwrap_or_else(|| text.trim().to_owned())
        }
        Err(_) => text.trim().to_owned(),
    }
}

/// The `code` or `type` of an OpenAI error body (e.g. `insufficient_quota`), if any.
pub(super) fn error_code(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    ["code", "type"]
        .iter()
        .find_map(|key| error.get(*key).and_then(Value::as_str).map(str::to_owned))
}

/// The message of an `error` value: its `message` field, the string itself, or its JSON.
pub(super) fn error_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Object(map) => map
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string()),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn request_drops_metadata_and_nulls_tool_only_content() {
        let messages = [
            ChatMessage::user("hi").with_metadata("kind", json!("secret-note")),
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("c1", "t", "{bad")]),
            ChatMessage::tool_result("c1", "out"),
        ];
        let request = ChatRequest {
            messages: messages.iter().map(Cow::Borrowed).collect(),
            ..Default::default()
        };
        let body: Value =
            serde_json::from_slice(&encode_request("m", &request, true, false).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"model": "m", "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "t", "arguments": "{}"}}]},
                {"role": "tool", "content": "out", "tool_call_id": "c1"},
            ]})
        );
    }

    #[test]
    fn an_empty_reply_is_sent_as_a_placeholder_and_other_empty_messages_as_they_are() {
        let messages = [
            ChatMessage::assistant(""),
            ChatMessage::assistant(" \n"),
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("c1", "t", "{}")]),
            ChatMessage::tool_result("c1", ""),
            ChatMessage::user(""),
        ];
        let request = ChatRequest {
            messages: messages.iter().map(Cow::Borrowed).collect(),
            ..Default::default()
        };
        let body: Value =
            serde_json::from_slice(&encode_request("m", &request, true, false).unwrap()).unwrap();
        let contents: Vec<&Value> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| &m["content"])
            .collect();
        assert_eq!(
            contents,
            [
                &json!(EMPTY_REPLY),
                &json!(EMPTY_REPLY),
                &Value::Null,
                &json!(""),
                &json!("")
            ]
        );
    }

    #[test]
    fn only_json_object_arguments_are_sent_back_as_written() {
        for kept in [r#"{"path": "a"}"#, "  {}\n", r#"{"p":"\u00e9"}"#] {
            assert_eq!(sendable_arguments(kept), kept);
        }
        for replaced in [
            r#"{"path": "a"#,
            r#"{"path": "a"} trailing"#,
            "",
            "  ",
            "null",
            "[1]",
            r#""{\"path\": \"a\"}""#,
            "path=a",
        ] {
            assert_eq!(sendable_arguments(replaced), "{}", "{replaced:?}");
        }
    }

    #[test]
    fn tools_are_sent_only_in_native_mode() {
        let request = ChatRequest {
            tools: vec![ToolDefinition {
                name: "t".into(),
                description: "d".into(),
                parameters: json!({"type": "object"}),
            }],
            ..Default::default()
        };
        let native: Value =
            serde_json::from_slice(&encode_request("m", &request, true, false).unwrap()).unwrap();
        assert_eq!(
            native["tools"],
            json!([{"type": "function", "function":
                {"name": "t", "description": "d", "parameters": {"type": "object"}}}])
        );
        let text: Value =
            serde_json::from_slice(&encode_request("m", &request, false, false).unwrap()).unwrap();
        assert!(text.get("tools").is_none());
    }

    #[test]
    fn a_streaming_body_is_the_plain_body_plus_the_stream_fields() {
        let messages = [ChatMessage::user("hi")];
        let request = ChatRequest {
            messages: messages.iter().map(Cow::Borrowed).collect(),
            ..Default::default()
        };
        let plain = encode_request("m", &request, true, false).unwrap();
        assert_eq!(
            String::from_utf8(plain).unwrap(),
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#
        );
        let streaming: Value =
            serde_json::from_slice(&encode_request("m", &request, true, true).unwrap()).unwrap();
        assert_eq!(streaming["stream"], json!(true));
        assert_eq!(streaming["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn a_cached_body_is_byte_identical_to_an_uncached_one() {
        let cache = crate::RequestCache::new();
        let tools = vec![ToolDefinition {
            name: "t".into(),
            description: "d".into(),
            parameters: json!({"type": "object"}),
        }];
        let mut history = vec![
            ChatMessage::system("be \"brief\"\n"),
            ChatMessage::user("héllo \u{1F600} </script>").with_metadata("k", json!(1)),
        ];
        let mut step = 0;
        let mut check = |history: &[ChatMessage]| {
            step += 1;
            let mut request = ChatRequest {
                messages: history.iter().map(Cow::Borrowed).collect(),
                tools: if step % 2 == 0 { tools.clone() } else { vec![] },
                ..Default::default()
            };
            request.options.temperature = (step % 3 == 0).then_some(0.5);
            request.options.max_tokens = (step % 4 == 0).then_some(64);
            for model in ["m", "a \"quoted\" modèl"] {
                for (native, stream) in [(true, false), (false, true), (true, true)] {
                    let plain = encode_request(model, &request, native, stream).unwrap();
                    let cached = encode_request(
                        model,
                        &ChatRequest {
                            cache: Some(&cache),
                            ..request.clone()
                        },
                        native,
                        stream,
                    )
                    .unwrap();
                    assert_eq!(
                        String::from_utf8(cached).unwrap(),
                        String::from_utf8(plain).unwrap(),
                        "step {step}"
                    );
                }
            }
        };
        check(&history);
        history.push(ChatMessage::assistant_with_tool_calls(
            "",
            vec![
                ToolCall::new("c1", "t", "{\"p\":\"\\u00e9\"}"),
                ToolCall::new("c2", "t", "{bad"),
            ],
        ));
        check(&history);
        history.push(ChatMessage::tool_result("c1", "out"));
        history.push(ChatMessage::tool_result("c2", ""));
        check(&history);
        history[1].content.push('!'); // rewritten mid-history
        check(&history);
        history.truncate(2); // undone
        check(&history);
        history.clear();
        check(&history);
        history.push(ChatMessage::user("again"));
        check(&history);
    }

    #[test]
    fn lenient_reply_shapes_are_read() {
        let body = json!({"choices": [{"message": {"role": "assistant",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "tool_calls": [{"function": {"name": "t", "arguments": {"x": 1}}}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4}});
        let reply = decode_response(body.to_string().as_bytes()).unwrap();
        assert_eq!(reply.message.content, "ab");
        assert_eq!(reply.message.tool_calls[0].arguments, r#"{"x":1}"#);
        assert!(reply.message.tool_calls[0].id.starts_with("call_"));
        assert_eq!(reply.usage.unwrap().total_tokens, 7);
    }

    #[test]
    fn odd_token_counts_read_as_unknown_and_keep_the_reply() {
        for usage in [
            json!({"prompt_tokens": -5, "completion_tokens": 2}),
            json!({"prompt_tokens": null, "completion_tokens": 2}),
            json!({"prompt_tokens": 1.5, "completion_tokens": 2}),
            json!({"prompt_tokens": 99_999_999_999_u64, "completion_tokens": 2}),
        ] {
            let body = json!({"choices": [{"message": {"role": "assistant", "content": "a"}}],
                "usage": usage});
            let reply = decode_response(body.to_string().as_bytes()).unwrap();
            assert_eq!(reply.message.content, "a");
            let usage = reply.usage.unwrap();
            assert_eq!((usage.prompt_tokens, usage.total_tokens), (0, 2), "{body}");
        }
        let body = json!({"choices": [{"message": {"role": "assistant", "content": "a"}}],
            "usage": "n/a"});
        assert!(
            decode_response(body.to_string().as_bytes())
                .unwrap()
                .usage
                .is_none()
        );
    }

    #[test]
    fn malformed_replies_are_described() {
        let described = |body: &[u8]| match decode_response(body) {
            Err(Undecodable::Malformed(detail)) => detail,
            other => panic!("{other:?}"),
        };
        assert!(described(b"<html>").contains("not JSON"));
        assert!(described(b"{\"choices\":[]}").contains("no `choices`"));
        for reported in [
            r#"{"error":{"message":"upstream down"}}"#,
            r#"{"error":{"code":502,"message":"Provider returned error"},"choices":[{"message":{"role":"assistant","content":""},"finish_reason":"error"}]}"#,
        ] {
            assert_eq!(
                decode_response(reported.as_bytes()).unwrap_err(),
                Undecodable::Reported
            );
        }
        // An empty or null `error` beside a reply is no error.
        for body in [
            r#"{"error":null,"choices":[{"message":{"content":"a"}}]}"#,
            r#"{"error":{},"choices":[{"message":{"content":"a"}}]}"#,
            r#"{"error":"","choices":[{"message":{"content":"a"}}]}"#,
            r#"{"error":{"message":"","code":null},"choices":[{"message":{"content":"a"}}]}"#,
        ] {
            assert_eq!(
                decode_response(body.as_bytes()).unwrap().message.content,
                "a"
            );
        }
    }

    #[test]
    fn error_bodies_of_several_servers_are_read() {
        let openai = br#"{"error":{"message":"Invalid model","type":"invalid_request_error","code":"model_not_found"}}"#;
        assert_eq!(error_message(openai), "Invalid model");
        assert_eq!(error_code(openai).as_deref(), Some("model_not_found"));
        assert_eq!(
            error_message(br#"{"error":"model not loaded"}"#),
            "model not loaded"
        );
        assert_eq!(error_message(br#"{"detail":"bad"}"#), "bad");
        assert_eq!(error_message(b" plain text "), "plain text");
    }
}
