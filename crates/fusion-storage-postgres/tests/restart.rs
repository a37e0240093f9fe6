//! A server restart under a live storage, on a throwaway cluster of the test's own
//! ([`Cluster`]): the storage recovers without being reopened, each pooled connection the
//! restart cut fails at most one call (retryably), and no acknowledged message is lost or
//! doubled. While the server is down, calls fail retryably within the connect timeout,
//! naming the URL with its password hidden.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fusion_core::{ChatMessage, ConversationStorage};
use fusion_storage_postgres::testing::{Cluster, unique_schema};
use fusion_storage_postgres::{PostgresOptions, PostgresStorage};

/// How long the storage may take to work again once the server is back.
const DEADLINE: Duration = Duration::from_secs(30);
const SESSIONS: [&str; 3] = ["a", "b", "c"];
const PER_PHASE: usize = 5;

/// The retryable errors seen since the restart, and how many are allowed.
struct Budget {
    allowed: usize,
    used: AtomicUsize,
    deadline: Instant,
}

impl Budget {
    /// Takes one retryable error, panicking when `err` is not retryable, the budget is
    /// spent, or the deadline has passed.
    fn spend(&self, what: &str, err: &fusion_core::Error) {
        assert!(err.is_retryable(), "{what}: not retryable: {err}");
        let used = self.used.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(
            used <= self.allowed,
            "{what}: retryable error {used}, but only {} pooled connections were cut: {err}",
            self.allowed
        );
        assert!(
            Instant::now() < self.deadline,
            "{what}: still failing: {err}"
        );
        eprintln!("{what}: retryable error {used}/{}: {err}", self.allowed);
    }
}

fn message(session: &str, k: usize) -> ChatMessage {
    ChatMessage::user(format!("{session}-{k:03}"))
}

/// Appends `session`'s messages `range` one call each, retrying a call only on a
/// retryable error the budget allows.
async fn append_all(
    storage: &PostgresStorage,
    session: &str,
    range: std::ops::Range<usize>,
    budget: &Budget,
) {
    for k in range {
        let msg = [message(session, k)];
        while let Err(e) = storage.append(session, &msg).await {
            budget.spend(&format!("append {session}-{k}"), &e);
        }
    }
}

/// `session`'s history, retrying only as the budget allows.
async fn load(storage: &PostgresStorage, session: &str, budget: &Budget) -> Vec<ChatMessage> {
    loop {
        match storage.load(session).await {
            Ok(history) => return history,
            Err(e) => budget.spend(&format!("load {session}"), &e),
        }
    }
}

/// Writers on every session at once, so the pool holds several connections.
async fn append_concurrently(storage: &PostgresStorage, phase: usize, budget: &Budget) {
    let range = phase * PER_PHASE..(phase + 1) * PER_PHASE;
    let [a, b, c] = SESSIONS;
    tokio::join!(
        append_all(storage, a, range.clone(), budget),
        append_all(storage, b, range.clone(), budget),
        append_all(storage, c, range, budget),
    );
}

#[tokio::test]
async fn a_restart_between_calls_costs_at_most_one_retryable_error_per_pooled_connection() {
    let Some(cluster) = Cluster::start_new() else {
        return;
    };
    let options = PostgresOptions::new(cluster.url())
        .schema(unique_schema())
        .max_connections(4)
        .connect_timeout(Duration::from_secs(2));
    let storage = PostgresStorage::connect_with(options).await.unwrap();
    let no_errors = Budget {
        allowed: 0,
        used: AtomicUsize::new(0),
        deadline: Instant::now() + DEADLINE,
    };
    append_concurrently(&storage, 0, &no_errors).await;
    for session in SESSIONS {
        let expected: Vec<_> = (0..PER_PHASE).map(|k| message(session, k)).collect();
        assert_eq!(load(&storage, session, &no_errors).await, expected);
    }

    let cut = storage.pool().size() as usize;
    assert!(cut >= 1, "the pool holds the connections just used");
    cluster.restart();

    let budget = Budget {
        allowed: cut,
        used: AtomicUsize::new(0),
        deadline: Instant::now() + DEADLINE,
    };
    append_concurrently(&storage, 1, &budget).await;
    for session in SESSIONS {
        let expected: Vec<_> = (0..2 * PER_PHASE).map(|k| message(session, k)).collect();
        assert_eq!(
            load(&storage, session, &budget).await,
            expected,
            "{session}: every acknowledged message once, in order"
        );
    }
    eprintln!(
        "{} retryable errors after the restart, {cut} pooled connections cut",
        budget.used.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn a_stopped_server_fails_calls_retryably_and_the_storage_recovers_without_reopening() {
    let Some(cluster) = Cluster::start_new() else {
        return;
    };
    // Trust authentication ignores the password; it is there to be hidden in messages.
    let url = cluster
        .url()
        .replacen("postgres://postgres@", "postgres://postgres:s3cret@", 1);
    let shown = url.replacen(":s3cret@", ":***@", 1);
    let timeout = Duration::from_secs(1);
    let options = PostgresOptions::new(&url)
        .schema(unique_schema())
        .max_connections(2)
        .connect_timeout(timeout);
    let storage = PostgresStorage::connect_with(options).await.unwrap();
    storage
        .append("s", &[ChatMessage::user("before")])
        .await
        .unwrap();
    assert_eq!(storage.load("s").await.unwrap().len(), 1);

    let cut = storage.pool().size() as usize;
    cluster.stop();
    // The pooled connections fail first (cut by the stop), then new ones are refused.
    for attempt in 0..cut + 2 {
        let started = Instant::now();
        let err = storage
            .append("s", &[ChatMessage::user(format!("lost {attempt}"))])
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        // Only a hang fails this: generous for a busy machine, far below the driver's own
        // 30 s acquire timeout that a storage ignoring its connect timeout would wait for.
        assert!(
            elapsed < timeout + Duration::from_secs(12),
            "{elapsed:?}: {err}"
        );
        assert!(err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(text.contains(&shown), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        eprintln!("attempt {attempt} while stopped ({elapsed:?}): {text}");
    }

    cluster.start();
    // Every connection the stop cut has failed a call and been closed: the next call works.
    storage
        .append("s", &[ChatMessage::user("after")])
        .await
        .unwrap();
    assert_eq!(
        storage.load("s").await.unwrap(),
        [ChatMessage::user("before"), ChatMessage::user("after")],
        "nothing that failed was written"
    );
}
