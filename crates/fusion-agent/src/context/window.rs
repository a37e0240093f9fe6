//! [`apply_policy`]: the sliding window and the token budget over a history's visible part,
//! the step of building a [view](super::request_view) that depends on the policy.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

use fusion_core::ChatMessage;
use tracing::warn;

use super::groups::Layout;
use super::policy::ContextPolicy;
use super::tokens::{REPLY_PRIMING_TOKENS, TokenCounter};

/// The messages of `history` that `policy` lets the model see, oldest first: the view
/// before [`request_view`](super::request_view) makes it sendable.
///
/// In order:
/// 1. Context records are applied, never sent: the latest summary record replaces the
///    messages it covers (its text joins the leading system prompt), and pruned messages
///    are shown shortened.
/// 2. The sliding window keeps the newest [`max_messages`](ContextPolicy::max_messages)
///    messages, then the token budget ([`max_tokens`](ContextPolicy::max_tokens), counted
///    with `counter` over the whole request, `other_tokens` for what it carries besides
///    the messages: the tools) drops the oldest of those until the rest fits.
///
/// Both limits work on groups: an assistant tool call and its results stay or leave
/// together, so the view never holds a call without its results or starts with a result.
/// The system prompt (and summary), the latest user message and the newest group are
/// always kept, even when they alone exceed a limit: without them the model cannot
/// continue the turn.
///
/// A budget smaller than what every request carries besides the conversation (its tools,
/// system prompt and summary) leaves the latest turn alone, and is logged as a warning:
/// once while it lasts when `warned` notes it (a session's, whose turn sends a request
/// per step), for every call without.
///
/// Messages the policy does not change are borrowed. Cost: one pass over the history's
/// roles and metadata, plus token counts for the messages kept (never for the whole
/// history), so a budget stays cheap however long the conversation grows.
pub(crate) fn apply_policy<'a>(
    history: &'a [ChatMessage],
    policy: &ContextPolicy,
    counter: &dyn TokenCounter,
    other_tokens: usize,
    warned: Option<&AtomicBool>,
) -> Vec<Cow<'a, ChatMessage>> {
    let layout = Layout::new(history);
    let head = layout.head();
    if policy.max_messages.is_none() && policy.max_tokens.is_none() {
        let mut view = Vec::with_capacity(layout.body.len() + 1);
        view.extend(head);
        view.extend((0..layout.body.len()).map(|pos| layout.message(pos)));
        return view;
    }

    let max_messages = policy.max_messages.unwrap_or(usize::MAX);
    let budget = policy.max_tokens;
    let tokens_of = |messages: &[Cow<'_, ChatMessage>]| -> usize {
        match budget {
            Some(_) => messages.iter().map(|m| counter.count_message(m)).sum(),
            None => 0,
        }
    };
    let head_tokens = tokens_of(head.as_slice());
    let mut tokens = REPLY_PRIMING_TOKENS + other_tokens + head_tokens;
    let short = budget.filter(|&budget| tokens > budget);
    // Noted so that a session says it once, not at each request (one per step of every
    // turn), and again should it recur after a request that fitted.
    let said = warned.is_some_and(|warned| warned.swap(short.is_some(), Ordering::Relaxed));
    if let Some(budget) = short.filter(|_| !said) {
        // Every request of the session then carries the latest turn alone, the model
        // forgetting the rest: said, not done silently (a budget set below the window by
        // the tools' size, as it was once documented, counts them twice).
        warn!(
            budget,
            tools_tokens = other_tokens,
            system_tokens = head_tokens,
            "the token budget (max_tokens) is smaller than what every request carries \
             besides the conversation: the tools offered (their definitions, or the text \
             ReAct prompt) and the system prompt and summary; only the latest turn is sent. \
             Raise the budget (it counts the tools), or offer fewer tools"
        );
    }
    let mut messages = 0;
    // Kept groups with their messages, so no message is shaped or counted twice.
    let mut kept: Vec<(usize, Vec<Cow<'a, ChatMessage>>)> = Vec::new();

    let newest = layout.units.len().checked_sub(1);
    let latest_turn = layout.turn_starts_newest_first().next();
    let pinned = [newest, latest_turn];
    for unit in pinned.into_iter().flatten() {
        if kept.iter().any(|(k, _)| *k == unit) {
            continue;
        }
        let group: Vec<_> = layout.unit(unit).collect();
        tokens += tokens_of(&group);
        messages += group.len();
        kept.push((unit, group));
    }
    for unit in (0..layout.units.len()).rev() {
        if pinned.contains(&Some(unit)) {
            continue;
        }
        let len = layout.units[unit].len();
        // Stop at the first group that does not fit: a view with a hole in the middle
        // would read as a conversation that never happened.
        if messages + len > max_messages {
            break;
        }
        let group: Vec<_> = layout.unit(unit).collect();
        let cost = tokens_of(&group);
        if budget.is_some_and(|budget| tokens + cost > budget) {
            break;
        }
        tokens += cost;
        messages += len;
        kept.push((unit, group));
    }
    kept.sort_unstable_by_key(|(unit, _)| *unit);

    let mut view = Vec::with_capacity(messages + 1);
    view.extend(head);
    view.extend(kept.into_iter().flat_map(|(_, group)| group));
    view
}

/// Tokens of a request carrying everything the model can see of `history`: the system
/// prompt, the summary and every message after it (pruned ones shortened), before any
/// window or budget. Counts every visible message: O(visible text).
pub fn visible_tokens(history: &[ChatMessage], counter: &dyn TokenCounter) -> usize {
    visible_tokens_up_to(&Layout::new(history), counter, usize::MAX)
}

/// [`visible_tokens`], but stops counting (newest first) once the total exceeds `limit`:
/// the answer is exact up to `limit` and some number above it otherwise. Costs tokens
/// counted up to `limit`, not O(history).
pub(crate) fn visible_tokens_up_to(
    layout: &Layout<'_>,
    counter: &dyn TokenCounter,
    limit: usize,
) -> usize {
    let mut tokens =
        REPLY_PRIMING_TOKENS + layout.head().map_or(0, |head| counter.count_message(&head));
    for pos in (0..layout.body.len()).rev() {
        if tokens > limit {
            break;
        }
        tokens += counter.count_message(&layout.message(pos));
    }
    tokens
}
