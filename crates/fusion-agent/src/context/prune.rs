//! Pruning: shortening what matters least in old turns (tool output first, then the
//! assistant's notes beside its tool calls), recorded in storage as a context record.
//!
//! Why a record and not an edit: storage is append-only and complete by design (a crash
//! mid-write can never lose history, and export shows what really happened), so pruning
//! cannot rewrite old messages. A session setting would not survive a restart, and a rule
//! re-evaluated on every request ("prune tool output older than 3 turns") would change the
//! view under the model's feet each turn, defeating server-side prompt caches. So
//! [`plan_prune`] decides once which messages to shorten and the session appends one
//! record listing their indices: `{"fusion_prune": {"tool_outputs": [3, 7], "chatter":
//! [2]}}`. Indices are stable because storage only grows, or is truncated past the record
//! (which then goes too). Each record costs a few bytes per pruned message; views apply
//! the union of all records.

use std::borrow::Cow;
use std::collections::HashMap;

use fusion_core::{ChatMessage, Role};
use serde_json::{Value, json};

use super::groups::{Layout, OBSERVATION_PREFIX};
use super::window::visible_tokens_up_to;
use super::{ContextPolicy, TokenCounter};

/// Metadata key of a prune record: `{"tool_outputs": [indices], "chatter": [indices]}`.
pub const PRUNE_KEY: &str = "fusion_prune";

/// How a pruned message is shortened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// A tool result (or text-mode observation) replaced by [`pruned_tool_output`].
    ToolOutput,
    /// An assistant tool-call message without its text; the calls stay.
    Chatter,
}

/// The marker that stands in for `bytes` bytes of pruned tool output.
pub fn pruned_tool_output(bytes: usize) -> String {
    format!("[pruned: {bytes} bytes of tool output]")
}

/// What [`plan_prune`] (and `AgentSession::prune_unimportant_messages`) shortened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Tool outputs newly replaced by a marker.
    pub tool_outputs: usize,
    /// Assistant tool-call messages whose text was newly dropped (their calls stay).
    pub chatter: usize,
    /// Bytes of message text the model no longer sees.
    pub bytes_removed: usize,
    /// Tokens of the visible conversation (see [`super::visible_tokens`]) before pruning.
    pub tokens_before: usize,
    /// The same after pruning.
    pub tokens_after: usize,
}

impl PruneReport {
    /// True when nothing was pruned.
    pub fn is_empty(&self) -> bool {
        self.tool_outputs == 0 && self.chatter == 0
    }
}

/// A pruning decision: the report, and the record to append (none when nothing changes).
#[derive(Debug, Clone, PartialEq)]
pub struct PrunePlan {
    /// What the record prunes.
    pub report: PruneReport,
    /// The context record to append to the history, if anything is pruned.
    pub record: Option<ChatMessage>,
}

/// Decides what to prune in `history`, least important first, without touching it.
///
/// Only turns older than [`PruneSettings::keep_recent_turns`](super::PruneSettings) are
/// touched (never the latest turn). First, tool outputs of at least
/// `min_tool_output_bytes` become a `[pruned: N bytes of tool output]` marker, oldest
/// first; then assistant messages that call tools lose their text. Pruning stops as soon
/// as the visible conversation fits the target (`target_tokens`, else
/// [`ContextPolicy::max_tokens`]); without a target everything eligible is pruned.
/// Messages covered by a summary or pruned before are left alone.
pub fn plan_prune(
    history: &[ChatMessage],
    policy: &ContextPolicy,
    counter: &dyn TokenCounter,
) -> PrunePlan {
    let layout = Layout::new(history);
    let tokens_before = visible_tokens_up_to(&layout, counter, usize::MAX);
    let mut report = PruneReport {
        tokens_before,
        tokens_after: tokens_before,
        ..PruneReport::default()
    };
    let keep = policy.prune.keep_recent_turns.max(1);
    let Some(protected) = layout.turn_starts_newest_first().nth(keep - 1) else {
        return PrunePlan {
            report,
            record: None,
        };
    };
    let old_units = &layout.units[..protected];
    let unmarked = |pos: &usize| !layout.marks.contains_key(&layout.body[*pos]);
    // Results and observations are the non-first messages of a group; calls are first.
    let outputs = old_units
        .iter()
        .flat_map(|unit| unit.start + 1..unit.end)
        .filter(unmarked)
        .filter(|&pos| {
            output_bytes(&history[layout.body[pos]]) >= policy.prune.min_tool_output_bytes
        })
        .map(|pos| (pos, Mark::ToolOutput));
    let chatter = old_units
        .iter()
        .map(|unit| unit.start)
        .filter(unmarked)
        .filter(|&pos| {
            let m = &history[layout.body[pos]];
            m.role == Role::Assistant && m.has_tool_calls() && !m.content.trim().is_empty()
        })
        .map(|pos| (pos, Mark::Chatter));

    let target = policy.prune.target_tokens.or(policy.max_tokens);
    let mut tool_outputs = Vec::new();
    let mut notes = Vec::new();
    for (pos, mark) in outputs.chain(chatter) {
        if target.is_some_and(|target| report.tokens_after <= target) {
            break;
        }
        let index = layout.body[pos];
        let original = &history[index];
        let pruned = apply(original, mark);
        if pruned.content.len() >= original.content.len() {
            continue; // A marker longer than the output saves nothing.
        }
        report.tokens_after = (report.tokens_after + counter.count_message(&pruned))
            .saturating_sub(counter.count_message(original));
        report.bytes_removed += original.content.len().saturating_sub(pruned.content.len());
        match mark {
            Mark::ToolOutput => tool_outputs.push(index),
            Mark::Chatter => notes.push(index),
        }
    }
    report.tool_outputs = tool_outputs.len();
    report.chatter = notes.len();
    let record = (!report.is_empty()).then(|| prune_record(&tool_outputs, &notes));
    PrunePlan { report, record }
}

/// The context record listing newly pruned history indices.
fn prune_record(tool_outputs: &[usize], chatter: &[usize]) -> ChatMessage {
    ChatMessage::system(format!(
        "[Fusion context record, not shown to the model: {} tool outputs and {} assistant \
         notes above are shortened in the model's view; the originals are kept here.]",
        tool_outputs.len(),
        chatter.len()
    ))
    .with_metadata(
        PRUNE_KEY,
        json!({ "tool_outputs": tool_outputs, "chatter": chatter }),
    )
}

/// Adds the marks of `record` (stored at index `at`) to `marks`. Indices at or after the
/// record cannot have been decided by it and are ignored, as is anything malformed.
pub(crate) fn read_marks(record: &ChatMessage, at: usize, marks: &mut HashMap<usize, Mark>) {
    let Some(value) = record.metadata.get(PRUNE_KEY) else {
        return;
    };
    for (field, mark) in [
        ("tool_outputs", Mark::ToolOutput),
        ("chatter", Mark::Chatter),
    ] {
        let indices = value.get(field).and_then(Value::as_array);
        for index in indices.into_iter().flatten().filter_map(Value::as_u64) {
            if let Ok(index) = usize::try_from(index)
                && index < at
            {
                marks.insert(index, mark);
            }
        }
    }
}

/// `message` as the model sees it under `mark`. A mark that does not fit the message
/// (storage edited by hand) is ignored.
pub(crate) fn apply(message: &ChatMessage, mark: Mark) -> Cow<'_, ChatMessage> {
    let content = match mark {
        Mark::ToolOutput if message.role == Role::Tool => pruned_tool_output(output_bytes(message)),
        Mark::ToolOutput if message.role == Role::User => format!(
            "{OBSERVATION_PREFIX}{}",
            pruned_tool_output(output_bytes(message))
        ),
        Mark::Chatter if message.role == Role::Assistant && message.has_tool_calls() => {
            String::new()
        }
        _ => return Cow::Borrowed(message),
    };
    // Built field by field so the pruned text is never copied.
    let mut pruned = ChatMessage::new(message.role, content);
    pruned.tool_calls = message.tool_calls.clone();
    pruned.tool_call_id = message.tool_call_id.clone();
    pruned.name = message.name.clone();
    Cow::Owned(pruned)
}

/// Bytes of tool output a result or observation carries.
fn output_bytes(message: &ChatMessage) -> usize {
    let content = &message.content;
    match message.role {
        Role::User => content
            .strip_prefix(OBSERVATION_PREFIX)
            .unwrap_or(content)
            .len(),
        _ => content.len(),
    }
}
