//! The visible structure of a stored history: its system prompt, latest summary and pruning
//! marks, and the remaining messages grouped so a tool call never leaves its results.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use fusion_core::{ChatMessage, MessageId, Role};

use super::records::{self, Mark, is_context_record};
use crate::react_text::{
    OBSERVATION_PREFIX, ReactStep, UNREADABLE_REPLY, is_final_answer_tool, parse_react_calling,
    render_observation,
};

/// A history read for building views. Building one is a single pass over the history
/// that looks at roles and metadata (and, for user messages starting `Observation: `, the
/// reply before them), so it costs O(messages) and reads no other text.
pub(crate) struct Layout<'a> {
    pub history: &'a [ChatMessage],
    /// The leading system prompt, if the history starts with one.
    pub system: Option<&'a ChatMessage>,
    /// The latest summary record, if any.
    pub summary: Option<&'a ChatMessage>,
    /// Pruning decisions of every prune record, by history index.
    pub marks: HashMap<usize, Mark>,
    /// History indices of the messages the model can see (after the system prompt and the
    /// summary's range, without context records and orphaned tool results), oldest first.
    pub body: Vec<usize>,
    /// `body` positions in groups: a message with the tool results (or text-mode
    /// observations) that answer it. Views keep or drop whole groups.
    pub units: Vec<Range<usize>>,
}

impl<'a> Layout<'a> {
    /// Reads `history`.
    pub fn new(history: &'a [ChatMessage]) -> Self {
        let system = history
            .first()
            .filter(|m| m.role == Role::System && !is_context_record(m));
        let mut summary = None;
        let mut covers = 0;
        let mut marks = HashMap::new();
        for (i, message) in history.iter().enumerate() {
            if message.metadata.is_empty() || message.role != Role::System {
                continue;
            }
            if let Some(n) = records::covers(message) {
                summary = Some(message);
                // A record can only cover what was stored before it.
                covers = n.min(i);
            }
            records::read_marks(message, i, &mut marks);
        }

        let start = covers.max(usize::from(system.is_some()));
        let mut body = Vec::with_capacity(history.len().saturating_sub(start));
        let mut units: Vec<Range<usize>> = Vec::new();
        let mut prev: Option<&ChatMessage> = None;
        for (i, message) in history.iter().enumerate().skip(start) {
            if is_context_record(message) {
                continue;
            }
            let answers_prev = message.role == Role::Tool || is_loop_observation(prev, message);
            if answers_prev {
                // Results whose call is not visible (covered by the summary) are dropped:
                // servers reject a tool result that follows no call. A result or named
                // observation that landed late, after other messages, joins the group
                // before it here; the view moves it to its call (`request_view`).
                let Some(unit) = units.last_mut() else {
                    continue;
                };
                body.push(i);
                unit.end = body.len();
            } else {
                units.push(body.len()..body.len() + 1);
                body.push(i);
            }
            prev = Some(message);
        }
        Self {
            history,
            system,
            summary,
            marks,
            body,
            units,
        }
    }

    /// The first message of the view: the system prompt with the summary appended, or
    /// whichever of the two exists.
    ///
    /// The summary joins the system prompt rather than following it as a second system
    /// message because many chat templates (Mistral, Gemma, some Qwen versions) reject or
    /// mishandle a system message anywhere but first.
    pub fn head(&self) -> Option<Cow<'a, ChatMessage>> {
        match (self.system, self.summary) {
            (Some(system), Some(summary)) => {
                let mut merged = system.clone();
                merged.content = format!("{}\n\n{}", system.content, summary.content);
                Some(Cow::Owned(merged))
            }
            // Metadata is never sent, so the record itself can be sent as it is.
            (one, other) => one.or(other).map(Cow::Borrowed),
        }
    }

    /// The message at `body` position `pos` as the model sees it (pruned or not).
    pub fn message(&self, pos: usize) -> Cow<'a, ChatMessage> {
        let index = self.body[pos];
        let message = &self.history[index];
        match self.marks.get(&index) {
            Some(&mark) => records::apply(message, mark),
            None => Cow::Borrowed(message),
        }
    }

    /// The messages of group `unit`, as the model sees them.
    pub fn unit(&self, unit: usize) -> impl Iterator<Item = Cow<'a, ChatMessage>> + '_ {
        self.units[unit].clone().map(|pos| self.message(pos))
    }

    /// Whether group `unit` starts with a user message: the start of a turn.
    pub fn is_turn_start(&self, unit: usize) -> bool {
        // Observations never start a group, so any user message here is the user's own.
        self.history[self.body[self.units[unit].start]].role == Role::User
    }

    /// The groups that start a turn, newest first.
    pub fn turn_starts_newest_first(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.units.len())
            .rev()
            .filter(|&u| self.is_turn_start(u))
    }
}

/// Metadata key marking a message of the user's that starts the way the loop's
/// observations do (`Observation: `): so it is read as the user's, the start of a turn,
/// whatever it says ([`is_observation`]). Only such messages carry it.
pub(crate) const TYPED_BY_USER_KEY: &str = "fusion_typed_by_user";

/// The user's message `text`, marked with [`TYPED_BY_USER_KEY`] when it starts like an
/// observation: text alone cannot tell it from the loop's, which a user may well paste.
pub(crate) fn user_message(text: &str) -> ChatMessage {
    let message = ChatMessage::user(text);
    if text.starts_with(OBSERVATION_PREFIX) {
        message.with_metadata(TYPED_BY_USER_KEY, serde_json::Value::Bool(true))
    } else {
        message
    }
}

/// Metadata key the text ReAct loop puts on every observation it stores, with the id of
/// the reply the observation answers as its value: text mode has no call ids, and an
/// observation that lands late (another writer stored messages while the tool ran) would
/// otherwise read as a message of the user's, the start of a turn. With it, views move a
/// late observation to its reply, as they do a late tool result, and undo tells it from
/// the turn after which it landed ([`last_turn`](super::last_turn)).
pub const OBSERVED_REPLY_METADATA_KEY: &str = "fusion_observation_of";

/// The id of the reply `message` answers, if it is an observation the loop stored naming
/// it ([`OBSERVED_REPLY_METADATA_KEY`]). Observations stored by earlier releases name none.
///
/// Only a message that could be the loop's counts: a user message worded as an
/// observation and not marked as typed by the user (metadata `fusion_typed_by_user`).
/// Metadata can be written by anyone who writes the session (an import, another program),
/// and the name alone would take a message of the user's for an observation: never a turn
/// start, and moved by the view next to the reply it names, or left out where that reply
/// is not.
pub fn observed_reply(message: &ChatMessage) -> Option<&str> {
    if message.role != Role::User
        || !message.content.starts_with(OBSERVATION_PREFIX)
        || message.metadata.contains_key(TYPED_BY_USER_KEY)
    {
        return None;
    }
    message.metadata.get(OBSERVED_REPLY_METADATA_KEY)?.as_str()
}

/// The observation telling the model `output`, naming the reply `of` it answers (the
/// reply's id; none for a reply stored without one, by a release before ids).
pub(crate) fn observation(output: &str, of: Option<&MessageId>) -> ChatMessage {
    let message = ChatMessage::user(render_observation(output));
    match of {
        Some(id) => message.with_metadata(OBSERVED_REPLY_METADATA_KEY, id.as_str().into()),
        None => message,
    }
}

/// Whether `message` is a text-mode observation the loop stored, so not the start of a
/// turn: one naming the reply it answers ([`observed_reply`]), wherever it landed, or one
/// stored without that name (by an earlier release) that answers `prev` (the message
/// before it that is not a context record; see [`is_observation`]).
pub(crate) fn is_loop_observation(prev: Option<&ChatMessage>, message: &ChatMessage) -> bool {
    observed_reply(message).is_some() || prev.is_some_and(|p| is_observation(p, message))
}

/// What the answer `message` names: the call a tool result answers, or the reply a named
/// observation does ([`observed_reply`]). `None` for any other message.
pub(crate) fn answered(message: &ChatMessage) -> Option<&str> {
    match message.role {
        Role::Tool => message.tool_call_id.as_deref(),
        _ => observed_reply(message),
    }
}

/// What answers to `message` name ([`answered`]): the ids of its tool calls and, for a
/// reply, its own id, which the text-mode observation answering it names.
pub(crate) fn answerable(message: &ChatMessage) -> impl Iterator<Item = &str> {
    let own = message
        .id
        .as_ref()
        .filter(|_| message.role == Role::Assistant);
    let calls = message.tool_calls.iter().map(|call| call.id.as_str());
    calls.chain(own.map(MessageId::as_str))
}

/// Whether `message` answers `reply`: a tool result naming one of its calls, or a
/// text-mode observation naming it, or, stored without a name (by an earlier release),
/// one right after it ([`is_observation`]).
pub(crate) fn answers(reply: &ChatMessage, message: &ChatMessage) -> bool {
    match answered(message) {
        Some(id) => answerable(reply).any(|own| own == id),
        None => message.role != Role::Tool && is_observation(reply, message),
    }
}

/// Whether `message` is a text-mode observation, so not the start of a turn: one the loop
/// stored naming the reply it answers ([`observed_reply`]), wherever it landed, or one
/// stored without that name (by an earlier release) answering `prev` (the message before
/// it that is not a context record): a user message starting `Observation: ` right after
/// a text-mode `Action:` reply, or the loop's answer to a reply it could not read
/// (`Observation: Error: your reply could not be read: ...`).
///
/// A native-mode answer also reads as unreadable text-mode output, so after one only that
/// exact answer counts: a user who starts a message `Observation: ` is taken for what they
/// are, the start of a turn, which undo and pruning rely on. It counts after a reply read
/// as a final answer too: a reply stored when the parser could not read it (`Final
/// Answer：` before the full-width colon was read) may read as one now, and the loop's
/// answer to it is still no message of the user's. An `Action:` naming the final answer
/// (`Action: Final Answer`, `Action: final_answer`) counts as an action: a session with a
/// tool of that name calls it and stores its result after it, and earlier releases,
/// which called every such action, answered it that no tool is so named. A message the
/// session marked as the user's (metadata `fusion_typed_by_user`) is never one, whatever
/// it says.
pub fn is_observation(prev: &ChatMessage, message: &ChatMessage) -> bool {
    if observed_reply(message).is_some() {
        return true;
    }
    if message.role != Role::User
        || prev.role != Role::Assistant
        || prev.has_tool_calls()
        || message.metadata.contains_key(TYPED_BY_USER_KEY)
    {
        return false;
    }
    let Some(observed) = message.content.strip_prefix(OBSERVATION_PREFIX) else {
        return false;
    };
    // Read as by a session that has a final-answer tool: whether this one has cannot be
    // told from its history, and the loop's message after such an action is either the
    // tool's result or, from earlier releases, that there is no such tool.
    match parse_react_calling(&prev.content, is_final_answer_tool) {
        ReactStep::Action { .. } => true,
        ReactStep::Invalid { .. } | ReactStep::FinalAnswer { .. } => {
            observed.starts_with(UNREADABLE_REPLY)
        }
    }
}

/// Index of the latest message the user wrote (not a text-mode observation, not a
/// context record), if any.
pub(crate) fn latest_user_message(history: &[ChatMessage]) -> Option<usize> {
    history
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, m)| m.role == Role::User)
        .find(|&(i, message)| {
            let prev = history[..i].iter().rev().find(|m| !is_context_record(m));
            !is_loop_observation(prev, message)
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::NO_SUCH_TOOL;
    use crate::react_text::render_observation;
    use fusion_core::ToolCall;

    #[test]
    fn the_observation_prefix_is_the_one_the_loop_writes() {
        assert!(render_observation("x").starts_with(OBSERVATION_PREFIX));
    }

    #[test]
    fn calls_and_results_form_one_group_and_orphans_at_the_start_are_dropped() {
        let history = vec![
            ChatMessage::tool_result("gone", "orphan"),
            ChatMessage::user("go"),
            ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("a", "t", "{}")]),
            ChatMessage::tool_result("a", "done"),
            ChatMessage::assistant("ok"),
        ];
        let layout = Layout::new(&history);
        assert_eq!(layout.body, [1, 2, 3, 4]);
        assert_eq!(layout.units, [0..1, 1..3, 3..4]);
        assert!(layout.is_turn_start(0));
        assert!(!layout.is_turn_start(1));
    }

    #[test]
    fn text_mode_observations_join_the_action_they_answer() {
        let history = vec![
            ChatMessage::user("go"),
            ChatMessage::assistant("Thought: look\nAction: list_dir\nAction Input: {}"),
            ChatMessage::user(render_observation("a.txt")),
            ChatMessage::assistant("Final Answer: a.txt"),
            ChatMessage::user("Observation: I typed this myself"),
        ];
        let layout = Layout::new(&history);
        assert_eq!(layout.units, [0..1, 1..3, 3..4, 4..5]);
        assert_eq!(latest_user_message(&history), Some(4));
        assert_eq!(latest_user_message(&history[..3]), Some(0));
        assert_eq!(latest_user_message(&history[1..2]), None);
    }

    #[test]
    fn a_user_message_starting_observation_after_a_plain_answer_starts_a_turn() {
        let history = vec![
            ChatMessage::user("hi"),
            ChatMessage::assistant("Hello there."),
            ChatMessage::user("Observation: my disk is full"),
            ChatMessage::assistant("I could not read that.\nAction:"),
            ChatMessage::user(render_observation(&format!("{UNREADABLE_REPLY}no tool"))),
            ChatMessage::user("Observation: typed"),
        ];
        let layout = Layout::new(&history);
        // The plain answer reads as unreadable text-mode output; only the loop's own
        // answer to such a reply joins it.
        assert_eq!(layout.units, [0..1, 1..2, 2..3, 3..5, 5..6]);
        assert!(layout.is_turn_start(2));
        assert_eq!(latest_user_message(&history[..3]), Some(2));
        assert_eq!(latest_user_message(&history[..5]), Some(2));
    }

    #[test]
    fn the_loops_answer_to_a_reply_now_read_as_a_final_answer_still_joins_it() {
        // Stored before the parser read the full-width colon: the reply was unreadable
        // then, and the loop answered it so.
        let history = vec![
            ChatMessage::user("q"),
            ChatMessage::assistant("Final Answer\u{ff1a} a"),
            ChatMessage::user(render_observation(&format!("{UNREADABLE_REPLY}no label"))),
            ChatMessage::assistant("Final Answer: a"),
            ChatMessage::user("Observation: typed after an answer"),
        ];
        let layout = Layout::new(&history);
        assert_eq!(layout.units, [0..1, 1..3, 3..4, 4..5]);
        assert_eq!(latest_user_message(&history[..4]), Some(0));
        assert_eq!(latest_user_message(&history), Some(4));
    }

    /// Found by review: the name alone made any user message an observation, one the
    /// session marked as typed by the user (documented as never one, whatever it says)
    /// and one not even worded as an observation (imported, or written by another
    /// program): undo skipped it as a turn start, and the view moved it next to the reply
    /// it named, or left it out when that reply was not there.
    #[test]
    fn only_the_loop_s_observations_are_named_ones() {
        let action = ChatMessage::assistant("Action: ls\nAction Input: {}").with_new_id();
        let of = action.id.clone();
        let named = |message: ChatMessage| {
            message.with_metadata(
                OBSERVED_REPLY_METADATA_KEY,
                of.as_ref().unwrap().as_str().into(),
            )
        };
        let typed = named(user_message("Observation: pasted by the user"));
        let unworded = named(ChatMessage::user("a question of the user's"));
        let the_loop_s = observation("a.txt", of.as_ref());
        assert_eq!(
            observed_reply(&the_loop_s),
            of.as_ref().map(|id| id.as_str())
        );
        for message in [typed, unworded] {
            assert_eq!(observed_reply(&message), None, "{message:?}");
            assert!(!is_observation(&action, &message), "{message:?}");
            let history = [ChatMessage::user("q"), action.clone(), message];
            assert_eq!(latest_user_message(&history), Some(2));
        }
    }

    /// A session with a `final_answer` tool (smolagents' way) calls it on `Action:
    /// final_answer`; its result is the loop's, in the reply's turn, not the user's.
    #[test]
    fn the_result_of_a_final_answer_tool_joins_its_call() {
        let history = vec![
            ChatMessage::user("q"),
            ChatMessage::assistant("Action: final_answer\nAction Input: {\"answer\": \"42\"}"),
            ChatMessage::user(render_observation("42")),
        ];
        let layout = Layout::new(&history);
        assert_eq!(layout.units, [0..1, 1..3]);
        assert_eq!(latest_user_message(&history), Some(0));
    }

    #[test]
    fn the_old_no_such_tool_answer_to_final_answer_joins_its_reply() {
        let answer = ChatMessage::assistant("Action: final_answer\nAction Input: a");
        let no_tool = |name: &str| {
            ChatMessage::user(render_observation(&format!(
                "{NO_SUCH_TOOL}`{name}`. Available tools: read_file."
            )))
        };
        assert!(is_observation(&answer, &no_tool("final_answer")));
        assert!(is_observation(&answer, &no_tool("Final Answer")));
        // Any result counts: it may be a final-answer tool's.
        assert!(is_observation(&answer, &no_tool("read_fil")));
        let typed = no_tool("Final Answer").content;
        assert!(!is_observation(&answer, &user_message(&typed)));
    }
}
