//! The conformance cases of retention: an [`Expiry`] round trips and an idle one moves
//! with every write; an expired session is gone at once for every reader and treated as
//! absent by every writer; [`ConversationStorage::purge_expired`] removes expired
//! sessions in bounded batches and never a session written again since; a delete
//! conditional on the last write ([`Expect::UnwrittenSince`]) keeps one written since.
//!
//! The cases wait for real time to pass (a few hundred milliseconds), never for the
//! scheduler: they only assert that a session is gone once its instant is behind the
//! clock, and that a session expiring in an hour is still there.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::{StorageHarness, all_pages, info, now_micros, open, said, wait_past};
use crate::{
    Change, ChatMessage, ConversationStorage, Error, Expect, Expiry, MetaUpdate, OwnerScope,
    Revision, SessionMeta, SessionOrder, SessionQuery,
};

/// How soon the sessions meant to expire do.
const SOON: Duration = Duration::from_millis(300);
/// Longer than any case runs: these sessions must still be there at its end.
const HOUR: Duration = Duration::from_secs(3600);

/// An expiry round trips through `session_info`; an idle one is `updated_at` plus its span
/// and moves with every write, a fixed one never moves; an update sets or removes it; an
/// expiry out of range is refused and nothing is written.
pub async fn an_expiry_round_trips_and_an_idle_one_moves_with_writes<H: StorageHarness>(
    harness: &H,
) {
    let store = open(harness).await;
    let at = now_micros() + HOUR;
    let fixed = SessionMeta::new().owner("o").expiry(Expiry::At(at));
    store
        .create_session("fixed", &fixed, &said("a"))
        .await
        .unwrap();
    let created = info(&store, "fixed").await;
    assert_eq!(created.meta, fixed);
    assert_eq!(created.expires_at, Some(at));

    let idle = SessionMeta::new().expiry(Expiry::Idle(HOUR));
    store
        .create_session("idle", &idle, &said("b"))
        .await
        .unwrap();
    let first = info(&store, "idle").await;
    assert_eq!(first.meta, idle);
    assert_eq!(first.expires_at, Some(first.updated_at.unwrap() + HOUR));

    store.append("idle", &said("c")).await.unwrap();
    store.append("fixed", &said("c")).await.unwrap();
    let moved = info(&open(harness).await, "idle").await;
    assert_eq!(moved.expires_at, Some(moved.updated_at.unwrap() + HOUR));
    assert!(
        moved.expires_at >= first.expires_at,
        "a write pushes it back"
    );
    store.save("idle", &said("d")).await.unwrap();
    store.truncate("idle", 1).await.unwrap();
    let rewritten = info(&store, "idle").await;
    assert_eq!(rewritten.meta, idle, "rewrites keep the expiry");
    assert_eq!(
        rewritten.expires_at,
        Some(rewritten.updated_at.unwrap() + HOUR)
    );
    assert_eq!(info(&store, "fixed").await.expires_at, Some(at));

    let never = store
        .update_session("fixed", &MetaUpdate::new().expiry(None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((never.expires_at, never.meta.expiry), (None, None));
    assert_eq!(never.meta.owner.as_deref(), Some("o"), "the rest is kept");
    let now_idle = store
        .update_session("fixed", &MetaUpdate::new().expiry(Some(Expiry::Idle(HOUR))))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        now_idle.expires_at,
        Some(now_idle.updated_at.unwrap() + HOUR)
    );
    assert_eq!(info(&store, "fixed").await, now_idle);

    let err = store
        .create_session(
            "zero",
            &SessionMeta::new().expiry(Expiry::Idle(Duration::ZERO)),
            &said("x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMeta(_)), "{err:?}");
    assert!(
        store.load("zero").await.unwrap().is_empty(),
        "nothing written"
    );
    let err = store
        .update_session(
            "idle",
            &MetaUpdate::new().expiry(Some(Expiry::Idle(Duration::ZERO))),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMeta(_)), "{err:?}");
    assert_eq!(info(&store, "idle").await.meta, idle, "nothing changed");
}

/// Once its instant has passed, a session is gone for `load`, `load_revision`,
/// `session_info`, `list_sessions`, every listing and an owner's scope, on this instance
/// and any other; sessions that expire later, or never, are still there.
pub async fn an_expired_session_is_gone_for_every_reader<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let owned = |expiry: Option<Expiry>| {
        let meta = SessionMeta::new().owner("o").tags(["t"]);
        match expiry {
            Some(expiry) => meta.expiry(expiry),
            None => meta,
        }
    };
    let soon = now_micros() + SOON;
    store
        .create_session("at", &owned(Some(Expiry::At(soon))), &said("a"))
        .await
        .unwrap();
    store
        .create_session("idle", &owned(Some(Expiry::Idle(SOON))), &said("b"))
        .await
        .unwrap();
    // Written before now, so expired by then: not read back, as it may have expired
    // already on a machine slower than `SOON` from here.
    let idle_until = now_micros() + SOON;
    store
        .create_session("later", &owned(Some(Expiry::Idle(HOUR))), &said("c"))
        .await
        .unwrap();
    store
        .create_session("never", &owned(None), &said("d"))
        .await
        .unwrap();
    wait_past(soon.max(idle_until)).await;

    let alive: BTreeSet<String> = ["later", "never"].map(String::from).into();
    for store in [store, open(harness).await] {
        for id in ["at", "idle"] {
            assert!(store.load(id).await.unwrap().is_empty(), "{id} expired");
            assert_eq!(store.load_revision(id).await.unwrap().1, Revision::ABSENT);
            assert_eq!(store.session_info(id).await.unwrap(), None, "{id}");
        }
        let ids: BTreeSet<String> = store.list_sessions().await.unwrap().into_iter().collect();
        assert_eq!(ids, alive);
        for query in [
            SessionQuery::new(),
            SessionQuery::new().order(SessionOrder::Id),
            SessionQuery::new().owner("o"),
            SessionQuery::new().owner("o").order(SessionOrder::Id),
            SessionQuery::new().tag("t"),
        ] {
            let ids: BTreeSet<String> = all_pages(&store, query.clone().limit(2))
                .await
                .into_iter()
                .collect();
            assert_eq!(ids, alive, "{query:?}");
        }
        let scope = OwnerScope::new(Arc::new(store), "o").unwrap();
        assert!(scope.load("at").await.unwrap().is_empty());
        let ids: BTreeSet<String> = all_pages(&scope, SessionQuery::new().limit(2))
            .await
            .into_iter()
            .collect();
        assert_eq!(ids, alive);
    }
}

/// Every writer treats an expired session as absent: an append starts it afresh with no
/// metadata and a new generation, a conditional creation succeeds, `create_session`
/// succeeds, and none of them brings back a message or the metadata of before.
pub async fn a_write_to_an_expired_session_starts_it_afresh<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let soon = Expiry::At(now_micros() + SOON);
    let meta = SessionMeta::new().owner("o").title("old").expiry(soon);
    let mut generations = Vec::new();
    for id in ["append", "conditional", "create", "save"] {
        generations.push(store.create_session(id, &meta, &said("old")).await.unwrap());
    }
    let Expiry::At(instant) = soon else {
        unreachable!()
    };
    wait_past(instant).await;

    let fresh = [ChatMessage::user("fresh")];
    store.append("append", &fresh).await.unwrap();
    let created = store
        .write_if("conditional", Expect::Generation(0), Change::Append(&fresh))
        .await
        .unwrap();
    store
        .create_session("create", &SessionMeta::new().title("new"), &fresh)
        .await
        .unwrap();
    store.save("save", &fresh).await.unwrap();
    for (id, before) in ["append", "conditional", "create", "save"]
        .into_iter()
        .zip(generations)
    {
        assert_eq!(
            store.load(id).await.unwrap(),
            fresh,
            "{id}: nothing old is back"
        );
        let now = info(&store, id).await;
        assert_eq!(now.message_count, 1, "{id}");
        assert_ne!(now.generation, before, "{id}: a new session");
        assert_eq!(now.expires_at, None, "{id}");
        assert_eq!(now.meta.owner, None, "{id}: the old metadata is gone");
    }
    assert_eq!(info(&store, "conditional").await.generation, created);
    assert_eq!(
        info(&store, "create").await.meta.title.as_deref(),
        Some("new")
    );
}

/// `purge_expired` deletes expired sessions at most `batch` at a time until none is
/// left, from any instance; it keeps a session written again after it expired, and every
/// session that has not expired; a batch out of range is refused.
pub async fn purge_removes_expired_sessions_in_bounded_batches<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let soon = now_micros() + SOON;
    let expiring = SessionMeta::new().owner("o").expiry(Expiry::At(soon));
    for i in 0..5 {
        store
            .create_session(&format!("p{i}"), &expiring, &said("old"))
            .await
            .unwrap();
    }
    let late = SessionMeta::new().expiry(Expiry::Idle(HOUR));
    store
        .create_session("late", &late, &said("l"))
        .await
        .unwrap();
    store.append("plain", &said("p")).await.unwrap();
    wait_past(soon).await;
    store.append("p0", &said("revived")).await.unwrap();

    let err = store.purge_expired(0).await.unwrap_err();
    assert!(matches!(err, Error::InvalidMeta(_)), "{err:?}");
    let other = open(harness).await;
    let mut purged = 0;
    for _ in 0..10 {
        let n = other.purge_expired(2).await.unwrap();
        assert!(n <= 2, "a batch deletes at most its size, not {n}");
        purged += n;
        if n == 0 {
            break;
        }
    }
    assert_eq!(purged, 4, "p1..p4 purged");
    assert_eq!(store.purge_expired(2).await.unwrap(), 0, "nothing left");
    assert_eq!(store.load("p0").await.unwrap(), said("revived"));
    for id in ["late", "plain"] {
        assert_eq!(store.load(id).await.unwrap().len(), 2, "{id} kept");
    }
    let ids: BTreeSet<String> = store.list_sessions().await.unwrap().into_iter().collect();
    assert_eq!(ids, ["late", "p0", "plain"].map(String::from).into());
}

/// A delete conditional on the session's last write ([`Expect::UnwrittenSince`], what
/// `fusion sessions purge --older-than` runs) removes a session untouched since the
/// instant and keeps one written since, even when only its title changed (which moves no
/// revision); required absent, it creates.
pub async fn a_delete_conditional_on_the_last_write_keeps_a_session_written_since<
    H: StorageHarness,
>(
    harness: &H,
) {
    let store = open(harness).await;
    for id in ["idle", "retitled"] {
        store.append(id, &said(id)).await.unwrap();
    }
    let listed = |info: crate::SessionInfo| Revision {
        generation: info.generation,
        len: info.message_count,
    };
    let idle = listed(info(&store, "idle").await);
    let retitled = listed(info(&store, "retitled").await);
    wait_past(now_micros()).await;
    // A whole millisecond, as the purge takes it, so every backend compares it alike.
    let since = crate::from_unix_micros(crate::unix_micros(now_micros()) / 1000 * 1000);
    let unwritten = |revision| Expect::UnwrittenSince { revision, since };

    let title = MetaUpdate::new().title(Some("renamed since"));
    store.update_session("retitled", &title).await.unwrap();
    let err = store
        .write_if("retitled", unwritten(retitled), Change::Truncate(0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("written since"), "{err}");
    let kept = info(&store, "retitled").await;
    assert_eq!(kept.meta.title.as_deref(), Some("renamed since"));
    assert_eq!(store.load("retitled").await.unwrap(), said("retitled"));

    let stale = Revision {
        len: idle.len + 1,
        ..idle
    };
    let err = store
        .write_if("idle", unwritten(stale), Change::Truncate(0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    let other = open(harness).await;
    let left = other
        .write_if("idle", unwritten(idle), Change::Truncate(0))
        .await
        .unwrap();
    assert_eq!(left, 0, "deleted");
    assert!(store.load("idle").await.unwrap().is_empty());

    let created = store
        .write_if(
            "fresh",
            unwritten(Revision::ABSENT),
            Change::Append(&said("new")),
        )
        .await
        .unwrap();
    assert_ne!(created, 0);
    let err = store
        .write_if(
            "fresh",
            unwritten(Revision::ABSENT),
            Change::Append(&said("again")),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert_eq!(store.load("fresh").await.unwrap(), said("new"));
}
