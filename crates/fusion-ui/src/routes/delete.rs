//! Deleting a session: `GET /sessions/{id}/delete` asks, `POST` to the same address
//! deletes and returns to the sessions page; `DELETE /sessions/{id}` is the same for
//! programs. The CSRF check has run before either change. While a chat turn of this app
//! runs on the session, all three are refused (409): stop the turn first. A delete holds
//! the session's claim (`crate::claims`) from that check to its end, so a Send arriving
//! meanwhile is refused rather than start a turn on a session about to vanish.
//!
//! The confirmation carries the session's [`Revision`] as the page read it, and the post
//! deletes with one conditional write (`write_if`, `Expect::Exactly`, `Truncate(0)`), as
//! undo does: messages another writer stored after the page was shown (a running agent,
//! `fusion chat`, a session deleted and made again under the same id) were deleted
//! unseen; now nothing is deleted and the answer is a 409 saying what changed. A post
//! without a revision (a damaged session's page, whose revision cannot be read; a
//! program) deletes whatever is stored, as `DELETE` does.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use fusion::Error;
use fusion::storage::{Change, ConversationStorage, Expect, Revision};

use super::busy::{claim_idle, no_turn_running};
use super::form::FormFields;
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

/// `POST /sessions/{id}/delete`, with the fields `generation` and `len` of the revision
/// the confirmation page showed: deletes, then 303 to the sessions page; 409 when the
/// session changed since (nothing is deleted) or a chat turn runs on it. Deleting a
/// session that is already gone is not an error (a second click, another tab).
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Redirect, PageError> {
    let form = FormFields::parse(&body);
    let shown = if form.has("generation") || form.has("len") {
        Some(Revision {
            generation: form.number("generation")?,
            len: form.number("len")?,
        })
    } else {
        None
    };
    remove(&state, &id, shown).await?;
    Ok(Redirect::to("/sessions"))
}

/// `DELETE /sessions/{id}`: deletes, then 204 (409 while a chat turn runs on it).
pub(crate) async fn delete_now(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, PageError> {
    remove(&state, &id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes session `id`: whatever is stored, or only while it is still at `shown`.
async fn remove(state: &AppState, id: &str, shown: Option<Revision>) -> Result<(), PageError> {
    valid_id(id)?;
    let _claim = claim_idle(state, id, Work::Deleting)?;
    match delete_shown(state.storage.as_ref(), id, shown).await {
        Ok(None) => Ok(()),
        Ok(Some(now)) => Err(PageError::conflict(format!(
            "Nothing was deleted: session {id:?} changed since its page was shown (it now \
             holds {} messages).",
            now.len
        ))),
        Err(err) => Err(PageError::storage(&err)),
    }
}

/// Deletes session `id` (a valid id) as a confirmation page showed it: whatever is
/// stored when `shown` is `None`, else with one conditional write, only while the session
/// is still exactly `shown`. `Ok(None)` when it is gone (deleted now, or already), and
/// `Ok(Some(now))` when it changed since and nothing was deleted.
pub(crate) async fn delete_shown(
    storage: &dyn ConversationStorage,
    id: &str,
    shown: Option<Revision>,
) -> fusion::Result<Option<Revision>> {
    let Some(shown) = shown else {
        return storage.delete(id).await.map(|()| None);
    };
    match storage
        .write_if(id, Expect::Exactly(shown), Change::Truncate(0))
        .await
    {
        Ok(_) => Ok(None),
        Err(Error::Conflict { .. }) => {
            let (_, now) = storage.load_revision(id).await?;
            // Deleted already (a second click, another tab): what was asked is done.
            Ok(now.exists().then_some(now))
        }
        Err(err) => Err(err),
    }
}
