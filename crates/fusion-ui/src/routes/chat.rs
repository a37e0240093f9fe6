//! The chat: `POST /sessions/{id}/chat` starts a turn, `GET .../turns/{key}/events`
//! streams it as server-sent events, `POST .../turns/{key}/approvals/{q}` answers a tool
//! call's question and `POST .../turns/{key}/stop` stops it.
//!
//! A turn's key is unique across runs of the server (see [`Turn::key`]): a page left open
//! over a restart names a turn the new process does not know, and is told to reload
//! rather than watch, or answer the questions of, a turn it never showed.
//!
//! The event stream is resumable. Each event's id is the turn's key and how many frames
//! the page holds after it; a browser reconnecting on its own sends that back as
//! `Last-Event-ID` and gets only the frames after it. A connection without one (the
//! first, or one htmx made afresh after the server refused it), or with one this turn
//! did not send, starts with a `reset` holding every frame so far, so the page never
//! shows a step twice nor misses one. `end` replaces the panel once the turn is over.

use std::convert::Infallible;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use fusion::agent::ApprovalDecision;
use futures::Stream;
use tokio::sync::watch;

use super::busy::claim;
use super::form::FormFields;
use super::request::{existing, wants_fragment};
use crate::chat::{AnswerError, Chats, Frame, Outcome, StartError, Turn};
use crate::claims::Work;
use crate::html::chat::{ChatEnd, ChatForm, ChatFrame, ChatLive, Doubt};
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
    form: FormFields,
) -> Result<Response, PageError> {
    let chats = chats(&state)?;
    let message = form.required("message")?.trim().to_string();
    if message.is_empty() {
        return Err(PageError::bad_request("The message is empty."));
    }
    if message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(PageError::bad_request(format!(
            "The message is longer than {MAX_MESSAGE_CHARS} characters."
        )));
    }
    // Held from the check that the session exists until its turn is registered: a
    // delete or an undo between the two would leave the turn on a session gone or
    // rewritten, and one after them finds the turn running and is refused.
    let claim = claim(&state, &id, Work::StartingTurn)?;
    let info = existing(state.storage.as_ref(), &id).await?;
    let turn = chats
        .start(state.storage.clone(), &id, info.created_at, message)
        .map_err(|StartError::Busy| {
            PageError::conflict(
                "A turn is still running on this session; stop it or wait for it to end.",
            )
        })?;
    drop(claim);
    if !wants_fragment(&headers) {
        return Ok(Redirect::to(&format!("/sessions/{id}#turn")).into_response());
    }
    let form = ChatForm::new(&id, true).render().ok();
    Ok(render(StatusCode::OK, &ChatLive::new(&turn, form)))
}

/// The turn `key` of session `id`, or a 404 page.
fn kept_turn(state: &AppState, id: &str, key: &str) -> Result<Arc<Turn>, PageError> {
    chats(state)?.turn(id, key).ok_or_else(|| {
        PageError::not_found(format!(
            "Turn {key:?} of session {id:?} is not kept here (it ended long ago, or the \
             server was restarted since); reload the session's page."
        ))
    })
}

/// `GET /sessions/{id}/turns/{key}/events`: the turn's frames as server-sent events,
/// from `Last-Event-ID` on when the browser sends one of this turn's. A turn not kept
/// here (forgotten, or of an earlier run of the server) gets a single `end` telling the
/// page to reload, which replaces the panel and whatever card it showed; not a 404,
/// which htmx would retry forever.
pub(crate) async fn events(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let chats = chats(&state)?;
    let Some(turn) = chats.turn(&id, &key) else {
        let end = ChatEnd::forgotten(&key).render().unwrap_or_default();
        let once = futures::stream::once(async move {
            Ok::<_, Infallible>(Event::default().event("end").data(html_lines(end)))
        });
        return Ok(unbuffered(Sse::new(once)));
    };
    let resume_at = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| frames_held(&turn.key, value));
    let watcher = Watcher {
        closing: chats.closing(),
        changes: turn.watch(),
        turn,
        state,
        sent: resume_at,
        ended: false,
    };
    Ok(unbuffered(
        Sse::new(watcher.into_stream()).keep_alive(KeepAlive::default()),
    ))
}

/// `events` as the response, with `X-Accel-Buffering: no`: a proxy in front (nginx, and
/// others that honour it) then passes each event on as it comes instead of holding the
/// stream back until its buffer fills, which showed a reply in lumps, or only at its end.
fn unbuffered(events: impl IntoResponse) -> Response {
    let mut response = events.into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
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
            let turn = &self.turn;
            let Some(sent) = self.sent else {
                let snapshot = turn.snapshot(0);
                self.sent = Some(snapshot.total);
                // The page puts these in place of the steps it shows (see chat_live.html).
                // A browser drops an event without data, so no steps yet is a comment.
                let mut html = frames_html(turn, &snapshot.frames);
                if html.is_empty() {
                    html.push_str("<!-- no steps yet -->");
                }
                return Some(step_event(turn, "reset", snapshot.total, html));
            };
            let snapshot = turn.snapshot(sent);
            if sent > snapshot.total {
                // An id this turn never sent (forged): start over.
                self.sent = None;
                continue;
            }
            if !snapshot.frames.is_empty() {
                self.sent = Some(snapshot.total);
                let html = frames_html(turn, &snapshot.frames);
                return Some(step_event(turn, "step", snapshot.total, html));
            }
            if let Some(outcome) = snapshot.outcome {
                self.ended = true;
                let html = self.end_html(&outcome).await;
                return Some(step_event(&self.turn, "end", snapshot.total, html));
            }
            tokio::select! {
                changed = self.changes.changed() => if changed.is_err() {
                    return None;
                },
                _ = self.closing.wait_for(|closing| *closing) => return None,
            }
        }
    }

    /// The end of the turn, with the session's newest messages as stored now, and the
    /// user's message when the turn did not store it.
    async fn end_html(&self, outcome: &Outcome) -> String {
        let id = &self.turn.session;
        // Without the messages the end still shows; the page can be reloaded.
        let stored = self.state.storage.load_revision(id).await.ok();
        let messages = match &stored {
            Some((history, revision)) if !history.is_empty() => {
                Messages::window(id, history, revision.generation, history.len())
                    .render()
                    .ok()
            }
            _ => None,
        };
        let history = stored.as_ref().map(|(history, _)| history.as_slice());
        let unsent = self.turn.message_unsent(outcome, history);
        // Not found stored is not "not sent" when a write may land yet, or when the
        // session the turn read (and so may have written to) cannot be read now.
        let doubt = if self.turn.unsettled() {
            Some(Doubt::WriteUnfinished)
        } else if history.is_none() && self.turn.opened_session() {
            Some(Doubt::Unread)
        } else {
            None
        };
        ChatEnd::new(&self.turn.key, outcome, messages)
            .unsent(unsent.then_some(self.turn.message.as_str()), doubt)
            .render()
            .unwrap_or_default()
    }
}

/// Event `name` of `turn`, after which the page holds `held` frames: its id says both.
fn step_event(turn: &Turn, name: &str, held: usize, html: String) -> Event {
    Event::default()
        .event(name)
        .id(format!("{}:{held}", turn.key))
        .data(html_lines(html))
}

/// How many frames a page holds whose `Last-Event-ID` is `last`, when that id is one of
/// the turn `key`'s; `None` for another turn's id (or anything else), which gets a
/// `reset`.
fn frames_held(key: &str, last: &str) -> Option<usize> {
    let (of, held) = last.rsplit_once(':')?;
    (of == key).then(|| held.parse().ok()).flatten()
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

/// `frames` of `turn` rendered one after another.
fn frames_html(turn: &Turn, frames: &[Frame]) -> String {
    frames
        .iter()
        .filter_map(|frame| ChatFrame::new(turn, frame).render().ok())
        .collect()
}

/// `POST /sessions/{id}/turns/{key}/approvals/{question}` with the fields `decision`
/// (`approve` or `deny`), and `call` and `digest`, naming the call the card showed: the
/// question's card as it now stands; 409 with the card when it was closed already
/// (answered, or the turn ended), 409 when the question asks about another call than
/// the card showed (nothing is decided), 404 for a question never asked.
pub(crate) async fn approve(
    State(state): State<AppState>,
    Path((id, key, question)): Path<(String, String, u32)>,
    headers: HeaderMap,
    form: FormFields,
) -> Result<Response, PageError> {
    let decision = match form.required("decision")? {
        "approve" => ApprovalDecision::Approve,
        "deny" => ApprovalDecision::Deny,
        other => {
            return Err(PageError::bad_request(format!(
                "The decision {other:?} is neither \"approve\" nor \"deny\"."
            )));
        }
    };
    let turn = kept_turn(&state, &id, &key)?;
    let (call, digest) = (form.required("call")?, form.required("digest")?);
    let (status, frame) = match turn.answer(question, call, digest, decision) {
        Ok(frame) => (StatusCode::OK, ChatFrame::new(&turn, &frame)),
        // The card in place of the one answered: htmx swaps it (an HTML error answer
        // that is no `PageError`, routes/refusal.rs), saying the answer was too late.
        Err((AnswerError::Closed, Some(frame))) => (
            StatusCode::CONFLICT,
            ChatFrame::new(&turn, &frame).answered_late(),
        ),
        Err((AnswerError::NotShown, _)) => {
            return Err(PageError::conflict(format!(
                "Nothing was approved or denied: question {question} of this turn asks \
                 about another call than the card you answered showed."
            )));
        }
        Err(_) => {
            return Err(PageError::not_found(format!(
                "Turn {key:?} asked no question {question}."
            )));
        }
    };
    if !wants_fragment(&headers) {
        return Ok(Redirect::to(&format!("/sessions/{id}#turn")).into_response());
    }
    Ok(render(status, &frame))
}

/// `POST /sessions/{id}/turns/{key}/stop`: asks the turn to stop; its event stream says
/// when it has. 204 for htmx (the panel updates itself), else back to the page.
pub(crate) async fn stop(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    kept_turn(&state, &id, &key)?.stop();
    if !wants_fragment(&headers) {
        return Ok(Redirect::to(&format!("/sessions/{id}#turn")).into_response());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
