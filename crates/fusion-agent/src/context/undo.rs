//! What undoing the last turn of a stored history removes, when several writers share it.
//!
//! The last turn starts at the latest message the user wrote ([`latest_user_message`]).
//! With one writer it runs to the end of the history, and undoing it is a truncate. With
//! two, another writer's turn can still be running when this one is stored: its tool's
//! result, or its reply, then lands after this turn's answer. Truncating would remove them
//! too, and leave that writer's call without its result. So the turn ends where a message
//! that cannot be its own begins:
//!
//! - a tool result for a call the turn did not make (a call from before it), or
//! - a reply right after the turn's final answer (a reply without tool calls ends a turn).
//!
//! What follows such a message is the other writer's, provided the turn had ended there
//! (its last message a final answer): the undo then removes the turn alone and keeps the
//! rest, rewriting the history. If the turn had not ended, its messages and the other
//! writer's are mixed and nothing tells them apart; and context records after that point
//! name stored positions that removing the turn would shift. Both are refused
//! ([`Interleaved`]).
//!
//! Text-mode observations carry no call id, so a late one is not recognised: it reads as
//! a user message, the latest turn (see docs/context-management.md).

use std::collections::HashSet;
use std::fmt;

use fusion_core::{ChatMessage, Role};

use super::groups::latest_user_message;
use super::records::is_context_record;

/// The last turn of a history: the messages an undo removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastTurn {
    /// Where it starts: the user message that opened it.
    pub start: usize,
    /// Where it ends (exclusive). Usually the history's length; less when another
    /// writer's messages, stored after the turn's answer, follow it and stay.
    pub end: usize,
}

impl LastTurn {
    /// How many messages undoing the turn removes.
    pub fn removed(&self) -> usize {
        self.end - self.start
    }

    /// Whether the turn runs to the end of `history`, so that undoing it is a truncate to
    /// [`start`](Self::start).
    pub fn is_tail_of(&self, history: &[ChatMessage]) -> bool {
        self.end == history.len()
    }

    /// `history` without the turn: what an undo stores when the turn is not its tail.
    pub fn remove_from(&self, history: &[ChatMessage]) -> Vec<ChatMessage> {
        let mut kept = Vec::with_capacity(history.len() - self.removed());
        kept.extend_from_slice(&history[..self.start]);
        kept.extend_from_slice(&history[self.end..]);
        kept
    }
}

/// Why the last turn cannot be undone without removing another writer's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interleaved {
    /// Where the last turn starts.
    pub start: usize,
    /// The first message after it that is not its own.
    pub foreign: usize,
    /// Why the messages after `foreign` cannot be kept apart from the turn.
    pub reason: &'static str,
}

impl fmt::Display for Interleaved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the last turn (from message {}) is mixed with another writer's turn, which \
             stored message {} while it ran; {}, so undoing it would remove that writer's \
             messages too",
            self.start, self.foreign, self.reason
        )
    }
}

/// The last turn of `history` (see the module docs): `None` when no user message starts
/// one, an error when another writer's messages are mixed into it.
pub fn last_turn(history: &[ChatMessage]) -> Result<Option<LastTurn>, Interleaved> {
    let Some(start) = latest_user_message(history) else {
        return Ok(None);
    };
    let Some(foreign) = first_foreign(history, start) else {
        return Ok(Some(LastTurn {
            start,
            end: history.len(),
        }));
    };
    let interleaved = |reason| Interleaved {
        start,
        foreign,
        reason,
    };
    let ended = history[start..foreign]
        .iter()
        .rev()
        .find(|m| !is_context_record(m))
        .is_some_and(is_final_answer);
    if !ended {
        return Err(interleaved(
            "the turn had not answered yet, and its messages and the other writer's cannot \
             be told apart",
        ));
    }
    if history[foreign..].iter().any(is_context_record) {
        return Err(interleaved(
            "a summary or pruning stored after it names positions that removing the turn \
             would shift",
        ));
    }
    Ok(Some(LastTurn {
        start,
        end: foreign,
    }))
}

/// The first message after the turn starting at `start` that cannot be the turn's own: a
/// tool result for a call the turn did not make, or a reply after its final answer.
fn first_foreign(history: &[ChatMessage], start: usize) -> Option<usize> {
    let mut calls: HashSet<&str> = HashSet::new();
    let mut previous: Option<&ChatMessage> = None;
    for (at, message) in history.iter().enumerate().skip(start + 1) {
        if is_context_record(message) {
            continue;
        }
        let foreign = match message.role {
            Role::Tool => !message
                .tool_call_id
                .as_deref()
                .is_some_and(|id| calls.contains(id)),
            Role::Assistant => previous.is_some_and(is_final_answer),
            Role::User | Role::System => false,
        };
        if foreign {
            return Some(at);
        }
        calls.extend(message.tool_calls.iter().map(|call| call.id.as_str()));
        previous = Some(message);
    }
    None
}

/// A reply that asks for no tool call: in native mode the turn's answer. (A text-mode
/// `Action:` reply asks for none either, but its observation, a user message, follows it,
/// never a second reply.)
fn is_final_answer(message: &ChatMessage) -> bool {
    message.role == Role::Assistant && message.tool_calls.is_empty()
}

#[cfg(test)]
mod tests {
    use fusion_core::ToolCall;

    use super::*;
    use crate::context::summary_record;

    fn call(id: &str) -> ChatMessage {
        ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new(id, "slow", "{}")])
    }

    /// A's turn asks for a call; B's whole turn is stored while it runs; A's result and
    /// answer land after B's answer.
    fn interleaved() -> Vec<ChatMessage> {
        vec![
            ChatMessage::system("prompt"),
            ChatMessage::user("A asks"),
            call("a1"),
            ChatMessage::user("B asks"),
            ChatMessage::assistant("B's answer"),
            ChatMessage::tool_result("a1", "A's result"),
            ChatMessage::assistant("A's answer"),
        ]
    }

    #[test]
    fn a_turn_alone_runs_to_the_end() {
        let history = vec![
            ChatMessage::user("one"),
            ChatMessage::assistant("1"),
            ChatMessage::user("two"),
            call("c"),
            ChatMessage::tool_result("c", "done"),
            ChatMessage::tool_result("c", "interrupted"),
            ChatMessage::assistant("2"),
        ];
        let turn = last_turn(&history).unwrap().unwrap();
        assert_eq!((turn.start, turn.end), (2, 7));
        assert!(turn.is_tail_of(&history));
        assert_eq!(last_turn(&[ChatMessage::system("s")]), Ok(None));
    }

    #[test]
    fn another_writers_late_result_and_answer_stay() {
        let history = interleaved();
        let turn = last_turn(&history).unwrap().unwrap();
        assert_eq!((turn.start, turn.end, turn.removed()), (3, 5, 2));
        assert!(!turn.is_tail_of(&history));
        let kept: Vec<_> = turn
            .remove_from(&history)
            .iter()
            .map(|m| m.content.clone())
            .collect();
        assert_eq!(
            kept,
            ["prompt", "A asks", "", "A's result", "A's answer"].map(String::from)
        );
    }

    #[test]
    fn a_late_reply_after_the_answer_is_another_writers() {
        let history = vec![
            ChatMessage::user("A asks"),
            ChatMessage::user("B asks"),
            ChatMessage::assistant("B's answer"),
            ChatMessage::assistant("A's answer"),
        ];
        let turn = last_turn(&history).unwrap().unwrap();
        assert_eq!((turn.start, turn.end), (1, 3));
    }

    #[test]
    fn a_turn_still_running_when_the_other_writer_stored_is_refused() {
        let mut history = interleaved();
        // B's answer had not come yet: B's call waits, A's result lands between.
        history[4] = call("b1");
        history.push(ChatMessage::tool_result("b1", "B's result"));
        let err = last_turn(&history).unwrap_err();
        assert_eq!((err.start, err.foreign), (3, 5));
        assert!(err.to_string().contains("had not answered"), "{err}");
    }

    #[test]
    fn a_record_after_the_other_writers_messages_is_refused() {
        let mut history = interleaved();
        history.push(summary_record("summary", 2));
        let err = last_turn(&history).unwrap_err();
        assert!(err.to_string().contains("positions"), "{err}");
        // A record inside the turn goes with it, as before.
        let mut history = interleaved();
        history.insert(4, summary_record("summary", 2));
        assert_eq!(last_turn(&history).unwrap().unwrap().end, 6);
    }
}
