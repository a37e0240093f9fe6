//! `GET /sessions/{id}` (the transcript page), `GET /sessions/{id}/messages` (a window of
//! messages alone, for the "load earlier" link) and `GET /sessions/{id}/messages/{n}`
//! (one message's stored JSON, which the page's "raw JSON" blocks and copy buttons fetch).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use fusion::ChatMessage;
use fusion::storage::SessionInfo;
use serde::Deserialize;

use super::request::{Params, existing, not_stored};
use crate::html::chat::{ChatForm, ChatLive};
use crate::html::transcript::{ChatSection, Head, Messages, TranscriptPage};
use crate::html::{PageError, render};
use crate::state::AppState;

/// The query of both routes: the window ends before message `before` (the newest
/// message when absent); for the fragment, the generation of the page it joins.
#[derive(Debug, Deserialize)]
pub(crate) struct WindowParams {
    before: Option<usize>,
    generation: Option<u64>,
}

/// `GET /sessions/{id}`: the session's facts and its newest messages (or the window
/// ending before `?before=N`).
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(params): Params<WindowParams>,
) -> Result<Response, PageError> {
    let before = params.before;
    let (info, history, generation) = read(&state, &id).await?;
    let end = before.unwrap_or(history.len());
    let messages = Messages::window(&id, &history, generation, end);
    Ok(render(
        StatusCode::OK,
        &TranscriptPage::new(
            Head::new(&info),
            messages,
            chat_section(&state, &info, &history),
        ),
    ))
}

/// The chat's form, and the panel of the turn running on the session `info` describes (a
/// reload while it runs picks up its stream). The form holds the message of the
/// session's last turn when that turn ended without storing it and `history`, the
/// session as stored now, still lacks it: the end that showed it is not shown again.
fn chat_section(state: &AppState, info: &SessionInfo, history: &[ChatMessage]) -> ChatSection {
    let Some(chats) = &state.chat else {
        return ChatSection::default();
    };
    let id = info.id.as_str();
    let ended = chats.ended(id, info.created_at);
    let unsent = ended.as_deref().filter(|turn| {
        turn.outcome()
            .is_some_and(|outcome| turn.message_unsent(&outcome, Some(history)))
    });
    ChatSection {
        form: ChatForm::new(id, false)
            .unsent(
                unsent.map(|turn| turn.message.as_str()),
                !unsent.is_some_and(|turn| turn.unsettled()),
            )
            .render()
            .ok(),
        live: chats
            .running(id)
            .and_then(|turn| ChatLive::new(&turn, None).render().ok()),
    }
}

/// `GET /sessions/{id}/messages?before=N&generation=G`: the window ending before message
/// N, as a fragment that replaces the "load earlier" link it came from. 409 when the
/// session was rewritten since the page was read at generation G (an undo, a summary, a
/// delete, in this tab or another, or by another writer), or holds fewer than N messages
/// now: its earlier messages would be another history's, joined to the page's.
pub(crate) async fn messages(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(params): Params<WindowParams>,
) -> Result<Response, PageError> {
    let WindowParams {
        before,
        generation: shown,
    } = params;
    let (_, history, generation) = read(&state, &id).await?;
    let shrunk = before.is_some_and(|before| before > history.len());
    if shrunk || shown.is_some_and(|shown| shown != generation) {
        return Err(PageError::conflict(format!(
            "Session {id:?} was rewritten since this page was shown (an undo, a summary, or \
             a delete), so its earlier messages are not the ones before the page's: reload \
             the page to see the session as it is now."
        )));
    }
    let end = before.unwrap_or(history.len());
    let messages = Messages::window(&id, &history, generation, end).loaded_earlier();
    Ok(render(StatusCode::OK, &messages))
}

/// The query of `GET /sessions/{id}/messages/{n}`: the generation the page that links to
/// it was read at, when it was.
#[derive(Debug, Deserialize)]
pub(crate) struct MessageParams {
    generation: Option<u64>,
}

/// `GET /sessions/{id}/messages/{n}?generation=G`: message n's stored JSON, whole and
/// pretty-printed, as a JSON document (what the transcript page shows as "raw JSON" and
/// its copy buttons copy from). 404 for a session or message not stored; 409 when the
/// session was rewritten since generation G (an undo, a replace), which may have put
/// another message at n; appends keep every position, and the answer.
pub(crate) async fn message(
    State(state): State<AppState>,
    Path((id, at)): Path<(String, usize)>,
    Params(params): Params<MessageParams>,
) -> Result<Response, PageError> {
    let shown = params.generation;
    let (_, history, generation) = read(&state, &id).await?;
    if shown.is_some_and(|shown| shown != generation) {
        return Err(PageError::conflict(format!(
            "Session {id:?} was rewritten since its page was shown, so message #{at} may \
             not be the one it showed: reload the page."
        )));
    }
    let message = history.get(at).ok_or_else(|| {
        PageError::not_found(format!(
            "Session {id:?} holds {} messages: there is no message #{at}.",
            history.len()
        ))
    })?;
    let json = serde_json::to_string_pretty(message).map_err(|err| {
        PageError::storage(&fusion::Error::Backend {
            backend: "fusion-ui",
            message: format!("message #{at} cannot be written as JSON: {err}"),
            retryable: false,
            source: None,
        })
    })?;
    Ok(([(CONTENT_TYPE, "application/json; charset=utf-8")], json).into_response())
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
