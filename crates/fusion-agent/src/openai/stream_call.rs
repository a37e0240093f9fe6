//! `OpenAiClient`'s [`LlmClient::chat_stream`]: one streamed call, retried like a plain
//! one until its first delta reaches the caller, and never after.
//!
//! Once a delta was delivered the caller may have shown it, so a retry would show the
//! reply twice: a later failure is an `Err` item instead. Servers that do not stream are
//! handled here too: a refusal of the streaming request (400/422 naming `stream`) repeats
//! the call without it, and once that is answered turns streaming off for the client and
//! its clones; a whole JSON reply to a streaming request is replayed as deltas.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fusion_core::Result;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use tracing::{Instrument, Span, debug, info, warn};

use super::error::{self, Failure};
use super::stream::SseReply;
use super::{OpenAiClient, finish_whole, log_success, whole_reply};
use super::{refusals, request, sendable};
use crate::llm::{ChatDelta, ChatRequest, ChatResponse, ChatStream, LlmClient, replay_as_deltas};

/// How a streaming request was answered, once it is known.
enum Opened<'a> {
    /// An event stream whose first delta has arrived.
    Live(LiveReply<'a>),
    /// A whole reply: the server ignored `stream`, or refused it and was asked again.
    Whole(ChatResponse),
}

/// What one attempt at a streaming request got.
enum Opening<'a> {
    /// An event stream and its first delta.
    Live(Box<SseReply<'a>>, ChatDelta),
    /// A whole reply (the inner `Err` is a malformed one: final, like in a plain call).
    Whole(Result<ChatResponse>),
    /// A 400/422 about streaming; holds what the server said.
    Refused(String),
}

/// A live event stream and what the success log line needs.
struct LiveReply<'a> {
    reply: Box<SseReply<'a>>,
    first: Option<ChatDelta>,
    started: Instant,
    attempts: u32,
    first_delta: Duration,
    span: Span,
}

impl OpenAiClient {
    /// The stream [`LlmClient::chat_stream`] returns.
    pub(super) fn stream_reply<'a>(&'a self, request: &'a ChatRequest<'_>) -> ChatStream<'a> {
        if !self.streams() {
            return stream::once(self.chat(request))
                .flat_map(|reply| match reply {
                    Ok(response) => replay(response),
                    Err(error) => stream::iter([Err(error)]).boxed(),
                })
                .boxed();
        }
        let span = self.call_span(request, true);
        let ids = self.call_ids();
        stream::once(self.open_stream(request, span.clone()).instrument(span))
            .flat_map(move |opened| match opened {
                Ok(Opened::Live(live)) => live.into_stream(),
                Ok(Opened::Whole(response)) => replay(response),
                Err(error) => {
                    let error = refusals::explain_refused_call_ids(error, request, ids);
                    stream::iter([Err(error)]).boxed()
                }
            })
            .map(move |item| match item {
                Ok(mut delta) => {
                    sendable::restore_delta_names(&mut delta, &request.tools);
                    Ok(delta)
                }
                // Before or amid the reply: an id the server quotes is named as stored.
                Err(error) => Err(refusals::name_stored_call_ids(error, request, ids)),
            })
            .boxed()
    }

    /// Sends a streaming request, retrying until a first delta or a whole reply arrives.
    async fn open_stream<'a>(
        &'a self,
        request: &'a ChatRequest<'_>,
        span: Span,
    ) -> Result<Opened<'a>> {
        let model = &self.config.model;
        let native_tools = self.config.native_tools;
        let body = request::encode_request(model, request, native_tools, true, self.call_ids())?;
        super::log_request(request, &body);
        let started = Instant::now();
        // Built once: the body becomes shared bytes, so each retry's clone is a refcount.
        // No timeout here: the whole stream may legitimately outlast any fixed bound.
        let http_request = self
            .http
            .post(&self.request_url)
            .header(ACCEPT, HeaderValue::from_static("text/event-stream"))
            .body(body)
            .build()
            .map_err(|e| error::transport_failure(&self.context(), e).into_error(1))?;
        let (opening, attempts) = self
            .retrying(&http_request, started, |r| self.open_attempt(r))
            .await?;
        match opening {
            Opening::Live(reply, first) => Ok(Opened::Live(LiveReply {
                reply,
                first: Some(first),
                started,
                attempts,
                first_delta: started.elapsed(),
                span,
            })),
            Opening::Whole(outcome) => finish_whole(outcome, started, attempts).map(Opened::Whole),
            Opening::Refused(said) => {
                warn!(
                    server_said = %said,
                    "the server refused a streaming request; repeating it without \
                     streaming, and once that is answered this client will not stream again"
                );
                let body = self.request_body(request)?;
                let response = self.send_with_retries(body).await?;
                // Only now: a 400 that merely names a word starting `stream` (a tool
                // called `stream_logs`, a model `streamer-7b`) fails without streaming
                // too, and was no refusal of it; streaming stays on for that client.
                self.stream_refused.store(true, Ordering::Relaxed);
                Ok(Opened::Whole(response))
            }
        }
    }

    /// One HTTP exchange up to the first delta. `Err` is a failure the retry loop may
    /// retry; [`Opening::Whole`] carries final answers.
    async fn open_attempt(&self, request: reqwest::Request) -> Result<Opening<'_>, Failure> {
        let ctx = self.context();
        let started = Instant::now();
        let timeout = self.config.request_timeout;
        let response = tokio::time::timeout(timeout, self.http.execute(request))
            .await
            .map_err(|_| error::stalled_failure(&ctx, "response headers"))?
            .map_err(|e| error::transport_failure(&ctx, e))?;
        let status = response.status();
        let is_event_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            });
        if status.is_success() && is_event_stream {
            debug!(
                status = status.as_u16(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "LLM stream started"
            );
            let mut reply = Box::new(SseReply::new(response.bytes_stream(), timeout, ctx));
            return match reply.next().await {
                Some(Ok(first)) => Ok(Opening::Live(reply, first)),
                Some(Err(failure)) => Err(failure),
                None => unreachable!("a reply ends with Done or a failure, never silently"),
            };
        }
        // An error, or a server that ignored `stream`: one whole body either way.
        let headers = response.headers().clone();
        let bytes = tokio::time::timeout(timeout, response.bytes())
            .await
            .map_err(|_| error::stalled_failure(&ctx, "complete reply"))?
            .map_err(|e| error::transport_failure(&ctx, e))?;
        match whole_reply(&ctx, status, &headers, &bytes, started) {
            Err(failure) if refusals::refuses_streaming(status, &bytes) => {
                Ok(Opening::Refused(failure.message))
            }
            outcome => outcome.map(Opening::Whole),
        }
    }
}

impl<'a> LiveReply<'a> {
    /// The first delta, then the rest as they come; a failure is the last item.
    fn into_stream(self) -> BoxStream<'a, Result<ChatDelta>> {
        stream::unfold(self, |mut live| async move {
            let item = match live.first.take() {
                Some(first) => Ok(first),
                None => live.reply.next().await?,
            };
            let item = live.span.in_scope(|| match item {
                Ok(ChatDelta::Done(response)) => {
                    let first_delta = Some(live.first_delta);
                    log_success(&response, live.started, live.attempts, first_delta);
                    Ok(ChatDelta::Done(response))
                }
                Ok(delta) => Ok(delta),
                Err(failure) => {
                    info!(
                        elapsed_ms = live.started.elapsed().as_millis() as u64,
                        attempts = live.attempts,
                        error = %failure.message,
                        "LLM call failed mid-stream; not retried, part of the reply was \
                         delivered"
                    );
                    // Retries ended with the first delta; the attempts before are no
                    // part of this failure.
                    Err(failure.into_error(1))
                }
            });
            Some((item, live))
        })
        .boxed()
    }
}

/// The deltas of a whole reply, as a stream.
fn replay<'a>(response: ChatResponse) -> BoxStream<'a, Result<ChatDelta>> {
    stream::iter(replay_as_deltas(response).into_iter().map(Ok)).boxed()
}
