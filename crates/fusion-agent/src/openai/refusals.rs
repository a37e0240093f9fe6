//! What a refusal says a server cannot do, so the client can do without it: stream (a
//! 400 or 422 naming `stream`, then the request is sent again without it), or call tools
//! natively (then the session switches to the text ReAct format); and refusals whose
//! error says how to recover: a request longer than the model's context window, a call id
//! the server does not take.

use fusion_core::Error;
use reqwest::StatusCode;

use super::sendable::{
    CallIds, allowed, has_portable_form, sendable_call_id, taken_but_by_mistral,
};
use crate::llm::ChatRequest;

/// Whether a failed streaming request was refused because of streaming itself (a 400 or
/// 422 whose body mentions `stream`, `streaming` or `stream_options`), so the same request
/// without it may succeed.
///
/// A word, not any text holding it: "upstream" (a proxy's "upstream provider rejected the
/// request") is no refusal of streaming, and taking it for one turned streaming off for the
/// client and its clones for good.
pub(super) fn refuses_streaming(status: StatusCode, body: &[u8]) -> bool {
    if !matches!(status.as_u16(), 400 | 422) {
        return false;
    }
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    text.match_indices("stream").any(|(at, _)| {
        !text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

/// Phrases servers use to refuse a request longer than the model's context window,
/// lowercased: OpenAI's code `context_length_exceeded` and "maximum context length", vLLM's
/// and Groq's "context length", llama.cpp's "context size", Anthropic's "prompt is too
/// long", Gemini's and others' "context window".
const CONTEXT_OVERFLOW: &[&str] = &[
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context size",
    "context window",
    "prompt is too long",
];

/// Whether a refusal (a 400, 413 or 422) says the request does not fit the model's
/// context window: the session's history has grown past it, and every later request of
/// the session would be refused the same until the request carries less.
pub(super) fn exceeds_context(status: StatusCode, body: &[u8]) -> bool {
    if !matches!(status.as_u16(), 400 | 413 | 422) {
        return false;
    }
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    CONTEXT_OVERFLOW.iter().any(|phrase| text.contains(phrase))
}

/// Phrases servers use to say a model cannot call tools natively, lowercased: Ollama's
/// "`<model>` does not support tools", vLLM's hint to start with
/// `--enable-auto-tool-choice`, and the usual "... is not supported" wordings.
const NO_NATIVE_TOOLS: &[&str] = &[
    "does not support tool",
    "doesn't support tool",
    "does not support function",
    "tools is not supported",
    "tools are not supported",
    "tools not supported",
    "tool calling is not supported",
    "tool calls are not supported",
    "tool use is not supported",
    "function calling is not supported",
    "function calling not supported",
    "enable-auto-tool-choice",
];

/// Whether `error` says the model does not support native tool calling, so the agent can
/// switch to the text ReAct format
/// ([`OpenAiConfig::native_tools`](super::OpenAiConfig::native_tools)`(false)`).
///
/// True for an [`Error::Llm`] with status 400 or 422 whose message (which quotes the
/// server) says so, e.g. Ollama's `"registry.ollama.ai/library/gemma:2b does not support
/// tools"`.
pub fn rejects_native_tools(error: &Error) -> bool {
    match error {
        Error::Llm {
            message,
            status: Some(400 | 422),
            ..
        } => {
            let message = message.to_lowercase();
            NO_NATIVE_TOOLS
                .iter()
                .any(|phrase| message.contains(phrase))
        }
        _ => false,
    }
}

/// Phrases of a refusal that names a tool call's id, lowercased: Anthropic's
/// `messages.1.content.0.tool_use.id: String should match pattern`, `tool_call_id`,
/// `tool_use_id` and "tool call id" wordings. OpenAI's `'messages[1].tool_calls[0].id'`
/// is recognised apart ([`names_a_call_id`]).
const CALL_ID_REFUSED: &[&str] = &["tool_call_id", "tool_use_id", "tool_use.id", "tool call id"];

/// Whether `text` (lowercased) names a tool call's id.
fn names_a_call_id(text: &str) -> bool {
    CALL_ID_REFUSED.iter().any(|phrase| text.contains(phrase))
        || (text.contains("tool_calls[") && text.contains("].id"))
}

/// `error` with what to do added when it is a 400 or 422 naming a tool call's id, sent
/// as stored (`ids`), and `request`'s history holds an id the server may refuse for its
/// form (`functions.read_file:0` as Kimi models write them, one past 40 characters, and,
/// when the refusal states Mistral's rule of 9 letters and digits, any other): every later
/// request of the session would be refused the same, and only
/// [`portable_call_ids`](super::OpenAiConfig::portable_call_ids) mends it. A refusal
/// quoting ids of the history is hinted only when one it quotes is such an id (the one
/// then shown): a refusal about an id of a form the server takes is about something else.
pub(super) fn explain_refused_call_ids(
    error: Error,
    request: &ChatRequest<'_>,
    ids: CallIds,
) -> Error {
    let Error::Llm {
        message,
        status: status @ Some(400 | 422),
        retryable,
        source,
    } = error
    else {
        return error;
    };
    // A blank id is sent replaced in either mode (`CallIds::send`), in a form every server
    // takes: not one sent as stored, and `" "` is in any refusal's text.
    let stored: Vec<&str> = request
        .messages
        .iter()
        .flat_map(|m| {
            let ids = m.tool_calls.iter().map(|call| call.id.as_str());
            ids.chain(m.tool_call_id.as_deref())
        })
        .filter(|id| !id.trim().is_empty())
        .collect();
    // Mistral's refusal states its rule ("must be a-z, A-Z, 0-9, with a length of 9"),
    // under which only an id of the portable form is taken; other servers take OpenAI's
    // `call_...`, which OpenAI's own refusals quote for other reasons (a call left
    // unanswered).
    let mistral_rule = message.contains("length of 9");
    let portable = |id: &str| {
        if mistral_rule {
            has_portable_form(id)
        } else {
            taken_but_by_mistral(id)
        }
    };
    let unportable = || stored.iter().copied().filter(|id| !portable(id));
    // A refusal quoting the history's ids is about those: hinted only when one of them
    // is not portable (OpenAI's "tool_call_ids did not have response messages: call_x"
    // is about a call left unanswered, whatever the other ids hold).
    let quoted_unportable = unportable().find(|id| !id.is_empty() && message.contains(id));
    let quotes_portable = stored
        .iter()
        .any(|id| portable(id) && quotes_id(&message, id));
    let shown = match quoted_unportable {
        Some(id) => Some(id),
        None if quotes_portable => None,
        None => unportable().next(),
    };
    let message = match shown {
        Some(id) if ids == CallIds::AsStored && names_a_call_id(&message.to_lowercase()) => {
            format!(
                "{message}. The history holds tool-call ids sent as stored that this server \
                 may not take (`{}`): turn on OpenAiConfig::portable_call_ids \
                 (FUSION_PORTABLE_CALL_IDS=true) to send them in a form every server takes; \
                 the stored history is unchanged",
                id.escape_debug()
            )
        }
        _ => message,
    };
    Error::Llm {
        message,
        status,
        retryable,
        source,
    }
}

/// `error` with the stored id of each portable call id it quotes added, when call ids
/// are sent portable (`ids`): a server quotes the id it was sent (`Ab3dE9xYz`, a hash),
/// which is nowhere in the stored session, and a person looking for the call finds it by
/// the id storage keeps (`call_abc`, `functions.read_file:0`). The server's text is kept
/// as it is; the stored ids follow it.
pub(super) fn name_stored_call_ids(error: Error, request: &ChatRequest<'_>, ids: CallIds) -> Error {
    let Error::Llm {
        message,
        status,
        retryable,
        source,
    } = error
    else {
        return error;
    };
    if ids != CallIds::Portable {
        return Error::Llm {
            message,
            status,
            retryable,
            source,
        };
    }
    let mut named: Vec<(String, &str)> = Vec::new();
    let stored = request.messages.iter().flat_map(|m| {
        let ids = m.tool_calls.iter().map(|call| call.id.as_str());
        ids.chain(m.tool_call_id.as_deref())
    });
    for id in stored {
        let sent = sendable_call_id(id);
        if !named.iter().any(|(_, known)| *known == id) && quotes_id(&message, &sent) {
            named.push((sent, id));
        }
    }
    let message = if named.is_empty() {
        message
    } else {
        let pairs: Vec<String> = named
            .iter()
            .map(|(sent, id)| format!("`{sent}` is stored as `{}`", id.escape_debug()))
            .collect();
        format!(
            "{message} (tool-call ids are sent in a portable form, \
             OpenAiConfig::portable_call_ids: {})",
            pairs.join(", ")
        )
    };
    Error::Llm {
        message,
        status,
        retryable,
        source,
    }
}

/// Whether `text` quotes `id`, a portable id, as a whole (not as part of a longer run of
/// id characters). Ids under 4 characters are never taken as quoted: `0` or `c1` turn up
/// in any refusal's indices (`messages.0.content`).
fn quotes_id(text: &str, id: &str) -> bool {
    id.len() >= 4
        && text.match_indices(id).any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + id.len()..].chars().next();
            !before.is_some_and(allowed) && !after.is_some_and(allowed)
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::header::HeaderMap;

    use super::*;
    use crate::openai::error::{Context, status_failure};

    fn ctx() -> Context<'static> {
        Context {
            base_url: "http://h/v1",
            endpoint: "http://h/v1/chat/completions",
            model: "m-1",
            api_key: None,
            request_timeout: Duration::from_secs(1),
            progress_timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn tool_refusals_of_several_servers_are_recognised() {
        let refusal = |status: StatusCode, body: &str| {
            status_failure(&ctx(), status, &HeaderMap::new(), body.as_bytes()).into_error(1)
        };
        for said in [
            r#"{"error":{"message":"registry.ollama.ai/library/gemma:2b does not support tools","type":"api_error"}}"#,
            r#"{"error":{"message":"tools is not supported for this model"}}"#,
            r#"{"detail":"Function calling is not supported by this model"}"#,
            r#"{"object":"error","message":"\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set"}"#,
        ] {
            assert!(
                rejects_native_tools(&refusal(StatusCode::BAD_REQUEST, said)),
                "{said}"
            );
        }
        let other = refusal(
            StatusCode::BAD_REQUEST,
            r#"{"error":"context length exceeded"}"#,
        );
        assert!(!rejects_native_tools(&other));
        let not_a_400 = refusal(StatusCode::BAD_GATEWAY, "model does not support tools");
        assert!(!rejects_native_tools(&not_a_400));
        assert!(!rejects_native_tools(&Error::Config(
            "does not support tools".into()
        )));
    }

    /// Found by a review: a session whose history outgrew the model's context (one large
    /// file read under the default policy, which keeps everything) had every later turn
    /// refused with the server's words alone, nothing saying that the stored history is
    /// intact or how to go on.
    #[test]
    fn a_request_longer_than_the_context_window_says_how_to_go_on() {
        let failure = |status: StatusCode, body: &str| {
            status_failure(&ctx(), status, &HeaderMap::new(), body.as_bytes())
        };
        for (status, said) in [
            (
                StatusCode::BAD_REQUEST,
                r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130512 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            ),
            (
                StatusCode::BAD_REQUEST,
                r#"{"object":"error","message":"This model's maximum context length is 8192 tokens. However, you requested 9000 tokens.","type":"BadRequestError","code":400}"#,
            ),
            (
                StatusCode::BAD_REQUEST,
                r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}}"#,
            ),
            (
                StatusCode::BAD_REQUEST,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
            ),
            (StatusCode::PAYLOAD_TOO_LARGE, "context window exceeded"),
        ] {
            let failure = failure(status, said);
            assert!(!failure.retryable, "{said}");
            for hint in [
                "context window",
                "ContextPolicy",
                "/summarize",
                "/undo",
                "unchanged",
            ] {
                assert!(
                    failure.message.contains(hint),
                    "{hint}: {}",
                    failure.message
                );
            }
        }
        for (status, said) in [
            (
                StatusCode::BAD_REQUEST,
                r#"{"error":{"message":"Invalid 'messages[2].role'"}}"#,
            ),
            (
                StatusCode::TOO_MANY_REQUESTS,
                "context length: too many tokens per minute",
            ),
        ] {
            let failure = failure(status, said);
            assert!(
                !failure.message.contains("ContextPolicy"),
                "{said}: {}",
                failure.message
            );
        }
    }

    /// Found by a review of ef3fd2f: call ids go as stored by default (Kimi K2 reads
    /// them), so an endpoint that refuses `functions.read_file:0` fails the request; its
    /// error must say which option sends them in a form it takes.
    #[test]
    fn a_refused_call_id_says_to_turn_portable_ids_on() {
        use std::borrow::Cow;

        use fusion_core::{ChatMessage, ToolCall};

        let refusal = |status: StatusCode, body: &str| {
            status_failure(&ctx(), status, &HeaderMap::new(), body.as_bytes()).into_error(1)
        };
        let history = |id: &str| {
            vec![
                ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new(id, "t", "{}")]),
                ChatMessage::tool_result(id, "out"),
            ]
        };
        let kimi = history("functions.read_file:0");
        let long = history(&"c".repeat(41));
        let portable = history("call_0");
        fn request(messages: &[ChatMessage]) -> ChatRequest<'_> {
            ChatRequest {
                messages: messages.iter().map(Cow::Borrowed).collect(),
                ..Default::default()
            }
        }
        let hinted = |error: Error, messages: &[ChatMessage], ids: CallIds| {
            let explained = explain_refused_call_ids(error, &request(messages), ids);
            assert!(matches!(
                explained,
                Error::Llm {
                    status: Some(400 | 422),
                    ..
                }
            ));
            explained.to_string().contains("portable_call_ids")
        };
        let anthropic = r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages.1.content.0.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"}}"#;
        let openai = r#"{"error":{"message":"Invalid 'messages[1].tool_calls[0].id': string too long. Expected a string with maximum length 40, but got a string with length 41 instead.","type":"invalid_request_error","param":"messages[1].tool_calls[0].id","code":"string_above_max_length"}}"#;
        let other = r#"{"error":{"message":"Invalid 'messages[2].role'"}}"#;
        let said = |body| refusal(StatusCode::BAD_REQUEST, body);
        assert!(hinted(said(anthropic), &kimi, CallIds::AsStored));
        assert!(hinted(said(openai), &long, CallIds::AsStored));
        let tool_call_id = r#"{"detail":"invalid tool_call_id"}"#;
        let unprocessable = refusal(StatusCode::UNPROCESSABLE_ENTITY, tool_call_id);
        assert!(hinted(unprocessable, &kimi, CallIds::AsStored));
        // Ids already portable, the option already on, or a refusal of something else.
        assert!(!hinted(said(anthropic), &portable, CallIds::AsStored));
        assert!(!hinted(said(anthropic), &kimi, CallIds::Portable));
        assert!(!hinted(said(other), &kimi, CallIds::AsStored));
        // Mistral's rule refuses OpenAI's ids too, which other servers take.
        let mistral = r#"{"object":"error","message":"Tool call id was call_Ab12Cd34Ef56 but must be a-z, A-Z, 0-9, with a length of 9.","type":"invalid_function_call","param":null,"code":"3280"}"#;
        let openai_ids = history("call_Ab12Cd34Ef56");
        assert!(hinted(said(mistral), &openai_ids, CallIds::AsStored));
        assert!(!hinted(
            said(mistral),
            &history("aB3dE5gH7"),
            CallIds::AsStored
        ));
        assert!(!hinted(said(anthropic), &openai_ids, CallIds::AsStored));
        let not_a_400 = refusal(StatusCode::BAD_GATEWAY, "tool_use.id");
        let kept = explain_refused_call_ids(not_a_400, &request(&kimi), CallIds::AsStored);
        assert!(!kept.to_string().contains("portable_call_ids"), "{kept}");
    }

    /// Found by a review of 9a4fbe0: the hint's lines lost their continuation, so the
    /// message carried runs of spaces ("this server                  may not take").
    #[test]
    fn the_call_id_hint_reads_as_one_sentence() {
        use std::borrow::Cow;

        use fusion_core::{ChatMessage, ToolCall};

        let id = "functions.read_file:0";
        let messages = [
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new(id, "t", "{}")]),
            ChatMessage::tool_result(id, "out"),
        ];
        let request = ChatRequest {
            messages: messages.iter().map(Cow::Borrowed).collect(),
            ..Default::default()
        };
        let body = br#"{"error":{"message":"messages.1.content.0.tool_use.id: bad"}}"#;
        let error =
            status_failure(&ctx(), StatusCode::BAD_REQUEST, &HeaderMap::new(), body).into_error(1);
        let said = explain_refused_call_ids(error, &request, CallIds::AsStored).to_string();
        assert!(said.contains("portable_call_ids"), "{said}");
        assert!(!said.contains("  "), "{said}");
        assert!(said.contains("this server may not take"), "{said}");
    }

    /// Found by a review of 9a4fbe0: OpenAI's refusal of a call left without results
    /// names `tool_call_id`s, quoting the unanswered one; with a Kimi id elsewhere in the
    /// history it was said to need portable ids, which change nothing about it. A refusal
    /// quoting the history's ids gets the hint only when one it quotes is not portable.
    #[test]
    fn a_refusal_quoting_another_id_gets_no_portable_ids_hint() {
        use std::borrow::Cow;

        use fusion_core::{ChatMessage, ToolCall};

        let kimi = "functions.read_file:0";
        let dangling = "call_Ab12Cd34Ef56";
        let messages = [
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new(kimi, "t", "{}")]),
            ChatMessage::tool_result(kimi, "out"),
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new(dangling, "t", "{}")]),
        ];
        let request = ChatRequest {
            messages: messages.iter().map(Cow::Borrowed).collect(),
            ..Default::default()
        };
        let explained = |body: String| {
            let error = status_failure(
                &ctx(),
                StatusCode::BAD_REQUEST,
                &HeaderMap::new(),
                body.as_bytes(),
            )
            .into_error(1);
            explain_refused_call_ids(error, &request, CallIds::AsStored).to_string()
        };
        let unanswered = |id: &str| {
            serde_json::json!({"error": {"message": format!(
                "An assistant message with 'tool_calls' must be followed by tool messages \
                 responding to each 'tool_call_id'. The following tool_call_ids did not have \
                 response messages: {id}")}})
            .to_string()
        };
        let said = explained(unanswered(dangling));
        assert!(!said.contains("portable_call_ids"), "{said}");
        // Quoting the id that is not portable, or none, it still gets the hint.
        let said = explained(unanswered(kimi));
        assert!(said.contains("portable_call_ids"), "{said}");
        let said = explained(r#"{"error":{"message":"tool_use.id: bad pattern"}}"#.into());
        assert!(said.contains(&format!("(`{kimi}`)")), "{said}");
    }

    /// Asked by a review of aac2172: naming the stored ids adds text to a failure, but
    /// what decides about it does not change: its status, whether it is retried, and
    /// whether it says the model cannot call tools natively (read from the text).
    #[test]
    fn naming_stored_ids_keeps_how_a_failure_is_classified() {
        use std::borrow::Cow;

        use fusion_core::{ChatMessage, ToolCall};

        let id = "functions.read_file:0";
        let messages = [
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new(id, "t", "{}")]),
            ChatMessage::tool_result(id, "out"),
        ];
        let request = ChatRequest {
            messages: messages.iter().map(Cow::Borrowed).collect(),
            ..Default::default()
        };
        let sent = sendable_call_id(id);
        for (status, said) in [
            (
                StatusCode::BAD_REQUEST,
                format!("call {sent}: model does not support tools"),
            ),
            (StatusCode::BAD_REQUEST, format!("bad tool_call_id {sent}")),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("overloaded at {sent}"),
            ),
            (StatusCode::TOO_MANY_REQUESTS, format!("slow down ({sent})")),
        ] {
            let body = serde_json::json!({"error": {"message": said}}).to_string();
            let error =
                status_failure(&ctx(), status, &HeaderMap::new(), body.as_bytes()).into_error(1);
            let before = (error.is_retryable(), rejects_native_tools(&error));
            let named = name_stored_call_ids(error, &request, CallIds::Portable);
            assert!(named.to_string().contains("is stored as"), "{named}");
            let Error::Llm { status: kept, .. } = &named else {
                panic!("{named:?}")
            };
            assert_eq!(*kept, Some(status.as_u16()), "{named}");
            let after = (named.is_retryable(), rejects_native_tools(&named));
            assert_eq!(before, after, "{named}");
        }
    }

    #[test]
    fn only_a_400_or_422_that_mentions_streaming_refuses_it() {
        let said = br#"{"error":{"message":"Streaming is not supported"}}"#;
        assert!(refuses_streaming(StatusCode::BAD_REQUEST, said));
        assert!(refuses_streaming(
            StatusCode::UNPROCESSABLE_ENTITY,
            b"unknown field stream_options"
        ));
        assert!(!refuses_streaming(StatusCode::BAD_REQUEST, b"bad messages"));
        for upstream in [
            &br#"{"error":{"message":"upstream provider rejected the request"}}"#[..],
            b"downstream: context length exceeded",
        ] {
            assert!(!refuses_streaming(StatusCode::BAD_REQUEST, upstream));
        }
        assert!(refuses_streaming(
            StatusCode::BAD_REQUEST,
            br#"{"detail":"'stream' is not supported"}"#
        ));
        assert!(!refuses_streaming(StatusCode::SERVICE_UNAVAILABLE, said));
    }

    /// Found by a review of 7b82524: a blank stored id is sent replaced now, also with ids
    /// sent as stored, but a refusal of another id was still said to be about it (`" "` is
    /// in any refusal's text), pointing at portable_call_ids, which changes nothing there.
    #[test]
    fn a_blank_id_sent_replaced_gets_no_portable_ids_hint() {
        use std::borrow::Cow;

        use fusion_core::{ChatMessage, ToolCall};

        let messages = [
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new(" ", "t", "{}")]),
            ChatMessage::tool_result(" ", "out"),
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("call_1", "t", "{}")]),
        ];
        let request = ChatRequest {
            messages: messages.iter().map(Cow::Borrowed).collect(),
            ..Default::default()
        };
        let body = br#"{"error":{"message":"The following tool_call_ids did not have response messages: call_1"}}"#;
        let error =
            status_failure(&ctx(), StatusCode::BAD_REQUEST, &HeaderMap::new(), body).into_error(1);
        let said = explain_refused_call_ids(error, &request, CallIds::AsStored).to_string();
        assert!(said.contains("call_1"), "{said}");
        assert!(!said.contains("portable_call_ids"), "{said}");
    }
}
