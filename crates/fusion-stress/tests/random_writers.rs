//! The fixed-seed stress run inside `cargo test` (and so in `cargo xtask test-all-backends`):
//! four worker processes, a fixed seed and a fixed number of operations each, on fs,
//! SQLite, Redis, a Redis Cluster and PostgreSQL, through the encryption and retry
//! layers, and losing replies (`--faults`) on SQLite and Redis. `cargo xtask stress
//! --seconds N` is the longer, timed version.
//!
//! Each test passes when the checker found no violation. Its counts are checked only for
//! what the seed fixes (how many operations ran), never for what the scheduler decides
//! (which turns conflicted).

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use fusion_core::testkit::unavailable;

const SEED: &str = "20261202";
const WORKERS: usize = 4;
const OPS: usize = 60;

/// Runs the coordinator on `backend` and returns its counts, failing on any violation.
fn stress(backend: &str, extra: &[&str]) -> HashMap<String, usize> {
    let output = Command::new(env!("CARGO_BIN_EXE_fusion-stress"))
        .args(["run", "--backend", backend, "--seed", SEED])
        .args(["--workers", &WORKERS.to_string(), "--sessions", "3"])
        .args(["--ops", &OPS.to_string()])
        .args(extra)
        .output()
        .expect("starting fusion-stress");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "fusion-stress on {backend} (seed {SEED}) failed with {}:\n{stdout}\n{stderr}",
        output.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("counts: "))
        .unwrap_or_else(|| panic!("no counts line in:\n{stdout}"));
    line.split(' ')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// What holds whatever the interleaving: every planned operation ran and was journaled,
/// and every acknowledged message is accounted for.
fn assert_accounted(counts: &HashMap<String, usize>) {
    let ops: usize = counts
        .iter()
        .filter(|(k, _)| k.ends_with("_ok") || k.ends_with("_failed"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(ops, WORKERS * OPS, "{counts:?}");
    assert_eq!(
        counts["acknowledged"],
        counts["verified"] + counts["removed_by_undo"] + counts["removed_by_delete"],
        "{counts:?}"
    );
    assert!(counts["turn_ok"] + counts["turn_failed"] > 0, "{counts:?}");
}

#[test]
fn random_writers_lose_nothing_on_fs() {
    assert_accounted(&stress("fs", &[]));
}

#[test]
fn random_writers_lose_nothing_on_sqlite() {
    assert_accounted(&stress("sqlite", &[]));
}

#[test]
fn random_writers_lose_nothing_on_redis() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    if let Err(reason) = ping(&url) {
        let _: Option<()> = unavailable("redis", &format!("{url}: {reason}; set REDIS_URL"));
        return;
    }
    assert_accounted(&stress("redis", &["--redis-url", &url]));
}

/// The layers pass conditional writes through (encryption seals each message on its way
/// in, retry gives ids and retries what is retryable): they must keep the same promises.
#[test]
fn random_writers_lose_nothing_through_the_encryption_layer() {
    assert_accounted(&stress("sqlite", &["--layer", "encryption"]));
}

#[test]
fn random_writers_lose_nothing_through_the_retry_layer() {
    assert_accounted(&stress("fs", &["--layer", "retry"]));
}

/// Replies lost after their write applied (`--faults`, under the retry layer): on SQLite
/// in-process (`LoseReplies`), on Redis through each worker's proxy. Every acknowledged
/// message is still stored once, and the run really lost replies.
#[test]
fn random_writers_lose_nothing_when_replies_are_lost_on_sqlite() {
    assert_faulted(&stress("sqlite", &["--faults", "0.05"]));
}

#[test]
fn random_writers_lose_nothing_when_replies_are_lost_on_redis() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    if let Err(reason) = ping(&url) {
        let _: Option<()> = unavailable("redis", &format!("{url}: {reason}; set REDIS_URL"));
        return;
    }
    assert_faulted(&stress("redis", &["--redis-url", &url, "--faults", "0.05"]));
}

fn assert_faulted(counts: &HashMap<String, usize>) {
    assert_accounted(counts);
    assert!(counts["faults"] > 0, "no fault injected: {counts:?}");
}

#[test]
fn random_writers_lose_nothing_on_redis_cluster() {
    let Some(url) = std::env::var("FUSION_REDIS_CLUSTER_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
    else {
        let _: Option<()> = unavailable(
            "redis-cluster",
            "set FUSION_REDIS_CLUSTER_URL=redis+cluster://HOST:PORT,... (a cluster with every \
             slot covered; `cargo xtask test-all-backends` starts one)",
        );
        return;
    };
    assert_accounted(&stress("redis-cluster", &["--redis-cluster-url", &url]));
}

#[test]
fn random_writers_lose_nothing_on_postgres() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let Some(url) = runtime.block_on(fusion_storage_postgres::testing::reachable_url()) else {
        return;
    };
    assert_accounted(&stress("postgres", &["--postgres-url", &url]));
}

fn ping(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query::<String>(&mut conn)
        .map(drop)
        .map_err(|e| e.to_string())
}
