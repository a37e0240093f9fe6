//! Message ids as this backend stores them (migration 0005): the `message_id` column
//! beside the JSON, what an append of messages already stored leaves untouched, an
//! expired session's ids, and appends cancelled partway then retried. Each test runs on
//! both paths: `sqlite::memory:` (sqlx) and a database file (the direct path).

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use fusion_core::testkit::exactly_once::with_ids;
use fusion_core::{Change, ChatMessage, ConversationStorage, Expect, SessionMeta};
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

/// `(message_id, the id in the JSON)` of every row of `session_id`, in seq order.
async fn stored_ids(
    storage: &SqliteStorage,
    session_id: &str,
) -> Vec<(Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT message_id, message ->> '$.id' FROM messages WHERE session_id = ?1 ORDER BY seq",
    )
    .bind(session_id)
    .fetch_all(storage.pool())
    .await
    .unwrap()
}

fn ids_of(history: &[ChatMessage]) -> Vec<Option<String>> {
    history
        .iter()
        .map(|m| m.id.as_ref().map(|id| id.as_str().to_owned()))
        .collect()
}

#[tokio::test]
async fn every_write_stores_each_id_beside_its_json() {
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

        for session in ["appended", "saved", "created", "replaced"] {
            let history = storage.load(session).await.unwrap();
            let rows = stored_ids(&storage, session).await;
            let columns: Vec<Option<String>> = rows.iter().map(|row| row.0.clone()).collect();
            assert_eq!(columns, ids_of(&history), "{path} {session}");
            assert!(
                rows.iter().all(|(column, json)| column == json),
                "{path} {session}"
            );
        }
        assert_eq!(stored_ids(&storage, "appended").await.len(), 4, "{path}");
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
        assert_eq!(stored_ids(&storage, "s").await.len(), 2, "{path}");
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
