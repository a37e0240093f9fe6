//! `--faults P`: replies lost on purpose under every worker's storage, so the run checks
//! that nothing is lost or stored twice when a write applies and its caller never hears.
//!
//! Each worker injects its own faults (`fusion_core::testkit::faults`), seeded from the
//! run's seed and its index:
//! - fs and SQLite: the storage is wrapped in `LoseReplies`, which lets each write apply
//!   and then, with probability `P`, reports it failed with a retryable error, as if its
//!   reply had been lost;
//! - Redis and PostgreSQL: the worker connects through a `FaultProxy` of its own in front
//!   of the server, which after each request, with probability `P`, lets the server's
//!   reply come, drops it and cuts the connection (reads included: a cut handshake or
//!   load is a fault too).
//!
//! A proxy per worker rather than one for the run: the worker then knows how many replies
//! were lost during each of its operations (it runs one at a time), and journals it
//! ([`crate::journal::Entry::faults`]), so the checker can tell a conflict that says
//! "nothing written" from one that followed a lost reply and may hide a write that
//! applied. The faults still hit real connections of separate processes sharing sessions.
//!
//! A Redis Cluster is refused: its nodes announce their own addresses (`CLUSTER SLOTS`,
//! `MOVED`), so a client follows them past a proxy in front of the node it was given, and
//! a proxy per node would have to rewrite those replies.
//!
//! Faults start once the worker has opened its sessions ([`Injector::arm`]): a new
//! connection to PostgreSQL crosses the proxy several times before its first query, so at
//! `--faults 0.3` a retried call gets through in none of its tries often enough that
//! workers failed to start. What the run checks is the sessions' operations, journaled
//! one by one; opening them is not one, and a failure there ended the run.
//!
//! Faults imply the retry layer (`RetryLayer` with its defaults), outermost: it is what
//! makes a lost reply safe, and what the run checks. With `--layer retry` it is that
//! layer; with another, the retry layer goes over it.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use fusion_bench::layer::StorageLayer;
use fusion_core::testkit::faults::{FaultProxy, FaultSwitch, LoseReplies};
use fusion_core::{ConversationStorage, Intercepted};

use crate::backend::{Backend, Location};

/// What injects a worker's faults, once armed, and counts them.
pub struct Injector {
    faults: Faults,
    probability: f64,
    seed: u64,
}

/// Where an [`Injector`]'s faults happen.
enum Faults {
    /// No faults (`--faults 0`).
    Off,
    /// `LoseReplies` under an in-process backend.
    Lossy(FaultSwitch),
    /// The worker's proxy in front of the server.
    Proxy(FaultProxy),
}

impl Injector {
    /// Starts the faults: replies lost with the run's probability from now on.
    pub fn arm(&self) {
        match &self.faults {
            Faults::Off => {}
            Faults::Lossy(switch) => switch.lose_with_probability(self.probability, self.seed),
            Faults::Proxy(proxy) => proxy.cut_randomly(self.probability, self.seed),
        }
    }

    /// How many replies were lost so far.
    pub fn injected(&self) -> usize {
        match &self.faults {
            Faults::Off => 0,
            Faults::Lossy(switch) => switch.lost(),
            Faults::Proxy(proxy) => proxy.cuts(),
        }
    }
}

/// Refuses a fault probability outside `0..=1`, or faults on a backend that cannot have
/// them (a Redis Cluster, see the module docs).
pub fn check(backend: Backend, probability: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&probability) {
        bail!("--faults is a probability between 0 and 1, not {probability}");
    }
    if probability > 0.0 && backend == Backend::RedisCluster {
        bail!(
            "--faults is not supported on redis-cluster: its nodes announce their own \
             addresses, so clients would go around a proxy in front of one node"
        );
    }
    Ok(())
}

/// The seed of worker `worker_seed`'s faults: another stream than its choices'.
pub fn fault_seed(worker_seed: u64) -> u64 {
    worker_seed.rotate_left(17) ^ 0xFA17_FA17_FA17_FA17
}

/// Opens `location`'s storage with faults of `probability` (0: none) seeded with `seed`,
/// wrapped in its layer and, when faults are on, in the retry layer outermost. The faults
/// start when the [`Injector`] is armed.
pub async fn open(
    location: &Location,
    probability: f64,
    seed: u64,
) -> Result<(Arc<dyn ConversationStorage>, Injector)> {
    check(location.backend, probability)?;
    if probability == 0.0 {
        let off = Injector {
            faults: Faults::Off,
            probability,
            seed,
        };
        return Ok((location.open().await?, off));
    }
    let (bare, faults) = match location.backend {
        Backend::Fs | Backend::Sqlite => {
            let bare = location.open_bare(&location.target).await?;
            let lossy = LoseReplies::new(Intercepted(bare));
            let switch = lossy.switch().clone();
            let storage: Arc<dyn ConversationStorage> = Arc::new(Intercepted(lossy));
            (storage, Faults::Lossy(switch))
        }
        Backend::Redis | Backend::Postgres => {
            let port = if location.backend == Backend::Redis {
                6379
            } else {
                5432
            };
            let (proxy, through) = FaultProxy::start_for_url(&location.target, port).await;
            let bare = location
                .open_bare(&through)
                .await
                .context("connecting through the fault proxy")?;
            (bare, Faults::Proxy(proxy))
        }
        Backend::RedisCluster => unreachable!("refused by check"),
    };
    let injector = Injector {
        faults,
        probability,
        seed,
    };
    Ok((with_retry(location.layer, bare), injector))
}

/// `storage` in `layer`, under the retry layer (once: `layer` may be it).
fn with_retry(
    layer: StorageLayer,
    storage: Arc<dyn ConversationStorage>,
) -> Arc<dyn ConversationStorage> {
    let layered = layer.wrap(storage);
    match layer {
        StorageLayer::Retry => layered,
        _ => StorageLayer::Retry.wrap(layered),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_and_backends_are_checked() {
        assert!(check(Backend::Fs, 0.05).is_ok());
        assert!(check(Backend::RedisCluster, 0.0).is_ok());
        let err = check(Backend::RedisCluster, 0.05).unwrap_err().to_string();
        assert!(err.contains("not supported on redis-cluster"), "{err}");
        assert!(check(Backend::Sqlite, 1.5).is_err());
        assert!(check(Backend::Sqlite, -0.1).is_err());
    }

    #[tokio::test]
    async fn lost_replies_on_fs_are_counted_and_retried() {
        use fusion_core::ChatMessage;
        let dir = tempfile::tempdir().unwrap();
        let location = Location::fresh(Backend::Fs, dir.path(), "", StorageLayer::None);
        let (storage, injector) = open(&location, 1.0, 7).await.unwrap();
        injector.arm();
        // Every write loses its reply: the first attempt applies, and the retry layer's
        // next attempt reads the session, finds the message stored and writes nothing.
        let batch = [ChatMessage::user("once")];
        storage.append("s", &batch).await.unwrap();
        assert_eq!(injector.injected(), 1);
        let stored = location.open().await.unwrap().load("s").await.unwrap();
        assert_eq!(stored.len(), 1, "stored once: {stored:?}");
    }

    /// Opened with every reply cut, a PostgreSQL storage still answers until armed: a
    /// worker opens its sessions over new connections, whose handshakes cross the proxy
    /// several times, and no retry gets through a proxy cutting them. Armed, it cuts.
    #[tokio::test]
    async fn postgres_faults_start_when_armed_not_while_sessions_are_opened() {
        use fusion_core::ChatMessage;
        let Some(url) = fusion_storage_postgres::testing::reachable_url().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let location = Location::fresh(Backend::Postgres, dir.path(), &url, StorageLayer::None);
        let (storage, injector) = open(&location, 1.0, 7).await.unwrap();
        let batch = [ChatMessage::user("before the faults")];
        let before = storage.append("s", &batch).await;
        let read = storage.load("s").await;
        assert_eq!(injector.injected(), 0);
        injector.arm();
        let after = storage.load("s").await;
        location.cleanup().await.unwrap();
        assert!(before.is_ok(), "{before:?}");
        assert_eq!(read.unwrap().len(), 1);
        assert!(after.is_err(), "{after:?}");
        assert!(injector.injected() > 0);
    }
}
