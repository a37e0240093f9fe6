//! [`TurnStream`]: a turn seen as a stream of [`AgentEvent`]s, the [`Emitter`] the turn
//! reports them through, and [`read_reply`], which turns the model's streamed reply into
//! those events.
//!
//! The turn is one future ([`AgentSession::send_message_stream`] builds it); it pushes its
//! events into a queue as it goes, and the stream hands them out, then the turn's result.
//! Nothing runs unless the stream is polled, and dropping the stream drops the turn, with
//! the same meaning as dropping a [`send_message`](AgentSession::send_message) future
//! (see [`crate::session`]'s turn docs and `docs/agent.md`, "Cancelling a turn").

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use fusion_core::{Error, Result};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};

use crate::events::{AgentEvent, EventObserver, TaskResult};
use crate::llm::{ChatDelta, ChatResponse, ChatStream};
use crate::react_text::FinalAnswerStream;

#[cfg(doc)]
use super::AgentSession;

/// Where a turn's events go: the session's observer, if any, and the turn's stream.
pub(super) struct Emitter {
    observer: Option<EventObserver>,
    queue: Arc<Mutex<VecDeque<AgentEvent>>>,
}

impl Emitter {
    /// Tells the observer and queues `event` for the stream.
    pub(super) fn emit(&self, event: AgentEvent) {
        if let Some(observer) = &self.observer {
            observer(&event);
        }
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(event);
    }
}

/// The events of one turn, as it runs: what
/// [`AgentSession::send_message_stream`] returns.
///
/// Yields `Ok(event)` for each [`AgentEvent`] in order, then `Ok(AgentEvent::Finished)`
/// with the turn's [`TaskResult`], or an `Err` if the turn failed; then ends. The turn
/// runs only while the stream is polled. Dropping the stream cancels the turn.
#[must_use = "a turn runs only while its stream is polled"]
pub struct TurnStream<'a> {
    /// The turn, until it is over.
    turn: Option<BoxFuture<'a, Result<TaskResult>>>,
    /// Events the turn emitted and the stream has not handed out yet.
    queue: Arc<Mutex<VecDeque<AgentEvent>>>,
    /// The turn's result, handed out after its last event.
    outcome: Option<Result<TaskResult>>,
    /// Told about [`AgentEvent::Finished`] too, which only the stream makes.
    observer: Option<EventObserver>,
}

impl<'a> TurnStream<'a> {
    /// A stream over the turn `start` builds, which reports through the emitter it is given.
    pub(super) fn new<F>(observer: Option<EventObserver>, start: F) -> Self
    where
        F: FnOnce(Emitter) -> BoxFuture<'a, Result<TaskResult>>,
    {
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        let emitter = Emitter {
            observer: observer.clone(),
            queue: Arc::clone(&queue),
        };
        TurnStream {
            turn: Some(start(emitter)),
            queue,
            outcome: None,
            observer,
        }
    }

    /// A stream that only reports `error` (a turn refused before it started).
    pub(super) fn failed(error: fusion_core::Error) -> Self {
        TurnStream {
            turn: None,
            queue: Arc::default(),
            outcome: Some(Err(error)),
            observer: None,
        }
    }

    fn next_queued(&self) -> Option<AgentEvent> {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }
}

impl Stream for TurnStream<'_> {
    type Item = Result<AgentEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Events are only ever queued while the turn is polled (here), so polling the turn
        // is the only wake-up the stream needs.
        if let Some(event) = self.next_queued() {
            return Poll::Ready(Some(Ok(event)));
        }
        if let Some(turn) = self.turn.as_mut() {
            match turn.as_mut().poll(cx) {
                Poll::Ready(outcome) => {
                    self.turn = None;
                    self.outcome = Some(outcome);
                }
                Poll::Pending => {
                    return match self.next_queued() {
                        Some(event) => Poll::Ready(Some(Ok(event))),
                        None => Poll::Pending,
                    };
                }
            }
        }
        if let Some(event) = self.next_queued() {
            return Poll::Ready(Some(Ok(event)));
        }
        let finished = self
            .outcome
            .take()
            .map(|outcome| outcome.map(AgentEvent::Finished));
        if let (Some(observer), Some(Ok(event))) = (&self.observer, &finished) {
            observer(event);
        }
        Poll::Ready(finished)
    }
}

impl fmt::Debug for TurnStream<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnStream")
            .field("running", &self.turn.is_some())
            .finish_non_exhaustive()
    }
}

/// Reads a streamed reply to its end, passing its text on as [`AgentEvent::TextDelta`]s:
/// all of it with native tool calling, only the final answer's in text ReAct mode. Returns
/// the reply and whether any answer text was passed on in text mode.
pub(super) async fn read_reply(
    mut stream: ChatStream<'_>,
    iteration: usize,
    text_mode: bool,
    events: &Emitter,
) -> Result<(ChatResponse, bool)> {
    let mut answer = text_mode.then(FinalAnswerStream::new);
    let emit_text = |text: String| {
        if !text.is_empty() {
            events.emit(AgentEvent::TextDelta { iteration, text });
        }
    };
    while let Some(delta) = stream.next().await {
        match delta? {
            ChatDelta::Text(text) => match answer.as_mut() {
                None => emit_text(text),
                Some(answer) => emit_text(answer.push(&text)),
            },
            ChatDelta::Done(response) => {
                let streamed = match answer.as_mut() {
                    None => false,
                    Some(answer) => {
                        emit_text(answer.finish());
                        answer.sent_any()
                    }
                };
                return Ok((response, streamed));
            }
            // Tool calls are announced when they run, with their complete arguments.
            _ => {}
        }
    }
    Err(Error::Llm {
        message: "the model's reply stream ended without a complete reply".into(),
        status: None,
        retryable: true,
        source: None,
    })
}
