//! Undo the last turn: `GET /sessions/{id}/undo` asks, showing what would go and
//! carrying the session's [`Revision`] as the page read it; `POST` to the same address
//! removes the last turn only if the session is still exactly that revision.
//!
//! The storage calls are those of fusion-agent's `AgentSession::undo_last_turn`: one
//! [`write_if`](fusion::storage::ConversationStorage::write_if) with
//! `Expect::Exactly(revision)` and `Change::Truncate(start of the last turn)`, or
//! `Change::Replace` without the turn when another writer's messages follow it
//! ([`last_turn`](fusion::agent::context::last_turn) says which, or that the two are mixed
//! and nothing can be undone: a 409). If
//! anything was written since the page was shown (a message appended by a running
//! agent, a rewrite, a delete), nothing is removed and the answer is a 409 page, so
//! another writer's messages are never lost.
//!
//! Both are refused (409) while a chat turn of this app runs on the session: the turn is
//! not a writer whose messages are merely late, it waits on approvals and would run calls
//! whose results it could then not store. Stop it first. The post holds the session's
//! claim (`crate::claims`) from that check through its write, so no turn starts between
//! the two.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use fusion::agent::context::{self, LastTurn};
use fusion::storage::{Change, Expect, Revision};
use fusion::{ChatMessage, Error};

use super::busy::{claim_idle, no_turn_running};
use super::form::FormFields;
use super::request::{existing, not_stored};
use crate::claims::Work;
use crate::html::undo::ConfirmUndo;
use crate::html::{PageError, render};
use crate::state::AppState;

/// `GET /sessions/{id}/undo`: the confirmation page (404 unknown session, 400 when it
/// holds no turn to undo, 409 while a chat turn runs on it).
pub(crate) async fn confirm(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let info = existing(state.storage.as_ref(), &id).await?;
    no_turn_running(&state, &id, Work::Undoing)?;
    let (history, revision) = read(&state, &id).await?;
    if !revision.exists() {
        // Deleted since its facts were read: not a session without a turn (a 400).
        return Err(not_stored(&id));
    }
    let turn = last_turn(&id, &history)?;
    Ok(render(
        StatusCode::OK,
        &ConfirmUndo::new(&info, revision, turn.removed(), history.len() - turn.end),
    ))
}

/// `POST /sessions/{id}/undo` with the fields `generation` and `len` of the revision the
/// confirmation page showed: 303 to the session (to the sessions page when the undo
/// removed its only turn), 409 when it changed since or a chat turn runs on it, 404 when
/// it was deleted.
pub(crate) async fn undo(
    State(state): State<AppState>,
    Path(id): Path<String>,
    form: FormFields,
) -> Result<Redirect, PageError> {
    let shown = Revision {
        generation: form.number("generation")?,
        len: form.number("len")?,
    };
    // Held through the write: a turn starting meanwhile would run on the session this
    // rewrites.
    let _claim = claim_idle(&state, &id, Work::Undoing)?;
    existing(state.storage.as_ref(), &id).await?;
    let (history, now) = read(&state, &id).await?;
    if now != shown {
        return Err(changed(&id, now));
    }
    let turn = last_turn(&id, &history)?;
    let kept;
    let change = if turn.is_tail_of(&history) {
        Change::Truncate(turn.start)
    } else {
        kept = turn.remove_from(&history);
        Change::Replace(&kept)
    };
    // The check above saves a write in the common case; this condition is what makes
    // the undo safe against a writer that comes between the read and the write.
    match state
        .storage
        .write_if(&id, Expect::Exactly(shown), change)
        .await
    {
        Ok(_) if turn.removed() == history.len() => Ok(Redirect::to("/sessions")),
        Ok(_) => Ok(Redirect::to(&format!("/sessions/{id}"))),
        Err(Error::Conflict { .. }) => {
            let (_, now) = read(&state, &id).await?;
            Err(changed(&id, now))
        }
        Err(err) => Err(PageError::storage(&err)),
    }
}

async fn read(state: &AppState, id: &str) -> Result<(Vec<ChatMessage>, Revision), PageError> {
    state
        .storage
        .load_revision(id)
        .await
        .map_err(|err| PageError::storage(&err))
}

/// The last turn, a 400 when the session has none, or a 409 when another writer's
/// messages are mixed into it.
fn last_turn(id: &str, history: &[ChatMessage]) -> Result<LastTurn, PageError> {
    match context::last_turn(history) {
        Ok(Some(turn)) => Ok(turn),
        Ok(None) => Err(PageError::bad_request(format!(
            "Session {id:?} holds no message from the user: there is no turn to undo."
        ))),
        Err(interleaved) => Err(PageError::conflict(format!(
            "Nothing can be undone in session {id:?}: {interleaved}."
        ))),
    }
}

/// The 409 for a session that is now at `now`, or the 404 for one deleted since its page
/// was shown: gone, as the post finds it when the delete came before its first read (a
/// 409 saying the session changed told a reload to fix what a reload cannot).
fn changed(id: &str, now: Revision) -> PageError {
    if !now.exists() {
        return PageError::not_found(format!(
            "Nothing was undone: session {id:?} was deleted since its page was shown."
        ));
    }
    PageError::conflict(format!(
        "Nothing was undone: session {id:?} changed since its page was shown (it now holds \
         {} messages).",
        now.len
    ))
}
