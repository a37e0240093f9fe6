//! [`router`]: the whole app as an axum [`Router`], defences included, without a socket.

use std::sync::Arc;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use fusion::storage::ConversationStorage;

use crate::assets;
use crate::chat::Chats;
use crate::config::UiSettings;
use crate::routes::{
    bulk, chat, delete, export, fork, meta, not_found, sessions, show_refusals, transcript, undo,
};
use crate::security::{Guard, add_headers, check_host, check_origin, check_token};
use crate::state::AppState;

/// The app over `storage`, enforcing `settings` (the `Host` names, the token).
///
/// With a [`ChatAgent`](crate::ChatAgent) in `settings` (from
/// [`UiConfig::chat`](crate::UiConfig::chat)), the transcript page chats with it.
///
/// Every route, the fallback included, sits behind the defences in this order: security
/// headers on the response, the `Host` check, the token, the same-origin check on
/// changes. Between the headers and the checks, an error answered to htmx is made the
/// refusal it shows (`routes::refusal`). [`serve`](crate::serve) uses exactly this router; tests can drive it with
/// `tower::ServiceExt::oneshot`.
///
/// ```
/// use fusion::storage::{ConversationStorage, InMemoryStorage};
/// use fusion_ui::{UiConfig, router};
/// use std::sync::Arc;
///
/// let address = "127.0.0.1:8765".parse()?;
/// let settings = UiConfig::new(address).settings(address)?;
/// let storage: Arc<dyn ConversationStorage> = Arc::new(InMemoryStorage::new());
/// let app: axum::Router = router(storage, &settings);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn router(storage: Arc<dyn ConversationStorage>, settings: &UiSettings) -> Router {
    app(storage, settings).0
}

/// [`router`], and its chat (when it has one) for the server to close at shutdown.
pub(crate) fn app(
    storage: Arc<dyn ConversationStorage>,
    settings: &UiSettings,
) -> (Router, Option<Arc<Chats>>) {
    let guard = Arc::new(Guard::new(settings));
    let chat = settings
        .chat()
        .cloned()
        .map(|agent| Arc::new(Chats::new(agent)));
    let router = Router::new()
        .route("/", get(sessions::home))
        .route("/sessions", get(sessions::list))
        .route("/go", get(sessions::go))
        .route(
            "/sessions/{id}",
            get(transcript::show).delete(delete::delete_now),
        )
        .route("/sessions/{id}/messages", get(transcript::messages))
        .route("/sessions/{id}/messages/{at}", get(transcript::message))
        .route("/sessions/{id}/tokens", crate::routes::tokens::route())
        .route(
            "/sessions/{id}/delete",
            get(delete::confirm).post(delete::delete),
        )
        .route("/sessions/{id}/export", get(export::download))
        .route("/sessions/{id}/title", post(meta::rename))
        .route("/sessions/{id}/tags", post(meta::tags))
        .route("/sessions/{id}/fork", post(fork::fork))
        .route("/sessions/{id}/undo", get(undo::confirm).post(undo::undo))
        .route("/sessions/{id}/chat", post(chat::send))
        .route("/sessions/{id}/turns/{turn}/events", get(chat::events))
        .route(
            "/sessions/{id}/turns/{turn}/approvals/{question}",
            post(chat::approve),
        )
        .route("/sessions/{id}/turns/{turn}/stop", post(chat::stop))
        .route("/bulk-delete", get(bulk::confirm).post(bulk::delete))
        .route("/assets/{name}", get(assets::serve))
        .fallback(not_found)
        .with_state(AppState {
            storage,
            claims: Arc::default(),
            chat: chat.clone(),
        })
        // The last layer added runs first.
        .layer(from_fn(check_origin))
        .layer(from_fn_with_state(guard.clone(), check_token))
        .layer(from_fn_with_state(guard, check_host))
        // Outside the checks, so htmx is shown their refusals too.
        .layer(from_fn(show_refusals))
        .layer(from_fn(add_headers));
    (router, chat)
}
