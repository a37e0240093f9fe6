//! What the handlers read from every request the same way: a session id in the path, a
//! query string, whether htmx asked for a fragment.

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri};
use fusion::SessionId;
use fusion::storage::{ConversationStorage, SessionInfo};
use serde::de::DeserializeOwned;

use super::form::FormFields;
use super::query;
use crate::html::PageError;

/// Extractor: the query string as `T`, or a 400 page saying what is wrong with it.
///
/// Read strictly ([`query::read`]): a parameter `T` reads whose value is not UTF-8 once
/// percent-decoded (`?tag=%FF`) is refused naming it, where axum's `Query`, decoding
/// lossily, made it U+FFFD, a filter that silently matched nothing.
pub(crate) struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, PageError> {
        let raw = parts.uri.query().unwrap_or_default();
        let fields = FormFields::parse(&Bytes::copy_from_slice(raw.as_bytes()));
        query::read(fields)
            .map(Params)
            .map_err(|err| PageError::bad_request(err.to_string()))
    }
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
