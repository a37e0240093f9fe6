//! The chat: `POST /sessions/{id}/chat` starts a turn, `GET .../turns/{n}/events` streams
//! it as server-sent events, `POST .../turns/{n}/approvals/{q}` answers a tool call's
//! question and `POST .../turns/{n}/stop` stops it.
//!
//! The event stream is resumable. Each event's id is how many frames the page holds
//! after it; a browser reconnecting on its own sends that back as `Last-Event-ID` and
//! gets only the frames after it. A connection without one (the first, or one htmx made
//! afresh after the server refused it) starts with a `reset` holding every frame so far,
//! so the page never shows a step twice. `end` replaces the panel once the turn is over.

use std::convert::Infallible;
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use fusion::agent::ApprovalDecision;
use futures::Stream;
use tokio::sync::watch;

use super::form::FormFields;
use super::request::{existing, wants_fragment};
use crate::chat::{AnswerError, Chats, Frame, Outcome, StartError, Turn};
use crate::html::chat::{ChatEnd, ChatForm, ChatFrame, ChatLive};
use crate::html::transcript::Messages;
use crate::html::{PageError, render};
use crate::state::AppState;

/// The longest message accepted, in characters: a page's textarea holds a message, not a
/// file.
const MAX_MESSAGE_CHARS: usize = 100_000;

/// The chat, or a 404 page saying how to turn it on.
fn chats(state: &AppState) -> Result<&Arc<Chats>, PageError> {
    state.chat.as_ref().ok_or_else(|| {
        PageError::not_found(
            "The chat is off: this app was started without an LLM. Set OPENAI_API_KEY (or \
             OPENAI_BASE_URL for a local server) and start `fusion ui` again.",
        )
    })
}

/// `POST /sessions/{id}/chat` with the field `message`: starts a turn. htmx gets the
/// live panel (and an empty form out of band); a plain form post is sent back to the
/// transcript, which shows the running turn.
pub(crate) async fn send(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let chats = chats(&state)?;
    let form = FormFields::parse(&body);
    let message = form.required("message")?.trim().to_string();
    if message.is_empty() {
        return Err(PageError::bad_request("The message is empty."));
    }
    if message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(PageError::bad_request(format!(
            "The message is longer than {MAX_MESSAGE_CHARS} characters."
        )));
    }
    existing(state.storage.as_ref(), &id).await?;
    let turn =
        chats
            .start(state.storage.clone(), &id, message)
            .map_err(|StartError::Busy(number)| {
                PageError::conflict(format!(
                    "Turn {number} is still running on this session; stop it or wait for it \
                 to end."
                ))
            })?;
    if !wants_fragment(&headers) {
        return Ok(Redirect::to(&format!("/sessions/{id}#turn")).into_response());
    }
    let form = ChatForm::new(&id, true).render().ok();
    Ok(render(StatusCode::OK, &ChatLive::new(&turn, form)))
}

/// The turn `number` of session `id`, or a 404 page.
fn kept_turn(state: &AppState, id: &str, number: u64) -> Result<Arc<Turn>, PageError> {
    chats(state)?.turn(id, number).ok_or_else(|| {
        PageError::not_found(format!(
            "Turn {number} of session {id:?} is not kept here; reload the session's page."
        ))
    })
}

/// `GET /sessions/{id}/turns/{number}/events`: the turn's frames as server-sent events,
/// from `Last-Event-ID` on when the browser sends one. A turn no longer kept gets a
/// single `end` saying so, not a 404, which htmx would retry forever.
pub(crate) async fn events(
    State(state): State<AppState>,
    Path((id, number)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let chats = chats(&state)?;
    let Some(turn) = chats.turn(&id, number) else {
        let end = ChatEnd::forgotten(number).render().unwrap_or_default();
        let once = futures::stream::once(async move {
            Ok::<_, Infallible>(Event::default().event("end").data(html_lines(end)))
        });
        return Ok(Sse::new(once).into_response());
    };
    let resume_at = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    let watcher = Watcher {
        closing: chats.closing(),
        changes: turn.watch(),
        turn,
        state,
        sent: resume_at,
        ended: false,
    };
    Ok(Sse::new(watcher.into_stream())
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// One page watching a turn.
struct Watcher {
    turn: Arc<Turn>,
    state: AppState,
    changes: watch::Receiver<u64>,
    /// The server's shutdown, which ends the stream.
    closing: watch::Receiver<bool>,
    /// How many frames the page holds; `None` until it has been sent a `reset`.
    sent: Option<usize>,
    ended: bool,
}

impl Watcher {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut watcher| async move {
            let event = watcher.next().await?;
            Some((Ok(event), watcher))
        })
    }

    /// The next event for the page, waiting for the turn to report something; `None`
    /// after `end`, or when the server shuts down.
    async fn next(&mut self) -> Option<Event> {
        if self.ended || *self.closing.borrow() {
            return None;
        }
        loop {
            // Marked seen before reading, so a change made after the read wakes us.
            self.changes.borrow_and_update();
            let (id, number) = (&self.turn.session, self.turn.number);
            let Some(sent) = self.sent else {
                let snapshot = self.turn.snapshot(0);
                self.sent = Some(snapshot.total);
                let steps = frames_html(id, number, &snapshot.frames);
                let html = format!(
                    "<div class=\"turn-steps\" sse-swap=\"step\" hx-swap=\"beforeend\">{steps}</div>"
                );
                return Some(step_event("reset", snapshot.total, html));
            };
            let snapshot = self.turn.snapshot(sent);
            if sent > snapshot.total {
                // An id this turn never sent (another turn's, or forged): start over.
                self.sent = None;
                continue;
            }
            if !snapshot.frames.is_empty() {
                self.sent = Some(snapshot.total);
                let html = frames_html(id, number, &snapshot.frames);
                return Some(step_event("step", snapshot.total, html));
            }
            if let Some(outcome) = snapshot.outcome {
                self.ended = true;
                let html = self.end_html(&outcome).await;
                return Some(step_event("end", snapshot.total, html));
            }
            tokio::select! {
                changed = self.changes.changed() => if changed.is_err() {
                    return None;
                },
                _ = self.closing.wait_for(|closing| *closing) => return None,
            }
        }
    }

    /// The end of the turn, with the session's newest messages as stored now.
    async fn end_html(&self, outcome: &Outcome) -> String {
        let id = &self.turn.session;
        // Without the messages the end still shows; the page can be reloaded.
        let messages = match self.state.storage.load_revision(id).await {
            Ok((history, revision)) if !history.is_empty() => {
                Messages::window(id, &history, revision.generation, history.len())
                    .render()
                    .ok()
            }
            _ => None,
        };
        ChatEnd::new(self.turn.number, outcome, messages)
            .render()
            .unwrap_or_default()
    }
}

fn step_event(name: &str, id: usize, html: String) -> Event {
    Event::default()
        .event(name)
        .id(id.to_string())
        .data(html_lines(html))
}

/// `html` with every `\r\n` and lone `\r` made `\n`, as the browser's HTML parser would
/// make them anyway. axum ends a `data:` line at each `\r` and at each `\n`, so a `\r\n`
/// in model text would otherwise arrive as an extra, empty line of data.
fn html_lines(html: String) -> String {
    if !html.contains('\r') {
        return html;
    }
    html.replace("\r\n", "\n").replace('\r', "\n")
}

/// `frames` rendered one after another.
fn frames_html(id: &str, number: u64, frames: &[Frame]) -> String {
    frames
        .iter()
        .filter_map(|frame| ChatFrame::new(id, number, frame).render().ok())
        .collect()
}

/// `POST /sessions/{id}/turns/{number}/approvals/{question}` with the field `decision`
/// (`approve` or `deny`): the question's card as it now stands; 409 with the card when
/// it was closed already (answered, or the turn ended), 404 for a question never asked.
pub(crate) async fn approve(
    State(state): State<AppState>,
    Path((id, number, question)): Path<(String, u64, u32)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let decision = match FormFields::parse(&body).required("decision")? {
        "approve" => ApprovalDecision::Approve,
        "deny" => ApprovalDecision::Deny,
        other => {
            return Err(PageError::bad_request(format!(
                "The decision {other:?} is neither \"approve\" nor \"deny\"."
            )));
        }
    };
    let turn = kept_turn(&state, &id, number)?;
    let (status, frame) = match turn.answer(question, decision) {
        Ok(frame) => (StatusCode::OK, frame),
        Err((AnswerError::Closed, Some(frame))) => (StatusCode::CONFLICT, frame),
        Err(_) => {
            return Err(PageError::not_found(format!(
                "Turn {number} asked no question {question}."
            )));
        }
    };
    if !wants_fragment(&headers) {
        return Ok(Redirect::to(&format!("/sessions/{id}#turn")).into_response());
    }
    Ok(render(status, &ChatFrame::new(&id, number, &frame)))
}

/// `POST /sessions/{id}/turns/{number}/stop`: asks the turn to stop; its event stream
/// says when it has. 204 for htmx (the panel updates itself), else back to the page.
pub(crate) async fn stop(
    State(state): State<AppState>,
    Path((id, number)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    kept_turn(&state, &id, number)?.stop();
    if !wants_fragment(&headers) {
        return Ok(Redirect::to(&format!("/sessions/{id}#turn")).into_response());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
