//! `--faults P`: replies lost on purpose under every worker's storage, so the run checks
//! that nothing is lost or stored twice when a write applies and its caller never hears.
//!
//! Each worker injects its own faults (`fusion_core::testkit::faults`), seeded from the
//! run's seed and its index:
//! - fs and SQLite: the storage is wrapped in `LoseReplies`, which lets each write apply
//!   and then, with probability `P`, reports it failed with a retryable error, as if its
//!   reply had been lost;
//! - Redis and PostgreSQL: the worker connects through a `FaultProxy` of its own in front
//!   of the server, which after a request, with probability `P`, lets the server's reply
//!   come, drops it and cuts the connection. On Redis every request may be cut (reads
//!   included). On PostgreSQL only a statement's request ([`POSTGRES_CUT_MARKER`]), not
//!   a new connection's handshake: the pool opens one after every cut, and its several
//!   crossings (TLS, startup) cut as often left no try of a retried call getting through,
//!   so at `--faults 0.3` no turn succeeded and the run checked nothing.
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
//! Faults start once the worker has opened its sessions ([`Injector::arm`]): what the run
//! checks is the sessions' operations, journaled one by one; opening them is not one, and
//! a failure there ended the run.
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

/// What a request to PostgreSQL must contain to be cut: the `Sync` message that ends
/// each statement sqlx sends with the extended query protocol (every read and write of
/// the backend; a transaction's `BEGIN` and `COMMIT` go as simple queries, uncut). A
/// connection's startup never holds it.
pub const POSTGRES_CUT_MARKER: &[u8] = b"S\0\0\0\x04";

/// Where an [`Injector`]'s faults happen.
enum Faults {
    /// No faults (`--faults 0`).
    Off,
    /// `LoseReplies` under an in-process backend.
    Lossy(FaultSwitch),
    /// The worker's proxy in front of the server, cutting only requests containing
    /// `only_containing` when there is one.
    Proxy {
        proxy: FaultProxy,
        only_containing: Option<&'static [u8]>,
    },
}

impl Injector {
    /// Starts the faults: replies lost with the run's probability from now on.
    pub fn arm(&self) {
        match &self.faults {
            Faults::Off => {}
            Faults::Lossy(switch) => switch.lose_with_probability(self.probability, self.seed),
            Faults::Proxy {
                proxy,
                only_containing: None,
            } => proxy.cut_randomly(self.probability, self.seed),
            Faults::Proxy {
                proxy,
                only_containing: Some(marker),
            } => proxy.cut_randomly_containing(marker, self.probability, self.seed),
        }
    }

    /// How many replies were lost so far.
    pub fn injected(&self) -> usize {
        match &self.faults {
            Faults::Off => 0,
            Faults::Lossy(switch) => switch.lost(),
            Faults::Proxy { proxy, .. } => proxy.cuts(),
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
            let (port, only_containing) = if location.backend == Backend::Redis {
                (6379, None)
            } else {
                (5432, Some(POSTGRES_CUT_MARKER))
            };
            let (proxy, through) = FaultProxy::start_for_url(&location.target, port).await;
            let through = match only_containing {
                Some(_) => plaintext(&through)?,
                None => through,
            };
            let bare = location
                .open_bare(&through)
                .await
                .context("connecting through the fault proxy")?;
            let faults = Faults::Proxy {
                proxy,
                only_containing,
            };
            (bare, faults)
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

/// A PostgreSQL `url` that connects without TLS, as the proxy must to see a `COMMIT`: a
/// server with TLS on is otherwise asked for it (`sslmode=prefer`), and then every byte the
/// proxy sees is encrypted. A URL that names another `sslmode` is refused.
fn plaintext(url: &str) -> Result<String> {
    if url.contains("sslmode=disable") {
        return Ok(url.to_string());
    }
    if url.contains("sslmode=") {
        bail!(
            "--faults on postgres reads the requests it cuts, so the connection must not be \
             encrypted: remove sslmode from the URL (or make it sslmode=disable)"
        );
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{separator}sslmode=disable"))
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
        assert!(injector.injected() > 0);
        let stored = location.open().await.unwrap().load("s").await.unwrap();
        assert_eq!(stored.len(), 1, "stored once: {stored:?}");
    }

    #[test]
    fn the_proxy_sees_postgres_requests_in_the_clear() {
        let plain = plaintext("postgres://u@h:1/db").unwrap();
        assert_eq!(plain, "postgres://u@h:1/db?sslmode=disable");
        let plain = plaintext("postgres://u@h:1/db?application_name=x").unwrap();
        assert_eq!(
            plain,
            "postgres://u@h:1/db?application_name=x&sslmode=disable"
        );
        assert_eq!(plaintext(&plain).unwrap(), plain);
        let err = plaintext("postgres://u@h:1/db?sslmode=require").unwrap_err();
        assert!(err.to_string().contains("remove sslmode"), "{err}");
    }

    /// Armed at probability 1, a worker's PostgreSQL proxy lets a new connection's
    /// startup through and cuts the reply to its first statement (a bare `Sync`, which
    /// the server answers with `ReadyForQuery`). Before arming, nothing is cut.
    #[tokio::test]
    async fn postgres_faults_start_when_armed_and_spare_a_connections_startup() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Some(url) = fusion_storage_postgres::testing::reachable_url().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let location = Location::fresh(Backend::Postgres, dir.path(), &url, StorageLayer::None);
        let (storage, injector) = open(&location, 1.0, 7).await.unwrap();
        let before = storage.load("s").await;
        injector.arm();
        let Faults::Proxy { proxy, .. } = &injector.faults else {
            panic!("postgres faults are a proxy's");
        };
        let user = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split_once('@'));
        let user = user.map_or("postgres", |(user, _)| user.split(':').next().unwrap());
        let database = url.rsplit('/').next().unwrap().split('?').next().unwrap();
        let mut startup = 196_608u32.to_be_bytes().to_vec(); // protocol 3.0
        for field in ["user", user, "database", database, ""] {
            startup.extend(field.as_bytes());
            startup.push(0);
        }
        let length = u32::try_from(startup.len() + 4).unwrap();
        startup.splice(0..0, length.to_be_bytes());
        let mut conn = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        conn.write_all(&startup).await.unwrap();
        // AuthenticationOk (trust), parameters, ReadyForQuery: all before any query.
        let mut greeting = Vec::new();
        while !greeting.ends_with(b"Z\0\0\0\x05I") {
            let mut buf = [0; 4096];
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "the startup was cut: {greeting:?}");
            greeting.extend(&buf[..n]);
        }
        conn.write_all(POSTGRES_CUT_MARKER).await.unwrap();
        let mut reply = Vec::new();
        let read = conn.read_to_end(&mut reply).await;
        location.cleanup().await.unwrap();
        assert!(before.is_ok(), "{before:?}");
        assert_eq!(greeting[0], b'R', "{greeting:?}");
        assert!(
            reply.is_empty(),
            "the Sync's reply came: {reply:?} {read:?}"
        );
        assert!(injector.injected() > 0);
    }
}
