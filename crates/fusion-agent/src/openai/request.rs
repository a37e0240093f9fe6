//! The request body: the model, the messages, the tools and the options, written from
//! borrowed [`ChatMessage`]s without copying them and without their `metadata` (Fusion's
//! own annotations are not for the model).
//!
//! What storage keeps exactly as the model wrote it, some servers refuse to be sent back:
//! every stored tool call goes with a name a tool could have ([`sendable_call_name`]),
//! and with an id servers take when the client asks for it ([`CallIds`], the result's id
//! alike; a message's participant name with [`sendable_participant`]) and arguments that are a JSON object
//! ([`sendable_arguments`]), and no reply or user message goes empty ([`EMPTY_REPLY`],
//! [`EMPTY_USER_MESSAGE`]).

use std::borrow::Cow;

use fusion_core::{ChatMessage, Role, ToolCall};
use serde::{Serialize, Serializer};

use super::prefix::EncodedPrefix;
use super::sendable::{CallIds, sendable_call_name, sendable_participant};
use crate::llm::{ChatRequest, ToolDefinition};

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

/// Serialises the messages as a sequence straight from the request, with no intermediate
/// Vec, their calls' ids sent as the `CallIds` say.
struct WireMessages<'a>(&'a [Cow<'a, ChatMessage>], CallIds);

impl Serialize for WireMessages<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|m| WireMessage::new(m, self.1)))
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
    tool_call_id: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Cow<'a, str>>,
}

impl<'a> WireMessage<'a> {
    /// `m` as sent, its calls' ids (or its result's) as `ids` say.
    fn new(m: &'a ChatMessage, ids: CallIds) -> Self {
        let content = if m.content.is_empty() && m.has_tool_calls() {
            None
        } else if m.role == Role::Assistant && !m.has_tool_calls() && m.content.trim().is_empty() {
            Some(EMPTY_REPLY)
        } else if m.role == Role::User && m.content.trim().is_empty() {
            Some(EMPTY_USER_MESSAGE)
        } else {
            Some(m.content.as_str())
        };
        Self {
            role: m.role.as_str(),
            content,
            tool_calls: WireCalls(&m.tool_calls, ids),
            tool_call_id: m.tool_call_id.as_deref().map(|id| ids.send(id)),
            // A participant's name, which OpenAI checks as it checks a call's (an
            // application's user "Ada Lovelace"); none rather than an empty one.
            name: m
                .name
                .as_deref()
                .filter(|n| !n.is_empty())
                .map(sendable_participant),
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

/// What a stored user message with no text (or only white space) is sent as in requests.
///
/// An application stores what its user sent, an empty line included (storage keeps it as
/// it came, and another writer of the session may have stored it), but Anthropic's
/// endpoint, and proxies that pass a conversation on to it, refuse a request holding one
/// ("text content blocks must be non-empty", "must contain non-whitespace text", a 400):
/// sent as it is, it failed that turn and every later one of the session.
const EMPTY_USER_MESSAGE: &str = "(empty message)";

/// A message's tool calls as sent: `{"id", "type": "function", "function": {"name",
/// "arguments"}}`, the id, the name and the arguments made sendable.
struct WireCalls<'a>(&'a [ToolCall], CallIds);

impl WireCalls<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for WireCalls<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|call| WireCall {
            id: self.1.send(&call.id),
            kind: "function",
            function: WireCallFunction {
                name: sendable_call_name(&call.name),
                arguments: sendable_arguments(&call.arguments),
            },
        }))
    }
}

#[derive(Serialize)]
struct WireCall<'a> {
    id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireCallFunction<'a>,
}

#[derive(Serialize)]
struct WireCallFunction<'a> {
    name: Cow<'a, str>,
    arguments: Cow<'a, str>,
}

/// The arguments a stored call is sent back with in later requests: the model's text when
/// it is a JSON object, the object inside when it is a JSON string holding one, else `{}`.
///
/// Storage keeps what the model wrote, invalid JSON included (a reply cut mid-call, a
/// small model's slip), and the call's result already tells the model what was wrong,
/// quoting it. But servers parse the arguments of the calls in the history: Ollama
/// refuses the whole request ("invalid tool call arguments", a 400) and vLLM fails in
/// `json.loads`, so one bad call sent back verbatim made every later request of the
/// session fail. `{}` is also what the executor ran a call with empty arguments with.
/// Arguments a server encoded twice (`"{\"path\": \"a\"}"`) ran as the object inside
/// (unless the tool's schema takes a string), so that object is what goes back: sent as
/// `{}`, the history would show the call run without its arguments.
fn sendable_arguments(arguments: &str) -> Cow<'_, str> {
    let is_object = arguments.trim_start().starts_with('{')
        && serde_json::from_str::<serde::de::IgnoredAny>(arguments).is_ok();
    if is_object {
        return Cow::Borrowed(arguments);
    }
    match crate::executor::object_encoded_twice(arguments) {
        Some(inner) => Cow::Owned(inner),
        None => Cow::Borrowed("{}"),
    }
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

/// A tool as offered: its name in the form its calls are sent back with
/// ([`sendable_call_name`]), so a tool registered under a name servers refuse is offered
/// and called under one name.
#[derive(Serialize)]
struct WireFunction<'a> {
    name: Cow<'a, str>,
    description: &'a str,
    parameters: &'a serde_json::Value,
}

/// The JSON body for `request`. Tools are left out when `native_tools` is off, since a
/// server for a model without tool calling may reject the field. `stream` adds
/// `"stream": true` and `"stream_options": {"include_usage": true}`. `ids` says how the
/// calls' ids are sent.
///
/// With a [`RequestCache`](crate::RequestCache) in the request, the messages' JSON comes
/// from the conversation's [`EncodedPrefix`], so only messages not sent before are encoded;
/// the body is byte for byte what it would be without the cache.
pub(super) fn encode_request(
    model: &str,
    request: &ChatRequest<'_>,
    native_tools: bool,
    stream: bool,
    ids: CallIds,
) -> serde_json::Result<Vec<u8>> {
    let body = |messages: &[Cow<'_, ChatMessage>]| {
        encode_body(model, messages, request, native_tools, stream, ids)
    };
    let Some(cache) = request.cache else {
        return body(&request.messages);
    };
    // Without messages the body reads `{"model":M,"messages":[]...}`; the kept JSON goes
    // between those brackets.
    let empty = body(&[])?;
    let at = br#"{"model":"#.len() + serde_json::to_vec(model)?.len() + br#","messages":["#.len();
    if empty.get(at - 1..=at) != Some(b"[]") {
        // Not the layout this splice was written for: encode everything rather than guess.
        return body(&request.messages);
    }
    cache.with(|prefix: &mut EncodedPrefix| {
        let messages = prefix.update(&request.messages, ids, |out, message| {
            serde_json::to_writer(out, &WireMessage::new(message, ids))
        })?;
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
    ids: CallIds,
) -> serde_json::Result<Vec<u8>> {
    let tools = if native_tools {
        request
            .tools
            .iter()
            .map(|tool: &ToolDefinition| WireTool {
                kind: "function",
                function: WireFunction {
                    name: sendable_call_name(&tool.name),
                    description: &tool.description,
                    parameters: &tool.parameters,
                },
            })
            .collect()
    } else {
        Vec::new()
    };
    serde_json::to_vec(&WireRequest {
        model,
        messages: WireMessages(messages, ids),
        tools,
        temperature: request.options.temperature,
        max_tokens: request.options.max_tokens,
        stream: stream.then_some(true),
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

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
        let body: Value = serde_json::from_slice(
            &encode_request("m", &request, true, false, CallIds::AsStored).unwrap(),
        )
        .unwrap();
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
    fn an_empty_reply_or_user_message_is_sent_as_a_placeholder_and_others_as_they_are() {
        let messages = [
            ChatMessage::assistant(""),
            ChatMessage::assistant(" \n"),
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("c1", "t", "{}")]),
            ChatMessage::tool_result("c1", ""),
            ChatMessage::assistant_with_tool_calls(" ", vec![ToolCall::new("c2", "t", "{}")]),
            ChatMessage::tool_result("c2", "x"),
            ChatMessage::user(""),
            ChatMessage::user(" \n"),
            ChatMessage::user("hi"),
        ];
        let request = ChatRequest {
            messages: messages.iter().map(Cow::Borrowed).collect(),
            ..Default::default()
        };
        let body: Value = serde_json::from_slice(
            &encode_request("m", &request, true, false, CallIds::AsStored).unwrap(),
        )
        .unwrap();
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
                &json!(" "),
                &json!("x"),
                &json!(EMPTY_USER_MESSAGE),
                &json!(EMPTY_USER_MESSAGE),
                &json!("hi"),
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
            r#""a.txt""#,
            r#""[1]""#,
            r#""{\"path\": \"a\"""#,
            "path=a",
        ] {
            assert_eq!(sendable_arguments(replaced), "{}", "{replaced:?}");
        }
        // Encoded twice: the object inside, which the executor ran.
        assert_eq!(
            sendable_arguments(r#" "{\"path\": \"a\"}" "#),
            r#"{"path": "a"}"#
        );
    }

    /// Found by a review: a call's id servers refuse (`functions.read_file:0`, sent by
    /// proxies of Kimi models; Anthropic takes only `[a-zA-Z0-9_-]`) was sent as stored,
    /// and a made-up name was sent as a real tool's (`functions_read_file`). With portable
    /// ids the id is replaced alike in the call and its result; by default both go as
    /// stored (Kimi K2 reads them). Storage keeps both as written.
    #[test]
    fn a_call_and_its_result_carry_one_sendable_id() {
        let messages = [
            ChatMessage::assistant_with_tool_calls(
                "",
                vec![
                    ToolCall::new("functions.read_file:0", "functions.read_file", "{}"),
                    ToolCall::new("call_1", "functions_read_file", "{}"),
                ],
            ),
            ChatMessage::tool_result("functions.read_file:0", "no tool named that"),
            ChatMessage::tool_result("call_1", "read"),
        ];
        let request = ChatRequest {
            messages: messages.iter().map(Cow::Borrowed).collect(),
            ..Default::default()
        };
        let stored: Value = serde_json::from_slice(
            &encode_request("m", &request, true, false, CallIds::AsStored).unwrap(),
        )
        .unwrap();
        let calls = &stored["messages"][0]["tool_calls"];
        assert_eq!(calls[0]["id"], json!("functions.read_file:0"));
        assert_eq!(
            stored["messages"][1]["tool_call_id"],
            json!("functions.read_file:0")
        );
        let made_up = calls[0]["function"]["name"].as_str().unwrap();
        assert_ne!(
            made_up, "functions_read_file",
            "names are mapped either way"
        );
        let body: Value = serde_json::from_slice(
            &encode_request("m", &request, true, false, CallIds::Portable).unwrap(),
        )
        .unwrap();
        let calls = &body["messages"][0]["tool_calls"];
        for (call, result) in [(0, 1), (1, 2)] {
            let id = calls[call]["id"].as_str().unwrap();
            assert!(id.len() == 9 && id.chars().all(|c| c.is_ascii_alphanumeric()));
            assert_eq!(body["messages"][result]["tool_call_id"], json!(id));
        }
        assert_ne!(calls[0]["id"], calls[1]["id"]);
        let made_up = calls[0]["function"]["name"].as_str().unwrap();
        assert_ne!(made_up, "functions_read_file");
        assert_eq!(calls[1]["function"]["name"], json!("functions_read_file"));
    }

    /// Found by a review of fc58f90: a call stored with a blank id before new calls got
    /// fresh ones was sent back with it as stored (ids as stored, the default), its result
    /// too, which servers refuse. Both go with one replacement id now.
    #[test]
    fn a_stored_blank_id_goes_replaced_alike_in_the_call_and_its_result() {
        let messages = [
            ChatMessage::assistant_with_tool_calls(
                "",
                vec![
                    ToolCall::new("", "read_file", "{}"),
                    ToolCall::new(" ", "read_file", "{}"),
                ],
            ),
            ChatMessage::tool_result("", "a"),
            ChatMessage::tool_result(" ", "b"),
        ];
        let request = ChatRequest {
            messages: messages.iter().map(Cow::Borrowed).collect(),
            ..Default::default()
        };
        for ids in [CallIds::AsStored, CallIds::Portable] {
            let body: Value =
                serde_json::from_slice(&encode_request("m", &request, true, false, ids).unwrap())
                    .unwrap();
            let calls = &body["messages"][0]["tool_calls"];
            for (call, result) in [(0, 1), (1, 2)] {
                let id = calls[call]["id"].as_str().unwrap();
                assert!(!id.trim().is_empty(), "{ids:?}: {calls}");
                assert_eq!(body["messages"][result]["tool_call_id"], json!(id));
            }
            assert_ne!(calls[0]["id"], calls[1]["id"]);
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
        let native: Value = serde_json::from_slice(
            &encode_request("m", &request, true, false, CallIds::AsStored).unwrap(),
        )
        .unwrap();
        assert_eq!(
            native["tools"],
            json!([{"type": "function", "function":
                {"name": "t", "description": "d", "parameters": {"type": "object"}}}])
        );
        let refused = ChatRequest {
            tools: vec![ToolDefinition {
                name: "functions.read_file".into(),
                ..request.tools[0].clone()
            }],
            ..Default::default()
        };
        let offered: Value = serde_json::from_slice(
            &encode_request("m", &refused, true, false, CallIds::AsStored).unwrap(),
        )
        .unwrap();
        assert_eq!(
            offered["tools"][0]["function"]["name"],
            json!(sendable_call_name("functions.read_file")),
            "offered as its calls are sent back"
        );
        let text: Value = serde_json::from_slice(
            &encode_request("m", &request, false, false, CallIds::AsStored).unwrap(),
        )
        .unwrap();
        assert!(text.get("tools").is_none());
    }

    #[test]
    fn a_streaming_body_is_the_plain_body_plus_the_stream_fields() {
        let messages = [ChatMessage::user("hi")];
        let request = ChatRequest {
            messages: messages.iter().map(Cow::Borrowed).collect(),
            ..Default::default()
        };
        let plain = encode_request("m", &request, true, false, CallIds::AsStored).unwrap();
        assert_eq!(
            String::from_utf8(plain).unwrap(),
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#
        );
        let streaming: Value = serde_json::from_slice(
            &encode_request("m", &request, true, true, CallIds::AsStored).unwrap(),
        )
        .unwrap();
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
                for (native, stream, ids) in [
                    (true, false, CallIds::AsStored),
                    (false, true, CallIds::AsStored),
                    (true, true, CallIds::Portable),
                    (true, false, CallIds::Portable),
                ] {
                    let plain = encode_request(model, &request, native, stream, ids).unwrap();
                    let cached = encode_request(
                        model,
                        &ChatRequest {
                            cache: Some(&cache),
                            ..request.clone()
                        },
                        native,
                        stream,
                        ids,
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
                ToolCall::new("functions.t:1", "t", "{\"p\":\"\\u00e9\"}"),
                ToolCall::new("c2", "t", "{bad"),
            ],
        ));
        check(&history);
        history.push(ChatMessage::tool_result("functions.t:1", "out"));
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
}
