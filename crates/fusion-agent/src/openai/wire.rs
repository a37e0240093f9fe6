//! The chat-completions wire format: borrowed request structs and a tolerant reply parser.
//!
//! Requests are written from borrowed [`ChatMessage`]s without copying them and without
//! their `metadata` (Fusion's own annotations are not for the model). Replies are read
//! leniently because "OpenAI-compatible" servers differ in details: missing tool-call ids,
//! arguments sent as an object, content as an array of parts, usage without a total.

use std::borrow::Cow;

use fusion_core::{ChatMessage, ToolCall};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

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
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tool_calls: &'a [ToolCall],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

impl<'a> From<&'a ChatMessage> for WireMessage<'a> {
    fn from(m: &'a ChatMessage) -> Self {
        let content = if m.content.is_empty() && m.has_tool_calls() {
            None
        } else {
            Some(m.content.as_str())
        };
        Self {
            role: m.role.as_str(),
            content,
            tool_calls: &m.tool_calls,
            tool_call_id: m.tool_call_id.as_deref(),
            name: m.name.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// `ToolDefinition` already serialises as `{name, description, parameters}`.
    function: &'a ToolDefinition,
}

/// The JSON body for `request`. Tools are left out when `native_tools` is off, since a
/// server for a model without tool calling may reject the field.
pub(super) fn encode_request(
    model: &str,
    request: &ChatRequest<'_>,
    native_tools: bool,
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
        messages: WireMessages(&request.messages),
        tools,
        temperature: request.options.temperature,
        max_tokens: request.options.max_tokens,
    })
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    choices: Option<Vec<WireChoice>>,
    #[serde(default)]
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

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    total_tokens: Option<u32>,
}

/// Parses a 200 reply. `Err` carries a description of what is wrong with the body.
pub(super) fn decode_response(body: &[u8]) -> Result<ChatResponse, String> {
    let wire: WireResponse = serde_json::from_slice(body).map_err(|e| {
        if serde_json::from_slice::<Value>(body).is_ok() {
            format!("the JSON does not have the chat-completions shape ({e})")
        } else {
            format!("the body is not JSON ({e})")
        }
    })?;
    let Some(choice) = wire.choices.and_then(|choices| choices.into_iter().next()) else {
        return Err(match wire.error {
            Some(error) => format!("the reply is an error: {}", error_text(&error)),
            None => "the reply has no `choices`".to_owned(),
        });
    };
    let reply = choice
        .message
        .ok_or_else(|| "the first choice has no `message`".to_owned())?;

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
            // Some local servers omit ids; the tool result must still name its call.
            id: call
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("call_{:016x}", rand::random::<u64>())),
            name: call.function.name,
            arguments: match call.function.arguments {
                // The common case: the model's text, kept verbatim even when invalid JSON.
                Some(Value::String(text)) => text,
                None | Some(Value::Null) => "{}".to_owned(),
                Some(other) => other.to_string(),
            },
        })
        .collect();
    Ok(ChatResponse {
        message: ChatMessage::assistant_with_tool_calls(content, tool_calls),
        usage: wire.usage.map(|u| Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u
                .total_tokens
                .unwrap_or(u.prompt_tokens.saturating_add(u.completion_tokens)),
        }),
        finish_reason: choice.finish_reason,
    })
}

/// Content as text from a string, `null`, or an array of `{"type":"text","text":..}` parts.
fn content_text(value: Value) -> String {
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

fn error_text(value: &Value) -> String {
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
            serde_json::from_slice(&encode_request("m", &request, true).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"model": "m", "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "t", "arguments": "{bad"}}]},
                {"role": "tool", "content": "out", "tool_call_id": "c1"},
            ]})
        );
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
            serde_json::from_slice(&encode_request("m", &request, true).unwrap()).unwrap();
        assert_eq!(
            native["tools"],
            json!([{"type": "function", "function":
                {"name": "t", "description": "d", "parameters": {"type": "object"}}}])
        );
        let text: Value =
            serde_json::from_slice(&encode_request("m", &request, false).unwrap()).unwrap();
        assert!(text.get("tools").is_none());
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
    fn malformed_replies_are_described() {
        assert!(decode_response(b"<html>").unwrap_err().contains("not JSON"));
        assert!(
            decode_response(b"{\"choices\":[]}")
                .unwrap_err()
                .contains("no `choices`")
        );
        let err = decode_response(br#"{"error":{"message":"upstream down"}}"#).unwrap_err();
        assert!(err.contains("upstream down"), "{err}");
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
