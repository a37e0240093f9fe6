//! How the retry layer tells whether a write it retried had applied after all: an earlier
//! attempt may have applied, its reply lost, and a later one then meets the session that
//! attempt left (a conflict, or `NotOwner`). What a conditional replace, rewrite or
//! truncate removes is read before its first attempt ([`Rewritten`]); after the refusal
//! the session is read again (by the layer, `Retrying::settle`) and judged here
//! ([`applied`], [`already_applied`]).

use std::collections::HashSet;
use std::time::Duration;

use fusion_core::{
    Change, ChatMessage, Expect, Expiry, MessageId, MetaUpdate, Revision, SessionMeta,
};

/// After a conditional write was refused following an attempt that may have applied it:
/// the generation the write left if the session (`history` at `revision`) holds what
/// `change` wrote (so the refusal was caused by that attempt), `None` if not: the
/// session's, but an append's is the one it met ([`appended_at`]). A truncate, replace or rewrite
/// counts as applied when, under a generation other than the one expected (which only a
/// rewrite gives it), the session holds what it keeps, alone or followed by other
/// writers' messages, none of those it removed ([`Rewritten::done_in`]): an undo whose
/// reply was lost, then another writer's append, is done, not a conflict.
pub(super) fn applied(
    history: &[ChatMessage],
    revision: &Revision,
    expected: Expect,
    change: Change<'_>,
    rewritten: Option<&Rewritten>,
) -> Option<u64> {
    let holds = match change {
        Change::Append(messages) => {
            !messages.is_empty()
                && messages
                    .iter()
                    .all(|m| history.iter().rev().any(|h| h.id == m.id))
        }
        Change::Replace(messages) | Change::Rewrite(messages) if history == messages => true,
        Change::Replace(_) | Change::Rewrite(_) | Change::Truncate(_) => {
            rewritten.is_some_and(|rewritten| rewritten.done_in(history))
                && revision.generation != expected.generation()
        }
    };
    let generation = match change {
        Change::Append(_) => appended_at(expected, revision.generation),
        _ => revision.generation,
    };
    holds.then_some(generation)
}

/// The generation a conditional append under `expected` left, found applied after its
/// reply was lost, the session now at generation `now`: the one it met (an append keeps
/// it), unless it created the session, whose fresh generation only the session tells
/// (`now`). `now` may be another writer's rewrite since: answered that, the caller would
/// take its own history plus the batch for what the session holds under it, and its next
/// conditional write (an undo, a summary) would apply to a history it never read.
pub(super) fn appended_at(expected: Expect, now: u64) -> u64 {
    match expected.generation() {
        0 => now,
        met => met,
    }
}

/// What a conditional truncate, replace or rewrite leaves (`kept`, the start of the
/// history) and removes, read before its first attempt.
#[derive(Debug, Default)]
pub(super) struct Rewritten {
    kept: Vec<ChatMessage>,
    /// The ids of the messages it removes; `None` when one of them has none.
    removed_ids: Option<HashSet<MessageId>>,
}

impl Rewritten {
    /// What a truncate of `history` to `len` keeps and removes.
    pub(super) fn truncating(mut history: Vec<ChatMessage>, len: usize) -> Self {
        let removed = history.split_off(len.min(history.len()));
        let removed_ids = removed.iter().map(|m| m.id.clone()).collect();
        Self {
            kept: history,
            removed_ids,
        }
    }

    /// What a replace or rewrite of `history` with `messages` leaves: it removes the
    /// messages the session held (and no append after it carries the ids of those it
    /// writes).
    pub(super) fn replacing(history: Vec<ChatMessage>, messages: &[ChatMessage]) -> Self {
        let written = messages.iter().filter_map(|m| m.id.clone());
        let removed_ids = history
            .into_iter()
            .map(|m| m.id)
            .collect::<Option<HashSet<_>>>();
        Self {
            kept: messages.to_vec(),
            removed_ids: removed_ids.map(|ids| ids.into_iter().chain(written).collect()),
        }
    }

    /// Whether `history` is what the write leaves: exactly what it keeps, or that
    /// followed by messages another writer appended since, none of those it removes.
    /// Had the write not applied, the session would hold what it held before, followed
    /// by those appends, under the generation expected; another writer's rewrite to the
    /// same start (under a new generation) leaves the session as the write meant.
    /// Messages without ids cannot be told apart: removed ones without ids from new ones,
    /// and new ones without ids from removed ones another writer rewrote without their
    /// ids (the write not applied). Then only the exact match counts, as does a truncate
    /// that removes nothing.
    fn done_in(&self, history: &[ChatMessage]) -> bool {
        let Some(after) = history.strip_prefix(self.kept.as_slice()) else {
            return false;
        };
        match &self.removed_ids {
            _ if after.is_empty() => true,
            Some(removed) if !removed.is_empty() => after
                .iter()
                .all(|m| m.id.as_ref().is_some_and(|id| !removed.contains(id))),
            _ => false,
        }
    }
}

/// Whether `meta` already holds everything `update` sets, so applying it changes nothing.
/// Expiries are compared to the millisecond, the coarsest a backend keeps (an instant set
/// to the nanosecond never reads back equal).
pub(super) fn already_applied(update: &MetaUpdate, meta: &SessionMeta) -> bool {
    let mut applied = meta.clone();
    update.apply_to(&mut applied);
    let expiry_kept = same_expiry(applied.expiry, meta.expiry);
    applied.expiry = meta.expiry;
    expiry_kept && applied == *meta
}

/// Whether two expiries are the same to the millisecond.
fn same_expiry(a: Option<Expiry>, b: Option<Expiry>) -> bool {
    let close = |a: Duration, b: Duration| a.abs_diff(b) < Duration::from_millis(1);
    let since_epoch =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    match (a, b) {
        (None, None) => true,
        (Some(Expiry::At(a)), Some(Expiry::At(b))) => close(since_epoch(a), since_epoch(b)),
        (Some(Expiry::Idle(a)), Some(Expiry::Idle(b))) => close(a, b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An append found applied after a refusal answers the generation it met, not that
    /// of a rewrite since (the settling read's); a creation, the session's.
    #[test]
    fn an_append_found_applied_answers_the_generation_it_met() {
        let mine = ChatMessage::assistant("mine").with_new_id();
        let history = [ChatMessage::system("summary"), mine.clone()];
        let now = Revision {
            generation: 9,
            len: 2,
        };
        let change = Change::Append(std::slice::from_ref(&mine));
        let met = Revision {
            generation: 5,
            len: 1,
        };
        for expected in [Expect::Generation(5), Expect::Exactly(met)] {
            assert_eq!(applied(&history, &now, expected, change, None), Some(5));
        }
        let created = applied(&history, &now, Expect::Generation(0), change, None);
        assert_eq!(created, Some(9));
    }

    #[test]
    fn a_delete_unwritten_since_found_applied_is_done() {
        // Its first attempt deleted the session, its reply lost: the retry meets no session.
        let listed = Revision {
            generation: 5,
            len: 2,
        };
        let since = std::time::UNIX_EPOCH + Duration::from_secs(1_000);
        let expected = Expect::UnwrittenSince {
            revision: listed,
            since,
        };
        let gone = Rewritten::truncating(Vec::new(), 0);
        let done = applied(
            &[],
            &Revision::ABSENT,
            expected,
            Change::Truncate(0),
            Some(&gone),
        );
        assert_eq!(done, Some(0));
        // Still at the revision it expected: refused for its last write, not applied.
        let kept = [ChatMessage::user("a"), ChatMessage::user("b")];
        let refused = applied(&kept, &listed, expected, Change::Truncate(0), Some(&gone));
        assert_eq!(refused, None);
    }

    #[test]
    fn an_update_is_already_applied_only_with_its_expiry_to_the_millisecond() {
        let at = std::time::UNIX_EPOCH + Duration::new(4_000_000_000, 123_456_789);
        let update = MetaUpdate::new()
            .owner(Some("bob"))
            .expiry(Some(Expiry::At(at)))
            .if_owner("alice");
        let stored = |expiry| {
            let mut meta = SessionMeta::new().owner("bob");
            meta.expiry = expiry;
            meta
        };
        // Kept to the microsecond by the backend: the same.
        let micros = std::time::UNIX_EPOCH + Duration::new(4_000_000_000, 123_456_000);
        assert!(already_applied(&update, &stored(Some(Expiry::At(micros)))));
        // Another writer's hand-over, with another expiry or none: not this update's.
        let later = at + Duration::from_secs(1);
        assert!(!already_applied(&update, &stored(Some(Expiry::At(later)))));
        assert!(!already_applied(&update, &stored(None)));
        let idle = Some(Expiry::Idle(Duration::from_secs(60)));
        assert!(!already_applied(&update, &stored(idle)));
    }
}
