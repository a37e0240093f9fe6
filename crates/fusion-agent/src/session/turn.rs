//! The turn: [`AgentSession::send_message_stream`], [`AgentSession::send_message`] (that
//! stream collected) and the agent loop behind both. Ask the model, streaming its reply,
//! run the tools it calls, feed the results back, until it answers or the iteration limit
//! is reached.
//!
//! Persistence is part of the loop, not an afterthought: the user message is stored before
//! anything else happens (the automatic summary and the first request come after it), each
//! assistant message as soon as it is complete, and the results of its tool calls together
//! as soon as they are all in. A crash or a cancelled turn therefore loses nothing already
//! said. A reply cut off mid-stream is not stored at all (its text was shown, but half a
//! reply, or half a tool call, would corrupt the conversation). At worst an assistant
//! message is stored without its tool results: the session keeps the result of each call
//! that finished meanwhile, and the next turn stores those and answers the other calls with
//! "interrupted" results ([`crate::context::interrupted_results`]). With native tool calling the model's calls
//! arrive as structured `tool_calls`; otherwise (text ReAct mode) its reply is parsed with
//! [`parse_react`](crate::parse_react) and tool output goes back as a user message made by
//! [`render_observation`](crate::react_text::render_observation), naming the reply it answers.
//!
//! # Other writers
//!
//! Every append of a turn requires that the session was not deleted, expired, replaced or
//! truncated since the session read it (appends by other writers in between are fine).
//! - The opening (interrupted results, the system prompt of a new conversation, the user
//!   message) is one append, create-only when memory holds no session. If another writer
//!   started the session first, or deleted or rewrote it since this session last read it,
//!   nothing of the turn is stored yet, so the turn rereads storage, rebuilds its opening
//!   (with no system prompt if the session now exists, with one if it is gone) and tries
//!   again, up to [`OPENING_ATTEMPTS`](super::opening::OPENING_ATTEMPTS) times. The system prompt is stored exactly once,
//!   whoever starts the session.
//! - If the session is deleted (or expires, or is rewritten) while the turn runs, the
//!   turn's next append stores nothing and the turn ends with a clear
//!   [`Error::Conflict`]: the session is not resurrected as a fragment holding an orphan
//!   reply. The next turn rereads storage and, for a deleted session, starts a whole new
//!   conversation with the system prompt.

use std::time::Instant;

use fusion_core::{ChatMessage, Error, Result, Role, ToolCall};
use futures::StreamExt;
use tracing::{Instrument, debug, field, info, info_span, warn};

use super::AgentSession;
use super::stream::{Emitter, TurnStream, read_reply};
use super::tool_calls::{announce, ensure_call_ids, unfinished_call};
use crate::context::{REACT_ACTION_METADATA_KEY, observation};
use crate::events::{AgentEvent, Step, TaskResult};
use crate::executor::ToolOutcome;
use crate::llm::{ChatRequest, ChatResponse, Usage};
use crate::openai::rejects_native_tools;
use crate::react_text::{ReactStep, UNREADABLE_REPLY, parse_react_calling};

/// Rejects an iteration limit of 0, for the builder's default and for one turn's: a turn
/// makes at least one request.
pub(super) fn check_max_iterations(max_iterations: usize) -> Result<()> {
    if max_iterations == 0 {
        return Err(Error::Config("max_iterations must be at least 1".into()));
    }
    Ok(())
}

impl AgentSession {
    /// Runs one turn with the default iteration limit; see
    /// [`send_message_with_iterations`](Self::send_message_with_iterations).
    pub async fn send_message(&mut self, message: &str) -> Result<TaskResult> {
        self.send_message_with_iterations(message, self.shared.max_iterations)
            .await
    }

    /// Runs one turn: stores `message`, then asks the model, runs the tools it calls and
    /// asks again, until it answers without calling a tool or `max_iterations` requests
    /// were made.
    ///
    /// Tool failures are shown to the model, not returned. `Err` means the LLM or the
    /// storage failed (or `max_iterations` is 0); everything stored before that stays
    /// stored and consistent, and the session can be used again.
    ///
    /// This is [`send_message_stream_with_iterations`](Self::send_message_stream_with_iterations)
    /// collected: the same turn, keeping only its result.
    pub async fn send_message_with_iterations(
        &mut self,
        message: &str,
        max_iterations: usize,
    ) -> Result<TaskResult> {
        let mut events = self.send_message_stream_with_iterations(message, max_iterations);
        while let Some(event) = events.next().await {
            if let AgentEvent::Finished(result) = event? {
                return Ok(result);
            }
        }
        unreachable!("a turn's stream ends with its result or its error")
    }

    /// Runs one turn with the default iteration limit as a stream of events; see
    /// [`send_message_stream_with_iterations`](Self::send_message_stream_with_iterations).
    pub fn send_message_stream<'a>(&'a mut self, message: &'a str) -> TurnStream<'a> {
        let max_iterations = self.shared.max_iterations;
        self.send_message_stream_with_iterations(message, max_iterations)
    }

    /// Runs the turn [`send_message_with_iterations`](Self::send_message_with_iterations)
    /// runs, reporting it as it goes: the reply's text as the model writes it, each tool
    /// call as it starts and finishes, each iteration's usage and end, and last
    /// [`AgentEvent::Finished`] with the [`TaskResult`] (or an `Err`).
    ///
    /// The turn runs while the stream is polled. Dropping the stream cancels it: what was
    /// stored stays stored (the user message, every complete assistant message, the
    /// results of the tool calls of earlier replies), and a reply cut off mid-stream is not
    /// stored at all (so no half-written text or tool call ever reaches the history). The
    /// results of one reply's calls are stored together once all are in; if the turn is
    /// cancelled before, this session keeps the results of the calls that had finished,
    /// and its next turn (or summary, or prune) stores them, answering only the calls still
    /// running at the cancel as interrupted. (A session dropped with the turn, or a process
    /// that exits, loses them: the calls are then answered as interrupted.)
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use fusion_agent::{AgentEvent, AgentSession};
    ///
    /// # async fn demo(session: &mut AgentSession) -> fusion_core::Result<()> {
    /// let mut events = session.send_message_stream("Which files are in src/?");
    /// while let Some(event) = events.next().await {
    ///     match event? {
    ///         AgentEvent::TextDelta { text, .. } => print!("{text}"),
    ///         AgentEvent::ToolCallStarted { tool, .. } => println!("[{tool}]"),
    ///         AgentEvent::Finished(result) => println!("\n({} steps)", result.steps.len()),
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn send_message_stream_with_iterations<'a>(
        &'a mut self,
        message: &'a str,
        max_iterations: usize,
    ) -> TurnStream<'a> {
        if let Err(error) = check_max_iterations(max_iterations) {
            return TurnStream::failed(error);
        }
        let observer = self.shared.observer.clone();
        TurnStream::new(observer, move |events| {
            Box::pin(self.run_turn(message, max_iterations, events))
        })
    }

    /// The turn behind both ways of sending a message, in its tracing span.
    async fn run_turn(
        &mut self,
        message: &str,
        max_iterations: usize,
        events: Emitter,
    ) -> Result<TaskResult> {
        let span = info_span!(
            "turn",
            session_id = %self.id,
            mode = if self.uses_text_react() { "react_text" } else { "native" },
            max_iterations,
            iterations = field::Empty,
            steps = field::Empty,
            success = field::Empty,
        );
        async {
            if self.needs_reload {
                info!("the last turn or write did not finish; reloading the history from storage");
                self.reload().await?;
            } else if self.catch_up().await? {
                info!("another writer changed the session; read it again");
            }
            // Cleared only on success: after an error or a dropped future, memory may hold
            // less (or more) than storage, and storage is the truth.
            self.needs_reload = true;
            let result = self.turn(message, max_iterations, &events).await;
            if let Ok(result) = &result {
                self.needs_reload = false;
                let span = tracing::Span::current();
                span.record("iterations", result.iterations);
                span.record("steps", result.steps.len());
                span.record("success", result.success);
                info!("turn finished");
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn turn(
        &mut self,
        message: &str,
        max_iterations: usize,
        events: &Emitter,
    ) -> Result<TaskResult> {
        debug!(content = %message, "user message");
        // Before anything is stored: a tool whose definition panics, or two offered as
        // native tools under one name, fail the turn whole.
        let tools = self.shared.tool_view()?;
        if !self.uses_text_react() {
            tools.native_definitions()?;
        }
        self.open(message).await?;
        // After the opening, so that a failed or interrupted summary never loses the
        // user's message.
        self.auto_summarize().await?;

        let mut progress = Progress::default();
        for iteration in 1..=max_iterations {
            let span = info_span!("iteration", iteration, history = self.history.len());
            let answer = self
                .iteration(iteration, &mut progress, events)
                .instrument(span)
                .await?;
            if let Some((answer, finish_reason)) = answer {
                return Ok(TaskResult {
                    success: true,
                    result: answer,
                    steps: progress.steps,
                    iterations: iteration,
                    usage: progress.usage,
                    finish_reason,
                });
            }
        }
        warn!(
            max_iterations,
            "iteration limit reached without a final answer"
        );
        Ok(TaskResult {
            success: false,
            result: format!(
                "Stopped after {max_iterations} iterations without a final answer (the \
                 iteration limit), having made {} tool calls. Send another message to let the \
                 agent continue, or allow more iterations.",
                progress.steps.len()
            ),
            steps: progress.steps,
            iterations: max_iterations,
            usage: progress.usage,
            finish_reason: None,
        })
    }

    /// One request to the model and whatever it asks for. `Some` ends the turn with the
    /// answer and the finish reason the server gave for it.
    async fn iteration(
        &mut self,
        iteration: usize,
        progress: &mut Progress,
        events: &Emitter,
    ) -> Result<Option<(String, Option<String>)>> {
        let started = Instant::now();
        let (response, answer_streamed) = self.ask(iteration, events).await?;
        if let Some(usage) = response.usage {
            progress.usage = Some(progress.usage.map_or(usage, |sum| sum + usage));
            events.emit(AgentEvent::Usage { iteration, usage });
        }
        let finish_reason = response.finish_reason;
        let mut reply = response.message;
        // The client promises an assistant message; storing anything else would corrupt the
        // conversation, so the promise is enforced here.
        reply.role = Role::Assistant;
        reply.tool_call_id = None;
        ensure_call_ids(
            &mut reply.tool_calls,
            iteration,
            &self.history,
            &self.unread,
        );
        debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            tool_calls = reply.tool_calls.len(),
            content = %reply.content,
            "assistant reply"
        );
        let steps_before = progress.steps.len();
        let cut = crate::events::cut_because(finish_reason.as_deref());
        let answer = self
            .act_on(reply, iteration, answer_streamed, cut, progress, events)
            .await?;
        events.emit(AgentEvent::IterationFinished {
            iteration,
            tool_calls: progress.steps.len() - steps_before,
        });
        if let Some(because) = cut
            && answer.is_some()
        {
            warn!("the final answer is cut short: {because}");
        }
        Ok(answer.map(|answer| (answer, finish_reason)))
    }

    /// Asks the model for the next reply, streaming its text to `events`; returns the
    /// reply and whether (in text ReAct mode) any of its final answer was streamed.
    ///
    /// A model that rejects native tool calling switches this session to the text ReAct
    /// mode, and is asked again that way, once.
    async fn ask(&mut self, iteration: usize, events: &Emitter) -> Result<(ChatResponse, bool)> {
        let text_mode = self.uses_text_react();
        // Checked in both modes: text mode sends the tools in the system prompt.
        let tools = self.shared.tool_view()?;
        let asked = {
            let request = ChatRequest {
                messages: self.request_view(),
                // In text mode the tools are described in the system prompt instead, by
                // their names as they are: two offered alike natively do not matter there.
                tools: if text_mode {
                    Vec::new()
                } else {
                    tools.native_definitions()?.to_vec()
                },
                options: self.shared.sampling.clone(),
                cache: Some(&self.request_cache),
            };
            read_reply(
                self.shared.llm.chat_stream(&request),
                iteration,
                text_mode,
                events,
            )
            .await
        };
        match asked {
            Err(error) if !text_mode && rejects_native_tools(&error) => {
                warn!(
                    error = %error,
                    "the model does not support native tool calling; this session switches \
                     to the text ReAct format"
                );
                self.native_tools_rejected = true;
                events.emit(AgentEvent::SwitchedToTextReact {
                    reason: error.to_string(),
                });
                let request = ChatRequest {
                    messages: self.request_view(),
                    tools: Vec::new(),
                    options: self.shared.sampling.clone(),
                    cache: Some(&self.request_cache),
                };
                read_reply(
                    self.shared.llm.chat_stream(&request),
                    iteration,
                    true,
                    events,
                )
                .await
            }
            asked => asked,
        }
    }

    /// Stores `reply` and does what it asks: runs its tool calls and stores their
    /// results, or ends the turn with its answer.
    async fn act_on(
        &mut self,
        reply: ChatMessage,
        iteration: usize,
        answer_streamed: bool,
        cut: Option<&'static str>,
        progress: &mut Progress,
        events: &Emitter,
    ) -> Result<Option<String>> {
        // Native calls are honoured even from a text-mode client that sends them.
        if reply.has_tool_calls() {
            self.persist_calling(reply, iteration).await?;
            let outcomes = self.run_calls(iteration, cut, events).await;
            self.persist(outcomes.iter().map(ToolOutcome::to_message).collect())
                .await?;
            self.finished_calls = None;
            for outcome in outcomes {
                progress.record(events, step(outcome, iteration));
            }
            return Ok(None);
        }
        if !self.uses_text_react() {
            let answer = reply.content.clone();
            self.persist(vec![reply]).await?;
            return Ok(Some(answer));
        }
        let tools = self.shared.executor.tools();
        match parse_react_calling(&reply.content, |name| tools.get(name).is_some()) {
            ReactStep::FinalAnswer { answer, .. } => {
                self.persist(vec![reply]).await?;
                if !answer_streamed {
                    // The streamed reading showed nothing (an unusual layout the full
                    // parse still understood): the answer arrives whole.
                    events.emit(AgentEvent::TextDelta {
                        iteration,
                        text: answer.clone(),
                    });
                }
                Ok(Some(answer))
            }
            ReactStep::Action { tool, input, .. } => {
                // Marked as a call, as read here: the next turn's repair goes by the mark
                // if the tool never returns, not by reading the text with its own tools.
                let mut reply = reply.with_metadata(
                    REACT_ACTION_METADATA_KEY,
                    serde_json::Value::String(tool.clone()),
                );
                // Named by its observation, which may land after other writers' messages.
                let id = reply.ensure_id().clone();
                self.persist(vec![reply]).await?;
                // Text mode has no call ids; this one only links the step to its log lines.
                let input = self.shared.executor.react_arguments(&tool, input);
                let call = ToolCall::new(format!("react_{iteration}"), tool, input);
                announce(events, iteration, &call);
                let outcome = match cut {
                    // Its input may have been cut, or never begun (read as `{}`).
                    Some(because) => unfinished_call(&call, because),
                    None => self.shared.executor.execute(&call).await,
                };
                self.persist(vec![observation(&outcome.output, Some(&id))])
                    .await?;
                progress.record(events, step(outcome, iteration));
                Ok(None)
            }
            ReactStep::Invalid { reason } => {
                debug!(%reason, "unreadable text-mode reply");
                let mut reply = reply;
                let id = reply.ensure_id().clone();
                let observation = observation(&format!("{UNREADABLE_REPLY}{reason}"), Some(&id));
                self.persist(vec![reply, observation]).await?;
                Ok(None)
            }
        }
    }
}

/// What a turn has done so far: its tool calls and the tokens its requests used.
#[derive(Default)]
struct Progress {
    steps: Vec<Step>,
    usage: Option<Usage>,
}

impl Progress {
    /// Reports a finished call and adds it to the turn's steps.
    fn record(&mut self, events: &Emitter, step: Step) {
        events.emit(AgentEvent::ToolCallFinished(step.clone()));
        self.steps.push(step);
    }
}

fn step(outcome: ToolOutcome, iteration: usize) -> Step {
    Step {
        tool: outcome.tool,
        arguments: outcome.arguments,
        observation: outcome.output,
        success: outcome.success,
        iteration,
        duration: outcome.duration,
        approval: outcome.approval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sessions are driven from spawned tasks and `select!`s, so a turn must be `Send`.
    #[allow(dead_code)]
    fn turn_futures_are_send(session: &mut AgentSession) {
        fn is_send<T: Send>(_: T) {}
        is_send(session.send_message("hi"));
    }
}
