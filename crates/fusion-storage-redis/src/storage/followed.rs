//! What the error of the index requests that follow a write on a cluster
//! ([`follow`](super::RedisStorage::follow)) says: that the write itself applied; and
//! what that of a write short of replica acknowledgements says it did ([`short_of_acks`]).

use fusion_core::{ChatMessage, DEDUP_WINDOW, Expect};

use crate::error::Op;
use crate::scripts::Outcome;

/// What the write that the index requests followed did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Applied {
    /// It stored the session (created, appended to, replaced, truncated, updated).
    Stored,
    /// It deleted the session (a delete, or a truncate or replace that left it empty).
    Deleted,
    /// It was a delete that found nothing stored under the session's id: it removed
    /// nothing, and only taking the id out of the indexes failed.
    Absent,
}

/// What a write did on the primary, for the error of one short of replica
/// acknowledgements ([`short_of_acks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Did {
    /// It stored messages (an append), which a retry may store again.
    Store,
    /// It stored messages that all have ids, no more than the window of exactly-once
    /// appends holds (`DEDUP_WINDOW`), or found them stored already: a retry skips each
    /// one the session holds.
    StoreOnce,
    /// The session met the write's expectation, and the write found nothing to change
    /// (a conditional append of nothing, a truncate to a length the session is within).
    Unchanged,
    /// It created the session (a write expecting none, `create_session`), which a retry
    /// meets: a conflict.
    Create,
    /// It wrote what a retry writes the same again: a replace, rewrite, truncate or
    /// metadata update; or a conditional write whose retry meets this one's change.
    Overwrite,
    /// A write whose expectation the session did not meet: it changed nothing.
    Unmet,
    /// A metadata update (`update_session`), which a retry applies the same again,
    /// unless conditional on the title or owner it changed.
    Update,
    /// A delete that removed the session.
    Delete,
    /// A delete that found nothing stored under the session's id.
    DeleteOfNothing,
    /// A purge of expired sessions, which does no harm run again.
    Purge,
}

/// The message of `op` when only `got` of the replicas `want` names acknowledged the
/// primary in time, saying what the write `did` there: a delete is not said to be
/// stored, nor one that removed nothing (or any write that changed nothing) to apply
/// twice, nor a creation (whose retry is a conflict), nor a purge: it removes only what is
/// still expired, so running it again does no harm.
pub(super) fn short_of_acks(
    op: Op<'_>,
    did: Did,
    got: usize,
    want: crate::config::ReplicaAcks,
) -> String {
    let (replicas, timeout) = (want.replicas, want.timeout);
    match did {
        Did::Store => format!(
            "{op}: stored on the primary, but only {got} of {replicas} replicas acknowledged \
             it within {timeout:?}; a failover before they catch up would lose it (not \
             retryable: a retry would apply the write twice)"
        ),
        Did::StoreOnce => format!(
            "{op}: stored on the primary, but only {got} of {replicas} replicas acknowledged \
             it within {timeout:?}; a failover before they catch up would lose it (not \
             retryable, though sent again it stores none of its messages twice: each has an \
             id, and the retry skips those the session holds)"
        ),
        Did::Unchanged => format!(
            "{op}: the session met the write's expectation and needed no change, so the \
             write changed nothing, but only {got} of {replicas} replicas acknowledged the \
             primary within {timeout:?}: they may miss its earlier writes (not retryable; \
             read the session to see where it stands)"
        ),
        Did::Create => format!(
            "{op}: created on the primary, but only {got} of {replicas} replicas acknowledged \
             it within {timeout:?}; a failover before they catch up would lose it (not \
             retryable: sent again, the creation is refused as a conflict, meeting the \
             session this one created: read it to see that write)"
        ),
        Did::Unmet => format!(
            "{op}: the session did not meet the write's expectation, so it changed nothing, \
             but only {got} of {replicas} replicas acknowledged the primary within \
             {timeout:?}: they may miss its earlier writes (not retryable; read the session \
             to see where it stands)"
        ),
        Did::Update => format!(
            "{op}: updated on the primary, but only {got} of {replicas} replicas acknowledged \
             it within {timeout:?}; a failover before they catch up would lose it (not \
             retryable, though sent again it leaves the session as this update did; one \
             conditional on the title or owner it changed (`if_title`, `if_owner`) is refused \
             then, as renamed since or as not that owner's: read the session to see this \
             update)"
        ),
        Did::Overwrite => format!(
            "{op}: written on the primary, but only {got} of {replicas} replicas acknowledged \
             it within {timeout:?}; a failover before they catch up would lose it (not \
             retryable, though sent again it leaves the session as this write did; a \
             conditional one is refused as a conflict then, this write having changed the \
             session: read it to see that write)"
        ),
        Did::Delete => format!(
            "{op}: deleted on the primary, but only {got} of {replicas} replicas acknowledged \
             it within {timeout:?}; a failover before they catch up would bring the session \
             back (not retryable)"
        ),
        Did::DeleteOfNothing => format!(
            "{op}: no session was stored under this id, so the delete removed nothing, but \
             only {got} of {replicas} replicas acknowledged the primary within {timeout:?}: \
             they may miss its earlier writes (not retryable)"
        ),
        Did::Purge => format!(
            "{op}: purged on the primary, but only {got} of {replicas} replicas acknowledged \
             it within {timeout:?}; a failover before they catch up would bring back the \
             expired sessions it removed, for a later purge to remove again (not retryable, \
             but a purge is safe to run again: it removes only what is still expired)"
        ),
    }
}

/// What a write of `mode` (`"append"`, `"replace"`, `"rewrite"`) of `messages` under
/// `expected` did, by its `outcome`, for the error of one short of replica
/// acknowledgements: only an append whose retry meets its expectation again (none, or a
/// generation, which an append leaves as it is) stores its messages again, and only
/// those the window of exactly-once appends does not find (each of a batch that all have
/// ids, within [`DEDUP_WINDOW`], is found); one expecting no session created it, and the
/// retry of any other conditional write is a conflict. An append of nothing only checked.
pub(super) fn did_write(
    mode: &str,
    expected: Option<Expect>,
    messages: &[ChatMessage],
    outcome: &Outcome,
) -> Did {
    let found_again = messages.len() <= DEDUP_WINDOW && messages.iter().all(|m| m.id.is_some());
    match expected {
        _ if !outcome.applied => Did::Unmet,
        _ if messages.is_empty() => Did::Unchanged,
        Some(expect) if expect.generation() == 0 => Did::Create,
        None | Some(Expect::Generation(_)) if mode == "append" && found_again => Did::StoreOnce,
        None | Some(Expect::Generation(_)) if mode == "append" => Did::Store,
        _ => Did::Overwrite,
    }
}

/// What a truncate to `len` did, by its `outcome`, the script given the generation
/// `fresh` for the session it changes: to none, it deleted the session, or found none
/// stored; to a length the session is within, it changed nothing.
pub(super) fn did_trim(len: usize, fresh: u64, outcome: &Outcome) -> Did {
    let deleted = outcome
        .wrote
        .as_ref()
        .is_some_and(|wrote| wrote.updated.is_none());
    match outcome.applied {
        false => Did::Unmet,
        true if deleted => Did::Delete,
        true if len == 0 => Did::DeleteOfNothing,
        true if outcome.generation.parse() != Ok(fresh) => Did::Unchanged,
        true => Did::Overwrite,
    }
}

/// `err`, met by the index requests that [`follow`](super::RedisStorage::follow) a write
/// on a cluster (or by the steps after a delete's script, see
/// [`deleted`](super::RedisStorage::deleted)), saying that the write itself applied:
/// alone, a refusal of an index request (`NOREPLICAS` from the index's node: it wrote
/// nothing) read as if the whole write had been refused, and a caller writing again
/// stored it twice. What a retry then does depends on the write: a stored one is listed
/// by its retry (an append's retry stores again its messages without ids, also a
/// conditional append's that expects a generation other than 0, which an append leaves as
/// it is; another conditional write's is refused as a conflict, the session changed by the
/// write itself: one expecting generation 0, no session, meets the one it created), a
/// deleted one is taken out of the listings. A retry is offered only when `err` is
/// retryable: a refusal that lasts (an index key of another type) fails the retry too, and
/// one short of replica acknowledgements is not retried, the write it follows having been
/// stored.
pub(super) fn stored_before(mut err: fusion_core::Error, applied: Applied) -> fusion_core::Error {
    let said = match (applied, err.is_retryable()) {
        (Applied::Stored, true) => {
            "the session's write itself was stored, only its index entries may not be: a \
             retry of the write lists it (an append's retry stores again its messages that \
             have no id, a conditional append's too when it expects a generation other \
             than 0; any other conditional write's retry is refused as a conflict, its own \
             write having changed the session: read it to see that write)"
        }
        (Applied::Stored, false) => {
            "the session's write itself was stored, only its index entries may not be (or \
             not on enough replicas), so listings may miss it: read the session before \
             writing again, since a write sent again may apply again (an append stores \
             again its messages that have no id, a conditional one too when it expects a \
             generation other than 0)"
        }
        (Applied::Deleted, true) => {
            "the session itself was deleted, only its index entries may not be taken out \
             yet (listings skip it meanwhile): a retry of the write takes them out"
        }
        (Applied::Deleted, false) => {
            "the session itself was deleted, only its index entries may not be taken out \
             yet (listings skip it meanwhile)"
        }
        (Applied::Absent, true) => {
            "no session was stored under this id, so the delete removed nothing; only \
             taking the id out of the indexes failed (listings skip it meanwhile): a retry \
             of the delete does that"
        }
        (Applied::Absent, false) => {
            "no session was stored under this id, so the delete removed nothing; only \
             taking the id out of the indexes failed (listings skip it meanwhile)"
        }
    };
    if matches!(err, fusion_core::Error::Backend { .. }) {
        err.push_note(&format!("; {said}"));
    }
    err
}

/// `err`, met by a step after the script of `op`, a delete (on a cluster: the
/// look-again entry, the removals from the listings), whose requests name no session
/// (they serve prunes and purges of many too): named as `op`, the delete of its session.
pub(super) fn of_session(err: fusion_core::Error, op: Op<'_>) -> fusion_core::Error {
    let unnamed = Op::new(op.name, op.url, None).to_string();
    match err {
        fusion_core::Error::Backend {
            backend,
            message,
            retryable,
            source,
        } if op.session_id.is_some() && message.starts_with(&unnamed) => {
            fusion_core::Error::Backend {
                backend,
                message: format!("{op}{}", &message[unnamed.len()..]),
                retryable,
                source,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> fusion_core::Error {
        refusal(true)
    }

    fn refusal(retryable: bool) -> fusion_core::Error {
        fusion_core::Error::Backend {
            backend: crate::error::BACKEND,
            message: "truncate of session s1 on key p:ids: refused".to_string(),
            retryable,
            source: None,
        }
    }

    /// Found by a review: eda9385 said of an index request that failed after a delete
    /// (a truncate or replace to nothing) that the write was stored and that its retry
    /// lists the session, which is gone; and of a conditional write it did not say that
    /// its retry is refused as a conflict, its own write having changed the session.
    #[test]
    fn a_failed_follow_says_what_the_write_did_and_what_its_retry_does() {
        let deleted = stored_before(refused(), Applied::Deleted).to_string();
        assert!(deleted.contains("session itself was deleted"), "{deleted}");
        assert!(deleted.contains("takes them out"), "{deleted}");
        assert!(!deleted.contains("lists it"), "{deleted}");
        let stored = stored_before(refused(), Applied::Stored);
        assert!(stored.is_retryable());
        let stored = stored.to_string();
        assert!(stored.contains("write itself was stored"), "{stored}");
        assert!(stored.contains("refused as a conflict"), "{stored}");
    }

    /// Found by a review: an index request short of replica acknowledgements after a
    /// stored write said "not retryable" and, beside it, that "a retry of the write lists
    /// it"; an index key of another type (refused for good) offered the same retry, which
    /// fails the same way. A retry is offered only for a retryable error now.
    #[test]
    fn a_follow_refused_for_good_offers_no_retry() {
        for applied in [Applied::Stored, Applied::Deleted] {
            let err = stored_before(refusal(false), applied);
            assert!(!err.is_retryable());
            let shown = err.to_string();
            assert!(!shown.contains("a retry"), "{shown}");
            assert!(shown.contains("itself was"), "{shown}");
        }
        let stored = stored_before(refusal(false), Applied::Stored).to_string();
        assert!(
            stored.contains("read the session before writing again"),
            "{stored}"
        );
        // Found by a later review: it said "a write sent again applies again", which most
        // do not (a conditional write expecting a revision is refused as a conflict, an
        // append's messages with ids are skipped by the exactly-once window).
        assert!(stored.contains("may apply again"), "{stored}");
    }

    /// Found by a review: a retry of a conditional write was said to be refused as a
    /// conflict, but an append expecting only a generation (`Expect::Generation`, which
    /// an append does not move) meets it again and stores its messages again. Found by a
    /// second review: not one expecting generation 0 (no session), whose retry meets the
    /// session its first copy created, a conflict.
    #[test]
    fn a_conditional_append_expecting_a_generation_is_not_said_to_conflict() {
        for retryable in [true, false] {
            let shown = stored_before(refusal(retryable), Applied::Stored).to_string();
            assert!(
                shown.contains(
                    "a conditional append's too when it expects a generation other than 0"
                ) || shown
                    .contains("a conditional one too when it expects a generation other than 0"),
                "{shown}"
            );
        }
    }
}
