//! Each write is one `BEGIN IMMEDIATE` transaction, run by sqlx as one script (`:memory:`)
//! or stepped directly (a file): what it stores, and that a write that fails or is
//! cancelled partway never leaves a transaction open behind it.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use fusion_core::testkit::cases::sample_history;
use fusion_core::{Change, ChatMessage, ConversationStorage, Error, Expect};
use fusion_storage_sqlite::{SqliteOptions, SqliteStorage};
use serde_json::json;
use sqlx::ConnectOptions;

fn turn(text: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::user(text),
        ChatMessage::assistant(format!("{text}-reply")),
    ]
}

/// The stored `message` column of `session_id`, in seq order.
async fn stored_rows(storage: &SqliteStorage, session_id: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT message FROM messages WHERE session_id = ?1 ORDER BY seq")
        .bind(session_id)
        .fetch_all(storage.pool())
        .await
        .unwrap()
}

/// Every row count and seq agrees with the `sessions` row, and loading works.
async fn assert_consistent(storage: &SqliteStorage, session_id: &str) -> Vec<ChatMessage> {
    let loaded = storage.load(session_id).await.unwrap();
    let count = storage
        .session_info(session_id)
        .await
        .unwrap()
        .map_or(0, |info| info.message_count);
    assert_eq!(count, loaded.len(), "message_count disagrees with the rows");
    loaded
}

#[tokio::test]
async fn stored_rows_are_exactly_each_messages_json() {
    let dir = tempfile::tempdir().unwrap();
    let file_url = format!("sqlite://{}", dir.path().join("s.db").display());
    for url in ["sqlite::memory:", file_url.as_str()] {
        stored_rows_are_exactly_each_messages_json_on(url).await;
    }
}

async fn stored_rows_are_exactly_each_messages_json_on(url: &str) {
    let storage = SqliteStorage::connect(url).await.unwrap();
    let mut history = sample_history();
    history.push(
        ChatMessage::user("nul \u{0} bell \u{7} del \u{7f} / </script> \u{fffd}").with_metadata(
            "numbers",
            json!([
                0.1,
                -0.0,
                1e300,
                5e-324,
                18446744073709551615u64,
                -9223372036854775808i64
            ]),
        ),
    );
    history.push(ChatMessage::assistant("deep").with_metadata(
        "nested",
        json!({"a": {"b": [{"c": null, "d": true, "": "empty key"}]}}),
    ));
    storage.save("saved", &history).await.unwrap();
    storage.append("appended", &history[..3]).await.unwrap();
    storage.append("appended", &history[3..]).await.unwrap();

    let expected: Vec<String> = history
        .iter()
        .map(|m| serde_json::to_string(m).unwrap())
        .collect();
    for session in ["saved", "appended"] {
        assert_eq!(
            stored_rows(&storage, session).await,
            expected,
            "{url} {session}"
        );
        assert_eq!(
            storage.load(session).await.unwrap(),
            history,
            "{url} {session}"
        );
    }
}

#[tokio::test]
async fn a_failed_append_rolls_back_and_leaves_the_database_writable() {
    let dir = tempfile::tempdir().unwrap();
    let file_url = format!("sqlite://{}", dir.path().join("s.db").display());
    for url in ["sqlite::memory:", file_url.as_str()] {
        let storage = SqliteStorage::connect(url).await.unwrap();
        storage.append("s", &turn("kept")).await.unwrap();
        // A stray row where the next append's second message goes: its INSERT fails
        // after BEGIN and the count update have already run.
        sqlx::query("INSERT INTO messages (session_id, seq, message) VALUES ('s', 3, '{}')")
            .execute(storage.pool())
            .await
            .unwrap();

        // A stored seq met is the session's corruption (its count is behind its rows).
        let err = storage.append("s", &turn("lost")).await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{url}: {err}");
        assert!(err.to_string().contains("append of session \"s\""), "{err}");
        let info = storage.session_info("s").await.unwrap().unwrap();
        assert_eq!(info.message_count, 2, "{url}: the count update was kept");

        // Were the connection still in the transaction, this would fail (":memory:" has
        // one connection) or wait out the busy timeout behind it (a file).
        sqlx::query("DELETE FROM messages WHERE seq = 3")
            .execute(storage.pool())
            .await
            .unwrap();
        let other = SqliteStorage::connect(url).await.unwrap();
        other.append("other", &turn("elsewhere")).await.unwrap();
        storage.append("s", &turn("retried")).await.unwrap();
        let mut expected = turn("kept");
        expected.extend(turn("retried"));
        assert_eq!(assert_consistent(&storage, "s").await, expected, "{url}");
        storage.close().await;
    }
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

#[tokio::test]
async fn writes_cancelled_at_any_point_leave_no_transaction_open() {
    let dir = tempfile::tempdir().unwrap();
    let file_url = format!("sqlite://{}", dir.path().join("s.db").display());
    for url in ["sqlite::memory:", file_url.as_str()] {
        let storage = SqliteStorage::connect(url).await.unwrap();
        let mut expected = Vec::new();
        for i in 0..160 {
            let cancelled = turn(&format!("cancelled-{i}"));
            let polls = i % 6 + 1;
            match i % 4 {
                0 => cancel_after_polls(storage.append("s", &cancelled), polls).await,
                1 => cancel_after_polls(storage.save("other", &cancelled), polls).await,
                2 => cancel_after_polls(storage.truncate("s", expected.len()), polls).await,
                // Two round trips on the pool: cancelled between them, the connection
                // holds the write lock until the rollback runs.
                _ => {
                    let at = storage.load_revision("s").await.unwrap().1;
                    let append = Change::Append(&cancelled);
                    let write = storage.write_if("s", Expect::Generation(at.generation), append);
                    cancel_after_polls(write, polls).await;
                }
            }
            // A cancelled write may still be finishing (on a blocking thread); the next
            // write starts after it, so once that returns the cancelled append has
            // happened entirely, before it, or not at all.
            let kept = turn(&format!("kept-{i}"));
            storage.append("s", &kept).await.unwrap();
            let loaded = assert_consistent(&storage, "s").await;
            if loaded.len() > expected.len() + kept.len() {
                expected.extend(cancelled);
            }
            expected.extend(kept);
            assert_eq!(loaded, expected, "{url}, round {i}");
        }
        assert_eq!(assert_consistent(&storage, "s").await, expected, "{url}");
        assert_consistent(&storage, "other").await;
        storage.close().await;
    }
}

/// Writes on a database file go through a connection of the storage's own; closing must
/// release it with the pool, so the file is free and later writes fail like later reads.
#[tokio::test]
async fn close_releases_the_writer_and_later_writes_fail() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let storage = SqliteStorage::connect(&url).await.unwrap();
    storage.append("s", &turn("before")).await.unwrap();
    storage.close().await;

    assert!(storage.append("s", &turn("after")).await.is_err());
    assert!(storage.load("s").await.is_err());
    // Closed connections leave no -wal file behind: SQLite checkpoints and removes it on
    // the last close.
    assert!(!dir.path().join("s.db-wal").exists());
    let reopened = SqliteStorage::connect(&url).await.unwrap();
    assert_eq!(reopened.load("s").await.unwrap(), turn("before"));
}

/// A small append on a database file runs on the caller's thread with a zero busy
/// timeout; when another connection holds the write lock it must wait on a blocking
/// thread for the configured timeout instead of failing at once.
#[tokio::test]
async fn an_append_that_meets_a_held_lock_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    // A busy timeout no stall of a loaded machine reaches: with the default 5 s, a test
    // held up that long before the check below saw the append give up, and failed.
    let patient = SqliteOptions::new().busy_timeout(std::time::Duration::from_secs(60));
    let url = format!("sqlite://{}", path.display());
    let storage = SqliteStorage::connect_with(&url, patient).await.unwrap();
    storage.append("s", &turn("before")).await.unwrap();

    let mut holder = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .unwrap();
    sqlx::Executor::execute(&mut holder, "BEGIN IMMEDIATE")
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let storage = storage.clone();
        async move { storage.append("s", &turn("waited")).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "the append gave up on the lock");
    sqlx::Executor::execute(&mut holder, "COMMIT")
        .await
        .unwrap();

    waiting.await.unwrap().unwrap();
    let mut expected = turn("before");
    expected.extend(turn("waited"));
    assert_eq!(assert_consistent(&storage, "s").await, expected);
}

/// Appends that run on the caller's thread never await anything; a task appending in a
/// loop must still let the other tasks of a single-threaded runtime run.
#[tokio::test(flavor = "current_thread")]
async fn a_task_appending_in_a_loop_lets_other_tasks_run() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let storage = SqliteStorage::connect(&url).await.unwrap();
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let ticks = std::sync::Arc::clone(&ticks);
        async move {
            loop {
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    });
    for i in 0..1_000 {
        storage.append("s", &turn(&format!("{i}"))).await.unwrap();
    }
    let ran = ticks.load(std::sync::atomic::Ordering::Relaxed);
    ticker.abort();
    assert!(ran > 0, "the other task never ran during 1,000 appends");
    assert_eq!(assert_consistent(&storage, "s").await.len(), 2_000);
}

/// Loads on a database file run on connections of the storage's own, no more at once than
/// the pool size; a burst of loads queues for them rather than failing or opening a
/// connection each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_loads_shares_a_bounded_set_of_connections() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let options = fusion_storage_sqlite::SqliteOptions::new().max_connections(2);
    let storage = SqliteStorage::connect_with(&url, options).await.unwrap();
    storage.append("s", &turn("only")).await.unwrap();
    let loads: Vec<_> = (0..64)
        .map(|_| {
            let storage = storage.clone();
            tokio::spawn(async move { storage.load("s").await })
        })
        .collect();
    for load in loads {
        assert_eq!(load.await.unwrap().unwrap(), turn("only"));
    }
    storage.close().await;
    assert!(
        storage.load("s").await.is_err(),
        "a load after close must fail"
    );
}
