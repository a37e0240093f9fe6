//! `OpenAiClient`: the bundled [`LlmClient`] for any OpenAI-compatible chat-completions API.
//!
//! One client speaks to OpenAI, Ollama (`http://localhost:11434/v1`), vLLM, the llama.cpp
//! server, LM Studio and OpenRouter: they all accept `POST {base_url}/chat/completions`.
//! Unlike the text ReAct mode ([`render_react_prompt`](crate::render_react_prompt)), which
//! puts tools in the prompt, this client offers tools through the API's native `tools`
//! field (unless [`OpenAiConfig::native_tools()`] is off). It owns timeouts and retries,
//! so an `Err` from [`LlmClient::chat`] is final; the API key never reaches logs or
//! `Debug` output.
//!
//! [`LlmClient::chat_stream`] streams natively (`"stream": true`, server-sent events),
//! unless [`OpenAiConfig::stream()`] is off; a server that refuses streaming, or ignores
//! the request and answers with a whole reply, still works (see [`OpenAiClient::streams`]).
//!
//! ```no_run
//! use std::borrow::Cow;
//! use fusion_agent::{ChatRequest, LlmClient, OpenAiClient};
//! use fusion_core::ChatMessage;
//!
//! # async fn demo() -> fusion_core::Result<()> {
//! // OPENAI_BASE_URL=http://localhost:11434/v1 FUSION_MODEL=llama3.1 for a local Ollama.
//! let client = OpenAiClient::from_env()?;
//! let question = ChatMessage::user("Say hello");
//! let request = ChatRequest { messages: vec![Cow::Borrowed(&question)], ..Default::default() };
//! let reply = client.chat(&request).await?;
//! println!("{}", reply.message.content);
//! # Ok(()) }
//! ```

mod config;
mod error;
mod prefix;
mod refusals;
mod request;
mod retry;
pub(crate) mod sendable;
mod sse;
mod stream;
mod stream_call;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fusion_core::{Error, Result};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tracing::{Instrument, debug, field, info, info_span, trace};

pub use config::{DEFAULT_BASE_URL, DEFAULT_MODEL, OLLAMA_BASE_URL, OpenAiConfig};
pub use refusals::rejects_native_tools;

use self::error::{Context, Failure};
use self::retry::Backoff;
use crate::llm::{ChatRequest, ChatResponse, ChatStream, LlmClient};

/// An [`LlmClient`] for OpenAI-compatible `POST {base_url}/chat/completions` endpoints.
///
/// Cheap to clone (the connection pool is shared). Retries 408/409/429/5xx, connection
/// errors and timeouts up to [`OpenAiConfig::max_retries()`] times with exponential backoff
/// and full jitter, honouring `Retry-After`; other failures are reported at once with a
/// message that says what to fix. A streamed call is retried the same way until its first
/// delta reached the caller, and never after: a later failure is the stream's last item.
#[derive(Clone)]
pub struct OpenAiClient {
    config: OpenAiConfig,
    /// `base_url` normalised and with any password masked, for messages.
    base_url_shown: String,
    /// The real URL requests go to (may hold a password, so never shown).
    request_url: String,
    endpoint_shown: String,
    /// Has no client-wide timeout: plain calls set theirs per request, streamed calls
    /// time each wait themselves (see [`OpenAiConfig::request_timeout`]).
    http: reqwest::Client,
    /// Set when the server refused a streaming request; shared by clones, which talk to
    /// the same server, so only the first call pays for the refusal.
    stream_refused: Arc<AtomicBool>,
}

impl OpenAiClient {
    /// Builds a client from `config`.
    ///
    /// Fails with [`Error::Config`] when the base URL is not http(s), the model name is
    /// empty, a header is invalid, or no API key is set for `api.openai.com`.
    pub fn new(mut config: OpenAiConfig) -> Result<Self> {
        // An empty key (e.g. `OPENAI_API_KEY=` in a .env file) means no key, not "Bearer ".
        config.api_key = config.api_key.filter(|key| !key.trim().is_empty());
        let base = config.validate()?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in &config.extra_headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|_| Error::Config(format!("invalid HTTP header name \"{name}\"")))?;
            let mut value = HeaderValue::try_from(value.as_str()).map_err(|_| {
                Error::Config(format!("the value of HTTP header \"{name}\" is not valid"))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        if let Some(key) = &config.api_key {
            // Never echo the key, even in this error.
            let mut value = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
                Error::Config(
                    "OPENAI_API_KEY contains characters not allowed in an HTTP header \
                     (a stray newline or quote?)"
                        .into(),
                )
            })?;
            // Keeps the value out of hyper's and reqwest's own debug output.
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = crate::http::http_client_builder()?
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| Error::Llm {
                message: format!("could not build the HTTP client: {e}"),
                status: None,
                retryable: false,
                source: Some(Box::new(e)),
            })?;
        // The endpoint's name goes on the path: a query of the base URL stays the query.
        let mut endpoint = base.clone();
        endpoint.set_path(&format!(
            "{}/chat/completions",
            base.path().trim_end_matches('/')
        ));
        let request_url = endpoint.to_string();
        let base_url_shown = config::display_url(&base);
        let endpoint_shown = config::display_url(&endpoint);
        Ok(Self {
            config,
            base_url_shown,
            request_url,
            endpoint_shown,
            http,
            stream_refused: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Builds a client from `OPENAI_BASE_URL`, `OPENAI_API_KEY` and `FUSION_MODEL`.
    ///
    /// See [`OpenAiConfig::from_env`]. A missing key is an [`Error::Config`] only for the
    /// default OpenAI endpoint; local servers such as Ollama need none.
    pub fn from_env() -> Result<Self> {
        Self::new(OpenAiConfig::from_env()?)
    }

    /// The settings this client was built with (for `Debug`, or cloned and changed to
    /// build a sibling client, say for another model).
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// The full URL requests are sent to (any password in it masked, and the values of its
    /// query but `api-version`'s).
    pub fn endpoint(&self) -> &str {
        &self.endpoint_shown
    }

    /// Whether [`LlmClient::chat_stream`] streams natively: [`OpenAiConfig::stream()`] is on
    /// and the server has not refused a streaming request from this client or a clone.
    /// When false, `chat_stream` makes a plain call and replays its reply as deltas.
    pub fn streams(&self) -> bool {
        self.config.stream && !self.stream_refused.load(Ordering::Relaxed)
    }

    /// The JSON body this client sends for `request`: the model, the messages without
    /// their `metadata`, the tools (in native tool-calling mode) and the sampling options.
    /// For logging, debugging, and the request-building benchmark.
    pub fn request_body(&self, request: &ChatRequest<'_>) -> Result<Vec<u8>> {
        Ok(request::encode_request(
            &self.config.model,
            request,
            self.config.native_tools,
            false,
            self.call_ids(),
        )?)
    }

    /// How this client sends the ids of stored calls ([`OpenAiConfig::portable_call_ids`]).
    fn call_ids(&self) -> sendable::CallIds {
        if self.config.portable_call_ids {
            sendable::CallIds::Portable
        } else {
            sendable::CallIds::AsStored
        }
    }

    fn context(&self) -> Context<'_> {
        Context {
            base_url: &self.base_url_shown,
            endpoint: &self.endpoint_shown,
            model: &self.config.model,
            api_key: self.config.api_key.as_deref(),
            request_timeout: self.config.request_timeout,
            progress_timeout: self.config.progress_timeout,
        }
    }

    /// The span every log line of one call is in.
    fn call_span(&self, request: &ChatRequest<'_>, streamed: bool) -> tracing::Span {
        info_span!(
            "llm_call",
            model = %self.config.model,
            attempt = field::Empty,
            messages = request.messages.len(),
            streamed,
        )
    }

    /// Sends `body`, retrying what can be retried.
    async fn send_with_retries(&self, body: Vec<u8>) -> Result<ChatResponse> {
        let started = Instant::now();
        // Built once: the body becomes shared bytes, so each retry's clone is a refcount.
        let request = self
            .http
            .post(&self.request_url)
            .timeout(self.config.request_timeout)
            .body(body)
            .build()
            .map_err(|e| error::transport_failure(&self.context(), e).into_error(1))?;
        let (outcome, attempts) = self
            .retrying(&request, started, |r| self.attempt(r))
            .await?;
        finish_whole(outcome, started, attempts)
    }

    /// Runs `attempt` on a copy of `request` until it returns something other than a
    /// retryable [`Failure`], waiting between tries ([`wait_to_retry`](Self::wait_to_retry));
    /// returns that and how many attempts it took.
    async fn retrying<T, F, Fut>(
        &self,
        request: &reqwest::Request,
        started: Instant,
        mut attempt: F,
    ) -> Result<(T, u32)>
    where
        F: FnMut(reqwest::Request) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            tracing::Span::current().record("attempt", attempts);
            let this_try = request
                .try_clone()
                .expect("an in-memory request body can always be cloned");
            match attempt(this_try).await {
                Ok(answer) => return Ok((answer, attempts)),
                Err(failure) => self.wait_to_retry(failure, attempts, started).await?,
            }
        }
    }

    /// After failed attempt number `attempt`: waits before the next one, or returns the
    /// final error when `failure` cannot be retried or no retries are left.
    async fn wait_to_retry(&self, failure: Failure, attempt: u32, started: Instant) -> Result<()> {
        if !failure.retryable || attempt > self.config.max_retries {
            info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                attempts = attempt,
                status = failure.status,
                retryable = failure.retryable,
                "LLM call failed"
            );
            return Err(failure.into_error(attempt));
        }
        let backoff = Backoff {
            base: self.config.backoff_base,
            max: self.config.backoff_max,
            retry_after_max: self.config.retry_after_max,
        };
        let delay = backoff.delay(attempt, failure.retry_after);
        info!(
            status = failure.status,
            delay_ms = delay.as_millis() as u64,
            error = %failure.message,
            "LLM call will be retried"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// One HTTP exchange. The outer `Err` is a failure the retry loop may retry; the inner
    /// `Err` is a final answer (a malformed 200 would be malformed again).
    async fn attempt(&self, request: reqwest::Request) -> Result<Result<ChatResponse>, Failure> {
        let ctx = self.context();
        let started = Instant::now();
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| error::transport_failure(&ctx, e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| error::transport_failure(&ctx, e))?;
        whole_reply(&ctx, status, &headers, &bytes, started)
    }
}

/// A reply read whole (a plain call's, or an error or unstreamed answer to a streaming
/// one): logged, then the failure an error status or an error reported in the body means
/// (the retry loop decides on it), else the decoded reply, or a final error when it
/// cannot be read.
fn whole_reply(
    ctx: &Context<'_>,
    status: reqwest::StatusCode,
    headers: &HeaderMap,
    bytes: &[u8],
    started: Instant,
) -> Result<Result<ChatResponse>, Failure> {
    debug!(
        status = status.as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        bytes = bytes.len(),
        "LLM reply received whole"
    );
    trace!(body = %String::from_utf8_lossy(bytes), "LLM reply body");
    if !status.is_success() {
        return Err(error::status_failure(ctx, status, headers, bytes));
    }
    match wire::decode_response(bytes) {
        Ok(response) => Ok(Ok(response)),
        Err(wire::Undecodable::Reported) => Err(error::reported_error_failure(ctx, headers, bytes)),
        Err(wire::Undecodable::NoChoice) => Err(error::no_choice_failure(ctx, bytes)),
        Err(wire::Undecodable::Malformed(detail)) => {
            Ok(Err(error::malformed_error(ctx, &detail, bytes)))
        }
    }
}

#[async_trait]
impl LlmClient for OpenAiClient {
    async fn chat(&self, request: &ChatRequest<'_>) -> Result<ChatResponse> {
        let body = self.request_body(request)?;
        let span = self.call_span(request, false);
        span.in_scope(|| log_request(request, &body));
        let mut response = self
            .send_with_retries(body)
            .instrument(span)
            .await
            .map_err(|error| {
                let ids = self.call_ids();
                let error = refusals::explain_refused_call_ids(error, request, ids);
                refusals::name_stored_call_ids(error, request, ids)
            })?;
        sendable::restore_tool_names(&mut response.message, &request.tools);
        Ok(response)
    }

    /// Streams natively when [`streams`](OpenAiClient::streams); see the module docs.
    fn chat_stream<'a>(&'a self, request: &'a ChatRequest<'_>) -> ChatStream<'a> {
        self.stream_reply(request)
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    fn supports_native_tools(&self) -> bool {
        self.config.native_tools
    }
}

/// The end of a call answered with a whole reply: logged as a success, or as a final
/// failure when the reply could not be read.
fn finish_whole(
    outcome: Result<ChatResponse>,
    started: Instant,
    attempts: u32,
) -> Result<ChatResponse> {
    match &outcome {
        Ok(response) => log_success(response, started, attempts, None),
        Err(_) => info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            attempts, "LLM call failed: malformed reply"
        ),
    }
    outcome
}

/// The line every successful call logs; `first_delta` (the time until the first delta
/// reached the caller) is set for a streamed reply.
fn log_success(
    response: &ChatResponse,
    started: Instant,
    attempts: u32,
    first_delta: Option<Duration>,
) {
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        first_delta_ms = first_delta.map(|d| d.as_millis() as u64),
        attempts,
        finish_reason = response.finish_reason.as_deref(),
        tool_calls = response.message.tool_calls.len(),
        prompt_tokens = response.usage.map(|u| u.prompt_tokens),
        completion_tokens = response.usage.map(|u| u.completion_tokens),
        "LLM call succeeded"
    );
}

/// Logs a request about to be sent: its size at debug level, its body at trace level.
fn log_request(request: &ChatRequest<'_>, body: &[u8]) {
    debug!(
        bytes = body.len(),
        tools = request.tools.len(),
        "LLM request built"
    );
    trace!(body = %String::from_utf8_lossy(body), "LLM request body");
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `config`'s own Debug masks the key; the reqwest client is left out because its
        // default headers hold the Authorization value.
        f.debug_struct("OpenAiClient")
            .field("endpoint", &self.endpoint_shown)
            .field("config", &self.config)
            .field("streams", &self.streams())
            .finish_non_exhaustive()
    }
}
