//! Message ids as this backend keeps them (migration 0005): the fingerprints of each
//! session's last ids in `recent_ids`, kept by every write and only ever a shortcut (what
//! it holds never makes an append store a message twice or leave one out), what an append
//! of messages already stored leaves untouched, an expired session's ids, and appends
//! cancelled partway then retried. Each test runs on
//! both paths: `sqlite::memory:` (sqlx) and a database file (the direct path).

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use fusion_core::testkit::exactly_once::with_ids;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Expect, RecentIds, SessionMeta, SessionTimes,
};
use fusion_storage_sqlite::SqliteStorage;

/// Runs `test` on `sqlite::memory:` and on a fresh database file.
async fn on_both_paths<F, Fut>(test: F)
where
    F: Fn(SqliteStorage, &'static str) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let file = format!("sqlite://{}", dir.path().join("ids.db").display());
    for (url, path) in [("sqlite::memory:", "pool"), (file.as_str(), "direct")] {
        let storage = SqliteStorage::connect(url).await.unwrap();
        test(storage.clone(), path).await;
        storage.close().await;
    }
}

/// The `recent_ids` column of `session_id`'s row (`None`: NULL).
async fn recent_ids(storage: &SqliteStorage, session_id: &str) -> Option<Vec<u8>> {
    sqlx::query_scalar("SELECT recent_ids FROM sessions WHERE id = ?1")
        .bind(session_id)
        .fetch_one(storage.pool())
        .await
        .unwrap()
}

async fn set_recent_ids(storage: &SqliteStorage, session_id: &str, value: Option<Vec<u8>>) {
    sqlx::query("UPDATE sessions SET recent_ids = ?2 WHERE id = ?1")
        .bind(session_id)
        .bind(value)
        .execute(storage.pool())
        .await
        .unwrap();
}

fn fingerprints_of(history: &[ChatMessage]) -> Option<Vec<u8>> {
    Some(RecentIds::of(history).to_bytes())
}

/// Every write that stores messages leaves `recent_ids` holding the fingerprints of the
/// session's last ids; an append without ids keeps them; a truncate makes them unknown.
#[tokio::test]
async fn every_write_keeps_the_fingerprints_of_the_last_ids() {
    on_both_paths(|storage, path| async move {
        let mut mixed = with_ids("m", 2);
        mixed.insert(1, ChatMessage::user("no id"));
        storage.append("appended", &mixed).await.unwrap();
        storage
            .append("appended", &[ChatMessage::user("plain")])
            .await
            .unwrap();
        storage.save("saved", &mixed).await.unwrap();
        storage
            .create_session("created", &SessionMeta::new(), &mixed)
            .await
            .unwrap();
        // Before the append below, which would record them again were they unknown.
        let created = recent_ids(&storage, "created").await;
        assert_eq!(created, fingerprints_of(&mixed), "{path} created");
        let now = SystemTime::now();
        let times = SessionTimes::new(now - Duration::from_secs(60), now);
        storage
            .create_session_with_times("copied", &SessionMeta::new(), &mixed, times)
            .await
            .unwrap();
        let at = storage.load_revision("created").await.unwrap().1;
        let more = with_ids("more", 1);
        storage
            .write_if("created", Expect::Exactly(at), Change::Append(&more))
            .await
            .unwrap();
        storage
            .write_if("replaced", Expect::Generation(0), Change::Replace(&more))
            .await
            .unwrap();
        // Longer than the window: only the last 64 ids are kept.
        let long = with_ids("long", 100);
        storage.append("long", &long[..50]).await.unwrap();
        storage.append("long", &long[50..]).await.unwrap();

        for session in ["appended", "saved", "created", "copied", "replaced", "long"] {
            let history = storage.load(session).await.unwrap();
            assert_eq!(
                recent_ids(&storage, session).await,
                fingerprints_of(&history),
                "{path} {session}"
            );
        }
        assert_eq!(storage.load("appended").await.unwrap().len(), 4, "{path}");

        storage.truncate("long", 70).await.unwrap();
        assert_eq!(recent_ids(&storage, "long").await, None, "{path}: unknown");
        // The next append with ids reads the ids themselves, and knows them again.
        storage.append("long", &long[60..70]).await.unwrap();
        let history = storage.load("long").await.unwrap();
        assert_eq!(history, long[..70], "{path}: every id was stored already");
        storage.append("long", &long[70..71]).await.unwrap();
        let history = storage.load("long").await.unwrap();
        assert_eq!(history, long[..71], "{path}");
        assert_eq!(
            recent_ids(&storage, "long").await,
            fingerprints_of(&history),
            "{path}"
        );
    })
    .await;
}

/// What is in `recent_ids` only ever costs a read of the stored ids: unknown (a session
/// written before version 5), unreadable, or a fingerprint that matches an id that is not
/// stored, an append stores exactly the messages whose ids are not among the last ones.
#[tokio::test]
async fn fingerprints_that_cannot_decide_send_the_append_to_the_stored_ids() {
    on_both_paths(|storage, path| async move {
        let batch = with_ids("f", 3);
        for (case, recent) in [("unknown", None), ("unreadable", Some(vec![1, 2, 3]))] {
            let session = format!("s-{case}");
            storage.append(&session, &batch[..2]).await.unwrap();
            set_recent_ids(&storage, &session, recent).await;
            storage.append(&session, &batch).await.unwrap();
            let history = storage.load(&session).await.unwrap();
            assert_eq!(history, batch, "{path} {case}: the third stored once");
            assert_eq!(
                recent_ids(&storage, &session).await,
                fingerprints_of(&history),
                "{path} {case}: rebuilt"
            );
        }

        // Not a blob at all (a hand edit): unknown too, on both paths alike. Text of a
        // whole number of fingerprints must not be taken for them: 'abcd' would claim
        // one fingerprint no stored id has, and the batch would go in a second time.
        for (case, value) in [("text", "'abcd'"), ("number", "42")] {
            let session = format!("s-{case}");
            storage.append(&session, &batch[..2]).await.unwrap();
            sqlx::query(&format!(
                "UPDATE sessions SET recent_ids = {value} WHERE id = ?1"
            ))
            .bind(&session)
            .execute(storage.pool())
            .await
            .unwrap();
            storage.append(&session, &batch).await.unwrap();
            let history = storage.load(&session).await.unwrap();
            assert_eq!(history, batch, "{path} {case}: the third stored once");
        }

        // The stored messages as blobs (a hand edit; a blob holding a message's JSON is
        // that message): their ids are read from their bytes as from text, so with the
        // fingerprints unknown the batch still stores only its third.
        storage.append("blobs", &batch[..2]).await.unwrap();
        sqlx::query("UPDATE messages SET message = CAST(message AS BLOB) WHERE session_id = ?1")
            .bind("blobs")
            .execute(storage.pool())
            .await
            .unwrap();
        set_recent_ids(&storage, "blobs", None).await;
        storage.append("blobs", &batch).await.unwrap();
        let history = storage.load("blobs").await.unwrap();
        assert_eq!(history, batch, "{path} blobs: the third stored once");

        // A fingerprint that matches a new id whose message is not stored: stored anyway.
        let fresh = with_ids("g", 1);
        let mut claimed = RecentIds::default();
        claimed.record(&fresh);
        storage.append("collides", &batch[..1]).await.unwrap();
        set_recent_ids(&storage, "collides", Some(claimed.to_bytes())).await;
        storage.append("collides", &fresh).await.unwrap();
        let history = storage.load("collides").await.unwrap();
        assert_eq!(history, [batch[0].clone(), fresh[0].clone()], "{path}");
    })
    .await;
}

#[tokio::test]
async fn an_append_of_messages_already_stored_writes_nothing() {
    on_both_paths(|storage, path| async move {
        let batch = with_ids("b", 3);
        storage.append("s", &batch).await.unwrap();
        // An old updated_at, so that any write would visibly move it.
        sqlx::query("UPDATE sessions SET updated_at = 1000 WHERE id = 's'")
            .execute(storage.pool())
            .await
            .unwrap();
        let before = storage.session_info("s").await.unwrap().unwrap();

        storage.append("s", &batch).await.unwrap();
        storage.append("s", &batch[1..]).await.unwrap();
        let generation = storage
            .write_if(
                "s",
                Expect::Generation(before.generation),
                Change::Append(&batch),
            )
            .await
            .unwrap();
        assert_eq!(generation, before.generation, "{path}");
        let after = storage.session_info("s").await.unwrap().unwrap();
        assert_eq!(
            after, before,
            "{path}: nothing changed, updated_at included"
        );

        // A conditional append's expectation is still checked first.
        let stale = storage
            .write_if(
                "s",
                Expect::Generation(before.generation + 1),
                Change::Append(&batch),
            )
            .await;
        assert!(
            matches!(stale, Err(fusion_core::Error::Conflict { .. })),
            "{path}: {stale:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_ids_of_an_expired_session_are_gone_with_it() {
    on_both_paths(|storage, path| async move {
        let batch = with_ids("e", 2);
        storage.append("s", &batch).await.unwrap();
        let old = storage.load_revision("s").await.unwrap().1;
        sqlx::query("UPDATE sessions SET expires_at = 1 WHERE id = 's'")
            .execute(storage.pool())
            .await
            .unwrap();

        storage.append("s", &batch).await.unwrap();
        let (history, at) = storage.load_revision("s").await.unwrap();
        assert_eq!(history, batch, "{path}: stored afresh");
        assert_ne!(at.generation, old.generation, "{path}: a new session");
        assert_eq!(
            recent_ids(&storage, "s").await,
            fingerprints_of(&batch),
            "{path}: only the new session's ids"
        );
    })
    .await;
}

/// Polls `future` `times` times (less if it finishes first), then drops it.
async fn cancel_after_polls(future: impl Future, times: usize) {
    let mut future = pin!(future);
    for _ in 0..times {
        let done = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_ready()));
        if done.await {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// An append cancelled at any point has stored its batch or nothing, and left no
/// transaction open; the retry then stores exactly what is missing.
#[tokio::test]
async fn an_append_cancelled_at_any_point_then_retried_stores_its_batch_once() {
    on_both_paths(|storage, path| async move {
        let mut expected = Vec::new();
        for round in 0..60 {
            let batch = with_ids(&format!("r{round}"), 2);
            cancel_after_polls(storage.append("s", &batch), round % 5 + 1).await;
            storage.append("s", &batch).await.unwrap();
            expected.extend(batch);
            let (history, at) = storage.load_revision("s").await.unwrap();
            assert_eq!(history, expected, "{path}, round {round}");
            assert_eq!(at.len, expected.len(), "{path}, round {round}");
        }
    })
    .await;
}
