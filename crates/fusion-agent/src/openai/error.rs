//! The one place where HTTP statuses and reqwest errors become [`Error::Llm`], with a
//! message that says what to fix and a verdict on whether retrying can help.
//!
//! Retry policy follows OpenAI's own clients: 408, 409, 429 and 5xx are retried, as are
//! connection errors and timeouts; other 4xx are the caller's mistake and fail at once.
//! Server text is quoted in messages (it is usually the most precise diagnosis) but
//! shortened, and any occurrence of the API key in it is masked.

use std::time::Duration;

use fusion_core::Error;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::{retry, wire};

/// Longest quoted server text in an error message, in bytes.
const MAX_QUOTE: usize = 600;

/// What messages may name about the client. Holds the key only to mask it.
pub(super) struct Context<'a> {
    pub base_url: &'a str,
    pub endpoint: &'a str,
    pub model: &'a str,
    pub api_key: Option<&'a str>,
    pub request_timeout: Duration,
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
