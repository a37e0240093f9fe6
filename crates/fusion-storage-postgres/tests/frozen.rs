//! A server that stops answering, on a throwaway cluster of the test's own ([`Cluster`]):
//! the backend serving the storage's connection is paused (`SIGSTOP`), which is what a
//! frozen server or a network that drops its packets looks like from the client: the
//! statement goes out and no answer comes. The server's statement timeout cannot end
//! that wait (it runs only while the server does) and the driver sets no TCP keepalive,
//! so a call waited for good; it now gives up after its call limit, retryably, and the
//! storage works again once the server does.

use std::process::Command;
use std::time::Duration;

use fusion_core::testkit::exactly_once::with_ids;
use fusion_core::{ChatMessage, ConversationStorage};
use fusion_storage_postgres::testing::{Cluster, unique_schema};
use fusion_storage_postgres::{PostgresOptions, PostgresStorage};
use sqlx::Connection;

/// Far beyond the call limit of these options (12 s), so only a call that never returns
/// reaches it: the test then fails instead of hanging.
const HANG: Duration = Duration::from_secs(120);

/// Sends `signal` to the server process `pid` (the test's own cluster: the same user, or
/// root).
fn signal(signal: &str, pid: i32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill {signal} {pid}: {status}");
}

/// Resumes the paused backend when dropped, also when the test panics, so the cluster
/// can stop.
struct Paused(i32);

impl Drop for Paused {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

/// Returns once every connection of the pool is idle in it, returned by the call that
/// used it (the pool checks it first, in the background, waiting for the server's
/// answer), or closed.
async fn until_idle(storage: &PostgresStorage) {
    // Bounded, so a connection that never comes back fails the test instead of hanging CI.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while storage.pool().num_idle() < storage.pool().size() as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "the pool's connections never came back idle"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_call_to_a_server_that_stopped_answering_gives_up_retryably() {
    let Some(cluster) = Cluster::start_new() else {
        return;
    };
    // One connection, so the call below takes the one paused; a connect timeout long
    // enough for the paused connection to come back to the pool once resumed.
    let options = PostgresOptions::new(cluster.url())
        .schema(unique_schema())
        .max_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .statement_timeout(Some(Duration::from_secs(1)));
    let storage = PostgresStorage::connect_with(options).await.unwrap();
    let first = [ChatMessage::user("before")];
    storage.append("s", &first).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(storage.pool())
        .await
        .unwrap();
    // The connection back in the pool, idle: the next call takes it, unpinged.
    until_idle(&storage).await;
    signal("-STOP", pid);
    let paused = Paused(pid);

    let turn = with_ids("turn", 2);
    let err = tokio::time::timeout(HANG, storage.append("s", &turn))
        .await
        .expect("the call gives up")
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("no answer from the PostgreSQL server"),
        "{text}"
    );
    assert!(text.contains("append of session \"s\""), "{text}");

    // The server answers again: the append may have been applied meanwhile (its
    // statement was sent), and its retry stores each message once.
    drop(paused);
    until_idle(&storage).await;
    storage.append("s", &turn).await.unwrap();
    assert_eq!(
        storage.load("s").await.unwrap(),
        [&first[..], &turn].concat()
    );
    storage.close().await;
}

/// Opening a new schema takes an advisory lock (so that processes opening it at once do
/// not race to create it) on a connection of its own, before the pool exists: a server
/// that stopped answering there held `connect` for good.
#[tokio::test]
async fn opening_on_a_server_that_stopped_answering_gives_up_retryably() {
    let Some(cluster) = Cluster::start_new() else {
        return;
    };
    let schema = unique_schema();
    // Another session holds the schema's creation lock, so the open waits for it, on a
    // backend the test can find and pause. A statement timeout that the server seldom
    // ends that wait with before the pause (when it does, the open is tried again); the
    // creation's limit is then the call limit, 8 s, for each migration and the lock.
    let mut holder = sqlx::PgConnection::connect(&cluster.url()).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(x'6675736e'::int, hashtext($1))")
        .bind(&schema)
        .execute(&mut holder)
        .await
        .unwrap();
    let options = PostgresOptions::new(cluster.url())
        .schema(schema.clone())
        .connect_timeout(Duration::from_secs(1))
        .statement_timeout(Some(Duration::from_secs(3)));
    // The open is paused while it waits for the lock. Stopped, its backend cannot change
    // state, so the pause is checked then: had the statement timeout ended the wait
    // before it (a test slowed down for 3 s), the open is resumed and tried again.
    let mut tries = 0;
    let (opening, paused) = loop {
        tries += 1;
        let opening = tokio::spawn(PostgresStorage::connect_with(options.clone()));
        let pid = waiting_for_lock(&mut holder, None).await;
        // `kill` fails when the backend already ended (its open gave up and closed).
        let stopped = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status();
        if stopped.expect("running kill").success() {
            let paused = Paused(pid);
            if waiting_for_lock(&mut holder, Some(pid)).await == pid {
                break (opening, paused);
            }
        }
        assert!(tries < 5, "the open never stayed paused while it waited");
        let ended = tokio::time::timeout(HANG, opening).await;
        ended
            .expect("an open that waits no more ends")
            .unwrap()
            .unwrap_err();
    };

    let err = tokio::time::timeout(HANG, opening)
        .await
        .expect("the open gives up")
        .unwrap()
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("no answer from the PostgreSQL server"),
        "{err}"
    );

    // The server answers again and the lock is free: the open succeeds.
    drop(paused);
    holder.close().await.unwrap();
    let storage = PostgresStorage::connect_with(options).await.unwrap();
    storage
        .append("s", &[ChatMessage::user("after")])
        .await
        .unwrap();
    storage.close().await;
}

/// The backend of the open waiting for the schema's creation lock (backend `pid` if set,
/// `0` if that one is not waiting), found by polling for up to a minute.
async fn waiting_for_lock(holder: &mut sqlx::PgConnection, pid: Option<i32>) -> i32 {
    let waiting = "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                   AND query LIKE '%pg_advisory_xact_lock%' AND pid = coalesce($1, pid)";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let found: Option<i32> = sqlx::query_scalar(waiting)
            .bind(pid)
            .fetch_optional(&mut *holder)
            .await
            .unwrap();
        match (found, pid) {
            (Some(found), _) => return found,
            (None, Some(_)) => return 0,
            (None, None) => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the open never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
