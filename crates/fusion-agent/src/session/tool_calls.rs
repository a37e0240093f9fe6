//! Running the tool calls of a reply: each call announced, all run at once, each result
//! kept as it comes (for a turn cancelled meanwhile), and the outcomes returned in call
//! order for the turn to store together.

use std::sync::Arc;

use fusion_core::{ChatMessage, Error, Expect, Result, ToolCall};
use futures::StreamExt;
use tracing::{info, warn};

use super::store::{TURN_CONFLICT, explain_conflict};
use super::stream::Emitter;
use super::{AgentSession, FinishedCalls, Unread};
use crate::events::AgentEvent;
use crate::executor::ToolOutcome;

/// How many times a reply with calls is stored against the exact revision last read before
/// it goes as a plain append (see [`AgentSession::persist_calling`]): each miss means
/// another writer appended meanwhile, and three in a row is no race but a busy session.
const CALLING_ATTEMPTS: usize = 3;

impl AgentSession {
    /// Stores `reply`, whose calls' ids [`ensure_call_ids`] made unique against memory and
    /// what storage holds beyond it ([`Unread`]), with ids unique against the session as
    /// stored: another writer's reply appended since the session last read may hold the
    /// same ids (servers that number each reply's calls afresh send `call_0` in every
    /// reply), and a plain append stored both.
    ///
    /// The append requires the exact revision the session knows storage to hold
    /// ([`stored_revision`](Self::stored_revision)), so on the common path (nobody else
    /// wrote) it is the one write a plain append is. When it misses, the session is read
    /// once, ids are made unique against what it holds, and the reply is stored against
    /// that read; after [`CALLING_ATTEMPTS`] misses, as a plain append whose calls all get
    /// ids of the session's own making ([`fresh_call_ids`]), as no read vouches for what
    /// lands before it. A session deleted or rewritten meanwhile ends the turn as any
    /// append of it does.
    ///
    /// Memory keeps only this turn's messages, as after a plain append, and what the read
    /// found beyond them is counted in [`Unread`], with its call ids: the turn's later
    /// replies then store at the first attempt unless someone writes again, and the
    /// model sees the other writers' messages from the next turn's catch-up on (a request
    /// must end with this turn's own).
    pub(super) async fn persist_calling(
        &mut self,
        mut reply: ChatMessage,
        iteration: usize,
    ) -> Result<()> {
        // One id across the attempts: a reread finds a reply whose store's answer was lost.
        reply.ensure_id();
        let mut expect = Expect::Exactly(self.stored_revision());
        for attempt in 1.. {
            let err = match self.append_expecting(expect, vec![reply.clone()]).await {
                Err(err @ Error::Conflict { .. }) if attempt <= CALLING_ATTEMPTS => err,
                stored => return stored.map_err(|err| explain_conflict(err, TURN_CONFLICT)),
            };
            let (stored, revision) = self.shared.storage.load_revision(self.id.as_str()).await?;
            if revision.generation != self.generation {
                return Err(explain_conflict(err, TURN_CONFLICT));
            }
            let landed = stored.iter().find(|message| message.id == reply.id);
            if let Some(landed) = landed {
                // An attempt whose answer was lost (a retrying storage resent it).
                self.history.push(landed.clone());
            }
            self.unread = Unread::beyond(&self.history, &stored);
            if landed.is_some() {
                return Ok(());
            }
            info!(
                attempt,
                "another writer appended to the session; checking the reply's call ids against it"
            );
            expect = if attempt < CALLING_ATTEMPTS {
                ensure_call_ids(
                    &mut reply.tool_calls,
                    iteration,
                    &self.history,
                    &self.unread,
                );
                Expect::Exactly(self.stored_revision())
            } else {
                // Another writer's reply stored after this read may hold the ids it
                // lacks (`call_0` again): ids of this session's making are in no other
                // writer's reply.
                warn!(
                    attempts = attempt,
                    "other writers kept appending to the session; storing the reply as a \
                     plain append, with call ids of its own"
                );
                fresh_call_ids(&mut reply.tool_calls, iteration);
                Expect::Generation(self.generation)
            };
        }
        unreachable!("the last attempt returns")
    }

    /// Runs the calls of the reply just stored (the history's last message) and returns
    /// their outcomes in call order. Each result is kept in `finished_calls` as its call
    /// finishes, so that if the turn is cancelled while other calls still run, the next
    /// write stores the results of those that finished rather than "interrupted" ones.
    /// The results are stored together by the caller, once all are in: one append, right
    /// after the reply, as every reader of the history expects of one writer.
    ///
    /// A reply that was `cut` short (the output token limit, the content filter) may end
    /// inside its last call: that call is answered with the reason instead of run with
    /// what arrived. Its arguments cannot tell: a client reads arguments that never began
    /// as `{}`, and some servers close cut JSON themselves; a model that finished its
    /// calls ends its reply for `tool_calls`, not for `length`.
    pub(super) async fn run_calls(
        &mut self,
        iteration: usize,
        cut: Option<&'static str>,
        events: &Emitter,
    ) -> Vec<ToolOutcome> {
        let reply = &self.history[self.history.len() - 1];
        let calls = reply.tool_calls.clone();
        for call in &calls {
            announce(events, iteration, call);
        }
        self.finished_calls = reply.id.clone().map(|reply| FinishedCalls {
            reply,
            results: Vec::with_capacity(calls.len()),
        });
        let mut outcomes: Vec<Option<ToolOutcome>> = vec![None; calls.len()];
        let unfinished = cut
            .zip(calls.last())
            .map(|(because, last)| unfinished_call(last, because));
        let runnable = match unfinished {
            Some(outcome) => {
                if let Some(finished) = &mut self.finished_calls {
                    finished.results.push(outcome.to_message());
                }
                outcomes[calls.len() - 1] = Some(outcome);
                &calls[..calls.len() - 1]
            }
            None => &calls[..],
        };
        // Its own handle on the executor, so that the calls borrow nothing of `self`.
        let shared = Arc::clone(&self.shared);
        let mut running = shared.executor.execute_each(runnable);
        while let Some((at, outcome)) = running.next().await {
            if let Some(finished) = &mut self.finished_calls {
                finished.results.push(outcome.to_message());
            }
            outcomes[at] = Some(outcome);
        }
        outcomes
            .into_iter()
            .map(|outcome| outcome.expect("execute_each yields one outcome per call"))
            .collect()
    }
}

/// The answer to a call of a reply that was cut short, `because` why: the call is not
/// run.
pub(super) fn unfinished_call(call: &ToolCall, because: &str) -> ToolOutcome {
    ToolOutcome {
        call_id: call.id.clone(),
        tool: call.name.clone(),
        arguments: call.arguments.clone(),
        output: cut_call_observation(because),
        success: false,
        duration: std::time::Duration::ZERO,
        approval: None,
    }
}

/// What the model is told of a call it asked for in a reply cut short `because` why.
fn cut_call_observation(because: &str) -> String {
    format!(
        "Error: this call was not run: your reply was cut short ({because}), so its \
         arguments may be incomplete. Call the tool again; if its arguments are long, \
         split the work into smaller calls."
    )
}

/// Tells the observer that `call`, asked for in `iteration`, is about to run.
pub(super) fn announce(events: &Emitter, iteration: usize, call: &ToolCall) {
    events.emit(AgentEvent::ToolCallStarted {
        iteration,
        tool: call.name.clone(),
        arguments: call.arguments.clone(),
    });
}

/// Gives every call an id not blank that no other call of the reply, of the `history`
/// before it, or of the messages storage holds beyond that history (`unread`) has:
/// results are matched to calls by id, and some servers leave ids out,
/// repeat them within a reply, or number each reply's calls afresh (`call_0` in every
/// reply; `functions.name:N` counted per request behind some proxies). A repeat from an
/// earlier reply is refused by strict servers as a duplicate in the history, and would
/// leave undo and the request view (which match two writers' calls and results by id)
/// guessing. An id made here holds a random tag of the reply, so that the calls of two
/// replies (two writers' turns on one session, two iterations) never share one.
///
/// Cost: one pass over the history's calls per call of the reply, linear in the history
/// as the request built from it is.
pub(super) fn ensure_call_ids(
    calls: &mut [ToolCall],
    iteration: usize,
    history: &[ChatMessage],
    unread: &Unread,
) {
    let called_before = |id: &str| {
        unread.called(id)
            || history
                .iter()
                .any(|message| message.tool_calls.iter().any(|call| call.id == id))
    };
    replace_call_ids(calls, iteration, |before, id| {
        id.trim().is_empty() || before.iter().any(|b| b.id == id) || called_before(id)
    });
}

/// Gives every call an id made here, whatever it had: for a reply stored where no read
/// tells which ids other writers' replies hold.
pub(super) fn fresh_call_ids(calls: &mut [ToolCall], iteration: usize) {
    replace_call_ids(calls, iteration, |_, _| true);
}

/// Replaces the id of each call for which `replace` (given the calls before it and its
/// id) holds by one made here: `call_fusion_{iteration}_{position}_{tag}`, the tag random
/// per reply.
fn replace_call_ids(
    calls: &mut [ToolCall],
    iteration: usize,
    replace: impl Fn(&[ToolCall], &str) -> bool,
) {
    let mut tag = None;
    for i in 0..calls.len() {
        let (before, rest) = calls.split_at_mut(i);
        let call = &mut rest[0];
        if replace(before, &call.id) {
            let tag = *tag.get_or_insert_with(fusion_core::new_generation);
            call.id = format!("call_fusion_{iteration}_{i}_{tag:x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_repeated_call_ids_are_replaced() {
        let mut calls = vec![
            ToolCall::new("", "a", "{}"),
            ToolCall::new("x", "a", "{}"),
            ToolCall::new("x", "a", "{}"),
            // Found by a hunt: blanks name no call (servers and import refuse them).
            ToolCall::new(" \t", "a", "{}"),
        ];
        let again = calls.clone();
        ensure_call_ids(&mut calls, 2, &[], &Unread::default());
        assert_eq!(calls[1].id, "x");
        for (i, call) in [(0, &calls[0]), (2, &calls[2]), (3, &calls[3])] {
            let prefix = format!("call_fusion_2_{i}_");
            assert!(call.id.starts_with(&prefix), "{}", call.id);
        }
        // Another reply's calls (another writer's turn) never get the same ids.
        let mut other = again;
        ensure_call_ids(&mut other, 2, &[], &Unread::default());
        assert_ne!(other[0].id, calls[0].id);
    }

    /// Found by a review: some servers number each reply's calls afresh (`call_0` in
    /// every reply), and the repeat was stored, two calls of one session sharing an id.
    #[test]
    fn an_id_an_earlier_reply_of_the_session_called_is_replaced() {
        let history = [
            ChatMessage::user("find the files"),
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("call_0", "a", "{}")]),
            ChatMessage::tool_result("call_0", "found"),
        ];
        let mut calls = vec![
            ToolCall::new("call_0", "a", "{}"),
            ToolCall::new("call_1", "a", "{}"),
        ];
        ensure_call_ids(&mut calls, 3, &history, &Unread::default());
        assert!(
            calls[0].id.starts_with("call_fusion_3_0_"),
            "{}",
            calls[0].id
        );
        assert_eq!(calls[1].id, "call_1", "not called before: kept");
    }
}
