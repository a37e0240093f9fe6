//! Deleting a session: `GET /sessions/{id}/delete` asks, `POST` to the same address
//! deletes and returns to the sessions page; `DELETE /sessions/{id}` is the same for
//! programs. The CSRF check has run before either change. While a chat turn of this app
//! runs on the session, all three are refused (409): stop the turn first. A delete holds
//! the session's claim (`crate::claims`) from that check to its end, so a Send arriving
//! meanwhile is refused rather than start a turn on a session about to vanish.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};

use super::busy::{claim_idle, no_turn_running};
use super::request::{not_stored, valid_id};
use crate::claims::Work;
use crate::html::bulk::Listed;
use crate::html::delete::ConfirmDelete;
use crate::html::{PageError, render};
use crate::state::AppState;

/// `GET /sessions/{id}/delete`: the confirmation page (404 for an unknown session, 409
/// while a chat turn runs on it). A damaged session (its metadata unreadable) is asked
/// about too, with its damage: that is when deleting it is most wanted.
pub(crate) async fn confirm(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    valid_id(&id)?;
    let info = state.storage.session_info(&id).await;
    let session = Listed::read(id, info).map_err(|err| PageError::storage(&err))?;
    if session.count.is_none() && session.damage.is_none() {
        return Err(not_stored(&session.id));
    }
    no_turn_running(&state, &session.id, Work::Deleting)?;
    Ok(render(StatusCode::OK, &ConfirmDelete::new(session)))
}

/// `POST /sessions/{id}/delete`: deletes, then 303 to the sessions page. Deleting a
/// session that is already gone is not an error (a second click, another tab); one a
/// chat turn runs on is (409).
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Redirect, PageError> {
    remove(&state, &id).await?;
    Ok(Redirect::to("/sessions"))
}

/// `DELETE /sessions/{id}`: deletes, then 204 (409 while a chat turn runs on it).
pub(crate) async fn delete_now(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, PageError> {
    remove(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove(state: &AppState, id: &str) -> Result<(), PageError> {
    valid_id(id)?;
    let _claim = claim_idle(state, id, Work::Deleting)?;
    state
        .storage
        .delete(id)
        .await
        .map_err(|err| PageError::storage(&err))
}
