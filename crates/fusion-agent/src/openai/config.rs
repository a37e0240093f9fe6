//! `OpenAiConfig`: where the OpenAI-compatible endpoint is, how to authenticate, and how
//! patiently to talk to it; built in code or read from the environment.

use std::fmt;
use std::time::Duration;

use fusion_core::{Error, Result, parse_flag};
use reqwest::Url;

use super::OpenAiClient;

/// The endpoint used when `OPENAI_BASE_URL` is not set.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The model used when `FUSION_MODEL` is not set.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// Where Ollama's OpenAI-compatible API listens by default; named in configuration errors.
pub const OLLAMA_BASE_URL: &str = "http://localhost:11434/v1";

/// Settings of an [`OpenAiClient`].
///
/// Start from [`OpenAiConfig::new`] or [`OpenAiConfig::from_env`] and chain the setters,
/// each named after its setting ([`base_url`](Self::base_url()),
/// [`request_timeout`](Self::request_timeout()), ...). A built client tells what it uses:
/// [`OpenAiClient::endpoint`], [`LlmClient::model`](crate::LlmClient::model) and
/// [`LlmClient::supports_native_tools`](crate::LlmClient::supports_native_tools). `Debug`
/// never shows the API key or the values of extra headers (they often carry secrets too).
///
/// ```no_run
/// use std::time::Duration;
/// use fusion_agent::OpenAiConfig;
///
/// # fn demo() -> fusion_core::Result<()> {
/// let client = OpenAiConfig::new("llama3.1")
///     .base_url("http://localhost:11434/v1")
///     .request_timeout(Duration::from_secs(600))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OpenAiConfig {
    /// The API root, up to and including `/v1`; requests go to its path plus
    /// `/chat/completions`, with any query it has kept as the query.
    pub(super) base_url: String,
    /// Sent as `Authorization: Bearer …` when set. Local servers usually need none.
    pub(super) api_key: Option<String>,
    /// The model name sent with every request.
    pub(super) model: String,
    /// How long to wait for the TCP (and TLS) connection.
    pub(super) connect_timeout: Duration,
    /// A plain call: how long one attempt may take, from sending to the last byte of the
    /// reply. A streamed call: how long to wait for the response headers, then for each
    /// next piece of the body (a long reply may stream for longer, as long as it moves).
    pub(super) request_timeout: Duration,
    /// A streamed call: how long the reply may go without progress (no text, reasoning,
    /// tool-call piece or finish reason), however busy the connection is meanwhile.
    pub(super) progress_timeout: Duration,
    /// How many times a failed attempt is retried (429, 5xx, connection errors, timeouts).
    pub(super) max_retries: u32,
    /// The first retry waits up to this long; each further retry doubles the bound.
    pub(super) backoff_base: Duration,
    /// The longest a computed backoff may be.
    pub(super) backoff_max: Duration,
    /// The longest a server's `Retry-After` is honoured; longer values are cut to this.
    pub(super) retry_after_max: Duration,
    /// Extra headers sent with every request (for example OpenRouter's `HTTP-Referer`).
    pub(super) extra_headers: Vec<(String, String)>,
    /// Whether the model does native tool calling; when false the agent uses text ReAct.
    pub(super) native_tools: bool,
    /// Whether [`LlmClient::chat_stream`](crate::LlmClient::chat_stream) asks the server
    /// to stream (`"stream": true`), or makes a plain call and replays its reply.
    pub(super) stream: bool,
    /// Whether the ids of stored tool calls are sent in a form every server takes, or as
    /// stored ([`portable_call_ids`](Self::portable_call_ids())).
    pub(super) portable_call_ids: bool,
}

impl OpenAiConfig {
    /// Defaults for `model` at [`DEFAULT_BASE_URL`], without an API key.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_key: None,
            model: model.into(),
            connect_timeout: Duration::from_secs(10),
            // Local models on a CPU can take minutes for one long reply.
            request_timeout: Duration::from_secs(300),
            // As long as OpenAI's own clients wait for a byte: a reasoning model that
            // thinks silently behind a pinging proxy may take minutes, a server that
            // only pings never answers.
            progress_timeout: Duration::from_secs(600),
            max_retries: 3,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(60),
            extra_headers: Vec::new(),
            native_tools: true,
            stream: true,
            portable_call_ids: false,
        }
    }

    /// Reads `OPENAI_BASE_URL`, `OPENAI_API_KEY`, `FUSION_MODEL`, `FUSION_NATIVE_TOOLS`,
    /// `FUSION_STREAM` and `FUSION_PORTABLE_CALL_IDS`.
    ///
    /// Unset or empty variables take the defaults ([`DEFAULT_BASE_URL`], no key,
    /// [`DEFAULT_MODEL`], native tools on, streaming on, call ids as stored).
    /// `FUSION_NATIVE_TOOLS=false` selects the text ReAct mode for models without tool
    /// calling; `FUSION_STREAM=false` makes every call a plain one (for a proxy that
    /// buffers or breaks event streams); `FUSION_PORTABLE_CALL_IDS=true` sends call ids in
    /// a form every server takes ([`portable_call_ids`](Self::portable_call_ids())).
    /// Whether a key is needed is checked when the client is built.
    pub fn from_env() -> Result<Self> {
        Self::from_env_with(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    ///
    /// Lets a CLI layer its own settings over the process environment, and lets tests avoid
    /// mutating it (which is `unsafe` and racy).
    pub fn from_env_with(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = Self::new(var("FUSION_MODEL").unwrap_or_else(|| DEFAULT_MODEL.into()));
        if let Some(base_url) = var("OPENAI_BASE_URL") {
            config.base_url = base_url.trim().to_owned();
        }
        config.api_key = var("OPENAI_API_KEY").map(|k| k.trim().to_owned());
        if let Some(flag) = var("FUSION_NATIVE_TOOLS") {
            config.native_tools = parse_flag("FUSION_NATIVE_TOOLS", &flag)?;
        }
        if let Some(flag) = var("FUSION_STREAM") {
            config.stream = parse_flag("FUSION_STREAM", &flag)?;
        }
        if let Some(flag) = var("FUSION_PORTABLE_CALL_IDS") {
            config.portable_call_ids = parse_flag("FUSION_PORTABLE_CALL_IDS", &flag)?;
        }
        Ok(config)
    }

    /// Sets the API root (for example [`OLLAMA_BASE_URL`]). Requests go to its path plus
    /// `/chat/completions`, with any query it has (`?api-version=...`) kept as the query.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// Sets the API key.
    pub fn api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// Sets the model name.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the request timeout (default 5 minutes).
    ///
    /// A plain call ([`LlmClient::chat`](crate::LlmClient::chat)) must get its whole reply
    /// within it, per attempt. A streamed call
    /// ([`LlmClient::chat_stream`](crate::LlmClient::chat_stream)) must get the response
    /// headers within it, and then the body may pause at most this long between pieces
    /// (keep-alive comments count): a reply that keeps coming may take as long as it needs,
    /// as long as it makes progress ([`progress_timeout`](Self::progress_timeout())).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how long a streamed reply may go without progress (default 10 minutes).
    ///
    /// Progress is a piece of the reply: text, a refusal, reasoning, a piece of a tool
    /// call, the finish reason. Keep-alive comments and chunks that carry none of these
    /// (empty deltas, a role alone) keep the connection busy, so the
    /// [`request_timeout`](Self::request_timeout()) between pieces never runs out; past
    /// this bound without progress the call fails with a retryable error, as a stalled
    /// stream does (retried only before its first delta was delivered). A reasoning model
    /// that thinks longer without streaming its reasoning, behind a proxy that pings
    /// meanwhile, needs more. Plain calls have their whole reply within the request
    /// timeout and do not use it.
    pub fn progress_timeout(mut self, timeout: Duration) -> Self {
        self.progress_timeout = timeout;
        self
    }

    /// Sets how many times a failed attempt is retried (0 disables retries).
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Sets the backoff: retry `n` waits a random time up to `min(max, base * 2^(n-1))`.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// Sets the cap on a server's `Retry-After`.
    pub fn retry_after_max(mut self, max: Duration) -> Self {
        self.retry_after_max = max;
        self
    }

    /// Adds a header sent with every request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_headers.push((name.into(), value.into()));
        self
    }

    /// Declares whether the model does native tool calling.
    pub fn native_tools(mut self, native_tools: bool) -> Self {
        self.native_tools = native_tools;
        self
    }

    /// Sets whether [`LlmClient::chat_stream`](crate::LlmClient::chat_stream) streams (the
    /// default). When off, it makes one plain call and replays the reply as deltas.
    pub fn stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }

    /// Sets whether the ids of stored tool calls (and of the results answering them) are
    /// sent in a form every server takes (default off: as stored).
    ///
    /// Off, an id goes back as the server gave it, `functions.read_file:0` as Kimi K2
    /// writes them included: K2's chat template renders those ids as the headers of the
    /// calls the model reads, so servers running K2 natively (Moonshot, vLLM, SGLang,
    /// llama.cpp) need them as they were. On, every id is sent as 9 letters and digits
    /// written from a hash of it (Mistral's own too, so that no two ids of a session are
    /// sent alike), the same in every request: the one form all these endpoints take
    /// where they refuse others with a 400: Mistral's, and servers running Mistral's chat
    /// template (exactly 9 of `[a-zA-Z0-9]`), Anthropic's OpenAI-compatible one
    /// (`tool_use.id` must match `^[a-zA-Z0-9_-]+$`), OpenAI's (at most 40 characters).
    /// Such a refusal while this is off says to turn it on. Storage keeps ids as written
    /// either way, so a session moves between servers, and this setting, freely; tool
    /// names the servers refuse are always sent mapped.
    pub fn portable_call_ids(mut self, portable: bool) -> Self {
        self.portable_call_ids = portable;
        self
    }

    /// Builds the client; see [`OpenAiClient::new`].
    pub fn build(self) -> Result<OpenAiClient> {
        OpenAiClient::new(self)
    }

    /// Checks the settings and returns the normalised base URL (no trailing `/`).
    pub(super) fn validate(&self) -> Result<Url> {
        let trimmed = self.base_url.trim();
        let mut url = Url::parse(trimmed)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                Error::Config(format!(
                    "OPENAI_BASE_URL \"{}\" is not an http(s) URL; expected something like \
                     {DEFAULT_BASE_URL} or {OLLAMA_BASE_URL}",
                    fusion_core::redact_url(trimmed)
                ))
            })?;
        // Worked on the path alone, so that a query the URL carries (Azure's
        // `?api-version=`) stays the query. A common slip is pasting the full endpoint;
        // accept it rather than 404 later.
        let path = url.path().trim_end_matches('/');
        let path = path.strip_suffix("/chat/completions").unwrap_or(path);
        let path = path.trim_end_matches('/').to_owned();
        url.set_path(&path);
        if self.model.trim().is_empty() {
            return Err(Error::Config(
                "no model name: set FUSION_MODEL (for example gpt-4o-mini, or llama3.1 for Ollama)"
                    .into(),
            ));
        }
        if self.api_key.is_none() && url.host_str() == Some("api.openai.com") {
            return Err(Error::Config(format!(
                "no API key for {}: set OPENAI_API_KEY (or OpenAiConfig::api_key), or point \
                 OPENAI_BASE_URL at a local OpenAI-compatible server such as Ollama \
                 ({OLLAMA_BASE_URL}, with FUSION_MODEL set to a pulled model like llama3.1)",
                display_url(&url)
            )));
        }
        Ok(url)
    }
}

impl Default for OpenAiConfig {
    /// [`OpenAiConfig::new`] with [`DEFAULT_MODEL`].
    fn default() -> Self {
        Self::new(DEFAULT_MODEL)
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .extra_headers
            .iter()
            .map(|(name, _)| (name.as_str(), "***"))
            .collect();
        f.debug_struct("OpenAiConfig")
            .field("base_url", &fusion_core::redact_url(&self.base_url))
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("model", &self.model)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("progress_timeout", &self.progress_timeout)
            .field("max_retries", &self.max_retries)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_max", &self.backoff_max)
            .field("retry_after_max", &self.retry_after_max)
            .field("extra_headers", &headers)
            .field("native_tools", &self.native_tools)
            .field("stream", &self.stream)
            .field("portable_call_ids", &self.portable_call_ids)
            .finish()
    }
}

/// The URL without any password or secret query value (see [`fusion_core::redact_url`]),
/// for messages and logs.
pub(super) fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    // A query may carry a key (`?key=`), and messages and logs show this URL.
    fusion_core::redact_url(shown.as_str())
        .trim_end_matches('/')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn empty_environment_takes_the_defaults_and_needs_a_key() {
        let config = OpenAiConfig::from_env_with(env(&[])).unwrap();
        assert_eq!(config.base_url, DEFAULT_BASE_URL);
        assert_eq!(config.model, DEFAULT_MODEL);
        assert!(config.native_tools);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("OPENAI_API_KEY"), "{err}");
        assert!(err.contains("OPENAI_BASE_URL"), "{err}");
        assert!(err.contains("11434"), "{err}");
    }

    #[test]
    fn a_local_server_needs_no_key() {
        let config = OpenAiConfig::from_env_with(env(&[
            ("OPENAI_BASE_URL", "http://localhost:11434/v1/"),
            ("FUSION_MODEL", "llama3.1"),
            ("OPENAI_API_KEY", ""),
        ]))
        .unwrap();
        assert_eq!(config.api_key, None);
        let url = config.validate().unwrap();
        assert_eq!(url.as_str(), "http://localhost:11434/v1");
        assert_eq!(config.model, "llama3.1");
    }

    #[test]
    fn a_full_endpoint_url_is_accepted_as_base() {
        let config = OpenAiConfig::new("m").base_url("http://h:1/v1/chat/completions");
        assert_eq!(config.validate().unwrap().as_str(), "http://h:1/v1");
    }

    #[test]
    fn bad_base_url_and_bad_flag_are_config_errors() {
        let err = OpenAiConfig::new("m")
            .base_url("localhost:11434/v1")
            .validate()
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        let err = OpenAiConfig::from_env_with(env(&[("FUSION_NATIVE_TOOLS", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("FUSION_NATIVE_TOOLS"), "{err}");
        let off = OpenAiConfig::from_env_with(env(&[("FUSION_NATIVE_TOOLS", "0")])).unwrap();
        assert!(!off.native_tools);
    }

    #[test]
    fn streaming_is_on_unless_fusion_stream_turns_it_off() {
        assert!(OpenAiConfig::from_env_with(env(&[])).unwrap().stream);
        for off in ["0", "false", " FALSE "] {
            let config = OpenAiConfig::from_env_with(env(&[("FUSION_STREAM", off)])).unwrap();
            assert!(!config.stream, "{off:?}");
        }
        let err = OpenAiConfig::from_env_with(env(&[("FUSION_STREAM", "sometimes")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("FUSION_STREAM"), "{err}");
    }

    #[test]
    fn call_ids_go_as_stored_unless_fusion_portable_call_ids_turns_it_on() {
        assert!(!OpenAiConfig::new("m").portable_call_ids);
        assert!(
            OpenAiConfig::new("m")
                .portable_call_ids(true)
                .portable_call_ids
        );
        assert!(
            !OpenAiConfig::from_env_with(env(&[]))
                .unwrap()
                .portable_call_ids
        );
        for on in ["1", "true", " TRUE "] {
            let config =
                OpenAiConfig::from_env_with(env(&[("FUSION_PORTABLE_CALL_IDS", on)])).unwrap();
            assert!(config.portable_call_ids, "{on:?}");
        }
        let err = OpenAiConfig::from_env_with(env(&[("FUSION_PORTABLE_CALL_IDS", "kimi")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("FUSION_PORTABLE_CALL_IDS"), "{err}");
    }

    #[test]
    fn debug_hides_key_header_values_and_url_passwords() {
        let config = OpenAiConfig::new("m")
            .api_key("sk-secret-123")
            .header("X-Api-Token", "header-secret")
            .base_url("http://user:url-secret@proxy:8080/v1");
        let shown = format!("{config:?}");
        assert!(shown.contains(r#"api_key: Some("***")"#), "{shown}");
        assert!(shown.contains("X-Api-Token"), "{shown}");
        for secret in ["sk-secret-123", "header-secret", "url-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
