//! [`SessionClient`]: the HTTP client of a streamable-HTTP server's transport, which says
//! when the SDK has opened the server's session again.
//!
//! A server answers HTTP 404 to a session it no longer knows (it restarted, or expired
//! the session), and rmcp then opens a new one by itself, repeating `initialize` and
//! `notifications/initialized` and sending the request again, without telling the client
//! handler. The server behind the new session may list other tools than the one the
//! tools were listed from (an upgrade, another configuration), so the tools are listed
//! again, as after a stdio server's restart: this client sees every request the
//! transport sends, and each `notifications/initialized` accepted after the first one
//! means a new session.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, ClientNotification, JsonRpcMessage};
use rmcp::transport::common::client_side_sse::BoxedSseResponse;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};

/// Called when the SDK has opened the session again.
pub type OnNewSession = Arc<dyn Fn() + Send + Sync>;

type PostResult = Result<StreamableHttpPostResponse, StreamableHttpError<reqwest::Error>>;

/// reqwest's client, calling `on_new_session` for every session opened after the first.
#[derive(Clone)]
pub struct SessionClient {
    client: reqwest::Client,
    /// `notifications/initialized` accepted: one per session.
    sessions: Arc<AtomicUsize>,
    on_new_session: OnNewSession,
}

impl SessionClient {
    /// `client` (its redirect policy and timeouts kept), watched.
    pub fn new(client: reqwest::Client, on_new_session: OnNewSession) -> Self {
        Self {
            client,
            sessions: Arc::new(AtomicUsize::new(0)),
            on_new_session,
        }
    }

    /// Notes a POST of `message` that the server answered with `result`.
    fn posted(&self, initialized: bool, result: &PostResult) {
        if initialized && result.is_ok() && self.sessions.fetch_add(1, Ordering::SeqCst) > 0 {
            tracing::info!("MCP server's HTTP session opened again; listing its tools again");
            (self.on_new_session)();
        }
    }
}

/// Whether `message` is `notifications/initialized`, which ends opening a session.
fn is_initialized(message: &ClientJsonRpcMessage) -> bool {
    matches!(
        message,
        JsonRpcMessage::Notification(n)
            if matches!(n.notification, ClientNotification::InitializedNotification(_))
    )
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
        let initialized = is_initialized(&message);
        let result = self
            .client
            .post_message(uri, message, session_id, auth_header, custom_headers)
            .await;
        self.posted(initialized, &result);
        result
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
        let initialized = is_initialized(&message);
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
            .await;
        self.posted(initialized, &result);
        result
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
        let initialized = is_initialized(&message);
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
            .await;
        self.posted(initialized, &result);
        result
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
    }
}
