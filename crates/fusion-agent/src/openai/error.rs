//! The one place where HTTP statuses and reqwest errors become [`Error::Llm`], with a
//! message that says what to fix and a verdict on whether retrying can help.
//!
//! Retry policy follows OpenAI's own clients: 408, 409, 429 and 5xx are retried, as are
//! connection errors and timeouts; other 4xx are the caller's mistake and fail at once.
//! Server text is quoted in messages (it is usually the most precise diagnosis) but
//! shortened, and any occurrence of the API key in it is masked.
//!
//! A streamed reply can also fail after it began: the connection may close or stall
//! mid-reply, carry nothing of the reply past the progress timeout, or `[DONE]` come,
//! without a finish reason, in the middle of a tool call (retryable, though the caller
//! retries only until the first delta was delivered), or the server may send an error
//! event (retryable before the first delta when its code says so, final after it). A
//! whole reply can report an error in a 200's body too (OpenRouter's upstream failures):
//! retried by its code, like such an event before the first delta.

use std::time::Duration;

use fusion_core::Error;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::{refusals, retry, wire};

/// Longest quoted server text in an error message, in bytes.
const MAX_QUOTE: usize = 600;

/// What messages may name about the client. Holds the key only to mask it.
#[derive(Clone, Copy)]
pub(super) struct Context<'a> {
    pub base_url: &'a str,
    pub endpoint: &'a str,
    pub model: &'a str,
    pub api_key: Option<&'a str>,
    pub request_timeout: Duration,
    pub progress_timeout: Duration,
}

/// One failed attempt, before the retry loop decides what to do with it.
pub(super) struct Failure {
    pub message: String,
    pub status: Option<u16>,
    pub retryable: bool,
    /// The wait the server asked for, if any.
    pub retry_after: Option<Duration>,
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Failure {
    /// The final error, noting how many attempts were made when there was more than one.
    pub fn into_error(self, attempts: u32) -> Error {
        let message = if attempts > 1 {
            format!("{} (gave up after {attempts} attempts)", self.message)
        } else {
            self.message
        };
        Error::Llm {
            message,
            status: self.status,
            retryable: self.retryable,
            source: self.source,
        }
    }
}

/// What to do once the conversation no longer fits the model's context window: every
/// later request of the session would be refused the same until it carries less.
const CONTEXT_HINT: &str = "The conversation no longer fits the model's context window; \
    the stored history is unchanged. Have each request carry less (ContextPolicy's \
    max_tokens, max_messages or auto_summarize_at_tokens), summarize the history \
    (summarize_history; /summarize in fusion chat) or undo the last turn (/undo)";

/// Maps a non-success HTTP reply.
pub(super) fn status_failure(
    ctx: &Context<'_>,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Failure {
    let said = quote(ctx, &wire::error_message(body));
    let Context {
        base_url, model, ..
    } = ctx;
    let code = status.as_u16();
    let (message, retryable) = match code {
        401 | 403 => {
            let hint = if ctx.api_key.is_none() {
                "no key was sent: set OPENAI_API_KEY"
            } else {
                "the key was sent and refused: check OPENAI_API_KEY (wrong, revoked, or for \
                 another provider?)"
            };
            let model_hint = if code == 403 {
                format!(", and that the key may use model `{model}`")
            } else {
                String::new()
            };
            (
                format!(
                    "{base_url} refused the credentials: {hint}{model_hint}. Server said: {said}"
                ),
                false,
            )
        }
        404 => (
            format!(
                "{} was not found: check OPENAI_BASE_URL (now {base_url}; OpenAI-compatible \
                 APIs usually end in /v1) and FUSION_MODEL (now `{model}`; for Ollama, \
                 `ollama pull {model}` first). Server said: {said}",
                ctx.endpoint
            ),
            false,
        ),
        429 if wire::error_code(body).as_deref() == Some("insufficient_quota") => (
            format!(
                "the account behind OPENAI_API_KEY has no quota left at {base_url}. Server said: {said}"
            ),
            false,
        ),
        429 => (
            format!("rate limited by {base_url}. Server said: {said}"),
            true,
        ),
        408 | 409 => (
            format!("{base_url} asked to retry. Server said: {said}"),
            true,
        ),
        500.. => (
            format!("{base_url} failed while answering for model `{model}`. Server said: {said}"),
            true,
        ),
        _ if refusals::exceeds_context(status, body) => (
            format!(
                "{base_url} rejected the request for model `{model}`: {CONTEXT_HINT}. Server \
                 said: {said}"
            ),
            false,
        ),
        _ => (
            format!("{base_url} rejected the request for model `{model}`: {said}"),
            false,
        ),
    };
    Failure {
        message,
        status: Some(code),
        retryable,
        retry_after: retryable.then(|| retry::retry_after(headers)).flatten(),
        source: None,
    }
}

/// Maps a failure to connect, send, or read the reply.
pub(super) fn transport_failure(ctx: &Context<'_>, err: reqwest::Error) -> Failure {
    // The message names the endpoint as shown; reqwest's own would quote the real URL,
    // with any secret its query holds.
    let err = err.without_url();
    let cause = quote(ctx, &error_chain(&err));
    let message = if err.is_connect() {
        format!(
            "could not connect to {}: {cause}. Is the server running and OPENAI_BASE_URL \
             right? (for Ollama: `ollama serve`)",
            ctx.base_url
        )
    } else if err.is_timeout() {
        format!(
            "no complete reply from {} within {:?}; slow (e.g. local CPU) models may need a \
             longer request timeout (OpenAiConfig::request_timeout): {cause}",
            ctx.endpoint, ctx.request_timeout
        )
    } else {
        format!("request to {} failed: {cause}", ctx.endpoint)
    };
    Failure {
        message,
        status: None,
        retryable: err.is_connect() || err.is_timeout() || err.is_request() || err.is_body(),
        retry_after: None,
        source: Some(Box::new(err)),
    }
}

/// The error for a 200 reply whose body is unusable. Retrying would get the same body.
pub(super) fn malformed_error(ctx: &Context<'_>, detail: &str, body: &[u8]) -> Error {
    let start = quote(ctx, String::from_utf8_lossy(body).trim());
    Error::Llm {
        message: format!(
            "{} answered 200 but not with a chat completion: {detail}. Check that \
             OPENAI_BASE_URL points at an OpenAI-compatible API (usually ending in /v1). \
             Body: {start}",
            ctx.endpoint
        ),
        status: Some(200),
        retryable: false,
        source: None,
    }
}

/// A streamed reply that stopped coming: no response headers, or no next piece of the
/// body, within the request timeout. `waiting_for` names what was awaited.
pub(super) fn stalled_failure(ctx: &Context<'_>, waiting_for: &str) -> Failure {
    Failure {
        message: format!(
            "no {waiting_for} from {} within {:?} while streaming; slow (e.g. local CPU) \
             models may need a longer request timeout (OpenAiConfig::request_timeout, which \
             for a stream bounds the wait for the headers and each pause between pieces)",
            ctx.endpoint, ctx.request_timeout
        ),
        status: None,
        retryable: true,
        retry_after: None,
        source: None,
    }
}

/// A streamed reply that went on for the progress timeout without progress: the server
/// kept the connection busy (keep-alive comments, empty chunks) but sent none of the
/// reply. Retryable, like a stalled stream.
pub(super) fn no_progress_failure(ctx: &Context<'_>, received: usize) -> Failure {
    Failure {
        message: format!(
            "{} sent nothing of the reply (no text, reasoning, tool call or finish reason) \
             for {:?} while streaming, only keep-alive comments or empty chunks ({received} \
             bytes in all); a reasoning model that thinks silently behind a proxy may need a \
             longer progress timeout (OpenAiConfig::progress_timeout)",
            ctx.endpoint, ctx.progress_timeout
        ),
        status: None,
        retryable: true,
        retry_after: None,
        source: None,
    }
}

/// A streamed reply whose connection ended (cleanly or with `cause`) before the reply
/// was complete, after `received` bytes of body.
pub(super) fn cut_off_failure(
    ctx: &Context<'_>,
    received: usize,
    cause: Option<reqwest::Error>,
) -> Failure {
    let cause = cause.map(reqwest::Error::without_url);
    let cause_text = match &cause {
        Some(err) => format!(": {}", quote(ctx, &error_chain(err))),
        None => String::new(),
    };
    Failure {
        message: format!(
            "the connection closed mid-reply after {received} bytes from {}, before the \
             model finished (a proxy or server timeout, or the server stopped){cause_text}",
            ctx.endpoint
        ),
        status: None,
        retryable: true,
        retry_after: None,
        source: cause.map(|err| Box::new(err) as _),
    }
}

/// A stream that ended with `[DONE]` after `received` bytes holding no answer: no text,
/// no tool call, no finish reason. Retryable, like a reply cut off before it finished,
/// and like a whole reply with no choice ([`no_choice_failure`]).
pub(super) fn empty_stream_failure(ctx: &Context<'_>, received: usize) -> Failure {
    Failure {
        message: format!(
            "the stream from {} ended after {received} bytes with no answer in it (no \
             choice, or none with text, a tool call or a finish reason, before `[DONE]`): \
             the endpoint's fault, as if the reply had been cut off",
            ctx.endpoint
        ),
        status: None,
        retryable: true,
        retry_after: None,
        source: None,
    }
}

/// A 200 reply in the chat-completions shape with no choice in it (`"choices": []`): no
/// answer, which the endpoint owes (a proxy that lost its upstream sends such a reply).
/// Retryable, like a stream that ends before any choice ([`empty_stream_failure`]); not
/// the final "not a chat completion" of [`malformed_error`], whose advice to check the
/// base URL would mislead: the URL reached a chat-completions API.
pub(super) fn no_choice_failure(ctx: &Context<'_>, body: &[u8]) -> Failure {
    Failure {
        message: format!(
            "{} answered 200 with no choice in the reply (`choices` is empty), so no answer: \
             the endpoint's fault, as if the reply had been cut off. Body: {}",
            ctx.endpoint,
            quote(ctx, String::from_utf8_lossy(body).trim())
        ),
        status: Some(200),
        retryable: true,
        retry_after: None,
        source: None,
    }
}

/// A stream that ended with `[DONE]`, without a finish reason, while the arguments of a
/// call of tool `tool` were unfinished (`arguments` so far): the reply was cut off
/// mid-call, so the call is not run. Retryable, like a connection closed there.
pub(super) fn unfinished_call_failure(
    ctx: &Context<'_>,
    received: usize,
    tool: &str,
    arguments: &str,
) -> Failure {
    let call = if tool.is_empty() {
        "a tool call not yet named".to_owned()
    } else {
        format!("a call of tool `{}`", quote(ctx, tool))
    };
    let so_far = format!(
        "its arguments stop mid-JSON after {} bytes",
        arguments.len()
    );
    Failure {
        message: format!(
            "the stream from {} ended with `[DONE]` after {received} bytes, with no finish \
             reason, in the middle of {call} ({so_far}), as if the reply had been cut off; \
             the call was not run",
            ctx.endpoint
        ),
        status: None,
        retryable: true,
        retry_after: None,
        source: None,
    }
}

/// A streamed reply that went on past `limit` bytes (`what` says of what): stopped, not
/// retried (the same request would go on the same way).
pub(super) fn too_long_failure(ctx: &Context<'_>, what: &str, limit: usize) -> Failure {
    Failure {
        message: format!(
            "the streamed reply from {} for model `{}` went on past {} MiB {what}, more than \
             any reply a model writes, so reading stopped there",
            ctx.endpoint,
            ctx.model,
            limit >> 20
        ),
        status: None,
        retryable: false,
        retry_after: None,
        source: None,
    }
}

/// An error the server sent inside a stream (an `event: error`, or a chunk holding an
/// `error` object). `data` is the event's data; `delivered` says whether any of the reply
/// was handed out before it.
///
/// Before the first delta such an event is the streamed form of an error status (OpenRouter
/// sends its upstream's 502 that way, others `{"error":{"code":503,...}}`), and it is
/// retryable when its code is one a plain call retries ([`reported_error_is_transient`]).
/// After a delta it is final: a retry would show the reply's start twice.
pub(super) fn stream_error_failure(ctx: &Context<'_>, data: &str, delivered: bool) -> Failure {
    let said = quote(ctx, &wire::error_message(data.as_bytes()));
    let when = if delivered {
        "mid-reply"
    } else {
        "before the reply began"
    };
    Failure {
        message: format!(
            "{} reported an error {when} for model `{}`: {said}",
            ctx.endpoint, ctx.model
        ),
        status: None,
        retryable: !delivered && reported_error_is_transient(data),
        retry_after: None,
        source: None,
    }
}

/// An error a server reported in the body of a 200 reply (see
/// [`Undecodable::Reported`](wire::Undecodable::Reported)): OpenRouter answers 200 once a
/// model started, and reports an upstream that failed after that in the body. Retryable
/// when its code is one a plain call retries, as for a stream ([`reported_error_is_transient`]),
/// honouring a `Retry-After` then; otherwise final.
pub(super) fn reported_error_failure(
    ctx: &Context<'_>,
    headers: &HeaderMap,
    body: &[u8],
) -> Failure {
    let data = String::from_utf8_lossy(body);
    let retryable = reported_error_is_transient(&data);
    Failure {
        message: format!(
            "{} reported an error for model `{}` in a 200 reply: {}",
            ctx.endpoint,
            ctx.model,
            quote(ctx, &wire::error_message(body))
        ),
        status: Some(200),
        retryable,
        retry_after: retryable.then(|| retry::retry_after(headers)).flatten(),
        source: None,
    }
}

/// Whether the error a server reported (a stream event's `data`, or the body of a 200
/// reply) is one retrying may get past, by the rules of [`status_failure`]: its code (or
/// status) is 408, 409, 429 (not for exhausted quota) or 5xx, or its code or type says the
/// server is overloaded or rate limited, or failed itself (`server_error`).
fn reported_error_is_transient(data: &str) -> bool {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(data) else {
        return false;
    };
    let error = value
        .get("error")
        .filter(|e| e.is_object())
        .unwrap_or(&value);
    let names: Vec<String> = ["code", "type"]
        .iter()
        .filter_map(|key| error.get(*key)?.as_str())
        .map(str::to_ascii_lowercase)
        .collect();
    if names.iter().any(|name| name == "insufficient_quota") {
        return false;
    }
    let status = ["code", "status"]
        .iter()
        .find_map(|key| match error.get(*key)? {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
    matches!(status, Some(408 | 409 | 429 | 500..=599))
        || names.iter().any(|name| {
            name.contains("overloaded") || name.contains("rate_limit") || name == "server_error"
        })
}

/// A stream that is not a chat-completion event stream. Final, like a malformed reply.
pub(super) fn malformed_stream_failure(ctx: &Context<'_>, detail: &str, data: &str) -> Failure {
    Failure {
        message: format!(
            "{} streamed something other than chat-completion chunks: {detail}. Check that \
             OPENAI_BASE_URL points at an OpenAI-compatible API (usually ending in /v1), or \
             set FUSION_STREAM=false. Data: {}",
            ctx.endpoint,
            quote(ctx, data.trim())
        ),
        status: Some(200),
        retryable: false,
        retry_after: None,
        source: None,
    }
}

/// Server-supplied text made safe to show: the key masked, the length bounded.
fn quote(ctx: &Context<'_>, text: &str) -> String {
    let mut text = match ctx.api_key {
        Some(key) if !key.is_empty() => text.replace(key, "***"),
        _ => text.to_owned(),
    };
    if text.len() > MAX_QUOTE {
        let mut cut = MAX_QUOTE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    if text.is_empty() {
        text.push_str("(empty body)");
    }
    text
}

/// The error and its causes, joined: reqwest's own message alone ("error sending
/// request") hides the useful part ("Connection refused").
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(key: Option<&'static str>) -> Context<'static> {
        Context {
            base_url: "http://h/v1",
            endpoint: "http://h/v1/chat/completions",
            model: "m-1",
            api_key: key,
            request_timeout: Duration::from_secs(1),
            progress_timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn auth_404_and_400_are_final_and_say_what_to_fix() {
        let none = HeaderMap::new();
        let auth = status_failure(&ctx(None), StatusCode::UNAUTHORIZED, &none, b"{}");
        assert!(!auth.retryable);
        assert!(
            auth.message.contains("set OPENAI_API_KEY"),
            "{}",
            auth.message
        );
        let missing = status_failure(&ctx(None), StatusCode::NOT_FOUND, &none, b"");
        assert!(missing.message.contains("`m-1`"), "{}", missing.message);
        assert!(
            missing.message.contains("OPENAI_BASE_URL"),
            "{}",
            missing.message
        );
        let bad = status_failure(
            &ctx(None),
            StatusCode::BAD_REQUEST,
            &none,
            br#"{"error":{"message":"tools not supported"}}"#,
        );
        assert!(!bad.retryable);
        assert!(
            bad.message.contains("tools not supported"),
            "{}",
            bad.message
        );
    }

    #[test]
    fn quota_exhaustion_is_not_retried_but_rate_limits_are() {
        let none = HeaderMap::new();
        let quota = br#"{"error":{"message":"quota","code":"insufficient_quota"}}"#;
        assert!(!status_failure(&ctx(None), StatusCode::TOO_MANY_REQUESTS, &none, quota).retryable);
        assert!(status_failure(&ctx(None), StatusCode::TOO_MANY_REQUESTS, &none, b"").retryable);
        assert!(status_failure(&ctx(None), StatusCode::BAD_GATEWAY, &none, b"").retryable);
    }

    #[test]
    fn stream_errors_before_the_reply_are_retried_as_their_status_would_be() {
        let retried = |data: &str| stream_error_failure(&ctx(None), data, false).retryable;
        for data in [
            r#"{"error":{"code":502,"message":"Provider returned error"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}"#,
            r#"{"error":{"message":"overloaded","code":503}}"#,
            r#"{"error":{"message":"slow down","code":"429"}}"#,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            r#"{"error":{"message":"upstream failed","type":"server_error"}}"#,
        ] {
            assert!(retried(data), "{data}");
            let after = stream_error_failure(&ctx(None), data, true);
            assert!(!after.retryable, "{data}");
            assert!(after.message.contains("mid-reply"), "{}", after.message);
        }
        for data in [
            r#"{"error":{"message":"bad request","code":400}}"#,
            r#"{"error":{"message":"quota","code":429,"type":"insufficient_quota"}}"#,
            r#"{"error":{"message":"content policy","type":"invalid_request_error"}}"#,
            "model crashed",
        ] {
            assert!(!retried(data), "{data}");
        }
    }

    #[test]
    fn server_text_is_masked_and_shortened() {
        let body = format!(r#"{{"error":"bad key sk-live-1 {}"}}"#, "x".repeat(2000));
        let fail = status_failure(
            &ctx(Some("sk-live-1")),
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            body.as_bytes(),
        );
        assert!(!fail.message.contains("sk-live-1"));
        assert!(fail.message.len() < 1000);
    }
}
