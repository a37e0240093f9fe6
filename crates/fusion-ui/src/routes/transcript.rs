//! `GET /sessions/{id}` (the transcript page) and `GET /sessions/{id}/messages` (a
//! window of messages alone, for the "load earlier" link).

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use fusion::ChatMessage;
use fusion::storage::SessionInfo;
use serde::Deserialize;

use super::request::{existing, not_stored, query};
use crate::html::chat::{ChatForm, ChatLive};
use crate::html::transcript::{ChatSection, Head, Messages, TranscriptPage};
use crate::html::{PageError, render};
use crate::state::AppState;

/// The query of both routes: the window ends before message `before` (the newest
/// message when absent).
#[derive(Debug, Deserialize)]
pub(crate) struct WindowParams {
    before: Option<usize>,
}

/// `GET /sessions/{id}`: the session's facts and its newest messages (or the window
/// ending before `?before=N`).
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<WindowParams>, QueryRejection>,
) -> Result<Response, PageError> {
    let before = query(params)?.before;
    let (info, history, generation) = read(&state, &id).await?;
    let end = before.unwrap_or(history.len());
    let messages = Messages::window(&id, &history, generation, end);
    Ok(render(
        StatusCode::OK,
        &TranscriptPage::new(Head::new(&info), messages, chat_section(&state, &id)),
    ))
}

/// The chat's form, and the panel of the turn running on session `id` (a reload while
/// it runs picks up its stream).
fn chat_section(state: &AppState, id: &str) -> ChatSection {
    let Some(chats) = &state.chat else {
        return ChatSection::default();
    };
    ChatSection {
        form: ChatForm::new(id, false).render().ok(),
        live: chats
            .running(id)
            .and_then(|turn| ChatLive::new(&turn, None).render().ok()),
    }
}

/// `GET /sessions/{id}/messages?before=N`: the window ending before message N, as a
/// fragment that replaces the "load earlier" link it came from.
pub(crate) async fn messages(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<WindowParams>, QueryRejection>,
) -> Result<Response, PageError> {
    let before = query(params)?.before;
    let (_, history, generation) = read(&state, &id).await?;
    let end = before.unwrap_or(history.len());
    let messages = Messages::window(&id, &history, generation, end);
    Ok(render(StatusCode::OK, &messages))
}

/// The session's facts, whole history and generation (which the fork buttons carry).
/// The stored history is read whole (storage has no ranged read); only the window is
/// rendered, which is what the browser pays for.
async fn read(
    state: &AppState,
    id: &str,
) -> Result<(SessionInfo, Vec<ChatMessage>, u64), PageError> {
    let info = existing(state.storage.as_ref(), id).await?;
    let (history, revision) = state
        .storage
        .load_revision(id)
        .await
        .map_err(|err| PageError::storage(&err))?;
    if history.is_empty() {
        // Deleted between the two reads.
        return Err(not_stored(id));
    }
    Ok((info, history, revision.generation))
}
