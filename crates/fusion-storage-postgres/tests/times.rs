//! `create_session_with_times` at the edges the shared suite cannot see from outside: the
//! times keep their microseconds in every read and in the listing's order, a copy whose
//! messages carry ids keeps its times and its window of ids, a copy replaces an expired
//! session with its own times, a refused copy leaves every row as it was, and a failed
//! one names its operation. (That the times are clamped to the server's clock of the
//! write: `crate::write`'s unit tests.)

mod support;

use std::time::Duration;

use fusion_core::testkit::exactly_once::with_ids;
use fusion_core::testkit::{StorageHarness, all_pages, now_micros, said};
use fusion_core::{
    ConversationStorage, Error, Expiry, SessionMeta, SessionOrder, SessionQuery, SessionTimes,
};
use support::{harness, snapshot};

const HOUR: Duration = Duration::from_secs(3600);

/// Times a few days back, with a microsecond part no millisecond precision keeps.
fn copied_times() -> SessionTimes {
    let updated = now_micros() - 24 * HOUR + Duration::from_micros(123_457);
    SessionTimes::new(updated - 48 * HOUR - Duration::from_micros(1), updated)
}

#[tokio::test]
async fn given_times_keep_their_microseconds_in_every_read_and_the_listing() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    let times = copied_times();
    let idle = SessionMeta::new().expiry(Expiry::Idle(48 * HOUR));
    storage
        .create_session_with_times("a", &idle, &said("a"), times)
        .await
        .unwrap();
    let info = storage.session_info("a").await.unwrap().unwrap();
    assert_eq!(
        (info.created_at, info.updated_at, info.expires_at),
        (
            Some(times.created_at),
            Some(times.updated_at),
            Some(times.updated_at + 48 * HOUR)
        )
    );

    // Two more copies a microsecond either side of "a": newest first, page by page.
    let micro = Duration::from_micros(1);
    for (id, updated) in [
        ("b", times.updated_at + micro),
        ("c", times.updated_at - micro),
    ] {
        let copied = SessionTimes::new(times.created_at, updated);
        storage
            .create_session_with_times(id, &SessionMeta::new(), &said(id), copied)
            .await
            .unwrap();
    }
    let newest_first = SessionQuery::new()
        .order(SessionOrder::UpdatedDesc)
        .limit(1);
    let listed = all_pages(&storage, newest_first).await;
    assert_eq!(listed, ["b", "a", "c"]);
}

#[tokio::test]
async fn a_copy_whose_messages_have_ids_keeps_its_times_and_its_window() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    let times = copied_times();
    let batch = with_ids("copied", 3);
    storage
        .create_session_with_times("s", &SessionMeta::new(), &batch, times)
        .await
        .unwrap();
    let info = storage.session_info("s").await.unwrap().unwrap();
    assert_eq!(
        (info.created_at, info.updated_at),
        (Some(times.created_at), Some(times.updated_at))
    );
    // The window was stored with the copy (a window left unknown would pass the retry
    // below too, through the exact check), and a retry of its messages adds none of them.
    let mut raw = harness.raw().await;
    let window: Option<Vec<i32>> =
        sqlx::query_scalar("SELECT recent_ids FROM sessions WHERE id = 's'")
            .fetch_one(&mut raw)
            .await
            .unwrap();
    let fingerprints = batch
        .iter()
        .map(|message| message.id.as_ref().unwrap().fingerprint().cast_signed());
    assert_eq!(window, Some(fingerprints.collect()));
    storage.append("s", &batch).await.unwrap();
    assert_eq!(storage.load("s").await.unwrap(), batch);
}

#[tokio::test]
async fn a_copy_replaces_an_expired_session_with_its_own_times() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    let lapsed = SessionMeta::new().expiry(Expiry::At(now_micros() - HOUR));
    storage
        .create_session("s", &lapsed, &said("old"))
        .await
        .unwrap();
    let times = copied_times();
    storage
        .create_session_with_times("s", &SessionMeta::new(), &said("new"), times)
        .await
        .unwrap();
    let info = storage.session_info("s").await.unwrap().unwrap();
    assert_eq!(
        (info.created_at, info.updated_at, info.expires_at),
        (Some(times.created_at), Some(times.updated_at), None)
    );
    assert_eq!(storage.load("s").await.unwrap(), said("new"));
}

#[tokio::test]
async fn a_copy_of_an_existing_session_leaves_every_row_as_it_was() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    storage
        .create_session("s", &SessionMeta::new().title("kept"), &with_ids("s", 2))
        .await
        .unwrap();
    let mut raw = harness.raw().await;
    let before = snapshot(&mut raw).await;
    for messages in [said("again"), with_ids("again", 2)] {
        let again = storage
            .create_session_with_times("s", &SessionMeta::new(), &messages, copied_times())
            .await;
        assert!(matches!(again, Err(Error::Conflict { .. })), "{again:?}");
    }
    assert_eq!(snapshot(&mut raw).await, before);
}

#[tokio::test]
async fn a_failed_copy_names_its_operation() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    storage.close().await;
    let err = storage
        .create_session_with_times("s", &SessionMeta::new(), &said("a"), copied_times())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("create_session_with_times of session \"s\""),
        "{text}"
    );
}
