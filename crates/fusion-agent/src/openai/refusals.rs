//! What a refusal says a server cannot do, so the client can do without it: stream (a
//! 400 or 422 naming `stream`, then the request is sent again without it), or call tools
//! natively (then the session switches to the text ReAct format); and a refusal of a
//! request longer than the model's context window, whose error says how to recover.

use fusion_core::Error;
use reqwest::StatusCode;

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
}
