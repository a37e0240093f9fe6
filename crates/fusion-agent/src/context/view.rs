//! The view: the messages the model is sent for one request, built by [`request_view`]
//! from a stored history and a [`ContextPolicy`].
//!
//! "View" means exactly that, everywhere in this crate. Stored history is never rewritten
//! to make one: the view borrows every message it does not change (`Cow::Borrowed`), so
//! building it costs one pointer per message. Two steps make it:
//! 1. the policy and the context records decide which messages the model sees, and how
//!    (window, token budget, summary, pruning; a tool call keeps its results);
//! 2. what they kept is made sendable: every tool call gets a result (calls a cancelled
//!    turn left open get an "interrupted" one), and in text ReAct mode native tool
//!    messages are rewritten in the text format.
//!
//! [`AgentSession::request_view`](crate::AgentSession::request_view) is this function
//! with the session's own policy, counter and mode.
//!
//! ```
//! use fusion_agent::ContextPolicy;
//! use fusion_agent::context::{EstimateCounter, request_view};
//! use fusion_core::{ChatMessage, ToolCall};
//!
//! // A turn cancelled while `read_file` ran stored the call but no result.
//! let history = vec![
//!     ChatMessage::user("read a.txt"),
//!     ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("c1", "read_file", "{}")]),
//! ];
//! let view = request_view(&history, &ContextPolicy::default(), &EstimateCounter, None);
//! assert_eq!(view.len(), 3);
//! assert_eq!(view[2].tool_call_id.as_deref(), Some("c1"));
//! ```

use std::borrow::{Borrow, Cow};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use fusion_core::{ChatMessage, Role, ToolCall};

use super::groups::{answerable, answered, observation, observed_reply};
use super::policy::ContextPolicy;
use super::tokens::{TOKENS_PER_MESSAGE, TokenCounter, count_tools};
use super::window::apply_policy;
use crate::llm::ToolDefinition;
use crate::react_text::render_observation;

/// Metadata key marking a tool result Fusion wrote for a call that never finished.
pub const INTERRUPTED_METADATA_KEY: &str = "fusion_interrupted";

/// Metadata key the text ReAct loop puts on a reply it acts on as a call of a tool, with the
/// tool's name as its value: what [`interrupted_observation`] goes by when that reply is
/// left last without its observation.
pub const REACT_ACTION_METADATA_KEY: &str = "fusion_react_action";

/// Metadata key marking the real result of a call that finished in a turn cancelled before
/// all its calls were done, stored by the next write (a turn's opening) instead of an
/// "interrupted" one.
pub const LATE_RESULT_METADATA_KEY: &str = "fusion_result_of_cancelled_turn";

/// The messages the model is sent for the next request on `history`: what `policy`
/// (with tokens counted by `counter`) and the stored context records let it see, made
/// sendable.
///
/// Every assistant tool call gets a result: calls a cancelled turn left unanswered are
/// answered with an "interrupted" result right after the results that do exist, because
/// OpenAI-compatible servers reject a call without one. With `react_prompt` (text ReAct
/// mode) the prompt is appended to the system message (or sent as one, if there is none),
/// and native tool messages, from a session that once used native tools, are rewritten
/// in the text format; a token budget counts the prompt as part of the request. A budget
/// that holds no more than the latest turn is logged as a warning at each call (a
/// session's [`request_view`](crate::AgentSession::request_view) says it once).
///
/// Cost: one pass over the history's roles and metadata, token counts only for the
/// messages a budget keeps, and a copy only of the messages it changes.
pub fn request_view<'a>(
    history: &'a [ChatMessage],
    policy: &ContextPolicy,
    counter: &dyn TokenCounter,
    react_prompt: Option<&str>,
) -> Vec<Cow<'a, ChatMessage>> {
    request_view_with_tools(history, policy, counter, react_prompt, &[], None)
}

/// [`request_view`] for a request that also offers `tools` as native tools: a token
/// budget counts them ([`count_tools`]) as it counts the text ReAct prompt, so that it
/// holds for the whole request. `warned` notes a warning that the budget holds no more
/// than the latest turn, so that a session logs it once (see `apply_policy`).
pub(crate) fn request_view_with_tools<'a>(
    history: &'a [ChatMessage],
    policy: &ContextPolicy,
    counter: &dyn TokenCounter,
    react_prompt: Option<&str>,
    tools: &[ToolDefinition],
    warned: Option<&AtomicBool>,
) -> Vec<Cow<'a, ChatMessage>> {
    // Counted only for a budget: they cost a tokenization of every schema per request.
    let other_tokens = if policy.max_tokens.is_some() {
        tools_tokens(counter, react_prompt, tools)
    } else {
        0
    };
    make_sendable(
        apply_policy(history, policy, counter, other_tokens, warned),
        react_prompt,
    )
}

/// Tokens a request carries for its tools besides the messages, as a token budget counts
/// them: the definitions it offers natively ([`count_tools`]) and the text ReAct prompt.
pub(crate) fn tools_tokens(
    counter: &dyn TokenCounter,
    react_prompt: Option<&str>,
    tools: &[ToolDefinition],
) -> usize {
    // The prompt joins the system message, or is one: counted as one, an upper bound.
    let prompt = react_prompt.map_or(0, |prompt| {
        TOKENS_PER_MESSAGE + counter.count_text(Role::System.as_str()) + counter.count_text(prompt)
    });
    prompt + count_tools(counter, tools)
}

/// Step 2 of [`request_view`]: gives every tool call exactly one result, right after the
/// message that makes it, and, in text mode, rewrites native tool messages.
///
/// Stored histories are not always in that shape: a turn cancelled while its tools ran
/// leaves calls unanswered (they get an "interrupted" result), and two writers on one
/// session can leave a result after other messages, or two results for one call (one's
/// turn opening answers a call as interrupted while the other is still running it, whose
/// real result lands later). A result goes with the latest call of its id before it; a
/// real result is kept over an interrupted one, and a result that answers no call the
/// policy kept, or a call already answered, is left out, since servers refuse both.
/// Text-mode observations naming the reply they answer ([`observed_reply`]) are placed
/// and chosen the same way (a reply without one gets none, though: the session stores the
/// "interrupted" observation); those stored without a name stay where they are.
fn make_sendable<'a>(
    kept: Vec<Cow<'a, ChatMessage>>,
    react_prompt: Option<&str>,
) -> Vec<Cow<'a, ChatMessage>> {
    let in_order = results_follow_their_calls(&kept);
    let mut view = Vec::with_capacity(kept.len() + 2);
    let mut kept = kept.into_iter().peekable();
    if let Some(prompt) = react_prompt {
        match kept.next_if(|first| first.role == Role::System) {
            Some(first) => {
                let mut system = first.into_owned();
                system.content = format!("{}\n\n{prompt}", system.content);
                view.push(Cow::Owned(system));
            }
            None => view.push(Cow::Owned(ChatMessage::system(prompt))),
        }
    }
    let text_mode = react_prompt.is_some();
    if in_order {
        answer_in_order(kept, text_mode, &mut view);
    } else {
        answer_reordered(kept.collect(), text_mode, &mut view);
    }
    view
}

/// Whether every tool result (and named observation) in `messages` answers a call (or
/// reply) not answered yet of the message its run of answers follows: the shape of a
/// history one writer made (a call may still lack its result). One pass, holding one
/// message's call ids.
fn results_follow_their_calls(messages: &[Cow<'_, ChatMessage>]) -> bool {
    let mut open: Vec<&str> = Vec::new();
    for message in messages {
        if !is_answer(message) {
            open.clear();
            open.extend(answerable(message));
            continue;
        }
        let answered = answered(message);
        match open.iter().position(|id| Some(*id) == answered) {
            Some(at) => {
                open.swap_remove(at);
            }
            None => return false,
        }
    }
    true
}

/// [`make_sendable`] for the usual shape ([`results_follow_their_calls`]): each call's
/// result is where it is stored, and a call without one gets an interrupted result after
/// the results that exist.
fn answer_in_order<'a>(
    mut rest: std::iter::Peekable<impl Iterator<Item = Cow<'a, ChatMessage>>>,
    text_mode: bool,
    view: &mut Vec<Cow<'a, ChatMessage>>,
) {
    while let Some(message) = rest.next() {
        if !(message.role == Role::Assistant && message.has_tool_calls()) {
            view.push(message);
            continue;
        }
        let mut results = Vec::new();
        while let Some(result) = rest.next_if(|m| m.role == Role::Tool) {
            results.push(result);
        }
        let missing: Vec<ChatMessage> = unanswered(&message, &results)
            .map(interrupted_result)
            .collect();
        results.extend(missing.into_iter().map(Cow::Owned));
        push_answered(view, message, results, text_mode);
    }
}

/// [`make_sendable`] for any other shape, which two writers on one session can leave: a
/// result goes with the latest call of its id before it, a real result is kept over an
/// interrupted one, and a result that answers no call the view carries, or one already
/// answered, is left out. Named text-mode observations likewise, with their reply. Two
/// passes and a map of call ids.
fn answer_reordered<'a>(
    kept: Vec<Cow<'a, ChatMessage>>,
    text_mode: bool,
    view: &mut Vec<Cow<'a, ChatMessage>>,
) {
    let answers = answers_by_call(&kept);
    let mut slots: Vec<Option<Cow<'a, ChatMessage>>> = kept.into_iter().map(Some).collect();
    for pos in 0..slots.len() {
        // An answer is taken by the call it answers; one still here answers none.
        let Some(message) = slots[pos].take().filter(|m| !is_answer(m)) else {
            continue;
        };
        let mut answer = |id: &str| {
            let positions = answers.get(&pos).into_iter().flatten();
            let found = positions.filter_map(|&at| slots[at].take_if(|r| answered(r) == Some(id)));
            // Every answer is taken, so the ones not chosen are left out.
            found.reduce(|chosen, other| match is_interrupted(&chosen) {
                true if !is_interrupted(&other) => other,
                _ => chosen,
            })
        };
        if !(message.role == Role::Assistant && message.has_tool_calls()) {
            // Not a call: what an observation of it would name is its own id.
            let observation = answerable(&message).next().and_then(&mut answer);
            view.push(message);
            view.extend(observation);
            continue;
        }
        let results = message
            .tool_calls
            .iter()
            .map(|call| answer(&call.id).unwrap_or_else(|| Cow::Owned(interrupted_result(call))))
            .collect();
        push_answered(view, message, results, text_mode);
    }
}

/// Whether `message` answers another: a tool result, or a text-mode observation naming
/// the reply it answers.
fn is_answer(message: &ChatMessage) -> bool {
    message.role == Role::Tool || observed_reply(message).is_some()
}

/// Pushes a tool-call `message` and its `results`, in the text format in text mode.
fn push_answered<'a>(
    view: &mut Vec<Cow<'a, ChatMessage>>,
    message: Cow<'a, ChatMessage>,
    results: Vec<Cow<'a, ChatMessage>>,
    text_mode: bool,
) {
    if text_mode {
        view.push(Cow::Owned(as_react_text(&message)));
        view.extend(
            results
                .iter()
                .map(|r| Cow::Owned(ChatMessage::user(render_observation(&r.content)))),
        );
    } else {
        view.push(message);
        view.extend(results);
    }
}

/// The positions of the answers ([`is_answer`]) in `messages`, by the position of the
/// message each answers: the latest before it with a call of its id, or the reply it
/// names. One pass; only the ids of calls and replies are kept.
fn answers_by_call(messages: &[Cow<'_, ChatMessage>]) -> HashMap<usize, Vec<usize>> {
    let mut caller: HashMap<&str, usize> = HashMap::new();
    let mut answers: HashMap<usize, Vec<usize>> = HashMap::new();
    for (pos, message) in messages.iter().enumerate() {
        if is_answer(message) {
            if let Some(&at) = answered(message).and_then(|id| caller.get(id)) {
                answers.entry(at).or_default().push(pos);
            }
        } else if message.role == Role::Assistant {
            caller.extend(answerable(message).map(|id| (id, pos)));
        }
    }
    answers
}

/// Whether `result` is one Fusion wrote for a call that never finished (or that another
/// process was still running when this one's turn opened): it carries
/// [`INTERRUPTED_METADATA_KEY`].
pub fn is_interrupted(result: &ChatMessage) -> bool {
    result.metadata.contains_key(INTERRUPTED_METADATA_KEY)
}

/// Whether `result` was stored by a later write for a call of a cancelled turn, rather than
/// by the turn that made the call: an "interrupted" result ([`is_interrupted`]) or the
/// real result of a call that finished before the cancel ([`LATE_RESULT_METADATA_KEY`]).
/// Either way the turn that made the call stored nothing after it.
pub fn is_repair(result: &ChatMessage) -> bool {
    is_interrupted(result) || result.metadata.contains_key(LATE_RESULT_METADATA_KEY)
}

/// Results for the tool calls of the history's last assistant message that have none:
/// what a turn cancelled while its tools ran leaves behind. Empty when nothing is missing.
///
/// The session appends these to storage when the next turn starts, so storage itself
/// becomes consistent again. It also appends [`interrupted_observation`], in either mode.
pub fn interrupted_results(history: &[ChatMessage]) -> Vec<ChatMessage> {
    let Some(at) = history.iter().rposition(|m| m.role != Role::Tool) else {
        return Vec::new();
    };
    let message = &history[at];
    if message.role != Role::Assistant {
        return Vec::new();
    }
    unanswered(message, &history[at + 1..])
        .map(interrupted_result)
        .collect()
}

/// For a history that ends with a text-mode `Action:` reply whose tool never returned, the
/// observation saying its call was interrupted: text mode stores the reply before its tool
/// runs and the observation after, so a turn cancelled in between leaves the action last.
///
/// Such a reply is known by the mark the loop stored on it ([`REACT_ACTION_METADATA_KEY`]),
/// never by reading its text again: how the text reads depends on the session reading it
/// (`Action: final_answer` calls a tool of that name where the session has one and ends
/// the turn where it has none; a native-mode answer may hold a line starting `Action:`),
/// and a session reopened with other tools, or in the other mode, read the reply otherwise
/// than the loop that stored it: it gave a final answer an "interrupted" observation, or
/// left a call unanswered. A reply stored without the mark (by an earlier release) gets
/// none.
pub fn interrupted_observation(history: &[ChatMessage]) -> Option<ChatMessage> {
    let last = history.last()?;
    if last.role != Role::Assistant || last.has_tool_calls() {
        return None;
    }
    let tool = last.metadata.get(REACT_ACTION_METADATA_KEY)?.as_str()?;
    Some(
        observation(&interrupted_text(tool), last.id.as_ref())
            .with_metadata(INTERRUPTED_METADATA_KEY, serde_json::Value::Bool(true)),
    )
}

/// The calls of `message` that no message in `results` answers.
fn unanswered<'a, R: Borrow<ChatMessage>>(
    message: &'a ChatMessage,
    results: &'a [R],
) -> impl Iterator<Item = &'a ToolCall> {
    // Quadratic in the calls of one message, which are a handful: cheaper than a set.
    message.tool_calls.iter().filter(move |call| {
        !results
            .iter()
            .any(|r| r.borrow().tool_call_id.as_deref() == Some(call.id.as_str()))
    })
}

fn interrupted_text(tool: &str) -> String {
    format!(
        "Error: the call to `{tool}` was interrupted before it returned (the turn was cancelled), \
         so its result is unknown. It may or may not have taken effect; check before relying on it."
    )
}

fn interrupted_result(call: &ToolCall) -> ChatMessage {
    ChatMessage::tool_result(&call.id, interrupted_text(&call.name))
        .with_metadata(INTERRUPTED_METADATA_KEY, serde_json::Value::Bool(true))
}

/// An assistant tool-call message in the text ReAct format.
fn as_react_text(message: &ChatMessage) -> ChatMessage {
    let mut text = message.content.trim_end().to_owned();
    for call in &message.tool_calls {
        if !text.is_empty() {
            text.push('\n');
        }
        // A call a server encoded twice ran with the object inside: shown so, as the
        // format asks an input to be written.
        let arguments = crate::executor::object_encoded_twice(&call.arguments);
        text.push_str(&format!(
            "Action: {}\nAction Input: {}",
            call.name,
            arguments.as_deref().unwrap_or(&call.arguments)
        ));
    }
    ChatMessage::assistant(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::EstimateCounter;

    /// The view under the default policy (everything visible).
    fn view_of<'a>(
        history: &'a [ChatMessage],
        react_prompt: Option<&str>,
    ) -> Vec<Cow<'a, ChatMessage>> {
        request_view(
            history,
            &ContextPolicy::default(),
            &EstimateCounter,
            react_prompt,
        )
    }

    fn call(id: &str) -> ToolCall {
        ToolCall::new(id, "read_file", r#"{"path":"a"}"#)
    }

    fn history() -> Vec<ChatMessage> {
        vec![
            ChatMessage::system("sys"),
            ChatMessage::user("go"),
            ChatMessage::assistant_with_tool_calls("", vec![call("a"), call("b")]),
            ChatMessage::tool_result("a", "done"),
        ]
    }

    #[test]
    fn unanswered_calls_get_an_interrupted_result_in_the_view_only() {
        let history = history();
        let view = view_of(&history, None);
        assert_eq!(view.len(), 5);
        assert!(view[..4].iter().all(|m| matches!(m, Cow::Borrowed(_))));
        assert_eq!(view[4].tool_call_id.as_deref(), Some("b"));
        assert!(view[4].content.contains("interrupted"));
        let repairs = interrupted_results(&history);
        assert_eq!(repairs.len(), 1);
        assert_eq!(repairs[0].metadata[INTERRUPTED_METADATA_KEY], true);
    }

    /// What two writers on one session can store: A's call, B's turn opening that
    /// answered it as interrupted while A still ran it, B's turn, then A's real result
    /// and answer.
    fn overlapped() -> Vec<ChatMessage> {
        let interrupted = interrupted_result(&call("c1"));
        vec![
            ChatMessage::system("sys"),
            ChatMessage::user("from A"),
            ChatMessage::assistant_with_tool_calls("", vec![call("c1")]),
            interrupted,
            ChatMessage::user("from B"),
            ChatMessage::assistant("B answer"),
            ChatMessage::tool_result("c1", "the real result"),
            ChatMessage::assistant("A answer"),
        ]
    }

    #[test]
    fn each_call_gets_one_result_after_it_preferring_a_real_one_to_an_interrupted_one() {
        let history = overlapped();
        let view = view_of(&history, None);
        let shape: Vec<(Role, &str)> = view.iter().map(|m| (m.role, m.content.as_str())).collect();
        assert_eq!(
            shape,
            [
                (Role::System, "sys"),
                (Role::User, "from A"),
                (Role::Assistant, ""),
                (Role::Tool, "the real result"),
                (Role::User, "from B"),
                (Role::Assistant, "B answer"),
                (Role::Assistant, "A answer"),
            ]
        );
        // In text mode the same, as observations.
        let view = view_of(&history, Some("FORMAT"));
        assert_eq!(view[3].content, "Observation: the real result");
        assert_eq!(view.len(), 7);
    }

    /// [`overlapped`] in text mode, where the loop's observations name the action they
    /// answer; and an observation naming a reply the view does not carry.
    #[test]
    fn named_observations_go_with_their_reply_the_real_one_kept_and_unnamed_ones_stay() {
        let action = ChatMessage::assistant("Action: read_file\nAction Input: {}")
            .with_new_id()
            .with_metadata(REACT_ACTION_METADATA_KEY, "read_file".into());
        let interrupted = interrupted_observation(std::slice::from_ref(&action)).unwrap();
        let real = observation("the real result", action.id.as_ref());
        let gone = observation(
            "its reply was summarized",
            Some(&fusion_core::MessageId::new()),
        );
        let mut history = vec![
            ChatMessage::user("from A"),
            action.clone(),
            interrupted,
            ChatMessage::user("from B"),
            ChatMessage::assistant("Final Answer: B"),
            real,
            gone,
            ChatMessage::assistant("Final Answer: A"),
        ];
        let view = view_of(&history, Some("FORMAT"));
        let shape: Vec<&str> = view[1..].iter().map(|m| m.content.as_str()).collect();
        assert_eq!(
            shape,
            [
                "from A",
                action.content.as_str(),
                "Observation: the real result",
                "from B",
                "Final Answer: B",
                "Final Answer: A"
            ]
        );

        // Unnamed, as earlier releases stored them, each stays where it is.
        for message in &mut history {
            message
                .metadata
                .remove(crate::context::OBSERVED_REPLY_METADATA_KEY);
        }
        let view = view_of(&history, Some("FORMAT"));
        assert_eq!(view.len(), history.len() + 1);
        assert!(
            view[1..]
                .iter()
                .zip(&history)
                .all(|(v, h)| v.content == h.content)
        );
    }

    /// Found by review: a pruned message was shown without its metadata, so a pruned
    /// interrupted result no longer read as interrupted and was kept over the real one,
    /// and a pruned late observation no longer named its action and stayed where it
    /// landed, after another turn, beside the action's interrupted observation.
    #[test]
    fn pruned_answers_are_placed_and_chosen_as_unpruned_ones() {
        // Native: the interrupted result is pruned (index 3).
        let mut history = overlapped();
        history.push(super::super::records::prune_record(&[3], &[]));
        let view = view_of(&history, None);
        let results: Vec<&str> = view
            .iter()
            .filter(|m| m.role == Role::Tool)
            .map(|m| m.content.as_str())
            .collect();
        assert_eq!(results, ["the real result"]);

        // Text mode: the late real observation is pruned (index 5).
        let action = ChatMessage::assistant("Action: read_file\nAction Input: {}")
            .with_new_id()
            .with_metadata(REACT_ACTION_METADATA_KEY, "read_file".into());
        let interrupted = interrupted_observation(std::slice::from_ref(&action)).unwrap();
        let history = vec![
            ChatMessage::user("from A"),
            action.clone(),
            interrupted,
            ChatMessage::user("from B"),
            ChatMessage::assistant("Final Answer: B"),
            observation(&"x".repeat(300), action.id.as_ref()),
            ChatMessage::assistant("Final Answer: A"),
            super::super::records::prune_record(&[5], &[]),
        ];
        let view = view_of(&history, Some("FORMAT"));
        let shape: Vec<&str> = view[1..].iter().map(|m| m.content.as_str()).collect();
        let pruned = format!("Observation: {}", super::super::pruned_tool_output(300));
        assert_eq!(
            shape,
            [
                "from A",
                action.content.as_str(),
                pruned.as_str(),
                "from B",
                "Final Answer: B",
                "Final Answer: A"
            ]
        );
    }

    #[test]
    fn results_of_calls_not_kept_and_second_results_are_left_out() {
        let history = vec![
            ChatMessage::tool_result("gone", "its call was summarized away"),
            ChatMessage::user("go"),
            ChatMessage::assistant_with_tool_calls("", vec![call("a")]),
            ChatMessage::tool_result("a", "first"),
            ChatMessage::tool_result("a", "second"),
            ChatMessage::user("again"),
            ChatMessage::tool_result("b", "answers nothing"),
            // An id used again by a later reply belongs to that reply.
            ChatMessage::assistant_with_tool_calls("", vec![call("a")]),
            ChatMessage::tool_result("a", "third"),
        ];
        let view = view_of(&history, None);
        let shape: Vec<&str> = view.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(shape, ["go", "", "first", "again", "", "third"]);
    }

    #[test]
    fn a_gap_in_the_middle_is_repaired_too() {
        let history = vec![
            ChatMessage::user("go"),
            ChatMessage::assistant_with_tool_calls("", vec![call("a")]),
            ChatMessage::user("again"),
        ];
        let view = view_of(&history, None);
        assert_eq!(view[2].tool_call_id.as_deref(), Some("a"));
        assert_eq!(view[3].content, "again");
        // Only a trailing gap can be fixed by appending.
        assert!(interrupted_results(&history).is_empty());
    }

    #[test]
    fn text_mode_extends_the_system_prompt_and_rewrites_native_messages() {
        let history = history();
        let view = view_of(&history, Some("FORMAT"));
        assert_eq!(view[0].content, "sys\n\nFORMAT");
        assert_eq!(view[2].role, Role::Assistant);
        assert!(view[2].tool_calls.is_empty());
        assert!(
            view[2]
                .content
                .contains("Action: read_file\nAction Input: {\"path\":\"a\"}")
        );
        assert_eq!(view[3].content, "Observation: done");
        assert!(view[4].content.starts_with("Observation: Error: the call"));
        assert!(view.iter().all(|m| m.role != Role::Tool));
        let bare = [ChatMessage::user("hi")];
        assert_eq!(view_of(&bare, Some("FORMAT"))[0].content, "FORMAT");
    }

    /// Found by a review of 84e989d: a native call whose arguments a server encoded twice
    /// ran with the object inside and goes back so in native requests, but text mode
    /// rendered it `Action Input: "{\"path\":\"a\"}"`, a string where the format
    /// asks for the object (and the model copies the history's form).
    #[test]
    fn text_mode_shows_a_call_encoded_twice_with_the_object_it_ran_with() {
        let twice = serde_json::to_string(r#"{"path":"a"}"#).unwrap();
        let history = [
            ChatMessage::user("read a"),
            ChatMessage::assistant_with_tool_calls(
                "",
                vec![ToolCall::new("a", "read_file", twice)],
            ),
            ChatMessage::tool_result("a", "inside a"),
        ];
        let view = view_of(&history, Some("FORMAT"));
        assert!(
            view[2]
                .content
                .ends_with("Action: read_file\nAction Input: {\"path\":\"a\"}"),
            "{}",
            view[2].content
        );
    }
}
