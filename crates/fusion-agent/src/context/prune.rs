//! Pruning: deciding what matters least in old turns (tool output first, then the
//! assistant's notes beside its tool calls), to be recorded in storage as a context record
//! ([`super::records`] writes and applies it).
//!
//! Why a record and not an edit: storage is append-only and complete by design (a crash
//! mid-write can never lose history, and export shows what really happened), so pruning
//! cannot rewrite old messages. A session setting would not survive a restart, and a rule
//! re-evaluated on every request ("prune tool output older than 3 turns") would change the
//! view under the model's feet each turn, defeating server-side prompt caches. So
//! [`plan_prune`] decides once which messages to shorten and the session appends one
//! record listing their indices: `{"fusion_prune": {"tool_outputs": [3, 7], "chatter":
//! [2]}}`. Indices are stable because storage only grows, or is truncated past the record
//! (which then goes too). With several writers on a session, the session plans on a fresh
//! read of storage and appends the record only if the session was not rewritten since
//! (`AgentSession::prune_unimportant_messages`), so the indices name stored positions;
//! messages others append meanwhile come after them. Each record costs a few bytes per
//! pruned message; views apply the union of all records.

use fusion_core::{ChatMessage, Role};

use super::groups::Layout;
use super::policy::ContextPolicy;
use super::records::{Mark, apply, output_bytes, prune_record};
use super::tokens::TokenCounter;
use super::window::visible_tokens_up_to;

/// What [`plan_prune`] (and `AgentSession::prune_unimportant_messages`) shortened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Tool outputs newly replaced by a marker.
    pub tool_outputs: usize,
    /// Assistant tool-call messages whose text was newly dropped (their calls stay).
    pub chatter: usize,
    /// Bytes of message text the model no longer sees.
    pub bytes_removed: usize,
    /// Tokens of the visible conversation (see [`super::visible_tokens`]) before pruning:
    /// its messages, not the tools a request offers besides them.
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
/// Only turns older than [`PruneSettings::keep_recent_turns`](crate::PruneSettings) are
/// touched (never the latest turn). First, tool outputs of at least
/// `min_tool_output_bytes` become a `[pruned: N bytes of tool output]` marker, oldest
/// first; then assistant messages that call tools lose their text. Pruning stops as soon
/// as the visible conversation fits the target (`target_tokens`, else
/// [`ContextPolicy::max_tokens`]); without a target everything eligible is pruned.
/// Messages covered by a summary or pruned before are left alone.
///
/// `max_tokens` as the target counts the conversation alone here; a session's
/// [`prune_unimportant_messages`](crate::AgentSession::prune_unimportant_messages) also
/// counts the tools its requests offer, as the budget does.
pub fn plan_prune(
    history: &[ChatMessage],
    policy: &ContextPolicy,
    counter: &dyn TokenCounter,
) -> PrunePlan {
    plan_prune_besides(history, policy, counter, 0)
}

/// [`plan_prune`] for requests that carry `other_tokens` besides the conversation (their
/// tools): `max_tokens` as the target holds for the whole request, as the budget does, so
/// pruning does not stop where the budget then drops messages that more pruning keeps.
pub(crate) fn plan_prune_besides(
    history: &[ChatMessage],
    policy: &ContextPolicy,
    counter: &dyn TokenCounter,
    other_tokens: usize,
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

    let target = policy.prune.target_tokens.or_else(|| {
        let budget = policy.max_tokens?;
        Some(budget.saturating_sub(other_tokens))
    });
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
