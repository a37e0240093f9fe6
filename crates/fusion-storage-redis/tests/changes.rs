//! Changes published by the write scripts (`RedisOptions::publish_changes`) and followed
//! with `RedisStorage::subscribe_changes`, on one server and on a cluster: every kind of
//! change, in the order made, with the generation and length the session has after it;
//! nothing from storages that do not publish or from other prefixes; a foreign message
//! on the channel; a cluster seed node that is down. A server that goes away mid-subscription:
//! `restart.rs`.

mod common;

use std::time::{Duration, SystemTime};

use common::{Harness, NO_HANG, cluster_harness, harness};
use fusion_core::testkit::port::reserve_port;
use fusion_core::testkit::wait_past;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, Expiry, MetaUpdate, SessionMeta,
};
use fusion_storage_redis::{ChangeKind, RedisStorage, SessionChange, SessionChanges};
use futures::StreamExt;

/// The next item of `changes`; panics if none comes within [`NO_HANG`] (a hang, not a
/// timing: every change awaited here was made before).
async fn next_item(changes: &mut SessionChanges) -> fusion_core::Result<SessionChange> {
    tokio::time::timeout(NO_HANG, changes.next())
        .await
        .expect("a published change arrives")
        .expect("the subscription is open")
}

async fn next(changes: &mut SessionChanges) -> SessionChange {
    next_item(changes).await.expect("a session change")
}

/// A storage on `h` that publishes its changes.
async fn publishing(h: &Harness) -> RedisStorage {
    h.connect(h.options().publish_changes(true)).await.unwrap()
}

/// A subscription and the storage whose changes it follows.
struct Follow<'a> {
    changes: SessionChanges,
    store: &'a RedisStorage,
}

impl<'a> Follow<'a> {
    /// Subscribes to `store`'s changes.
    async fn new(store: &'a RedisStorage) -> Self {
        let changes = store.subscribe_changes().await.unwrap();
        Self { changes, store }
    }

    /// Asserts that the next change is `kind` of `id`, leaving it with `len` messages
    /// and the generation the storage reads now.
    async fn expect(&mut self, kind: ChangeKind, id: &str, len: usize) {
        let (_, now) = self.store.load_revision(id).await.unwrap();
        self.expect_generation(kind, id, len, now.generation).await;
    }

    /// Asserts that the next change is `kind` of `id`, leaving it with `len` messages
    /// and `generation`.
    async fn expect_generation(&mut self, kind: ChangeKind, id: &str, len: usize, generation: u64) {
        let change = next(&mut self.changes).await;
        let expected = (kind, id, len, generation);
        let got = (
            change.kind,
            change.session_id.as_str(),
            change.len,
            change.generation,
        );
        assert_eq!(got, expected, "{change:?}");
    }
}

async fn every_kind_of_change_arrives_in_order(h: Harness) {
    let store = publishing(&h).await;
    let mut follow = Follow::new(&store).await;
    assert_eq!(follow.changes.channel(), format!("{}:changes", h.prefix));
    let (a, b, c) = (
        ChatMessage::user("a"),
        ChatMessage::assistant("b"),
        ChatMessage::user("c"),
    );

    store.append("s", std::slice::from_ref(&a)).await.unwrap();
    follow.expect(ChangeKind::Created, "s", 1).await;
    store.append("s", &[b.clone(), c.clone()]).await.unwrap();
    follow.expect(ChangeKind::Appended, "s", 3).await;
    let (_, before) = store.load_revision("s").await.unwrap();
    let append = Change::Append(std::slice::from_ref(&a));
    let expected = Expect::Exactly(before);
    store.write_if("s", expected, append).await.unwrap();
    follow.expect(ChangeKind::Appended, "s", 4).await;
    store.save("s", &[a.clone(), b.clone()]).await.unwrap();
    follow.expect(ChangeKind::Replaced, "s", 2).await;
    store.truncate("s", 1).await.unwrap();
    follow.expect(ChangeKind::Truncated, "s", 1).await;
    let titled = MetaUpdate::new().title(Some("titled"));
    store.update_session("s", &titled).await.unwrap();
    follow.expect(ChangeKind::Updated, "s", 1).await;
    store.delete("s").await.unwrap();
    follow.expect(ChangeKind::Deleted, "s", 0).await;
    // Deleting what is not there changes nothing, and publishes nothing.
    store.delete("s").await.unwrap();
    store.append("t", &[a.clone(), b.clone()]).await.unwrap();
    follow.expect(ChangeKind::Created, "t", 2).await;
    store.truncate("t", 0).await.unwrap();
    follow.expect(ChangeKind::Deleted, "t", 0).await;
    store.append("t", &[a.clone(), b.clone()]).await.unwrap();
    follow.expect(ChangeKind::Created, "t", 2).await;
    let (_, now) = store.load_revision("t").await.unwrap();
    let replace = Change::Replace(std::slice::from_ref(&c));
    store
        .write_if("t", Expect::Exactly(now), replace)
        .await
        .unwrap();
    follow.expect(ChangeKind::Replaced, "t", 1).await;
    store.append("t", &[a.clone(), b.clone()]).await.unwrap();
    follow.expect(ChangeKind::Appended, "t", 3).await;
    let (_, now) = store.load_revision("t").await.unwrap();
    store
        .write_if("t", Expect::Exactly(now), Change::Truncate(2))
        .await
        .unwrap();
    follow.expect(ChangeKind::Truncated, "t", 2).await;
    store.save("t", &[]).await.unwrap();
    follow.expect(ChangeKind::Deleted, "t", 0).await;

    let soon = SystemTime::now() + Duration::from_millis(300);
    let brief = SessionMeta::new().expiry(Expiry::At(soon));
    let generation = store.create_session("u", &brief, &[c]).await.unwrap();
    // Compared with what the creation returned: the session may have expired already.
    follow
        .expect_generation(ChangeKind::Created, "u", 1, generation)
        .await;
    wait_past(soon).await;
    assert_eq!(store.purge_expired(10).await.unwrap(), 1);
    follow.expect(ChangeKind::Expired, "u", 0).await;
}

#[tokio::test]
async fn every_kind_of_change_arrives_in_order_on_one_server() {
    let Some(h) = harness().await else { return };
    every_kind_of_change_arrives_in_order(h).await;
}

#[tokio::test]
async fn every_kind_of_change_arrives_in_order_on_a_cluster() {
    let Some(h) = cluster_harness().await else {
        return;
    };
    every_kind_of_change_arrives_in_order(h).await;
}

/// What a storage that does not publish, and one on another prefix, write comes to no
/// subscriber of this prefix: the first change to arrive is the marker written after them.
async fn only_publishing_writes_on_this_prefix_arrive(h: Harness, other: Harness) {
    let store = publishing(&h).await;
    let mut changes = store.subscribe_changes().await.unwrap();
    let quiet = h.open().await;
    let elsewhere = publishing(&other).await;
    // One session id throughout, so on a cluster every write runs on one primary and
    // what it published would come before the marker.
    let message = [ChatMessage::user("hello")];
    quiet.append("q", &message).await.unwrap();
    quiet.save("q", &message).await.unwrap();
    quiet.truncate("q", 0).await.unwrap();
    elsewhere.append("q", &message).await.unwrap();
    store.append("q", &message).await.unwrap();
    let first = next(&mut changes).await;
    assert_eq!(
        (first.kind, first.session_id.as_str(), first.len),
        (ChangeKind::Created, "q", 1)
    );
    elsewhere.delete("q").await.unwrap();
    store.delete("q").await.unwrap();
}

#[tokio::test]
async fn only_publishing_writes_on_this_prefix_arrive_on_one_server() {
    let (Some(h), Some(other)) = (harness().await, harness().await) else {
        return;
    };
    only_publishing_writes_on_this_prefix_arrive(h, other).await;
}

#[tokio::test]
async fn only_publishing_writes_on_this_prefix_arrive_on_a_cluster() {
    let (Some(h), Some(other)) = (cluster_harness().await, cluster_harness().await) else {
        return;
    };
    only_publishing_writes_on_this_prefix_arrive(h, other).await;
}

/// Two storages appending to one session at once: one change per append, in the order
/// the appends were made, so the lengths count up one by one.
#[tokio::test]
async fn racing_writers_changes_arrive_in_the_order_they_were_made() {
    let Some(h) = harness().await else { return };
    let (one, two) = (publishing(&h).await, publishing(&h).await);
    let mut changes = one.subscribe_changes().await.unwrap();
    const EACH: usize = 50;
    let writer = |store: RedisStorage, name: &'static str| async move {
        for i in 0..EACH {
            let message = ChatMessage::user(format!("{name} {i}"));
            store.append("shared", &[message]).await.unwrap();
        }
    };
    tokio::join!(writer(one.clone(), "one"), writer(two, "two"));
    for len in 1..=2 * EACH {
        let change = next(&mut changes).await;
        assert_eq!((change.session_id.as_str(), change.len), ("shared", len));
        let first = if len == 1 {
            ChangeKind::Created
        } else {
            ChangeKind::Appended
        };
        assert_eq!(change.kind, first);
    }
    one.delete("shared").await.unwrap();
}

/// Someone else's `PUBLISH` on the channel is an error item naming the channel, and the
/// changes after it still arrive.
#[tokio::test]
async fn a_foreign_message_on_the_channel_is_an_error_and_the_stream_goes_on() {
    let Some(h) = harness().await else { return };
    let store = publishing(&h).await;
    let mut changes = store.subscribe_changes().await.unwrap();
    let mut raw = h.raw().await;
    let _: i64 = redis::cmd("PUBLISH")
        .arg(changes.channel())
        .arg("hello there")
        .query_async(&mut raw)
        .await
        .unwrap();
    store
        .append("after", &[ChatMessage::user("hi")])
        .await
        .unwrap();
    let err = next_item(&mut changes).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Backend {
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(changes.channel()) && text.contains("hello there"),
        "{text}"
    );
    assert_eq!(next(&mut changes).await.session_id, "after");
    store.delete("after").await.unwrap();
}

/// A change naming a session id no storage accepts, published by someone else, is an
/// error item too, not a change: a line feed in the id forged a second change for a
/// subscriber printing lines, and an escape sequence reached its terminal. The message
/// is shown escaped.
#[tokio::test]
async fn a_change_of_an_invalid_session_id_is_an_error_shown_escaped() {
    let Some(h) = harness().await else { return };
    let store = publishing(&h).await;
    let mut changes = store.subscribe_changes().await.unwrap();
    let mut raw = h.raw().await;
    for forged in [
        "appended 1 2 x\ncreated 9 9 forged",
        "appended 1 2 \u{1b}]0;title\u{7}",
    ] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(changes.channel())
            .arg(forged)
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    store
        .append("after", &[ChatMessage::user("hi")])
        .await
        .unwrap();
    for shown in [
        r#""appended 1 2 x\ncreated 9 9 forged""#,
        r#""appended 1 2 \u{1b}]0;title\u{7}""#,
    ] {
        let text = next_item(&mut changes).await.unwrap_err().to_string();
        assert!(text.contains("not a session change"), "{text}");
        assert!(text.contains(shown), "{text}");
        assert!(!text.contains(['\n', '\u{1b}']), "{text:?}");
    }
    assert_eq!(next(&mut changes).await.session_id, "after");
    store.delete("after").await.unwrap();
}

/// On a cluster the subscription goes to the first seed node that answers.
#[tokio::test]
async fn a_cluster_subscription_skips_a_seed_node_that_is_down() {
    let Some(h) = cluster_harness().await else {
        return;
    };
    let nodes = h
        .url
        .strip_prefix("redis+cluster://")
        .expect("a cluster URL");
    // A seed node that is down: a port reserved for the test, where nothing listens.
    let down = reserve_port();
    let url = format!("redis+cluster://127.0.0.1:{},{nodes}", down.port);
    let store = RedisStorage::connect_with(&url, h.options().publish_changes(true))
        .await
        .unwrap();
    let mut changes = store.subscribe_changes().await.unwrap();
    store.append("s", &[ChatMessage::user("hi")]).await.unwrap();
    assert_eq!(next(&mut changes).await.session_id, "s");
    store.delete("s").await.unwrap();
}

/// Calls that change nothing publish nothing: a refused conditional write, an append of
/// messages all stored already or of none, a truncate to the length or more, a delete or
/// a metadata update of a session that is not there. The next change to arrive is the
/// append made after them.
#[tokio::test]
async fn calls_that_change_nothing_publish_nothing() {
    let Some(h) = harness().await else { return };
    let store = publishing(&h).await;
    let mut follow = Follow::new(&store).await;
    let stored = ChatMessage::user("once").with_new_id();
    store
        .append("n", std::slice::from_ref(&stored))
        .await
        .unwrap();
    follow.expect(ChangeKind::Created, "n", 1).await;

    let stale = Expect::Generation(1);
    let refused = store
        .write_if("n", stale, Change::Append(std::slice::from_ref(&stored)))
        .await;
    assert!(
        matches!(refused, Err(Error::Conflict { .. })),
        "{refused:?}"
    );
    store
        .append("n", std::slice::from_ref(&stored))
        .await
        .unwrap();
    store.append("n", &[]).await.unwrap();
    store.truncate("n", 5).await.unwrap();
    store.delete("absent").await.unwrap();
    let titled = MetaUpdate::new().title(Some("t"));
    assert_eq!(store.update_session("absent", &titled).await.unwrap(), None);

    store
        .append("n", &[ChatMessage::assistant("next")])
        .await
        .unwrap();
    follow.expect(ChangeKind::Appended, "n", 2).await;
}

/// A write that meets its session past its expiry (here set by hand, before Redis drops
/// the keys) removes it and says so, then reports its own change; a metadata update that
/// meets it so changes, and publishes, nothing.
#[tokio::test]
async fn a_write_that_meets_an_expired_session_reports_the_expiry_first() {
    let Some(h) = harness().await else { return };
    let store = publishing(&h).await;
    let mut follow = Follow::new(&store).await;
    let mut raw = h.raw().await;
    for id in ["w", "m"] {
        store.append(id, &[ChatMessage::user("hi")]).await.unwrap();
        follow.expect(ChangeKind::Created, id, 1).await;
        // An instant long past, with keys Redis has not dropped yet (as in the moment
        // between the instant and the `PEXPIREAT` rounded up to the next ms): expired for
        // every reader and writer from now on.
        let _: i64 = redis::cmd("HSET")
            .arg(h.meta_key(id))
            .arg("expires_at")
            .arg("1")
            .query_async(&mut raw)
            .await
            .unwrap();
        for key in [h.list_key(id), h.meta_key(id)] {
            let _: i64 = redis::cmd("PEXPIRE")
                .arg(key)
                .arg(3_600_000)
                .query_async(&mut raw)
                .await
                .unwrap();
        }
    }
    store
        .append("w", &[ChatMessage::user("again")])
        .await
        .unwrap();
    follow
        .expect_generation(ChangeKind::Expired, "w", 0, 0)
        .await;
    follow.expect(ChangeKind::Created, "w", 1).await;
    // A metadata update finds it absent in its first read and changes nothing.
    let titled = MetaUpdate::new().title(Some("t"));
    assert_eq!(store.update_session("m", &titled).await.unwrap(), None);

    // A creation with an expiry already past: created, then dropped at once.
    let past = SystemTime::now() - Duration::from_secs(1);
    let meta = SessionMeta::new().expiry(Expiry::At(past));
    let generation = store
        .create_session("p", &meta, &[ChatMessage::user("x")])
        .await
        .unwrap();
    follow
        .expect_generation(ChangeKind::Created, "p", 1, generation)
        .await;
    follow
        .expect_generation(ChangeKind::Expired, "p", 0, 0)
        .await;
    store
        .append("w", &[ChatMessage::user("last")])
        .await
        .unwrap();
    follow.expect(ChangeKind::Appended, "w", 2).await;
}
