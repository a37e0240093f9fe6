//! `create_session_with_times` on Redis, on one server and on a cluster: what the
//! conformance cases (`fusion_core::testkit::times`) cannot see. A copy's times are its
//! meta hash's fields and its scores in the by-update indexes; its idle expiry sets both
//! keys' `PEXPIREAT` and its entry of the expiry index from the given last write; a copy
//! whose idle span has passed leaves no keys, as a creation with an instant already past;
//! the storage's own TTL counts from the write, which stores the keys; a copy's ids
//! start its window of exactly-once appends; and a failed copy names its operation.

mod common;

use std::time::{Duration, SystemTime};

use common::{Harness, Raw, cluster_harness, harness};
use fusion_core::testkit::exactly_once::with_ids;
use fusion_core::testkit::said;
use fusion_core::{
    ConversationStorage, Expiry, SessionMeta, SessionTimes, from_unix_micros, unix_micros,
};
use redis::AsyncCommands;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Now, cut to the whole millisecond the backend keeps times in.
fn now_ms() -> SystemTime {
    from_unix_micros(unix_micros(SystemTime::now()) / 1000 * 1000)
}

fn millis(at: SystemTime) -> i64 {
    unix_micros(at) / 1000
}

/// The ms at which Redis drops `key`, -1 without an expiry, -2 once it is gone.
async fn pexpiretime(raw: &mut Raw, key: &str) -> i64 {
    redis::cmd("PEXPIRETIME")
        .arg(key)
        .query_async(raw)
        .await
        .unwrap()
}

/// The server's clock, in ms.
async fn server_ms(raw: &mut Raw) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(raw).await.unwrap();
    secs * 1000 + micros / 1000
}

/// A field of the session's meta hash, as a number.
async fn field(raw: &mut Raw, h: &Harness, id: &str, name: &str) -> Option<i64> {
    let text: Option<String> = raw.hget(h.meta_key(id), name).await.unwrap();
    text.map(|text| text.parse().unwrap())
}

/// A copy idle 50 minutes of its hour keeps its times in its meta hash, is scored at its
/// given last write in the by-update indexes (its owner's too), and expires an hour after
/// it: in its meta hash, on both keys (10 minutes from now) and in the expiry index.
async fn a_copys_scores_and_idle_expiry_count_from_its_given_last_write(h: Harness) {
    let store = h.open().await;
    let mut raw = h.raw_any().await;
    let now = now_ms();
    let times = SessionTimes::new(now - DAY, now - 50 * MINUTE);
    let meta = SessionMeta::new().owner("o").expiry(Expiry::Idle(HOUR));
    store
        .create_session_with_times("copy", &meta, &said("a"), times)
        .await
        .unwrap();

    let (created, updated) = (millis(times.created_at), millis(times.updated_at));
    assert_eq!(
        field(&mut raw, &h, "copy", "created_at").await,
        Some(created)
    );
    assert_eq!(
        field(&mut raw, &h, "copy", "updated_at").await,
        Some(updated)
    );
    let due = updated + HOUR.as_millis() as i64;
    let expires_at = field(&mut raw, &h, "copy", "expires_at").await;
    assert_eq!(
        expires_at,
        Some(due * 1000),
        "an hour after the given last write"
    );
    for key in [h.list_key("copy"), h.meta_key("copy")] {
        assert_eq!(pexpiretime(&mut raw, &key).await, due, "{key}");
    }
    let scores = [
        (h.expiry_key(), "copy/o", due),
        (h.updated_key(), "copy", updated),
        (h.owner_updated_key("o"), "copy", updated),
        (h.ids_key(), "copy", 0),
        (h.owner_ids_key("o"), "copy", 0),
    ];
    for (key, member, want) in scores {
        let score: Option<f64> = raw.zscore(&key, member).await.unwrap();
        assert_eq!(score, Some(want as f64), "{key}");
    }
}

#[tokio::test]
async fn a_copys_scores_and_idle_expiry_count_from_its_given_last_write_on_one_server() {
    if let Some(h) = harness().await {
        a_copys_scores_and_idle_expiry_count_from_its_given_last_write(h).await;
    }
}

#[tokio::test]
async fn a_copys_scores_and_idle_expiry_count_from_its_given_last_write_on_a_cluster() {
    if let Some(h) = cluster_harness().await {
        a_copys_scores_and_idle_expiry_count_from_its_given_last_write(h).await;
    }
}

/// A copy idle longer than its span is created expired as a creation with an instant
/// already past is: Redis drops its keys at once, and another may take its id.
async fn a_copy_idle_past_its_span_leaves_no_keys(h: Harness) {
    let store = h.open().await;
    let mut raw = h.raw_any().await;
    let now = now_ms();
    let lapsed = SessionTimes::new(now - DAY, now - 2 * HOUR);
    let idle = SessionMeta::new().expiry(Expiry::Idle(HOUR));
    store
        .create_session_with_times("lapsed", &idle, &said("a"), lapsed)
        .await
        .unwrap();
    let past = SessionMeta::new().expiry(Expiry::At(now - HOUR));
    store
        .create_session("past", &past, &said("b"))
        .await
        .unwrap();
    for id in ["lapsed", "past"] {
        for key in [h.list_key(id), h.meta_key(id)] {
            let exists: bool = raw.exists(&key).await.unwrap();
            assert!(!exists, "{key} is left");
        }
    }
    store
        .create_session_with_times("lapsed", &SessionMeta::new(), &said("c"), lapsed)
        .await
        .unwrap();
    assert_eq!(store.load("lapsed").await.unwrap(), said("c"));
}

#[tokio::test]
async fn a_copy_idle_past_its_span_leaves_no_keys_on_one_server() {
    if let Some(h) = harness().await {
        a_copy_idle_past_its_span_leaves_no_keys(h).await;
    }
}

#[tokio::test]
async fn a_copy_idle_past_its_span_leaves_no_keys_on_a_cluster() {
    if let Some(h) = cluster_harness().await {
        a_copy_idle_past_its_span_leaves_no_keys(h).await;
    }
}

/// A copy whose messages have ids starts its window of exactly-once appends as any
/// creation does (a window left out would go unnoticed by a retry, which then reads the
/// ids themselves).
async fn a_copys_ids_start_its_window(h: Harness) {
    let store = h.open().await;
    let mut raw = h.raw_any().await;
    let batch = with_ids("w", 3);
    let now = now_ms();
    let times = SessionTimes::new(now - DAY, now - HOUR);
    store
        .create_session_with_times("copy", &SessionMeta::new(), &batch, times)
        .await
        .unwrap();
    store
        .create_session("created", &SessionMeta::new(), &batch)
        .await
        .unwrap();
    let copy: Option<String> = raw.hget(h.meta_key("copy"), "recent").await.unwrap();
    let created: Option<String> = raw.hget(h.meta_key("created"), "recent").await.unwrap();
    assert!(created.is_some());
    assert_eq!(copy, created, "the same messages at the same places");
    store.append("copy", &batch).await.unwrap();
    assert_eq!(store.load("copy").await.unwrap(), batch);
}

#[tokio::test]
async fn a_copys_ids_start_its_window_on_one_server() {
    if let Some(h) = harness().await {
        a_copys_ids_start_its_window(h).await;
    }
}

#[tokio::test]
async fn a_copys_ids_start_its_window_on_a_cluster() {
    if let Some(h) = cluster_harness().await {
        a_copys_ids_start_its_window(h).await;
    }
}

/// A copy that fails names its operation, not `create_session`'s.
#[tokio::test]
async fn a_failed_copy_names_its_operation() {
    let Some(h) = harness().await else { return };
    let store = h.open().await;
    let mut raw = h.raw_any().await;
    let _: () = raw.set(h.list_key("taken"), "not a list").await.unwrap();
    let now = now_ms();
    let err = store
        .create_session_with_times(
            "taken",
            &SessionMeta::new(),
            &said("a"),
            SessionTimes::new(now, now),
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("create_session_with_times of session \"taken\""),
        "{text}"
    );
}

/// The storage's TTL counts from the write that stores the keys, not from a copy's given
/// last write (a migration into a storage with a TTL keeps every session for that TTL),
/// and the keys go at the copy's expiry when that comes first, as it does here: an hour
/// from now by the given times, where the TTL ends in 90 minutes. The script is known
/// to the server only once its text is sent again (`SCRIPT FLUSH` first).
#[tokio::test]
async fn the_storages_ttl_counts_from_the_write_and_a_copys_earlier_expiry_comes_first() {
    let Some(h) = harness().await else { return };
    let ttl = 90 * MINUTE;
    let store = h.connect(h.options().ttl(ttl)).await.unwrap();
    let mut raw = h.raw_any().await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw)
        .await
        .unwrap();
    let now = now_ms();
    let times = SessionTimes::new(now - DAY, now - 2 * HOUR);
    let before = server_ms(&mut raw).await;
    store
        .create_session_with_times("kept", &SessionMeta::new(), &said("a"), times)
        .await
        .unwrap();
    let idle = SessionMeta::new().expiry(Expiry::Idle(3 * HOUR));
    store
        .create_session_with_times("sooner", &idle, &said("b"), times)
        .await
        .unwrap();

    for key in [h.list_key("kept"), h.meta_key("kept")] {
        let due = pexpiretime(&mut raw, &key).await;
        let ttl_ms = ttl.as_millis() as i64;
        assert!(
            due >= before + ttl_ms,
            "{key}: the TTL counts from the write, not {due}"
        );
    }
    let expires = millis(times.updated_at) + (3 * HOUR).as_millis() as i64;
    for key in [h.list_key("sooner"), h.meta_key("sooner")] {
        assert_eq!(pexpiretime(&mut raw, &key).await, expires, "{key}");
    }
    let info = store.session_info("sooner").await.unwrap().unwrap();
    assert_eq!(info.expires_at, Some(times.updated_at + 3 * HOUR));
}
