//! The turn: [`AgentSession::send_message`] and the agent loop behind it. Ask the model,
//! run the tools it calls, feed the results back, until it answers or the iteration limit
//! is reached.
//!
//! Persistence is part of the loop, not an afterthought: the user message is stored before
//! anything else happens (the automatic summary and the first request come after it), each
//! assistant message as soon as it arrives, and the results of its tool calls together as
//! soon as they are all in. A crash or a cancelled future therefore loses nothing already
//! said; at worst an assistant message is stored without its tool results, and the next
//! turn answers those calls with "interrupted" results
//! ([`crate::context::interrupted_results`]). With native tool calling the model's calls
//! arrive as structured `tool_calls`; otherwise (text ReAct mode) its reply is parsed with
//! [`parse_react`] and tool output goes back as a user message made by
//! [`render_observation`].
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
//!   again, up to [`OPENING_ATTEMPTS`] times. The system prompt is stored exactly once,
//!   whoever starts the session.
//! - If the session is deleted (or expires, or is rewritten) while the turn runs, the
//!   turn's next append stores nothing and the turn ends with a clear
//!   [`Error::Conflict`]: the session is not resurrected as a fragment holding an orphan
//!   reply. The next turn rereads storage and, for a deleted session, starts a whole new
//!   conversation with the system prompt.

use std::time::Instant;

use fusion_core::{ChatMessage, Error, Result, Role, ToolCall};
use tracing::{Instrument, debug, field, info, info_span, warn};

use super::AgentSession;
use super::store::explain_conflict;
use crate::context::interrupted_results;
use crate::events::{AgentEvent, Step, TaskResult};
use crate::executor::ToolOutcome;
use crate::llm::ChatRequest;
use crate::react_text::{ReactStep, parse_react, render_observation};

/// How many times a turn tries to store its opening when other writers keep changing the
/// session (each conflict means another writer won a race; three in a row is not a race).
const OPENING_ATTEMPTS: usize = 3;

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
    pub async fn send_message_with_iterations(
        &mut self,
        message: &str,
        max_iterations: usize,
    ) -> Result<TaskResult> {
        check_max_iterations(max_iterations)?;
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
            }
            self.settle().await?;
            // Cleared only on success: after an error or a dropped future, memory may hold
            // less (or more) than storage, and storage is the truth.
            self.needs_reload = true;
            let result = self.turn(message, max_iterations).await;
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

    async fn turn(&mut self, message: &str, max_iterations: usize) -> Result<TaskResult> {
        debug!(content = %message, "user message");
        self.open(message).await?;
        // After the opening, so that a failed or interrupted summary never loses the
        // user's message.
        self.auto_summarize().await?;

        let mut steps = Vec::new();
        for iteration in 1..=max_iterations {
            let span = info_span!("iteration", iteration, history = self.history.len());
            if let Some(answer) = self
                .iteration(iteration, &mut steps)
                .instrument(span)
                .await?
            {
                return Ok(TaskResult {
                    success: true,
                    result: answer,
                    steps,
                    iterations: iteration,
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
                steps.len()
            ),
            steps,
            iterations: max_iterations,
        })
    }

    /// One request to the model and whatever it asks for. `Some(answer)` ends the turn.
    async fn iteration(
        &mut self,
        iteration: usize,
        steps: &mut Vec<Step>,
    ) -> Result<Option<String>> {
        let text_mode = self.uses_text_react();
        let started = Instant::now();
        let response = {
            let request = ChatRequest {
                messages: self.request_view(),
                // In text mode the tools are described in the system prompt instead.
                tools: if text_mode {
                    Vec::new()
                } else {
                    self.shared.definitions.clone()
                },
                options: self.shared.sampling.clone(),
            };
            self.shared.llm.chat(&request).await?
        };
        let mut reply = response.message;
        // The client promises an assistant message; storing anything else would corrupt the
        // conversation, so the promise is enforced here.
        reply.role = Role::Assistant;
        reply.tool_call_id = None;
        ensure_call_ids(&mut reply.tool_calls, iteration);
        debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            tool_calls = reply.tool_calls.len(),
            content = %reply.content,
            "assistant reply"
        );

        // Native calls are honoured even from a text-mode client that sends them.
        if reply.has_tool_calls() {
            self.persist(vec![reply]).await?;
            let outcomes = {
                let calls = &self.history[self.history.len() - 1].tool_calls;
                for call in calls {
                    self.announce(iteration, call);
                }
                self.shared.executor.execute_all(calls).await
            };
            self.persist(outcomes.iter().map(ToolOutcome::to_message).collect())
                .await?;
            for outcome in outcomes {
                self.record_step(steps, step(outcome, iteration));
            }
            return Ok(None);
        }
        if !text_mode {
            let answer = reply.content.clone();
            self.persist(vec![reply]).await?;
            return Ok(Some(answer));
        }
        match parse_react(&reply.content) {
            ReactStep::FinalAnswer { answer, .. } => {
                self.persist(vec![reply]).await?;
                Ok(Some(answer))
            }
            ReactStep::Action { tool, input, .. } => {
                self.persist(vec![reply]).await?;
                // Text mode has no call ids; this one only links the step to its log lines.
                let call = ToolCall::new(format!("react_{iteration}"), tool, input);
                self.announce(iteration, &call);
                let outcome = self.shared.executor.execute(&call).await;
                let observation = ChatMessage::user(render_observation(&outcome.output));
                self.persist(vec![observation]).await?;
                self.record_step(steps, step(outcome, iteration));
                Ok(None)
            }
            ReactStep::Invalid { reason } => {
                debug!(%reason, "unreadable text-mode reply");
                let observation = ChatMessage::user(render_observation(&format!(
                    "Error: your reply could not be read: {reason}"
                )));
                self.persist(vec![reply, observation]).await?;
                Ok(None)
            }
        }
    }

    /// Stores the turn's opening: answers for calls an earlier turn left unanswered, the
    /// system prompt if the conversation is new, and the user message, in one append.
    /// Rereads and retries on a conflict (see the module docs).
    async fn open(&mut self, message: &str) -> Result<()> {
        let mut attempt = 1;
        loop {
            let mut opening = interrupted_results(&self.history);
            if !opening.is_empty() {
                warn!(
                    calls = opening.len(),
                    "storing 'interrupted' results for tool calls of a cancelled turn"
                );
            }
            if self.history.is_empty() && !self.shared.system_prompt.is_empty() {
                opening.push(ChatMessage::system(&self.shared.system_prompt));
            }
            opening.push(ChatMessage::user(message));
            match self.append(opening).await {
                Err(err @ Error::Conflict { .. }) if attempt < OPENING_ATTEMPTS => {
                    info!(
                        attempt,
                        error = %err,
                        "another writer started or rewrote the session; rereading it"
                    );
                    self.refresh().await?;
                    attempt += 1;
                }
                result => {
                    return result.map_err(|err| {
                        explain_conflict(
                            err,
                            "other writers kept changing the session while this turn tried to \
                             store its first message; nothing of this turn was stored",
                        )
                    });
                }
            }
        }
    }

    /// Tells the observer, if there is one.
    fn emit(&self, event: AgentEvent<'_>) {
        if let Some(observer) = &self.shared.observer {
            observer(&event);
        }
    }

    /// Tells the observer that `call`, asked for in `iteration`, is about to run.
    fn announce(&self, iteration: usize, call: &ToolCall) {
        self.emit(AgentEvent::ToolCallStarted {
            iteration,
            tool: &call.name,
            arguments: &call.arguments,
        });
    }

    /// Reports a finished call to the observer and adds it to the turn's steps.
    fn record_step(&self, steps: &mut Vec<Step>, step: Step) {
        self.emit(AgentEvent::ToolCallFinished(&step));
        steps.push(step);
    }
}

/// Gives every call a non-empty id unique within its message: results are matched to
/// calls by id, and some local servers leave ids out or repeat them.
fn ensure_call_ids(calls: &mut [ToolCall], iteration: usize) {
    for i in 0..calls.len() {
        let (before, rest) = calls.split_at_mut(i);
        let call = &mut rest[0];
        if call.id.is_empty() || before.iter().any(|b| b.id == call.id) {
            call.id = format!("call_fusion_{iteration}_{i}");
        }
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

    #[test]
    fn missing_and_repeated_call_ids_are_replaced() {
        let mut calls = vec![
            ToolCall::new("", "a", "{}"),
            ToolCall::new("x", "a", "{}"),
            ToolCall::new("x", "a", "{}"),
        ];
        ensure_call_ids(&mut calls, 2);
        let ids: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["call_fusion_2_0", "x", "call_fusion_2_2"]);
    }
}
