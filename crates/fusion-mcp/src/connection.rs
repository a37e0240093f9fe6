//! One live MCP session with a server: the rmcp client service, and for stdio servers the
//! [`ChildProcess`] behind it. Opening it spawns or connects, runs `initialize` and lists
//! the tools, all under the startup timeout; every failure becomes a message naming the
//! server and what went wrong. An HTTP server's session the SDK opens again by itself
//! (after an HTTP 404) is taken as a change of the tool list; one that is over while the
//! SDK would go on using it (see [`SessionClient`]) makes the connection dead, to be
//! opened again.

use std::sync::Arc;
use std::time::Duration;

use fusion_core::redact_url;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{
    ClientCapabilities, ClientConfig, ClientRequest, CustomRequest, Implementation, ServerResult,
};
use rmcp::service::ClientInitializeError;
use rmcp::service::{NotificationContext, Peer, RoleClient, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::transport::{IntoTransport, StreamableHttpClientTransport};
use rmcp::{ClientHandler, serve_client};
use serde_json::{Value, json};

use crate::call::send_cancellable;
use crate::checked::checked;
use crate::environment::check_env;
use crate::http_client::{http_client, redact_urls};
use crate::http_session::SessionClient;
use crate::in_flight::{InFlight, Recording};
use crate::open_failure::{
    EXIT_REPORT_BOUND, NamedCommand, OpenFailure, exit_status_text, stderr_note,
};
use crate::process::{ChildProcess, spawn_error};
use crate::server_config::{HttpServerConfig, McpServerConfig, StdioServerConfig, shown};

/// How long closing an HTTP server's connection waits for the SDK to end its session.
const SESSION_END_BOUND: Duration = Duration::from_secs(5);

/// Called when the server announces `notifications/tools/list_changed`.
pub type ListChanged = Arc<dyn Fn() + Send + Sync>;

/// A tool as listed, or why it could not be read: `(name, reason)`.
pub type Listed = Result<rmcp::model::Tool, (String, String)>;

/// A connected, initialized server.
pub struct Connection {
    /// Taken by [`close`](Self::close), to wait for the session's end.
    service: std::sync::Mutex<Option<RunningService<RoleClient, Handler>>>,
    peer: Peer<RoleClient>,
    process: Option<ChildProcess>,
    /// An HTTP server's client, which says when its session is over.
    http: Option<SessionClient>,
}

impl Connection {
    /// Starts or connects to `config`, initializes and lists its tools, all within
    /// `startup`. The error is the reason, for a message that already names the server.
    pub async fn open(
        server: &str,
        config: &McpServerConfig,
        startup: Duration,
        on_change: ListChanged,
    ) -> Result<(Self, Vec<Listed>), OpenFailure> {
        let handler = Handler { on_change };
        match config {
            McpServerConfig::Stdio(stdio) => open_stdio(server, stdio, startup, handler).await,
            McpServerConfig::Http(http) => Ok(open_http(http, startup, handler).await?),
        }
    }

    fn new(
        service: RunningService<RoleClient, Handler>,
        process: Option<ChildProcess>,
        http: Option<SessionClient>,
    ) -> Self {
        let peer = service.peer().clone();
        let service = std::sync::Mutex::new(Some(service));
        Self {
            service,
            peer,
            process,
            http,
        }
    }

    /// The client, for requests.
    pub fn peer(&self) -> &Peer<RoleClient> {
        &self.peer
    }

    /// The server's process, for stdio servers.
    pub fn process(&self) -> Option<&ChildProcess> {
        self.process.as_ref()
    }

    /// Whether requests can still reach the server: the session runs and, for stdio, the
    /// process has not exited, for HTTP the server still takes the session.
    pub fn is_alive(&self) -> bool {
        let service = self.service.lock().unwrap_or_else(|e| e.into_inner());
        service.as_ref().is_some_and(|service| !service.is_closed())
            && !self.peer.is_transport_closed()
            && self
                .process
                .as_ref()
                .is_none_or(|p| p.exit_status().is_none())
            && self.http.as_ref().is_none_or(|http| !http.is_over())
    }

    /// Ends the session (closing a stdio server's stdin) and stops the process, giving it
    /// `grace` to exit by itself before its group is killed. An HTTP session is ended
    /// (DELETE) as the SDK's service ends, which is waited for: a program that exits next
    /// would otherwise leave it open on the server, with all it holds.
    pub async fn close(&self, grace: Duration) {
        let service = self
            .service
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match (&self.process, service) {
            (Some(process), service) => {
                drop(service);
                process.stop(grace).await;
            }
            (None, Some(mut service)) => {
                let _ = service.close_with_timeout(SESSION_END_BOUND).await;
            }
            (None, None) => {}
        }
    }

    /// How the session ended, for an observation: "exited (exit status: 3)" for a stdio
    /// server, else the transport's word.
    ///
    /// The tail of a stdio server's stderr goes to the log, not into the observation: the
    /// observation is sent to the model's provider and stored in the history, and what a
    /// crashing server prints (its configuration, a token in a stack trace) is for the
    /// person running it.
    pub async fn describe_end(&self, server: &str, error: &ServiceError) -> String {
        match &self.process {
            Some(process) => {
                let status = exit_status_text(process).await;
                let note = stderr_note(process);
                if !note.is_empty() {
                    tracing::warn!(server, "MCP server `{server}` {status}{note}");
                }
                format!("{status} during the call; it will be restarted on the next call")
            }
            None if self.http.as_ref().is_some_and(SessionClient::is_over) => format!(
                "failed the call ({}), and its session is taken as over (the server refused \
                 a request in it, or two failed in a row); a new session is opened on the \
                 next call",
                error_text(error)
            ),
            None => format!(
                "closed the connection during the call ({}); it will be reconnected on \
                 the next call",
                error_text(error)
            ),
        }
    }
}

/// `error` for a message, without the Rust type of the transport that rmcp's own wording
/// names: `Transport send error: Transport [rmcp::transport::worker::WorkerTransport<…>]
/// error: HTTP 500` is `HTTP 500`. The model and the person read these, so a URL in it
/// (reqwest's errors quote the request's) is shown without its secrets ([`redact_urls`]).
pub fn error_text(error: &ServiceError) -> String {
    redact_urls(&match error {
        ServiceError::TransportSend(sent) => transport_text(sent.error.as_ref()),
        other => other.to_string(),
    })
}

/// [`error_text`] for a handshake that failed.
fn init_error_text(error: &ClientInitializeError) -> String {
    redact_urls(&match error {
        ClientInitializeError::TransportError { error, context } => {
            format!("{}, when {context}", transport_text(error.error.as_ref()))
        }
        other => other.to_string(),
    })
}

/// A transport's error with its causes. reqwest words what went wrong (a connection
/// refused, a redirect not followed) in the source of its "error sending request for url",
/// and rmcp's HTTP error does not pass its client error's source on.
fn transport_text(error: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = match error.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        Some(StreamableHttpError::Client(client)) => std::error::Error::source(client),
        _ => error.source(),
    };
    while let Some(source) = cause {
        let said = source.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = source.source();
    }
    text
}

async fn open_stdio(
    server: &str,
    config: &StdioServerConfig,
    startup: Duration,
    handler: Handler,
) -> Result<(Connection, Vec<Listed>), OpenFailure> {
    let named = NamedCommand {
        full: config.display_command(),
        program: config.display_program(),
    };
    let cannot_start = |why: String| {
        let reason = |command: &str| format!("cannot start `{command}`: {why}");
        named.failure(reason, String::new())
    };
    check_env(&config.env).map_err(cannot_start)?;
    let mut process =
        ChildProcess::spawn(server, config).map_err(|e| cannot_start(spawn_error(config, &e)))?;
    let (stdout, stdin) = process
        .take_stdio()
        .ok_or_else(|| "the process has no pipes".to_owned())?;
    let in_flight = InFlight::default();
    let stdio = (
        checked(stdout, in_flight.clone()),
        Recording::new(stdin, in_flight),
    );
    let started = tokio::time::timeout(startup, handshake(handler, stdio)).await;
    match started {
        Ok(Ok((service, tools))) => Ok((Connection::new(service, Some(process), None), tools)),
        Ok(Err(failure))
            if failure.closed && process.exit_within(EXIT_REPORT_BOUND).await.is_some() =>
        {
            let status = exit_status_text(&process).await;
            let reason = |command: &str| {
                format!(
                    "`{command}` {status} before the MCP handshake completed ({})",
                    failure.reason
                )
            };
            Err(named.failure(reason, stderr_note(&process)))
        }
        Ok(Err(failure)) => {
            let reason =
                |command: &str| format!("`{command}` failed the MCP handshake: {}", failure.reason);
            Err(named.failure(reason, String::new()))
        }
        Err(_) => {
            let reason = |command: &str| {
                format!(
                    "`{command}` did not complete the MCP handshake within {} s (servers \
                     started with `npx` may be downloading; raise the startup timeout if so)",
                    startup.as_secs_f32(),
                )
            };
            Err(named.failure(reason, stderr_note(&process)))
        }
    }
}

async fn open_http(
    config: &HttpServerConfig,
    startup: Duration,
    handler: Handler,
) -> Result<(Connection, Vec<Listed>), String> {
    let url = &config.url;
    // A server's URL may carry a key (`?api_key=`): messages show it hidden, and escaped
    // as a command is (a line break read from a file with it, an escape sequence).
    let shown = shown(&redact_url(url));
    let mut headers = std::collections::HashMap::new();
    for (name, value) in &config.headers {
        let header = HeaderName::try_from(name.as_str()).map_err(|_| invalid_header_name(name))?;
        // The value is a secret: never quoted back.
        let mut value = HeaderValue::try_from(value.as_str()).map_err(|_| {
            format!("the value of header `{name}` is not a valid header value{NOT_A_HEADER_VALUE}")
        })?;
        value.set_sensitive(true);
        headers.insert(header, value);
    }
    let mut transport_config =
        StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(headers);
    if let Some(token) = &config.bearer_token {
        // Checked here: the SDK would fail every request with reqwest's "builder error:
        // failed to parse header value", which does not say that the token is what is wrong.
        if HeaderValue::try_from(token.as_str()).is_err() {
            return Err(format!(
                "its bearer token is not a valid header value{NOT_A_HEADER_VALUE}"
            ));
        }
        transport_config = transport_config.auth_header(token.as_str());
    }
    // A session the SDK opens again (after an HTTP 404) lists the tools again, as a
    // `notifications/tools/list_changed` does: the server may have come back with others.
    let client = SessionClient::new(http_client()?, handler.on_change.clone());
    let transport = StreamableHttpClientTransport::with_client(client.clone(), transport_config);
    let started = tokio::time::timeout(startup, handshake(handler, transport)).await;
    match started {
        Ok(Ok((service, tools))) => Ok((Connection::new(service, None, Some(client)), tools)),
        Ok(Err(failure)) => Err(format!("connecting to {shown} failed: {}", failure.reason)),
        Err(_) => Err(format!(
            "{shown} did not complete the MCP handshake within {} s",
            startup.as_secs_f32()
        )),
    }
}

/// Why a header value (a secret, never quoted) is not one: the usual cause.
const NOT_A_HEADER_VALUE: &str = " (it holds a line break or another control character: \
     one read from a file may end in a line break)";

/// Why `name` is no header name, showing it only up to the first character a name cannot
/// hold: one given as `Authorization: Bearer …` (as `curl -H` takes it) holds the value,
/// a secret, after that character.
fn invalid_header_name(name: &str) -> String {
    if name.is_empty() {
        return "a header has an empty name".to_owned();
    }
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let shown = name.split(|c| !token(c)).next().unwrap_or_default();
    format!(
        "header name `{shown}…` is not valid: a name holds no `:`, space or other such \
         character (the value goes on the right of the entry)"
    )
}

/// Why a handshake failed: the reason, and whether the server's side closed first (its
/// output ended, or its input could not be written), which for a stdio server means it is
/// likely exiting. A handshake the
/// server answered (a refused `initialize`, a tool list that never ends) is not its exit,
/// though it exits soon after: the client, giving up, closes its stdin.
struct HandshakeFailure {
    reason: String,
    closed: bool,
}

/// The client side of the MCP handshake over `transport` (`initialize`), then the server's
/// tools. The caller bounds it with the startup timeout.
async fn handshake<T, E, A>(
    handler: Handler,
    transport: T,
) -> Result<(RunningService<RoleClient, Handler>, Vec<Listed>), HandshakeFailure>
where
    T: IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let service = serve_client(handler, transport)
        .await
        .map_err(|e| HandshakeFailure {
            reason: init_error_text(&e),
            // A write that failed is a pipe whose reader has gone, as much as a read that
            // ended: a server exiting at once may be gone before `initialize` is sent.
            closed: matches!(
                e,
                ClientInitializeError::ConnectionClosed(_)
                    | ClientInitializeError::TransportError { .. }
            ),
        })?;
    match list_tools(service.peer()).await {
        Ok(tools) => Ok((service, tools)),
        Err(reason) => Err(HandshakeFailure {
            reason,
            closed: service.is_closed() || service.peer().is_transport_closed(),
        }),
    }
}

/// The most pages of `tools/list` read. A server whose list never ends (every page names
/// a next one) is refused with an error saying so, rather than read until the memory
/// runs out; a real server's tools fit in a few pages.
pub const MAX_LIST_PAGES: usize = 100;

/// Every tool of the server, following `nextCursor` to the last page; an error (as the
/// reason, for a message) names what went wrong.
///
/// An empty `nextCursor` ends the list, as a missing one does: a server may send `""` for
/// "no more", and clients that go on while the cursor is truthy (the Python SDK's
/// pagination example, JavaScript's `while (cursor)`) read it so. Followed, it would ask
/// for the first page again, and the list would be refused as one that never ends.
///
/// Sent as a raw `tools/list` and read one tool at a time, so that one tool the SDK's types
/// cannot hold (an `inputSchema` that is not an object, say) is reported and skipped
/// instead of failing the whole list. A list longer than [`MAX_LIST_PAGES`] pages, or one
/// that names a page it already gave, is refused.
///
/// A page not answered when the listing is dropped (its timeout, a re-listing given up)
/// is cancelled with `notifications/cancelled` ([`send_cancellable`]).
///
/// A server that does not declare the `tools` capability (one of prompts or resources
/// only) has no tools: its refusal of `tools/list` ("method not found") is an empty list,
/// not a server that cannot be used. One declaring tools that refuses to list them fails.
pub async fn list_tools(peer: &Peer<RoleClient>) -> Result<Vec<Listed>, String> {
    let offers_tools = peer
        .peer_info()
        .is_none_or(|info| info.capabilities.tools.is_some());
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..MAX_LIST_PAGES {
        if let Some(cursor) = &cursor
            && !seen.insert(cursor.clone())
        {
            return Err(format!(
                "tools/list failed: the server's tool list comes back to a page it already \
                 gave (cursor {:?}), so it never ends",
                cursor.chars().take(40).collect::<String>()
            ));
        }
        let params = cursor.as_ref().map(|c| json!({ "cursor": c }));
        let request = ClientRequest::CustomRequest(CustomRequest::new("tools/list", params));
        let abandoned = "the listing was abandoned (its timeout passed, or the server was closed)";
        let reply = match send_cancellable(peer, request, abandoned).await {
            Err(ServiceError::McpError(_)) if !offers_tools && cursor.is_none() => {
                return Ok(listed);
            }
            reply => reply.map_err(|e| format!("tools/list failed: {}", error_text(&e)))?,
        };
        let page: Value = match reply {
            ServerResult::ListToolsResult(page) => {
                listed.extend(page.tools.into_iter().map(Ok));
                cursor = page.next_cursor.filter(|c| !c.is_empty());
                if cursor.is_none() {
                    return Ok(listed);
                }
                continue;
            }
            ServerResult::CustomResult(page) => page.0,
            ServerResult::EmptyResult(_) => return Ok(listed),
            _ => {
                return Err(format!(
                    "tools/list failed: {}",
                    ServiceError::UnexpectedResponse
                ));
            }
        };
        for tool in page["tools"].as_array().into_iter().flatten() {
            let name = tool["name"].as_str().unwrap_or("(unnamed)").to_owned();
            listed.push(
                serde_json::from_value::<rmcp::model::Tool>(tool.clone())
                    .map_err(|e| (name, format!("its definition is malformed: {e}"))),
            );
        }
        cursor = page["nextCursor"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        if cursor.is_none() {
            return Ok(listed);
        }
    }
    Err(format!(
        "tools/list failed: the server's tool list goes on past {MAX_LIST_PAGES} pages \
         ({} tools so far); Fusion reads at most {MAX_LIST_PAGES}",
        listed.len()
    ))
}

/// What the client does with a server's requests and notifications: introduces itself as
/// Fusion, and passes `notifications/tools/list_changed` on.
pub struct Handler {
    on_change: ListChanged,
}

impl ClientHandler for Handler {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("fusion", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        (self.on_change)();
    }
}
