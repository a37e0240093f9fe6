//! What undoing the last turn of a stored history removes, when several writers share it.
//!
//! The last turn starts at the latest message the user wrote ([`latest_user_message`]).
//! With one writer it runs to the end of the history, and undoing it is a truncate. With
//! two, another writer's turn can still be running when this one is stored: its tool's
//! result, or its reply, then lands among or after this turn's messages. Truncating would
//! remove them too. So the turn ends where a message that cannot be its own begins:
//!
//! - a tool result for a call the turn did not make (a call from before it), or one after
//!   the turn's final answer; likewise a text-mode observation naming a reply the turn did
//!   not make (the loop stores each observation with the id of the reply it answers);
//! - a reply right after another reply (a turn answers each reply with tool results or,
//!   in text mode, an observation before it replies again).
//!
//! What follows such a message is kept, and the turn alone removed (the history
//! rewritten around it), only when nothing can be misattributed: the message is a tool
//! result (two replies in a row show two writers answered, not which answer is the
//! turn's); the turn had ended there (its last message a final answer); no turn before it
//! was waiting for its model when it started (its reply could then sit anywhere in the
//! turn, looking like the turn's own; one waiting for its tools is fine, since its next
//! message is a result naming its call), which is counted over the whole history; no kept
//! result answers a call of the turn; and no context record after that point names
//! positions the removal would shift. Otherwise undo is refused ([`Interleaved`]). A turn
//! in which nothing looks foreign is truncated whole, as with one writer (a reply of a
//! writer still waiting for its model, landed inside the turn and nothing after, cannot be
//! told from the turn's own then).
//!
//! A text-mode `Action:` reply counts as a call: its observation names it, and one left
//! without an observation of its own turn (none, or only the "interrupted" one a later
//! opening stored) waits for its tool. Observations stored by earlier releases name no
//! reply, so a late one of those is not recognised: it reads as a user message, the latest
//! turn (see docs/context-management.md).

use std::collections::HashSet;
use std::fmt;

use fusion_core::{ChatMessage, Role};

use super::groups::{
    answerable, answered, answers, is_loop_observation, latest_user_message, observed_reply,
};
use super::records::is_context_record;
use super::view::{REACT_ACTION_METADATA_KEY, is_repair};
use crate::react_text::{ReactStep, parse_react};

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
    let refuse = |reason| {
        Err(Interleaved {
            start,
            foreign,
            reason,
        })
    };
    if history[foreign].role == Role::Assistant {
        return refuse(
            "two replies follow each other there, so two writers answered and which \
             answer is the turn's cannot be told",
        );
    }
    if a_writer_waited_for_its_model(&history[..start]) {
        return refuse(
            "a turn before it was still waiting for its model when it started, so that \
             turn's reply may be among this one's and cannot be told apart",
        );
    }
    let turn = &history[start..foreign];
    let ended = turn
        .iter()
        .rev()
        .find(|m| !is_context_record(m))
        .is_some_and(is_final_answer);
    if !ended {
        return refuse(
            "the turn had not answered yet, and its messages and the other writer's cannot \
             be told apart",
        );
    }
    let calls: HashSet<&str> = turn.iter().flat_map(answerable).collect();
    let kept = &history[foreign..];
    if kept.iter().any(|m| answers_one_of(m, &calls)) {
        return refuse("a later message answers one of its tool calls or actions");
    }
    if kept.iter().any(is_context_record) {
        return refuse(
            "a summary or pruning stored after it names positions that removing the turn \
             would shift",
        );
    }
    Ok(Some(LastTurn {
        start,
        end: foreign,
    }))
}

/// The first message after the turn starting at `start` that cannot be the turn's own: a
/// tool result for a call the turn did not make or after its final answer, an observation
/// naming a reply the turn did not make, or a reply right after a reply.
fn first_foreign(history: &[ChatMessage], start: usize) -> Option<usize> {
    let mut calls: HashSet<&str> = HashSet::new();
    let mut previous: Option<&ChatMessage> = None;
    for (at, message) in history.iter().enumerate().skip(start + 1) {
        if is_context_record(message) {
            continue;
        }
        let foreign = match message.role {
            Role::Tool => previous.is_some_and(is_final_answer) || !answers_one_of(message, &calls),
            Role::Assistant => previous.is_some_and(|p| p.role == Role::Assistant),
            // Every user message after the turn's start is an observation
            // (`latest_user_message`): of the reply before it, unless it names another.
            Role::User => observed_reply(message).is_some() && !answers_one_of(message, &calls),
            // System messages are not replies.
            Role::System => false,
        };
        if foreign {
            return Some(at);
        }
        calls.extend(answerable(message));
        previous = Some(message);
    }
    None
}

/// Whether some turn of `before` (the history before the last turn) was still waiting for
/// its model when the last turn started, so that its reply may land inside the last turn
/// looking like the turn's own. Counted, since turns of several writers interleave: each
/// turn a user message starts ends with one final answer, or is waiting for its tools (a
/// reply whose calls, or whose text-mode action, have no answer of its own turn yet): that
/// writer's next message, if it still runs, is a result or observation naming its call.
/// More turns started than settled so means one waits for its model, or was cut while it
/// did; either way its reply cannot be ruled out.
fn a_writer_waited_for_its_model(before: &[ChatMessage]) -> bool {
    let said: Vec<&ChatMessage> = before.iter().filter(|m| !is_context_record(m)).collect();
    let mut started = 0usize;
    let mut ended = 0usize;
    // The calls real results answer among the messages after the one looked at: walked
    // newest first, so each reply is checked against what came after it in one pass.
    let mut answered_later: HashSet<&str> = HashSet::new();
    for (at, message) in said.iter().enumerate().rev() {
        let previous = at.checked_sub(1).map(|p| said[p]);
        let next = said.get(at + 1).copied();
        match message.role {
            Role::User if !is_loop_observation(previous, message) => started += 1,
            // A reply the loop could not read is answered by an observation, not ended.
            Role::Assistant
                if is_final_answer(message) && !next.is_some_and(|n| answers(message, n)) =>
            {
                ended += 1;
            }
            Role::Assistant if waits_for_its_tools(message, &answered_later) => ended += 1,
            Role::Tool | Role::User if !is_repair(message) => {
                // An observation stored without the reply's name answers the one before it.
                let unnamed = previous
                    .filter(|_| message.role == Role::User)
                    .and_then(|p| p.id.as_ref());
                answered_later.extend(answered(message).or(unnamed.map(|id| id.as_str())));
            }
            _ => {}
        }
    }
    started > ended
}

/// Whether `reply` asks for tools none of whose calls its own turn answered after it
/// (`answered_later`; none at all, or only the results a later opening stored for a
/// cancelled turn, "interrupted" or real ([`is_repair`])):
/// its turn waits for its tools (or was cut while they ran), and the next message it
/// stores, if any, is a result naming one of its calls. (A turn stores its results
/// together, once all are in.) A text-mode action the loop marked as one
/// ([`REACT_ACTION_METADATA_KEY`]) likewise, by its id, which its observation names.
fn waits_for_its_tools(reply: &ChatMessage, answered_later: &HashSet<&str>) -> bool {
    if reply.metadata.contains_key(REACT_ACTION_METADATA_KEY) && !reply.has_tool_calls() {
        return reply
            .id
            .as_ref()
            .is_some_and(|id| !answered_later.contains(id.as_str()));
    }
    !reply.tool_calls.is_empty() && call_ids(reply).all(|id| !answered_later.contains(id))
}

/// A reply that ends its turn: no tool calls, and not a text-mode `Action:` (which its
/// observation answers): neither one the loop marked as a call
/// ([`REACT_ACTION_METADATA_KEY`]; read without the session's tools, a call of a
/// `final_answer` tool reads as an answer) nor, unmarked, one that reads as an action. A
/// native answer reads as unreadable text-mode output, so a reply the loop could not read
/// counts too; the observation that follows it is still the turn's own
/// ([`is_observation`](super::is_observation)).
fn is_final_answer(message: &ChatMessage) -> bool {
    message.role == Role::Assistant
        && message.tool_calls.is_empty()
        && !message.metadata.contains_key(REACT_ACTION_METADATA_KEY)
        && !matches!(parse_react(&message.content), ReactStep::Action { .. })
}

fn call_ids(message: &ChatMessage) -> impl Iterator<Item = &str> {
    message.tool_calls.iter().map(|call| call.id.as_str())
}

/// Whether `message` is a tool result naming one of `calls`, or an observation naming one
/// of them ([`answerable`]).
fn answers_one_of(message: &ChatMessage, calls: &HashSet<&str>) -> bool {
    answered(message).is_some_and(|id| calls.contains(id))
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
    fn a_turn_still_running_when_the_other_writer_stored_is_refused() {
        let mut history = interleaved();
        // B had not answered when A's result came: B's call and result surround it.
        history[4] = call("b1");
        history.push(ChatMessage::tool_result("b1", "B's result"));
        let err = last_turn(&history).unwrap_err();
        assert_eq!((err.start, err.foreign), (3, 5));
        assert!(err.to_string().contains("had not answered"), "{err}");

        // A later result for one of the turn's calls would lose its call.
        let mut history = interleaved();
        history.splice(
            4..4,
            [call("b1"), ChatMessage::tool_result("b1", "B's result")],
        );
        history.push(ChatMessage::tool_result("b1", "a second result"));
        assert!(last_turn(&history).unwrap_err().reason.contains("answers"));
    }

    #[test]
    fn after_interrupted_results_the_other_writer_s_late_messages_are_told_apart() {
        let mut history = interleaved();
        let mut repair = ChatMessage::tool_result("a1", "interrupted");
        repair
            .metadata
            .insert(crate::context::INTERRUPTED_METADATA_KEY.into(), true.into());
        history.insert(3, repair);
        let turn = last_turn(&history).unwrap().unwrap();
        assert_eq!((turn.start, turn.end), (4, 6));
    }

    /// The same with the real result of a call that finished before the cancel, which the
    /// next opening stored beside the "interrupted" one of the call that had not: the
    /// cancelled turn still counts as over.
    #[test]
    fn after_a_cancelled_turn_s_late_real_result_the_other_writer_s_messages_are_told_apart() {
        let mut history = interleaved();
        history[2] = ChatMessage::assistant_with_tool_calls(
            "",
            vec![
                ToolCall::new("a1", "slow", "{}"),
                ToolCall::new("a0", "quick", "{}"),
            ],
        );
        let late = ChatMessage::tool_result("a0", "quick result")
            .with_metadata(crate::context::LATE_RESULT_METADATA_KEY, true.into());
        let interrupted = ChatMessage::tool_result("a1", "interrupted")
            .with_metadata(crate::context::INTERRUPTED_METADATA_KEY, true.into());
        history.splice(3..3, [late, interrupted]);
        let turn = last_turn(&history).unwrap().unwrap();
        assert_eq!((turn.start, turn.end), (5, 7));
    }

    /// A text-mode action (marked as the loop marks it, with an id) and what a writer stores
    /// for it: `named` observations name it, as the loop's do; unnamed ones are stored as
    /// earlier releases did.
    fn action_and_observation(text: &str, named: bool) -> [ChatMessage; 2] {
        let action = ChatMessage::assistant("Thought: look\nAction: slow\nAction Input: {}")
            .with_new_id()
            .with_metadata(crate::context::REACT_ACTION_METADATA_KEY, "slow".into());
        let of = action.id.clone().filter(|_| named);
        let observation = crate::context::observation(text, of.as_ref());
        [action, observation]
    }

    /// [`interleaved`] in text mode: B's opening answered A's action as interrupted, and
    /// A's real observation lands after B's answer.
    fn interleaved_text(named: bool) -> Vec<ChatMessage> {
        let [action, real] = action_and_observation("A's result", named);
        let mut interrupted =
            crate::context::interrupted_observation(std::slice::from_ref(&action)).unwrap();
        if !named {
            interrupted
                .metadata
                .remove(crate::context::OBSERVED_REPLY_METADATA_KEY);
        }
        vec![
            ChatMessage::system("prompt"),
            ChatMessage::user("A asks"),
            action,
            interrupted,
            ChatMessage::user("B asks"),
            ChatMessage::assistant("Final Answer: B's answer"),
            real,
            ChatMessage::assistant("Final Answer: A's answer"),
        ]
    }

    #[test]
    fn another_writer_s_late_named_observation_and_answer_stay() {
        let history = interleaved_text(true);
        let turn = last_turn(&history).unwrap().unwrap();
        assert_eq!((turn.start, turn.end), (4, 6));
        let kept = turn.remove_from(&history);
        // What is left is A's turn alone, which the next undo removes whole.
        assert_eq!(last_turn(&kept), Ok(Some(LastTurn { start: 1, end: 6 })));

        // Unnamed, as earlier releases stored it, the late observation reads as the
        // user's: the latest turn, as before.
        let legacy = interleaved_text(false);
        assert_eq!(last_turn(&legacy).unwrap().unwrap().start, 6);
    }

    /// A named observation inside the turn naming a reply from before it is another
    /// writer's, as a result for a call from before it is.
    #[test]
    fn a_named_observation_of_a_reply_before_the_turn_is_foreign() {
        let mut history = interleaved_text(true);
        // A's observation lands inside B's turn, before B's answer: B had not answered.
        history.swap(5, 6);
        let err = last_turn(&history).unwrap_err();
        assert_eq!((err.start, err.foreign), (4, 5));
        assert!(err.reason.contains("had not answered"), "{err}");
    }

    /// Found by review: an action the loop marked as a call of a `final_answer` tool
    /// (smolagents' way) read as the turn's final answer, since undo reads replies
    /// without the session's tools: B's turn, its tool still running when A's late
    /// observation landed after it, was taken for answered and undone under it, where a
    /// native call still running makes undo refuse. The mark says it is a call.
    #[test]
    fn an_action_marked_as_a_call_of_a_final_answer_tool_is_no_answer() {
        let mut history = interleaved_text(true);
        let b_s_call = ChatMessage::assistant("Action: final_answer\nAction Input: {}")
            .with_new_id()
            .with_metadata(REACT_ACTION_METADATA_KEY, "final_answer".into());
        // B's turn: its question and its call, whose tool still runs; then A's late
        // observation.
        history[5] = b_s_call;
        history.truncate(7);
        let err = last_turn(&history).unwrap_err();
        assert_eq!((err.start, err.foreign), (4, 6));
        assert!(err.reason.contains("had not answered"), "{err}");
    }

    /// An action answered by an unnamed observation (stored so by the release that marked
    /// actions but did not name them) does not wait for its tool: its writer waits for its
    /// model, whose reply may sit in the later turn.
    #[test]
    fn a_marked_action_answered_by_an_unnamed_observation_waits_for_its_model() {
        let [action, observation] = action_and_observation("read", false);
        let history = vec![
            ChatMessage::user("C asks"),
            call("c1"),
            ChatMessage::user("A asks"),
            action,
            observation,
            ChatMessage::user("B asks"),
            ChatMessage::assistant("Final Answer: B's answer"),
            ChatMessage::tool_result("c1", "C's result"),
        ];
        let err = last_turn(&history).unwrap_err();
        assert!(err.reason.contains("waiting for its model"), "{err}");
    }

    /// Found by review: the writer before the turn was waiting for its model, so its
    /// answer may sit inside the turn looking like the turn's own.
    #[test]
    fn a_turn_started_while_the_writer_before_waited_for_its_model_is_refused_when_mixed() {
        let answers_in_a_row = vec![
            ChatMessage::system("prompt"),
            ChatMessage::user("A asks"),
            ChatMessage::user("B asks"),
            ChatMessage::assistant("A's answer"),
            ChatMessage::assistant("B's answer"),
        ];
        let during_a_tool = vec![
            ChatMessage::user("A asks"),
            ChatMessage::user("B asks"),
            call("b1"),
            ChatMessage::assistant("A's answer"),
            ChatMessage::tool_result("b1", "B's result"),
            ChatMessage::assistant("B's answer"),
        ];
        let text_mode = vec![
            ChatMessage::user("A asks"),
            ChatMessage::user("B asks"),
            ChatMessage::assistant("Thought: look\nAction: read\nAction Input: {}"),
            ChatMessage::assistant("Thought: look\nAction: list\nAction Input: {}"),
            ChatMessage::user("Observation: b"),
            ChatMessage::assistant("Final Answer: B"),
        ];
        for history in [answers_in_a_row, during_a_tool, text_mode] {
            let err = last_turn(&history).unwrap_err();
            assert!(err.reason.contains("cannot be told"), "{err}");
        }
        // Found by the second review: the waiting writer's question is not the message
        // right before the turn (two writers, then three).
        let hidden = vec![
            ChatMessage::user("A asks"),
            ChatMessage::user("B asks 0"),
            ChatMessage::assistant("B's answer 0"),
            ChatMessage::user("B asks 1"),
            ChatMessage::assistant("A's answer"),
            ChatMessage::assistant("B's answer 1"),
        ];
        let three = vec![
            ChatMessage::user("A asks"),
            ChatMessage::user("C asks"),
            call("a1"),
            ChatMessage::user("B asks"),
            call("b1"),
            ChatMessage::tool_result("b1", "B's result"),
            ChatMessage::assistant("C's answer"),
            ChatMessage::assistant("B's answer"),
        ];
        let behind_a_late_result = vec![
            ChatMessage::user("X asks"),
            ChatMessage::user("A asks"),
            call("a1"),
            ChatMessage::user("B asks"),
            ChatMessage::assistant("X's answer"),
            ChatMessage::tool_result("a1", "A's result"),
        ];
        for history in [hidden, three, behind_a_late_result] {
            assert!(last_turn(&history).is_err(), "{history:?}");
        }
        // Without anything foreign, such a turn is the tail, as with one writer (a turn
        // cancelled while its model thought, then a new one).
        let cancelled = vec![
            ChatMessage::user("A asks"),
            ChatMessage::user("again"),
            ChatMessage::assistant("answer"),
        ];
        assert_eq!(last_turn(&cancelled).unwrap().unwrap().start, 1);
        assert!(
            last_turn(&cancelled)
                .unwrap()
                .unwrap()
                .is_tail_of(&cancelled)
        );
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
