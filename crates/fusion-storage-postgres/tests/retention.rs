//! Session retention at the edges the shared suite cannot see from outside: the two
//! columns that store an expiry and how an idle one follows `updated_at` on the server's
//! clock; writes that must not revive an expired session leave every row as it was; a
//! purge removes the messages too and passes over sessions another transaction holds
//! instead of waiting for them; a delete conditional on the last write compares
//! `updated_at` to the microsecond it is stored in. (The plans of the purge and the load
//! are checked by a unit test of `src/sql.rs`.)

mod support;

use std::time::Duration;

use fusion_core::testkit::StorageHarness;
use fusion_core::testkit::{now_micros, said, wait_past};
use fusion_core::{
    Change, ConversationStorage, Error, Expect, Expiry, MetaUpdate, Revision, SessionMeta,
    SessionTimes, from_unix_micros, unix_micros,
};
use sqlx::{Connection, PgConnection};
use support::{harness, snapshot};

const HOUR: Duration = Duration::from_secs(3600);

/// `(updated_at in µs, expires_at, expiry_idle)` of `id`, as the row holds them.
async fn columns(raw: &mut PgConnection, id: &str) -> (i64, Option<i64>, Option<i64>) {
    sqlx::query_as(
        "SELECT (extract(epoch FROM updated_at) * 1000000)::int8, expires_at, expiry_idle \
         FROM sessions WHERE id = $1",
    )
    .bind(id)
    .fetch_one(raw)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_idle_expiry_is_updated_at_plus_its_span_after_every_write() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    let mut raw = harness.raw().await;
    let span = i64::try_from(HOUR.as_micros()).unwrap();
    let idle = SessionMeta::new().expiry(Expiry::Idle(HOUR));
    storage
        .create_session("idle", &idle, &said("a"))
        .await
        .unwrap();
    for write in 0..4 {
        match write {
            0 => {}
            1 => storage.append("idle", &said("b")).await.unwrap(),
            2 => storage.save("idle", &said("c")).await.unwrap(),
            _ => storage.truncate("idle", 1).await.unwrap(),
        }
        let (updated, expires_at, stored_span) = columns(&mut raw, "idle").await;
        assert_eq!(stored_span, Some(span), "write {write}");
        assert_eq!(expires_at, Some(updated + span), "write {write}");
    }
    // A truncate that cuts nothing writes nothing, so the expiry stays.
    let before = columns(&mut raw, "idle").await;
    storage.truncate("idle", 5).await.unwrap();
    assert_eq!(columns(&mut raw, "idle").await, before);

    let at = now_micros() + HOUR;
    let fixed = SessionMeta::new().expiry(Expiry::At(at));
    storage
        .create_session("fixed", &fixed, &said("a"))
        .await
        .unwrap();
    storage.append("fixed", &said("b")).await.unwrap();
    let (_, expires_at, stored_span) = columns(&mut raw, "fixed").await;
    assert_eq!((expires_at, stored_span), (Some(unix_micros(at)), None));
}

#[tokio::test]
async fn writes_that_must_not_revive_an_expired_session_leave_it_for_the_purge() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    let soon = now_micros() + Duration::from_millis(200);
    let meta = SessionMeta::new()
        .owner("o")
        .tags(["t"])
        .expiry(Expiry::At(soon));
    storage
        .create_session("gone", &meta, &said("old"))
        .await
        .unwrap();
    storage.append("kept", &said("k")).await.unwrap();
    wait_past(soon).await;
    let mut raw = harness.raw().await;
    let before = snapshot(&mut raw).await;

    let update = MetaUpdate::new().title(Some("new")).expiry(None);
    assert_eq!(storage.update_session("gone", &update).await.unwrap(), None);
    storage.truncate("gone", 1).await.unwrap();
    assert_eq!(snapshot(&mut raw).await, before, "nothing written");

    assert_eq!(storage.purge_expired(10).await.unwrap(), 1);
    let (sessions, messages) = snapshot(&mut raw).await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(
        messages.len(),
        2,
        "only kept's messages are left: {messages:?}"
    );
    assert_eq!(storage.load("kept").await.unwrap(), said("k"));
    assert_eq!(storage.purge_expired(10).await.unwrap(), 0);
}

#[tokio::test]
async fn a_purge_passes_over_a_session_another_transaction_holds() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    let soon = now_micros() + Duration::from_millis(200);
    let expiring = SessionMeta::new().expiry(Expiry::At(soon));
    for id in ["held", "free"] {
        storage
            .create_session(id, &expiring, &said(id))
            .await
            .unwrap();
    }
    wait_past(soon).await;

    let mut holder = harness.raw().await;
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT id FROM sessions WHERE id = 'held' FOR UPDATE")
        .execute(&mut *tx)
        .await
        .unwrap();
    // Were the purge to wait for the lock, this would block until the statement timeout.
    assert_eq!(storage.purge_expired(10).await.unwrap(), 1);
    tx.rollback().await.unwrap();
    assert_eq!(
        storage.purge_expired(10).await.unwrap(),
        1,
        "now held's turn"
    );
    assert!(storage.list_sessions().await.unwrap().is_empty());
}

/// A delete conditional on the last write (`Expect::UnwrittenSince`) compares the
/// `updated_at` the row stores, to its microsecond: a session last written at the cutoff
/// itself was written since, one written a microsecond before it (or half of one: the
/// cutoff may hold nanoseconds) was not. Times given at creation, so no clock is read.
#[tokio::test]
async fn a_delete_conditional_on_the_last_write_compares_to_the_microsecond() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    // Not on a whole millisecond, so a comparison that rounded to one would differ.
    let written = from_unix_micros(1_700_000_000_123_456);
    let times = SessionTimes::new(written, written);
    let micro = Duration::from_micros(1);
    let cutoffs = [
        (written - micro, false),
        (written, false),
        (written + micro / 2, true),
        (written + micro, true),
    ];
    for (since, deleted) in cutoffs {
        let id = "s";
        let created = storage
            .create_session_with_times(id, &SessionMeta::new(), &said("a"), times)
            .await
            .unwrap();
        let revision = Revision {
            generation: created,
            len: 2,
        };
        let unwritten = Expect::UnwrittenSince { revision, since };
        let done = storage.write_if(id, unwritten, Change::Truncate(0)).await;
        let at = unix_micros(since);
        match done {
            Ok(left) => assert!(deleted && left == 0, "deleted with a cutoff at {at} µs"),
            Err(Error::Conflict { .. }) => assert!(!deleted, "kept with a cutoff at {at} µs"),
            Err(err) => panic!("{err}"),
        }
        storage.delete(id).await.unwrap();
    }
}
