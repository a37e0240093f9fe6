//! The interleavings an exactly-once append must survive, forced rather than hoped for: a
//! transaction of the test's own runs a write and holds the session's row lock, an append
//! through a storage starts behind it (its statement's snapshot taken before that write
//! commits, so it does not see that write's rows), and only once the server reports the
//! append waiting for the lock does the test commit. The append must then check the ids
//! the committed write left, whether it added ids (a first attempt the append retries),
//! dropped them (a truncate, a save, a delete) or created the session.
//!
//! Most of these appends end on the exact path (`crate::write::append_checked`): a retry
//! finds its fingerprints on the row, a truncate leaves them unknown. The last cases force
//! it where only a collision would: the window written by hand to hold the fingerprint of
//! an id that is not stored, as another id sharing it would leave it; and one holds a
//! retry that is already on the exact path at its row lock.
//!
//! Nothing here waits for time to pass: each step waits for the server to say the append
//! is blocked (`pg_stat_activity`, found by an `application_name` of the test's own).
//!
//! One interleaving has no lock to wait on: a delete whose first statement found no row,
//! and a writer that creates the session before its second. For that one, `write::remove`
//! stops between its statements at [`pause_point`] when a test has armed it for the
//! session; another test holds a delete there while the server ends its transaction for
//! sitting idle.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use fusion_core::testkit::exactly_once::with_ids;
use fusion_core::testkit::{StorageHarness, said};
use fusion_core::{ChatMessage, ConversationStorage, SessionMeta};
use sqlx::{Connection, PgConnection};
use tokio::sync::oneshot;

use crate::batch::{Batch, window};
use crate::testing::Harness;
use crate::{PostgresOptions, PostgresStorage, write};

mod unwritten;

/// A storage whose connections say `application_name` = the harness's schema, so the test
/// can find them blocked.
async fn tagged(harness: &Harness) -> PostgresStorage {
    let separator = if harness.url.contains('?') { '&' } else { '?' };
    let url = format!(
        "{}{separator}application_name={}",
        harness.url, harness.schema
    );
    let options = PostgresOptions::new(&url)
        .schema(&harness.schema)
        .max_connections(2);
    PostgresStorage::connect_with(options).await.unwrap()
}

/// Returns once `n` connections of [`tagged`] storages wait for a lock.
async fn until_blocked(harness: &Harness, n: i64) {
    let mut watcher = harness.raw().await;
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(&harness.schema)
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Appends `batch` to `session` through `storage` in a task of its own.
fn append_behind(
    storage: &PostgresStorage,
    session: &'static str,
    batch: &[ChatMessage],
) -> tokio::task::JoinHandle<()> {
    let (storage, batch) = (storage.clone(), batch.to_vec());
    tokio::spawn(async move { storage.append(session, &batch).await.unwrap() })
}

/// Writes the window of `session` by hand: the fingerprints of `ids`, as if other ids
/// stored there shared them.
async fn collide(raw: &mut PgConnection, session: &str, ids: &[ChatMessage]) {
    let crafted = window(ids.iter().filter_map(|m| m.id.as_ref()));
    sqlx::query("UPDATE sessions SET recent_ids = $2 WHERE id = $1")
        .bind(session)
        .bind(crafted)
        .execute(raw)
        .await
        .unwrap();
}

/// Begins a transaction on `raw` and appends `batch` to session `s` in it, uncommitted: a
/// first attempt that holds the session's row lock until the test commits it.
async fn first_attempt<'c>(
    raw: &'c mut PgConnection,
    batch: &[ChatMessage],
) -> sqlx::Transaction<'c, sqlx::Postgres> {
    let mut first = raw.begin().await.unwrap();
    let none = SessionMeta::new();
    write::append_once(
        &mut *first,
        "s",
        &Batch::of("s", batch).unwrap(),
        &none,
        write::Mode::Append,
    )
    .await
    .unwrap();
    first
}

/// The harness, a storage opened on it, a tagged one and a raw connection.
async fn setup() -> Option<(Harness, PostgresStorage, PostgresStorage, PgConnection)> {
    let harness = crate::testing::harness().await?;
    let storage = harness.open().await.unwrap();
    let racer = tagged(&harness).await;
    let raw = harness.raw().await;
    Some((harness, storage, racer, raw))
}

#[tokio::test]
async fn retries_waiting_behind_their_first_attempt_find_its_ids() {
    let Some((harness, storage, racer, mut raw)) = setup().await else {
        return;
    };
    let other = tagged(&harness).await;
    let batch = with_ids("b", 3);
    storage.append("s", &said("before")).await.unwrap();
    let first = first_attempt(&mut raw, &batch).await;
    let retries = [
        append_behind(&racer, "s", &batch),
        append_behind(&other, "s", &batch[1..]),
    ];
    until_blocked(&harness, 2).await;
    first.commit().await.unwrap();
    for retry in retries {
        retry.await.unwrap();
    }
    let history = storage.load("s").await.unwrap();
    assert_eq!(history[2..], batch[..], "stored once: {history:?}");
    let info = storage.session_info("s").await.unwrap().unwrap();
    assert_eq!(info.message_count, 5);
}

#[tokio::test]
async fn a_retry_waiting_behind_the_creating_attempt_finds_its_ids() {
    let Some((harness, storage, racer, mut raw)) = setup().await else {
        return;
    };
    let batch = with_ids("c", 2);
    let first = first_attempt(&mut raw, &batch).await;
    let retry = append_behind(&racer, "s", &batch);
    until_blocked(&harness, 1).await;
    first.commit().await.unwrap();
    retry.await.unwrap();
    assert_eq!(storage.load("s").await.unwrap(), batch);
}

#[tokio::test]
async fn an_append_waiting_behind_a_truncate_stores_what_it_cut() {
    let Some((harness, storage, racer, mut raw)) = setup().await else {
        return;
    };
    let batch = with_ids("t", 3);
    storage.append("s", &batch).await.unwrap();
    let mut cut = raw.begin().await.unwrap();
    write::truncate(&mut cut, "s", 2).await.unwrap();
    // The append's snapshot still holds the last message, id and all.
    let again = append_behind(&racer, "s", &batch[2..]);
    until_blocked(&harness, 1).await;
    cut.commit().await.unwrap();
    again.await.unwrap();
    assert_eq!(storage.load("s").await.unwrap(), batch, "stored again");
}

#[tokio::test]
async fn appends_waiting_behind_a_save_check_the_saved_ids() {
    let Some((harness, storage, racer, mut raw)) = setup().await else {
        return;
    };
    let old = with_ids("old", 2);
    let saved = with_ids("new", 2);
    storage.append("s", &old).await.unwrap();
    let mut save = raw.begin().await.unwrap();
    write::replace(
        &mut save,
        "s",
        &Batch::of("s", &saved).unwrap(),
        false,
        write::Times::Write,
    )
    .await
    .unwrap();
    let other = tagged(&harness).await;
    let appends = [
        append_behind(&racer, "s", &old[..1]),
        append_behind(&other, "s", &saved[1..]),
    ];
    until_blocked(&harness, 2).await;
    save.commit().await.unwrap();
    for append in appends {
        append.await.unwrap();
    }
    let history = storage.load("s").await.unwrap();
    assert_eq!(history[..2], saved, "the saved history, its last id known");
    assert_eq!(history[2..], old[..1], "the replaced message stored again");
}

#[tokio::test]
async fn an_append_waiting_behind_a_delete_starts_the_session_afresh() {
    let Some((harness, storage, racer, mut raw)) = setup().await else {
        return;
    };
    let batch = with_ids("d", 2);
    storage.append("s", &batch).await.unwrap();
    let mut delete = raw.begin().await.unwrap();
    write::remove(&mut delete, "s").await.unwrap();
    let again = append_behind(&racer, "s", &batch);
    until_blocked(&harness, 1).await;
    delete.commit().await.unwrap();
    again.await.unwrap();
    assert_eq!(storage.load("s").await.unwrap(), batch);
}

#[tokio::test]
async fn a_retry_waiting_behind_a_first_attempt_on_the_exact_path_finds_its_ids() {
    let Some((harness, storage, racer, mut raw)) = setup().await else {
        return;
    };
    let batch = with_ids("x", 3);
    storage.append("s", &said("before")).await.unwrap();
    collide(&mut raw, "s", &batch).await;
    let mut first = raw.begin().await.unwrap();
    let none = SessionMeta::new();
    let stored = write::append_locked(
        &mut first,
        "s",
        &Batch::of("s", &batch).unwrap(),
        &none,
        write::Mode::Append,
    )
    .await
    .unwrap();
    assert!(stored.is_some());
    let retry = append_behind(&racer, "s", &batch);
    until_blocked(&harness, 1).await;
    first.commit().await.unwrap();
    retry.await.unwrap();
    let history = storage.load("s").await.unwrap();
    assert_eq!(history[2..], batch[..], "stored once: {history:?}");
}

#[tokio::test]
async fn a_retry_on_the_exact_path_waiting_behind_its_first_attempt_finds_its_ids() {
    let Some((harness, storage, racer, mut raw)) = setup().await else {
        return;
    };
    let batch = with_ids("e", 2);
    storage.append("s", &said("before")).await.unwrap();
    let first = first_attempt(&mut raw, &batch).await;
    // The retry's exact check, on a tagged connection: it waits at its row lock, and its
    // read of the messages comes after.
    let (pool, retried) = (racer.pool().clone(), batch.clone());
    let retry = tokio::spawn(async move {
        let mut tx = pool.begin().await.unwrap();
        let batch = Batch::of("s", &retried).unwrap();
        write::append_locked(
            &mut tx,
            "s",
            &batch,
            &SessionMeta::new(),
            write::Mode::Append,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    });
    until_blocked(&harness, 1).await;
    first.commit().await.unwrap();
    retry.await.unwrap();
    let history = storage.load("s").await.unwrap();
    assert_eq!(history[2..], batch[..], "stored once: {history:?}");
}

#[tokio::test]
async fn a_colliding_append_waiting_behind_another_append_stores_after_it() {
    let Some((harness, storage, racer, mut raw)) = setup().await else {
        return;
    };
    let stored = with_ids("a", 2);
    let fresh = with_ids("f", 1);
    let other = with_ids("o", 2);
    storage.append("s", &stored).await.unwrap();
    collide(&mut raw, "s", &[stored.clone(), fresh.clone()].concat()).await;
    let first = first_attempt(&mut raw, &other).await;
    let colliding = append_behind(&racer, "s", &fresh);
    until_blocked(&harness, 1).await;
    first.commit().await.unwrap();
    colliding.await.unwrap();
    let all = [stored, other, fresh].concat();
    assert_eq!(storage.load("s").await.unwrap(), all);
    let known: Option<Vec<i32>> =
        sqlx::query_scalar("SELECT recent_ids FROM sessions WHERE id = 's'")
            .fetch_one(&mut raw)
            .await
            .unwrap();
    let rebuilt = window(all.iter().filter_map(|m| m.id.as_ref()));
    assert_eq!(
        known,
        Some(rebuilt),
        "the window rebuilt from what is stored"
    );
}

/// The armed pauses of [`pause_point`], by session id: whom to tell it was reached, and
/// what to wait for before going on.
type Pauses = HashMap<String, (oneshot::Sender<()>, oneshot::Receiver<()>)>;
static PAUSES: LazyLock<Mutex<Pauses>> = LazyLock::new(Mutex::default);

/// Where `write::remove` stops between its statements, once, if a test armed it for
/// `session_id` ([`arm_pause`]); other sessions (other tests) go straight on.
pub(crate) async fn pause_point(session_id: &str) {
    let armed = PAUSES.lock().unwrap().remove(session_id);
    if let Some((reached, release)) = armed {
        let _ = reached.send(());
        let _ = release.await;
    }
}

/// Arms [`pause_point`] for `session_id`: returns what resolves once a delete has reached
/// it, and what lets that delete go on.
fn arm_pause(session_id: &str) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
    let (reached_tx, reached) = oneshot::channel();
    let (release, release_rx) = oneshot::channel();
    PAUSES
        .lock()
        .unwrap()
        .insert(session_id.to_string(), (reached_tx, release_rx));
    (reached, release)
}

#[tokio::test]
async fn a_delete_that_found_no_session_leaves_the_one_created_meanwhile_whole() {
    let Some((_harness, storage, racer, _raw)) = setup().await else {
        return;
    };
    // A session id of this test's own: the pause is armed process-wide.
    let session = "created-behind-a-delete";
    let (reached, release) = arm_pause(session);
    let delete = {
        let racer = racer.clone();
        tokio::spawn(async move { racer.delete(session).await.unwrap() })
    };
    reached.await.unwrap();
    // The delete's first statement found no row; the session is created and committed
    // before its second.
    let batch = said("created meanwhile");
    storage.append(session, &batch).await.unwrap();
    release.send(()).unwrap();
    delete.await.unwrap();
    let (history, revision) = storage.load_revision(session).await.unwrap();
    assert_eq!(history, batch, "the new session keeps its messages");
    assert_eq!(revision.len, 2);
}

/// Returns once no connection of a [`tagged`] storage is left on the server.
async fn until_gone(harness: &Harness) {
    let mut watcher = harness.raw().await;
    // Bounded, so a connection that never leaves fails the test instead of hanging CI.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(&harness.schema)
                .fetch_one(&mut watcher)
                .await
                .unwrap();
        if left == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} connections of the storage stayed on the server"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Found by an audit: a server's `idle_in_transaction_session_timeout` ending a call's
/// transaction between two statements (a busy client, here a delete held between its
/// two) failed it with SQLSTATE 25P03, not retryable, though the server had rolled it all
/// back and the call could simply be made again.
#[tokio::test]
async fn a_transaction_the_server_ended_for_idling_is_retryable_and_rolled_back() {
    let Some(harness) = crate::testing::harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    // A session id of this test's own: the pause is armed process-wide.
    let session = "ended-while-idle";
    storage.append(session, &said("kept")).await.unwrap();
    let url = format!(
        "{}&application_name={}&options[idle_in_transaction_session_timeout]=50",
        harness.storage_url(),
        harness.schema
    );
    let idler = PostgresStorage::connect(&url).await.unwrap();
    let (reached, release) = arm_pause(session);
    let delete = tokio::spawn(async move { idler.delete(session).await });
    reached.await.unwrap();
    // The delete's first statement ran in its transaction; the server ends it, idle.
    until_gone(&harness).await;
    release.send(()).unwrap();
    let err = delete.await.unwrap().unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(
        storage.load(session).await.unwrap(),
        said("kept"),
        "rolled back"
    );
}
