//! What the handlers read from every request the same way: a session id in the path, a
//! query string, whether htmx asked for a fragment.

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::HeaderMap;
use axum::http::Uri;
use fusion::SessionId;
use fusion::storage::{ConversationStorage, SessionInfo};

use crate::html::PageError;

/// The query string as `T`, or a 400 page saying what is wrong with it.
pub(crate) fn query<T>(parsed: Result<Query<T>, QueryRejection>) -> Result<T, PageError> {
    parsed
        .map(|Query(params)| params)
        .map_err(|rejection| PageError::bad_request(rejection.body_text()))
}

/// Whether htmx asked for a fragment to swap in (and not for a whole page to restore
/// the browser history with).
pub(crate) fn wants_fragment(headers: &HeaderMap) -> bool {
    let is = |name: &str| headers.get(name).is_some_and(|v| v == "true");
    is("hx-request") && !is("hx-history-restore-request")
}

/// The facts of session `id`: 400 for an id no backend accepts, 404 for one nothing is
/// stored under.
pub(crate) async fn existing(
    storage: &dyn ConversationStorage,
    id: &str,
) -> Result<SessionInfo, PageError> {
    valid_id(id)?;
    storage
        .session_info(id)
        .await
        .map_err(|err| PageError::storage(&err))?
        .ok_or_else(|| not_stored(id))
}

/// `Ok` for a session id, a 400 page saying what is wrong with anything else.
pub(crate) fn valid_id(id: &str) -> Result<(), PageError> {
    SessionId::validate(id).map_err(|err| PageError::bad_request(err.to_string()))
}

/// The 404 page for a session id nothing is stored under.
pub(crate) fn not_stored(id: &str) -> PageError {
    PageError::not_found(format!("No session {id:?} is stored."))
}

/// The fallback route: 404 for any path the app does not serve.
pub(crate) async fn not_found(uri: Uri) -> PageError {
    PageError::not_found(format!("There is no page at {}.", uri.path()))
}
