//! The conformance cases of [`ConversationStorage::create_session_with_times`]: a session
//! copied from elsewhere keeps its creation and last write, and is listed by them; a time
//! later than the storage's clock is stored as the clock's reading; an idle expiry counts
//! from the given last write; times out of order are refused and nothing is written.
//!
//! Every time a case gives is a whole millisecond, the precision every backend keeps
//! (SQLite and Redis keep milliseconds, the others microseconds), so it round trips exactly.

use std::time::{Duration, SystemTime};

use super::{StorageHarness, all_pages, info, open, said};
use crate::{
    ConversationStorage, Error, Expiry, OwnerScope, SessionMeta, SessionOrder, SessionQuery,
    SessionTimes, from_unix_micros, unix_micros,
};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// `at` cut to the whole millisecond.
fn whole_ms(at: SystemTime) -> SystemTime {
    from_unix_micros(unix_micros(at).div_euclid(1000) * 1000)
}

/// A session created with times reports them, is listed by them among sessions written
/// now, keeps its creation when written again (which moves its last write to now), and
/// cannot be created twice; through an [`OwnerScope`] it also takes the scope's owner.
pub async fn a_copy_keeps_the_times_it_is_given<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let now = whole_ms(SystemTime::now());
    let copied = SessionTimes::new(now - 3 * DAY, now - DAY);
    let meta = SessionMeta::new().title("copied");
    let generation = store
        .create_session_with_times("copied", &meta, &said("a"), copied)
        .await
        .unwrap();
    let older = SessionTimes::new(now - 3 * DAY, now - 2 * DAY);
    store
        .create_session_with_times("older", &SessionMeta::new(), &said("b"), older)
        .await
        .unwrap();
    store.append("fresh", &said("c")).await.unwrap();

    let reader = open(harness).await;
    let kept = info(&reader, "copied").await;
    assert_eq!(
        (kept.created_at, kept.updated_at),
        (Some(copied.created_at), Some(copied.updated_at)),
        "the times given are the times reported"
    );
    assert_eq!((kept.generation, &kept.meta), (generation, &meta));
    assert_eq!(reader.load("copied").await.unwrap(), said("a"));
    let newest_first = SessionQuery::new()
        .order(SessionOrder::UpdatedDesc)
        .limit(2);
    assert_eq!(
        all_pages(&reader, newest_first.clone()).await,
        ["fresh", "copied", "older"],
        "listed by the times given"
    );

    let again = store
        .create_session_with_times("copied", &SessionMeta::new(), &said("x"), copied)
        .await;
    assert!(
        matches!(again, Err(Error::Conflict { .. })),
        "an existing session is not created again: {again:?}"
    );
    // Past `fresh`'s write at every backend's precision (Redis keeps milliseconds), so
    // this write is strictly the newest rather than maybe tied with it, which the listing
    // would order by id, `fresh` first.
    super::wait_past(info(&reader, "fresh").await.updated_at.unwrap()).await;
    store.append("copied", &said("d")).await.unwrap();
    let written = info(&reader, "copied").await;
    assert_eq!(written.created_at, Some(copied.created_at));
    assert!(
        written.updated_at.unwrap() >= now,
        "a write moves the last write to the storage's clock"
    );
    assert_eq!(written.message_count, 4);
    assert_eq!(
        all_pages(&reader, newest_first).await,
        ["copied", "fresh", "older"]
    );

    let scoped = OwnerScope::new(std::sync::Arc::new(open(harness).await), "alice").unwrap();
    scoped
        .create_session_with_times("scoped", &SessionMeta::new(), &said("e"), copied)
        .await
        .unwrap();
    let owned = info(&reader, "scoped").await;
    assert_eq!(owned.meta.owner.as_deref(), Some("alice"));
    assert_eq!(owned.created_at, Some(copied.created_at));
}

/// A copy created under the id of a session deleted since (written later than the copy's
/// times say) is listed at its own times, once, by every instance, and so is one created
/// after a session of that id expired.
pub async fn a_copy_under_the_id_of_a_deleted_session_is_listed<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let now = whole_ms(SystemTime::now());
    let copied = SessionTimes::new(now - 3 * DAY, now - DAY);
    store.append("reused", &said("a")).await.unwrap();
    store.append("other", &said("b")).await.unwrap();
    store.delete("reused").await.unwrap();
    store
        .create_session_with_times("reused", &SessionMeta::new(), &said("c"), copied)
        .await
        .unwrap();
    let short = SessionMeta::new().expiry(Expiry::Idle(std::time::Duration::from_millis(1)));
    store
        .create_session("lapsed", &short, &said("d"))
        .await
        .unwrap();
    super::wait_past(SystemTime::now()).await;
    store
        .create_session_with_times("lapsed", &SessionMeta::new(), &said("e"), copied)
        .await
        .unwrap();
    for reader in [&store, &open(harness).await] {
        let newest_first = SessionQuery::new()
            .order(SessionOrder::UpdatedDesc)
            .limit(2);
        let listed = all_pages(reader, newest_first).await;
        assert_eq!(
            listed,
            ["other", "reused", "lapsed"],
            "listed by their times"
        );
        let info = info(reader, "reused").await;
        assert_eq!(info.updated_at, Some(copied.updated_at));
        assert_eq!(reader.load("lapsed").await.unwrap(), said("e"));
    }
}

/// Times later than the storage's clock (a source whose clock ran ahead) are stored as
/// the clock's reading at the write, so the next write never moves `updated_at` back.
pub async fn times_later_than_the_storages_clock_are_stored_as_its_own<H: StorageHarness>(
    harness: &H,
) {
    let store = open(harness).await;
    let before = whole_ms(SystemTime::now());
    let ahead = SessionTimes::new(before + DAY, before + 2 * DAY);
    store
        .create_session_with_times("ahead", &SessionMeta::new(), &said("a"), ahead)
        .await
        .unwrap();
    // A server's clock (Redis, PostgreSQL) may read a little later than this process's.
    let after = SystemTime::now() + Duration::from_secs(5);
    let stored = info(&store, "ahead").await;
    let (created, updated) = (stored.created_at.unwrap(), stored.updated_at.unwrap());
    assert!(
        before <= created && created <= updated && updated <= after,
        "stored at the write's own time: {created:?} {updated:?}, written between {before:?} \
         and {after:?}"
    );
    store.append("ahead", &said("b")).await.unwrap();
    let written = info(&store, "ahead").await;
    assert!(written.updated_at.unwrap() >= updated);
    assert_eq!(written.created_at, Some(created));
}

/// An idle expiry counts from the given last write: it expires at that write plus its
/// span, and a session whose span has passed by then is created expired, gone for every
/// reader, and another can be created in its place. A fixed expiry is kept as given.
pub async fn an_idle_expiry_counts_from_the_given_last_write<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let now = whole_ms(SystemTime::now());
    let idle = SessionMeta::new().expiry(Expiry::Idle(HOUR));
    let recent = SessionTimes::new(now - DAY, now - HOUR / 2);
    store
        .create_session_with_times("recent", &idle, &said("a"), recent)
        .await
        .unwrap();
    let kept = info(&store, "recent").await;
    assert_eq!(kept.expires_at, Some(recent.updated_at + HOUR));
    assert_eq!(kept.meta.expiry, Some(Expiry::Idle(HOUR)));

    let fixed = SessionMeta::new().expiry(Expiry::At(now + DAY));
    store
        .create_session_with_times("fixed", &fixed, &said("b"), recent)
        .await
        .unwrap();
    assert_eq!(info(&store, "fixed").await.expires_at, Some(now + DAY));

    let long_idle = SessionTimes::new(now - DAY, now - 2 * HOUR);
    store
        .create_session_with_times("lapsed", &idle, &said("c"), long_idle)
        .await
        .unwrap();
    assert_eq!(store.session_info("lapsed").await.unwrap(), None);
    assert!(store.load("lapsed").await.unwrap().is_empty());
    let listed = all_pages(&store, SessionQuery::new().limit(10)).await;
    assert!(!listed.iter().any(|id| id == "lapsed"), "{listed:?}");
    store
        .create_session("lapsed", &SessionMeta::new(), &said("d"))
        .await
        .unwrap();
    assert_eq!(store.load("lapsed").await.unwrap(), said("d"));
}

/// Times out of order or out of range are refused with [`Error::InvalidMeta`], and so is
/// what `create_session` refuses; nothing is written.
pub async fn times_that_cannot_be_are_refused_and_nothing_is_written<H: StorageHarness>(
    harness: &H,
) {
    let store = open(harness).await;
    let now = whole_ms(SystemTime::now());
    let meta = SessionMeta::new();
    let refused = [
        (SessionTimes::new(now, now - DAY), said("a")),
        (
            SessionTimes::new(SystemTime::UNIX_EPOCH - DAY, now),
            said("a"),
        ),
        (SessionTimes::new(now - DAY, now), Vec::new()),
    ];
    for (times, messages) in refused {
        let result = store
            .create_session_with_times("refused", &meta, &messages, times)
            .await;
        assert!(
            matches!(result, Err(Error::InvalidMeta(_))),
            "{times:?} with {} messages: {result:?}",
            messages.len()
        );
    }
    assert!(store.load("refused").await.unwrap().is_empty());
    assert_eq!(store.session_info("refused").await.unwrap(), None);
    assert!(store.list_sessions().await.unwrap().is_empty());
}
