//! [`SessionClient`]: the HTTP client of a streamable-HTTP server's transport, which
//! watches the server's session: it says when the SDK has opened the session again, and
//! when the session is over though the SDK goes on using it.
//!
//! A server answers HTTP 404 to a session it no longer knows (it restarted, or expired
//! the session), and rmcp then opens a new one by itself, repeating `initialize` and
//! `notifications/initialized` and sending the request again, without telling the client
//! handler. The server behind the new session may list other tools than the one the
//! tools were listed from (an upgrade, another configuration), so the tools are listed
//! again, as after a stdio server's restart: this client sees every request the
//! transport sends, and each `notifications/initialized` accepted after the first one
//! means a new session.
//!
//! rmcp recovers from nothing else: a server that answers a session it lost with another
//! status (the TypeScript SDK's Express example answers HTTP 400, "No valid session ID
//! provided") would fail every later request, `initialize` never sent again. So the
//! session is taken as over ([`SessionClient::is_over`], and the connection opens a new
//! one for the next call) when a request in it is refused with a 4xx other than 401, 403
//! (a token, which a new session would not mend) and 429 (a rate limit, which it would
//! worsen), or when two POSTs in a row fail (a 5xx, no answer at all, a refused
//! notification). A server without sessions (no `Mcp-Session-Id`) has none to lose: only
//! failures in a row count there.
//!
//! An error status whose body is a JSON-RPC error carrying no id (`"id": null`, as the
//! TypeScript and Python SDKs answer a request they refuse before reading it) is passed
//! on by rmcp as a message for no request, which its service drops: the call would wait
//! out its whole timeout. Such an answer to a request fails the request at once here,
//! with the server's message. rmcp does not pass that answer's status on, so its code
//! stands for it: "internal error" (-32603, the SDKs' 500) counts as a failure, any other
//! (their 400, 406, 415) as a refusal.
//!
//! The same error can come inside the SSE stream a server answers a POST with (HTTP 200,
//! `text/event-stream`): JSON-RPC 2.0 gives an error `"id": null` when the server could
//! not read the request's id (a parse error, an invalid request), and rmcp drops it there
//! too: the call failed when the stream ended, as "Transport closed", the server's words
//! lost (or waited out its timeout, had the server kept the stream open). A POST's stream
//! answers that POST's request alone, so such an error in it is given the request's id
//! ([`readdressed`]), and the call fails at once with the server's message, as the
//! server's other errors do.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::StreamExt;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, ClientNotification, ErrorCode, JsonRpcMessage, RequestId};
use rmcp::transport::common::client_side_sse::BoxedSseResponse;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::http_client::{hide_url, redact_urls};

/// Called when the SDK has opened the session again.
pub type OnNewSession = Arc<dyn Fn() + Send + Sync>;

type PostResult = Result<StreamableHttpPostResponse, StreamableHttpError<reqwest::Error>>;

/// How many POSTs in a row may fail before the session is taken as over.
const FAILURES_ENDING_A_SESSION: usize = 2;

/// reqwest's client, calling `on_new_session` for every session opened after the first,
/// and saying when the session is over.
#[derive(Clone)]
pub struct SessionClient {
    client: reqwest::Client,
    state: Arc<SessionState>,
    on_new_session: OnNewSession,
}

#[derive(Default)]
struct SessionState {
    /// `notifications/initialized` accepted: one per session.
    sessions: AtomicUsize,
    /// POSTs that failed since the last one answered.
    failures: AtomicUsize,
    over: AtomicBool,
}

/// What one POST's outcome says of the session.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Answered: the session works.
    Answered,
    /// Refused in a way a new session would not mend (401, 403, 429), or a session the
    /// SDK opens again itself (404): says nothing of the session.
    Neither,
    /// Refused (a 4xx): the server does not take the request in this session.
    Refused,
    /// Failed (a 5xx, no answer).
    Failed,
}

impl SessionClient {
    /// `client` (its redirect policy and timeouts kept), watched.
    pub fn new(client: reqwest::Client, on_new_session: OnNewSession) -> Self {
        Self {
            client,
            state: Arc::default(),
            on_new_session,
        }
    }

    /// Whether the session is over: a request in it was refused, or two POSTs in a row
    /// failed.
    /// The SDK would go on sending into it; a new connection is to be opened instead.
    /// Cheap.
    pub fn is_over(&self) -> bool {
        self.state.over.load(Ordering::SeqCst)
    }

    /// Notes the POST of `message` in session `session_id`, which the server answered
    /// with `result`, and returns the result the SDK is to see.
    fn posted(&self, message: &Posted, session_id: Option<&str>, result: PostResult) -> PostResult {
        let (result, outcome) = addressed(message.request.as_ref(), result);
        let state = &self.state;
        if message.initialized
            && result.is_ok()
            && state.sessions.fetch_add(1, Ordering::SeqCst) > 0
        {
            tracing::info!("MCP server's HTTP session opened again; listing its tools again");
            (self.on_new_session)();
        }
        let over = match outcome {
            Outcome::Answered => {
                state.failures.store(0, Ordering::SeqCst);
                false
            }
            Outcome::Neither => false,
            // A notification refused (one the server does not take, say) counts only as a
            // failure: a request shows soon enough whether the session is known.
            Outcome::Refused if session_id.is_some() && message.request.is_some() => true,
            Outcome::Refused | Outcome::Failed => {
                state.failures.fetch_add(1, Ordering::SeqCst) + 1 >= FAILURES_ENDING_A_SESSION
            }
        };
        if over && !state.over.swap(true, Ordering::SeqCst) {
            // reqwest's error quotes the request's URL, which may carry a key.
            let error = result.as_ref().err().map(|e| redact_urls(&e.to_string()));
            tracing::info!(
                error = error.as_deref().unwrap_or_default(),
                "MCP server's HTTP session is taken as over; a new one is opened for the next \
                 call"
            );
        }
        result
    }
}

/// What of a POSTed message matters here.
struct Posted {
    /// The id of a request, which awaits an answer.
    request: Option<RequestId>,
    /// Whether it is `notifications/initialized`, which ends opening a session.
    initialized: bool,
}

impl Posted {
    fn of(message: &ClientJsonRpcMessage) -> Self {
        Self {
            request: match message {
                JsonRpcMessage::Request(request) => Some(request.id.clone()),
                _ => None,
            },
            initialized: matches!(
                message,
                JsonRpcMessage::Notification(n)
                    if matches!(n.notification, ClientNotification::InitializedNotification(_))
            ),
        }
    }
}

/// `result` as the SDK is to see it, and what it says of the session. A JSON-RPC error
/// answering `request` but carrying another id (none, `null`, the Python SDK's
/// `"server-error"`) becomes the request's failure: passed on, it would answer nothing.
fn addressed(request: Option<&RequestId>, result: PostResult) -> (PostResult, Outcome) {
    match result {
        Ok(StreamableHttpPostResponse::Json(JsonRpcMessage::Error(error), _))
            if request.is_some() && error.id.as_ref() != request =>
        {
            let outcome = if error.error.code == ErrorCode::INTERNAL_ERROR {
                Outcome::Failed
            } else {
                Outcome::Refused
            };
            let text = format!(
                "the server refused the request before reading it: {} (JSON-RPC error {}, \
                 addressed to no request)",
                error.error.message, error.error.code.0
            );
            (
                Err(StreamableHttpError::UnexpectedServerResponse(text.into())),
                outcome,
            )
        }
        Ok(StreamableHttpPostResponse::Sse(stream, session)) => {
            let stream = match request {
                Some(request) => readdressed(stream, request.clone()),
                None => stream,
            };
            (
                Ok(StreamableHttpPostResponse::Sse(stream, session)),
                Outcome::Answered,
            )
        }
        Ok(response) => (Ok(response), Outcome::Answered),
        Err(error) => {
            let outcome = outcome_of(&error);
            (Err(error), outcome)
        }
    }
}

/// The SSE stream answering the POST of `request`, in which a JSON-RPC error carrying no
/// id is given the request's: the stream answers that request alone, and rmcp would drop
/// the error as answering none.
fn readdressed(stream: BoxedSseResponse, request: RequestId) -> BoxedSseResponse {
    stream
        .map(move |event| {
            event.map(|mut event| {
                if let Some(data) = &event.data
                    && let Some(addressed) = error_given_id(data, &request)
                {
                    event.data = Some(addressed);
                }
                event
            })
        })
        .boxed()
}

/// `data`, a JSON-RPC error whose `id` is null or missing, as JSON with `id` set to
/// `request`; `None` for any other message (left as it is).
fn error_given_id(data: &str, request: &RequestId) -> Option<String> {
    /// The members telling an error for no request from anything else, read without
    /// building the rest: a result event may be megabytes.
    #[derive(serde::Deserialize)]
    struct Members {
        #[serde(default)]
        id: Option<IgnoredAny>,
        #[serde(default)]
        error: Option<IgnoredAny>,
        #[serde(default)]
        method: Option<IgnoredAny>,
    }
    let members: Members = serde_json::from_str(data).ok()?;
    if members.id.is_some() || members.error.is_none() || members.method.is_some() {
        return None;
    }
    let mut message: serde_json::Map<String, Value> = serde_json::from_str(data).ok()?;
    message.insert("id".to_owned(), serde_json::to_value(request).ok()?);
    Some(Value::Object(message).to_string())
}

/// What a failed POST says of the session.
fn outcome_of(error: &StreamableHttpError<reqwest::Error>) -> Outcome {
    let status = match error {
        StreamableHttpError::AuthRequired(_)
        | StreamableHttpError::InsufficientScope(_)
        | StreamableHttpError::SessionExpired => return Outcome::Neither,
        StreamableHttpError::HttpStatus(error) => error.status,
        // rmcp words any other error status as `HTTP 400 Bad Request: <body>`.
        StreamableHttpError::UnexpectedServerResponse(text) => {
            match text
                .strip_prefix("HTTP ")
                .and_then(|t| t.get(..3)?.parse().ok())
            {
                Some(status) => status,
                None => return Outcome::Failed,
            }
        }
        _ => return Outcome::Failed,
    };
    match status {
        401 | 403 | 429 => Outcome::Neither,
        400..=499 => Outcome::Refused,
        _ => Outcome::Failed,
    }
}

impl StreamableHttpClient for SessionClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> PostResult {
        let posted = Posted::of(&message);
        let session = session_id.clone();
        let result = self
            .client
            .post_message(uri, message, session_id, auth_header, custom_headers)
            .await
            .map_err(hide_url);
        self.posted(&posted, session.as_deref(), result)
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> PostResult {
        let posted = Posted::of(&message);
        let session = session_id.clone();
        let result = self
            .client
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
            .map_err(hide_url);
        self.posted(&posted, session.as_deref(), result)
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> PostResult {
        let posted = Posted::of(&message);
        let session = session_id.clone();
        let result = self
            .client
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                limits,
            )
            .await
            .map_err(hide_url);
        self.posted(&posted, session.as_deref(), result)
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.client
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
            .map_err(hide_url)
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxedSseResponse, StreamableHttpError<Self::Error>> {
        self.client
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await
            .map_err(hide_url)
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxedSseResponse, StreamableHttpError<Self::Error>> {
        self.client
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
            .map_err(hide_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{ErrorData, JsonRpcError, NumberOrString, ServerJsonRpcMessage};
    use rmcp::transport::streamable_http_client::HttpStatusError;

    fn text(text: &'static str) -> StreamableHttpError<reqwest::Error> {
        StreamableHttpError::UnexpectedServerResponse(text.into())
    }

    fn status(status: u16) -> StreamableHttpError<reqwest::Error> {
        StreamableHttpError::HttpStatus(HttpStatusError::new(status, None))
    }

    #[test]
    fn a_4xx_refuses_and_a_5xx_fails_but_tokens_and_rate_limits_say_nothing() {
        for (error, outcome) in [
            (
                text("HTTP 400 Bad Request: No valid session ID provided"),
                Outcome::Refused,
            ),
            (text("HTTP 404 Not Found: "), Outcome::Refused),
            (
                text("HTTP 401 Unauthorized: invalid token"),
                Outcome::Neither,
            ),
            (text("HTTP 403 Forbidden: "), Outcome::Neither),
            (status(429), Outcome::Neither),
            (StreamableHttpError::SessionExpired, Outcome::Neither),
            (status(503), Outcome::Failed),
            (
                text("could not parse JSON response as ServerJsonRpcMessage"),
                Outcome::Failed,
            ),
            (StreamableHttpError::UnexpectedEndOfStream, Outcome::Failed),
        ] {
            let said = error.to_string();
            assert_eq!(outcome_of(&error), outcome, "{said}");
        }
    }

    #[test]
    fn an_error_addressed_to_no_request_fails_the_request_it_answers() {
        let request = RequestId::from(NumberOrString::Number(7));
        let answer = |id: Option<RequestId>, code: ErrorCode| -> PostResult {
            let error = ErrorData::new(code, "Bad Request: No valid session ID provided", None);
            let message = ServerJsonRpcMessage::Error(JsonRpcError::new(id, error));
            Ok(StreamableHttpPostResponse::Json(message, None))
        };
        let (result, outcome) = addressed(Some(&request), answer(None, ErrorCode(-32000)));
        let Err(error) = result else {
            panic!("an error for no request should fail the request")
        };
        assert!(
            error.to_string().contains("No valid session ID provided"),
            "{error}"
        );
        assert_eq!(outcome, Outcome::Refused);
        let other = RequestId::from(NumberOrString::String("server-error".into()));
        let (result, outcome) = addressed(
            Some(&request),
            answer(Some(other), ErrorCode::INTERNAL_ERROR),
        );
        assert!(result.is_err());
        assert_eq!(outcome, Outcome::Failed);
        // The request's own error is the SDK's to pass on, as is anything a notification
        // is answered with.
        let (result, outcome) =
            addressed(Some(&request), answer(Some(request.clone()), ErrorCode(-1)));
        assert!(result.is_ok());
        assert_eq!(outcome, Outcome::Answered);
        let (result, _) = addressed(None, answer(None, ErrorCode(-1)));
        assert!(result.is_ok());
    }

    #[test]
    fn only_an_error_without_an_id_is_given_the_requests_in_its_stream() {
        let request = RequestId::from(NumberOrString::Number(7));
        let given = |data: &str| error_given_id(data, &request);
        let error =
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#;
        let addressed: Value = serde_json::from_str(&given(error).unwrap()).unwrap();
        assert_eq!(addressed["id"], 7);
        assert_eq!(addressed["error"]["message"], "Parse error");
        let missing = r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"}}"#;
        assert!(given(missing).is_some());
        for left in [
            r#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"its own"}}"#,
            r#"{"jsonrpc":"2.0","id":7,"result":{"content":[]}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"error":"x"}}"#,
            r#"{"jsonrpc":"2.0","method":"log","error":{}}"#,
            "not json",
        ] {
            assert_eq!(given(left), None, "{left}");
        }
    }
}
