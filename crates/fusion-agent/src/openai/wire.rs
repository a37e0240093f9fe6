//! The chat-completions replies: a tolerant parser of whole replies and of the chunks of
//! streamed ones.
//!
//! Replies are read leniently because "OpenAI-compatible" servers differ in details:
//! missing tool-call ids, arguments sent as an object, content as an array of parts, usage
//! without a total. Streamed replies arrive as chunks ([`WireChunk`]) whose pieces the
//! stream assembler reads with the same lenient helpers as whole replies. The request body
//! is written by `request`.

use fusion_core::{ChatMessage, ToolCall};
use serde::Deserialize;
use serde_json::Value;

use crate::llm::{ChatResponse, Usage};

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    choices: Option<Vec<WireChoice>>,
    #[serde(default, deserialize_with = "lenient")]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    message: Option<WireReply>,
    #[serde(default, deserialize_with = "lenient")]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireReply {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default, deserialize_with = "lenient")]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

/// A call as a whole reply holds it. Its `function` and name may be missing or `null`
/// (read as a call without a name, as a streamed one is): the model's slip, which the
/// call's result ("no tool named") lets it fix, rather than a reply thrown away whole,
/// its text and other calls with it.
#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default, deserialize_with = "lenient_text")]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunction>,
}

#[derive(Deserialize, Default)]
struct WireFunction {
    #[serde(default, deserialize_with = "lenient_text")]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<Value>,
}

/// Token counts. Bookkeeping, never worth a reply: a count that is missing, `null`,
/// negative, fractional or past `u32` reads as unknown (0, or no total), and a `usage`
/// that is not an object as no usage ([`lenient`]).
#[derive(Deserialize)]
pub(super) struct WireUsage {
    #[serde(default, deserialize_with = "lenient")]
    prompt_tokens: Option<u32>,
    #[serde(default, deserialize_with = "lenient")]
    completion_tokens: Option<u32>,
    #[serde(default, deserialize_with = "lenient")]
    total_tokens: Option<u32>,
}

/// A field as `T` if it reads as one, else as missing: a reply the model finished is not
/// thrown away, its text and calls with it, for a field of another type than expected
/// (`usage` that is no object, a token count that is negative or past `u32`, a
/// `finish_reason` or `refusal` that is no string).
fn lenient<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(value.and_then(|value| T::deserialize(value).ok()))
}

/// A call's id or name: a string as it is, a number as its text (`7` is `"7"`: some
/// servers number their calls), anything else as missing (a call without an id gets a
/// fresh one; one without a name is answered "no tool named"). A reply is not thrown
/// away, its text and other calls with it, for the type of one call's field.
fn lenient_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(deserializer)? {
        Some(Value::String(text)) => Some(text),
        Some(Value::Number(number)) => Some(number.to_string()),
        _ => None,
    })
}

/// Why a 200 reply is no chat completion.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Undecodable {
    /// The body reports an error (an `error` object, with or without `choices`): a server
    /// that had already answered 200 when its model failed (OpenRouter sends an upstream's
    /// 502 so), whose code says whether a retry may help, as in a stream.
    Reported,
    /// A chat completion with no choice in it (`"choices": []`): the endpoint's fault, not
    /// a wrong URL, and no answer, as a stream that ends before any choice is none.
    NoChoice,
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
    let Some(choices) = wire.choices else {
        return Err(Undecodable::Malformed(
            "the reply has no `choices`".to_owned(),
        ));
    };
    let Some(choice) = choices.into_iter().next() else {
        return Err(Undecodable::NoChoice);
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
        .map(|call| {
            let function = call.function.unwrap_or_default();
            ToolCall {
                id: call_id(call.id),
                name: function.name.unwrap_or_default(),
                arguments: function
                    .arguments
                    .and_then(arguments_text)
                    .unwrap_or_else(|| "{}".to_owned()),
            }
        })
        .collect();
    Ok(ChatResponse {
        message: ChatMessage::assistant_with_tool_calls(content, tool_calls),
        usage: wire.usage.map(Usage::from),
        finish_reason: choice.finish_reason,
    })
}

/// Whether an `error` field (of a whole reply or of a streamed chunk) reports one: text,
/// or an object with a field that says something (`{"message": ""}`, `{"code": null}` or
/// `{"code": 0}` beside a reply says nothing: 0 is the "no error" code servers fill in).
pub(super) fn reports_error(error: &Value) -> bool {
    match error {
        Value::Object(fields) => fields.values().any(reports_error),
        Value::String(text) => !text.trim().is_empty(),
        Value::Bool(flag) => *flag,
        Value::Null => false,
        Value::Array(items) => items.iter().any(reports_error),
        Value::Number(number) => number.as_f64() != Some(0.0),
    }
}

/// The call's id, or a fresh one: some local servers omit ids (or send blanks, which name
/// no call either: servers refuse a result whose id is blank, and so does importing an
/// export), and the tool result must still name its call.
pub(super) fn call_id(id: Option<String>) -> String {
    id.filter(|id| !id.trim().is_empty())
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
    #[serde(default, deserialize_with = "lenient")]
    pub usage: Option<WireUsage>,
    #[serde(default)]
    pub error: Option<Value>,
}

/// One choice of a chunk; Fusion asks for one, so only `index` 0 (or none, or one that
/// is no number) counts.
#[derive(Deserialize)]
pub(super) struct WireChunkChoice {
    #[serde(default, deserialize_with = "piece_index")]
    pub index: Option<PieceIndex>,
    #[serde(default)]
    pub delta: Option<WireDelta>,
    #[serde(default, deserialize_with = "lenient")]
    pub finish_reason: Option<String>,
}

/// The new pieces of the message in one chunk.
#[derive(Deserialize)]
pub(super) struct WireDelta {
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default, deserialize_with = "lenient")]
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
    #[serde(default, deserialize_with = "piece_index")]
    pub index: Option<PieceIndex>,
    #[serde(default, deserialize_with = "lenient_text")]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<WireFunctionDelta>,
}

/// A streamed `index`: which call (or choice) a piece is of. A whole number, or a string
/// of one (`"1"`: a server that sends numbers as text), is that number. Any other value
/// (`-1`, `"a"`, an object) still tells the pieces of one call from another's, the same
/// value on each, so it is kept as its JSON text: read as missing, pieces with no id or
/// name would go to the last call started, running one call with two calls' arguments
/// joined and the other without its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum PieceIndex {
    /// A whole number, as servers send it.
    Number(usize),
    /// Any other value, as JSON text.
    Other(String),
}

/// A [`PieceIndex`]; `null` or missing is none.
fn piece_index<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<PieceIndex>, D::Error> {
    Ok(Option::<Value>::deserialize(deserializer)?.map(|value| {
        let number = match &value {
            Value::Number(number) => number.as_u64().and_then(|n| usize::try_from(n).ok()),
            Value::String(text) => text.trim().parse().ok(),
            _ => None,
        };
        number.map_or_else(|| PieceIndex::Other(value.to_string()), PieceIndex::Number)
    }))
}

/// The function part of a tool-call piece.
#[derive(Deserialize)]
pub(super) struct WireFunctionDelta {
    #[serde(default, deserialize_with = "lenient_text")]
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

    /// Found by a hunt: an id of blanks only (`" "`) was kept, so the call and its result
    /// were stored under an id that names no call (what `fusion sessions import` refuses).
    #[test]
    fn a_blank_call_id_is_replaced_by_a_fresh_one() {
        for blank in ["", " ", "\t\n"] {
            let body = json!({"choices": [{"message": {"role": "assistant", "content": "",
                "tool_calls": [{"id": blank, "function": {"name": "t", "arguments": "{}"}}]}}]});
            let reply = decode_response(body.to_string().as_bytes()).unwrap();
            let id = &reply.message.tool_calls[0].id;
            assert!(id.starts_with("call_") && id.len() > 5, "{blank:?}: {id:?}");
        }
        assert_eq!(
            call_id(Some(" c1 ".into())),
            " c1 ",
            "not blank: kept as it is"
        );
    }

    /// Found by a review: a call whose id was a number (`"id": 7`) failed the whole reply
    /// as not of the chat-completions shape, its text and other calls lost. The number is
    /// the id's text; an id of another type is no id, as a missing one.
    #[test]
    fn a_call_id_that_is_no_string_keeps_the_reply() {
        let body = br#"{"choices":[{"message":{"content":"Looking.","tool_calls":[
            {"id":7,"function":{"name":"ls","arguments":"{}"}},
            {"id":-1.5,"function":{"name":"ls","arguments":"{}"}},
            {"id":true,"function":{"name":"ls","arguments":"{}"}},
            {"id":{"n":1},"function":{"name":"ls","arguments":"{}"}},
            {"id":null,"function":{"name":"ls","arguments":"{}"}}]}}]}"#;
        let message = decode_response(body).unwrap().message;
        assert_eq!(message.content, "Looking.");
        let ids: Vec<&str> = message.tool_calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(&ids[..2], ["7", "-1.5"]);
        assert!(ids[2..].iter().all(|id| id.starts_with("call_")), "{ids:?}");
        let chunk =
            decode_chunk(r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":7}]}}]}"#).unwrap();
        let choices = chunk.choices.unwrap();
        let pieces = choices[0]
            .delta
            .as_ref()
            .unwrap()
            .tool_calls
            .as_ref()
            .unwrap();
        assert_eq!(pieces[0].id.as_deref(), Some("7"));
    }

    /// Found by a review of 75c31b1: the other fields of a reply were still read strictly,
    /// so a call's name that is a number, a `refusal` that is no string (`false`) or a
    /// `finish_reason` that is an object failed the whole reply as the id did. Each reads
    /// as what it can be, or as missing.
    #[test]
    fn reply_fields_of_another_type_keep_the_reply() {
        let body = br#"{"choices":[{"finish_reason":{"type":"stop"},"message":{
            "content":"Looking.","refusal":false,"tool_calls":[
            {"id":"c1","function":{"name":7,"arguments":"{}"}},
            {"id":"c2","function":{"name":["ls"],"arguments":"{}"}}]}}]}"#;
        let reply = decode_response(body).unwrap();
        assert_eq!(reply.message.content, "Looking.");
        assert_eq!(reply.finish_reason, None);
        let names: Vec<&str> = reply
            .message
            .tool_calls
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["7", ""]);
        let chunk = decode_chunk(
            r#"{"choices":[{"index":"0","finish_reason":1,"delta":{"refusal":{},"tool_calls":[
                {"index":-1,"id":"c","function":{"name":3,"arguments":"{}"}}]}}]}"#,
        )
        .unwrap();
        let choice = &chunk.choices.unwrap()[0];
        assert_eq!(
            (&choice.index, choice.finish_reason.as_deref()),
            (&Some(PieceIndex::Number(0)), None)
        );
        let delta = choice.delta.as_ref().unwrap();
        assert_eq!(delta.refusal, None);
        let piece = &delta.tool_calls.as_ref().unwrap()[0];
        assert_eq!(piece.index, Some(PieceIndex::Other("-1".to_owned())));
        assert_eq!(piece.function.as_ref().unwrap().name.as_deref(), Some("3"));
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
        assert!(described(b"{\"id\":\"c\"}").contains("no `choices`"));
        assert_eq!(
            decode_response(b"{\"choices\":[]}").unwrap_err(),
            Undecodable::NoChoice
        );
        for reported in [
            r#"{"error":{"message":"upstream down"}}"#,
            r#"{"error":{"message":"upstream down","code":0}}"#,
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
            r#"{"error":{"message":"","code":0},"choices":[{"message":{"content":"a"}}]}"#,
            r#"{"error":{"code":0.0,"type":""},"choices":[{"message":{"content":"a"}}]}"#,
        ] {
            assert_eq!(
                decode_response(body.as_bytes()).unwrap().message.content,
                "a"
            );
        }
    }

    /// Found by a review: a whole reply with a call whose name (or `function`) was
    /// missing or `null` did not decode, and the turn failed, its text and other calls
    /// lost, where the same reply streamed was read with a nameless call.
    #[test]
    fn a_call_without_a_name_keeps_the_reply() {
        let body = br#"{"choices":[{"message":{"content":"Let me look.","tool_calls":[
            {"id":"a","function":{"name":null,"arguments":"{}"}},
            {"id":"b","function":{"arguments":"{}"}},
            {"id":"c","function":null},
            {"id":"d","type":"function"},
            {"id":"e","function":{"name":"ls","arguments":"{}"}}]}}]}"#;
        let message = decode_response(body).unwrap().message;
        assert_eq!(message.content, "Let me look.");
        let names: Vec<(&str, &str)> = message
            .tool_calls
            .iter()
            .map(|call| (call.id.as_str(), call.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [("a", ""), ("b", ""), ("c", ""), ("d", ""), ("e", "ls")]
        );
        assert!(message.tool_calls.iter().all(|call| call.arguments == "{}"));
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
