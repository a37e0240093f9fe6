//! The request handler of [`MockLlmServer`](super::MockLlmServer): the
//! `POST /v1/chat/completions` route, the checks and refusals before the script, and how a
//! [`MockReply`] becomes an HTTP reply (whole, or streamed through `stream.rs` and
//! `sse.rs`).

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::reply::{MockDelta, MockReply, MockStreamEnd, MockToolCall, RecordedRequest};
use super::sse::{self, Pacing};
use super::state::{ReplyInProgress, Shared};
use super::stream::{self, Ending, ReplyInfo};

/// The chat-completions route over `shared`.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        // A 10,000-message history is several MB; axum's 2 MB default would refuse it.
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

/// What the handler decided to send, and when.
struct Answer {
    /// How long to wait before sending it.
    delay: Duration,
    /// The response; `None` never answers, leaving the client to give up.
    response: Option<Response>,
}

impl Answer {
    fn now(response: Response) -> Self {
        Answer {
            delay: Duration::ZERO,
            response: Some(response),
        }
    }
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Dropped when this future is, which is also what happens to a waiting handler whose
    // client goes away.
    let _in_progress = ReplyInProgress::start(&shared);
    let started = Instant::now();
    let answer = handle(&shared, &headers, &body);
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    shared.server_nanos.fetch_add(nanos, Ordering::SeqCst);
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    match answer.response {
        Some(response) => response,
        None => std::future::pending().await,
    }
}

fn handle(shared: &Arc<Shared>, headers: &HeaderMap, body: &[u8]) -> Answer {
    shared.count.fetch_add(1, Ordering::SeqCst);
    let request: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    let (reply, rule) = {
        let mut script = shared.script();
        if script.record {
            script.requests.push(RecordedRequest {
                body: request.clone(),
                headers: headers
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
            });
        }
        if let Some(key) = &script.api_key {
            let expected = format!("Bearer {key}");
            let given = headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes);
            if given != Some(expected.as_bytes()) {
                return Answer::now(error_response(
                    401,
                    "Incorrect API key provided.",
                    "invalid_api_key",
                    None,
                ));
            }
        }
        if !request.is_object() {
            return Answer::now(error_response(
                400,
                "mock: the request body is not a JSON object",
                "invalid_request_error",
                None,
            ));
        }
        // Refusals come before the queue, as a real server refuses before generating:
        // the scripted reply is still there for the client's retry in another mode.
        if script.reject_streaming && wants_stream(&request) {
            return Answer::now(error_response(
                400,
                "stream is not supported by this server",
                "invalid_request_error",
                None,
            ));
        }
        if script.reject_tools && offers_tools(&request) {
            return Answer::now(error_response(
                400,
                "registry.ollama.ai/library/mock does not support tools",
                "invalid_request_error",
                None,
            ));
        }
        match script.queue.pop_front() {
            Some(reply) => (Some(reply), None),
            None => (script.default.clone(), script.rule.clone()),
        }
    };
    // The rule runs outside the lock: it may be slow, and must not block other requests.
    let reply = match (reply, rule) {
        (Some(reply), _) => reply,
        (None, Some(rule)) => rule(&request),
        (None, None) => {
            return Answer::now(error_response(
                500,
                "mock script exhausted: the test queued fewer replies than the client asked \
                 for (queue more with push_* or set a default with set_default)",
                "mock_script_exhausted",
                None,
            ));
        }
    };
    answer(shared, &request, reply, Duration::ZERO, body.len())
}

/// Whether the request asks for server-sent events.
fn wants_stream(request: &Value) -> bool {
    request.get("stream") == Some(&Value::Bool(true))
}

/// Whether the request offers the model any tools (Ollama refuses only a non-empty list).
fn offers_tools(request: &Value) -> bool {
    request
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|tools| !tools.is_empty())
}

/// How `reply` answers `request` after `delay`: streamed when asked for and streamable,
/// else whole.
fn answer(
    shared: &Arc<Shared>,
    request: &Value,
    reply: MockReply,
    delay: Duration,
    request_len: usize,
) -> Answer {
    let streaming = wants_stream(request);
    let next_call_id = |call: &MockToolCall| call_id(shared, call);
    let (deltas, ending) = match reply {
        MockReply::Delayed { delay: more, reply } => {
            return answer(shared, request, *reply, delay + more, request_len);
        }
        MockReply::Text(text) if streaming => (
            stream::reply_deltas(&text, &[], next_call_id),
            Ending::Finish("stop"),
        ),
        MockReply::ToolCalls { content, calls } if streaming => (
            stream::reply_deltas(&content, &calls, next_call_id),
            Ending::Finish("tool_calls"),
        ),
        MockReply::Partial { deltas, end } if streaming => (deltas, Ending::BreakOff(end)),
        // A plain request, or an error reply, which is never streamed.
        whole => return whole_answer(shared, request, whole, delay, request_len),
    };
    // The status and headers go out now; the body waits out the delay itself.
    Answer::now(stream_response(
        shared,
        request,
        &deltas,
        ending,
        delay,
        request_len,
    ))
}

/// `reply` as one response, sent after `delay`.
fn whole_answer(
    shared: &Arc<Shared>,
    request: &Value,
    reply: MockReply,
    delay: Duration,
    request_len: usize,
) -> Answer {
    let response = match reply {
        MockReply::Delayed { delay: more, reply } => {
            return whole_answer(shared, request, *reply, delay + more, request_len);
        }
        MockReply::Text(text) => completion_response(
            shared,
            request,
            json!({"role": "assistant", "content": text}),
            "stop",
            request_len,
        ),
        MockReply::ToolCalls { content, calls } => {
            let calls: Vec<Value> = calls
                .iter()
                .map(|call| {
                    json!({"id": call_id(shared, call), "type": "function",
                           "function": {"name": call.name, "arguments": call.arguments}})
                })
                .collect();
            let content = if content.is_empty() {
                Value::Null
            } else {
                Value::String(content)
            };
            completion_response(
                shared,
                request,
                json!({"role": "assistant", "content": content, "tool_calls": calls}),
                "tool_calls",
                request_len,
            )
        }
        // Unstreamed, a partial reply has no deltas to show; only its ending is left.
        MockReply::Partial { end, .. } => match end {
            MockStreamEnd::Stall => {
                return Answer {
                    delay,
                    response: None,
                };
            }
            MockStreamEnd::Close => dropped_connection(),
            MockStreamEnd::Error(message) => error_response(500, &message, "server_error", None),
        },
        MockReply::Status {
            status,
            retry_after,
        } => {
            let message = format!("mock error: HTTP {status}");
            error_response(status, &message, "mock_error", retry_after)
        }
        MockReply::Raw { status, body } => (
            status_code(status),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
    };
    Answer {
        delay,
        response: Some(response),
    }
}

/// A streamed reply of `deltas`, paced by `delay` and by the gate of the next held
/// stream, if the test holds one.
fn stream_response(
    shared: &Arc<Shared>,
    request: &Value,
    deltas: &[MockDelta],
    ending: Ending,
    delay: Duration,
    request_len: usize,
) -> Response {
    let info = ReplyInfo {
        id: completion_id(shared),
        model: model_of(request),
        prompt_tokens: request_len / 4,
        include_usage: request.pointer("/stream_options/include_usage") == Some(&Value::Bool(true)),
    };
    let plan = stream::plan(deltas, ending, &info);
    let (gate, buffered) = {
        let mut script = shared.script();
        (script.held_streams.pop_front(), script.buffer_streams)
    };
    let pacing = Pacing {
        first_event_delay: delay,
        gate,
        buffered,
    };
    sse::response(plan, pacing, ReplyInProgress::start(shared))
}

/// A whole `chat.completion` holding `message`.
fn completion_response(
    shared: &Shared,
    request: &Value,
    message: Value,
    finish_reason: &str,
    request_len: usize,
) -> Response {
    // Rough token counts (4 bytes a token) so clients that log usage have something real.
    let completion_len = message.to_string().len();
    let (prompt_tokens, completion_tokens) = (request_len / 4, completion_len / 4 + 1);
    let body = json!({
        "id": completion_id(shared),
        "object": "chat.completion",
        "created": 0,
        "model": model_of(request),
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The call's scripted id, or the next server-assigned one (`call_1`, `call_2`, ...).
fn call_id(shared: &Shared, call: &MockToolCall) -> String {
    call.id.clone().unwrap_or_else(|| {
        format!(
            "call_{}",
            shared.next_call_id.fetch_add(1, Ordering::SeqCst)
        )
    })
}

fn completion_id(shared: &Shared) -> String {
    format!("chatcmpl-mock-{}", shared.count.load(Ordering::SeqCst))
}

fn model_of(request: &Value) -> Value {
    request.get("model").cloned().unwrap_or(Value::from("mock"))
}

/// A 200 whose body fails at once: the server drops the connection before the body is
/// complete.
fn dropped_connection() -> Response {
    let cut = futures::stream::once(async {
        Err::<Bytes, _>(io::Error::other("mock: connection dropped"))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(cut),
    )
        .into_response()
}

fn error_response(status: u16, message: &str, code: &str, retry_after: Option<String>) -> Response {
    let body = json!({"error": {"message": message, "type": code, "code": code}}).to_string();
    let mut response = (
        status_code(status),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    // A value that is not a valid header (a test's typo) is left out rather than
    // failing the reply: the client then sees a plain error status.
    if let Some(value) = retry_after.and_then(|v| HeaderValue::try_from(v).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
