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
//!   included). On PostgreSQL only a statement's request ([`POSTGRES_SYNC`]) and a
//!   transaction's `COMMIT` ([`POSTGRES_COMMIT`]), not a new connection's handshake: the
//!   pool opens one after every cut, and its several crossings (TLS, startup) cut as often
//!   left no try of a retried call getting through, so at `--faults 0.3` no turn succeeded
//!   and the run checked nothing.
//!
//! PostgreSQL's two markers are cut by two proxies in a row (a `FaultProxy` cuts on one
//! marker), the client's first: the `Sync` that ends each statement sqlx sends with the
//! extended protocol, then the `COMMIT` it sends as a simple query. Only the second is
//! the ambiguous write of a transaction (`save`, `truncate`, `delete`, a conditional
//! write, a metadata update, the slow path of an append): a statement's reply lost inside
//! one cuts the connection before the `COMMIT`, and the server rolls it back; a lost
//! `COMMIT` reply leaves the transaction committed and its caller not knowing. `BEGIN`
//! (nothing to lose) and `ROLLBACK` are not cut: the pool sends the `ROLLBACK` of a
//! dropped transaction later, on its own, where a cut would be charged to the worker's
//! next operation.
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

/// What a request to PostgreSQL must contain to be cut, each by a proxy of its own (see
/// the module docs); a connection's startup holds neither.
pub const POSTGRES_CUT_MARKERS: [&[u8]; 2] = [POSTGRES_SYNC, POSTGRES_COMMIT];

/// The `Sync` message that ends each statement sqlx sends with the extended query
/// protocol (every read and write of the backend, and the pool's ping of a connection it
/// takes or gets back).
pub const POSTGRES_SYNC: &[u8] = b"S\0\0\0\x04";

/// The simple query `COMMIT` that ends a transaction of sqlx (its `BEGIN` goes the same
/// way), whole: type, length (4 + 7), text and its NUL.
pub const POSTGRES_COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

/// Where an [`Injector`]'s faults happen.
enum Faults {
    /// No faults (`--faults 0`).
    Off,
    /// `LoseReplies` under an in-process backend.
    Lossy(FaultSwitch),
    /// The worker's proxies, the client's first, each in front of the next and the last
    /// in front of the server, each cutting only requests containing its marker when it
    /// has one.
    Proxies(Vec<(FaultProxy, Option<&'static [u8]>)>),
}

impl Injector {
    /// Starts the faults: replies lost with the run's probability from now on.
    pub fn arm(&self) {
        match &self.faults {
            Faults::Off => {}
            Faults::Lossy(switch) => switch.lose_with_probability(self.probability, self.seed),
            Faults::Proxies(proxies) => {
                for (i, (proxy, marker)) in proxies.iter().enumerate() {
                    // The first proxy's throws are the worker's fault seed's, as when
                    // there was one; each next one has a stream of its own.
                    let seed = (0..i).fold(self.seed, |seed, _| fault_seed(seed));
                    match marker {
                        None => proxy.cut_randomly(self.probability, seed),
                        Some(marker) => {
                            proxy.cut_randomly_containing(marker, self.probability, seed);
                        }
                    }
                }
            }
        }
    }

    /// How many replies were lost so far.
    pub fn injected(&self) -> usize {
        match &self.faults {
            Faults::Off => 0,
            Faults::Lossy(switch) => switch.lost(),
            // A cut closes every proxy's side of the connection, but only the one that cut
            // counts it.
            Faults::Proxies(proxies) => proxies.iter().map(|(proxy, _)| proxy.cuts()).sum(),
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
            let (port, markers, target) = if location.backend == Backend::Redis {
                (6379, vec![None], location.target.clone())
            } else {
                let markers = POSTGRES_CUT_MARKERS.iter().copied().map(Some).collect();
                (5432, markers, plaintext(&location.target)?)
            };
            // Started from the server's side, so that each is in front of the previous.
            let mut through = target;
            let mut proxies = Vec::new();
            for marker in markers.into_iter().rev() {
                let (proxy, url) = FaultProxy::start_for_url(&through, port).await;
                through = url;
                proxies.insert(0, (proxy, marker));
            }
            let bare = location
                .open_bare(&through)
                .await
                .context("connecting through the fault proxy")?;
            (bare, Faults::Proxies(proxies))
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
        // Every write loses its reply: the first attempt applies, and each next attempt of
        // the retry layer reads the session, finds the message stored and sends it again
        // (a conditional append the backend finds stored, for its work after a write),
        // whose reply is lost too: the append fails as applied with its reply lost, and
        // stores the message once.
        let batch = [ChatMessage::user("once")];
        let err = storage.append("s", &batch).await.unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert!(err.to_string().contains("reply was lost"), "{err}");
        assert!(injector.injected() > 1, "the resends were made");
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

    /// A connection to PostgreSQL at `addr` for `url`'s user and database, started
    /// (trust authentication) up to its first `ReadyForQuery`, and the greeting.
    async fn startup(addr: &str, url: &str) -> (tokio::net::TcpStream, Vec<u8>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(&startup).await.unwrap();
        // AuthenticationOk (trust), parameters, ReadyForQuery: all before any query.
        let mut greeting = Vec::new();
        while !greeting.ends_with(b"Z\0\0\0\x05I") {
            let mut buf = [0; 4096];
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "the startup was cut: {greeting:?}");
            greeting.extend(&buf[..n]);
        }
        assert_eq!(greeting[0], b'R', "{greeting:?}");
        (conn, greeting)
    }

    /// Sends `request` on `conn` and reads the reply up to its `ReadyForQuery`, or up to
    /// the end of the connection if it is cut first (`false`).
    async fn exchange(conn: &mut tokio::net::TcpStream, request: &[u8]) -> (Vec<u8>, bool) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        conn.write_all(request).await.unwrap();
        let mut reply = Vec::new();
        loop {
            let ready =
                reply.len() >= 6 && reply[reply.len() - 6..reply.len() - 1] == *b"Z\0\0\0\x05";
            if ready {
                return (reply, true);
            }
            let mut buf = [0; 4096];
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return (reply, false),
                Ok(n) => reply.extend(&buf[..n]),
            }
        }
    }

    /// A simple query ('Q') of `sql`.
    fn simple_query(sql: &str) -> Vec<u8> {
        let length = u32::try_from(4 + sql.len() + 1).unwrap();
        let mut message = vec![b'Q'];
        message.extend(length.to_be_bytes());
        message.extend(sql.as_bytes());
        message.push(0);
        message
    }

    /// The PostgreSQL server's address (where the proxy nearest it forwards), and the
    /// client-facing proxy's.
    fn addresses(injector: &Injector) -> (String, String) {
        let Faults::Proxies(proxies) = &injector.faults else {
            panic!("postgres faults are proxies'");
        };
        let (nearest_server, facing_clients) = (&proxies[proxies.len() - 1].0, &proxies[0].0);
        (nearest_server.upstream(), facing_clients.addr().to_string())
    }

    /// Armed at probability 1, a worker's PostgreSQL proxies let a new connection's
    /// startup through and cut the reply to its first statement (a bare `Sync`, which
    /// the server answers with `ReadyForQuery`). Before arming, nothing is cut.
    #[tokio::test]
    async fn postgres_faults_start_when_armed_and_spare_a_connections_startup() {
        let Some(url) = fusion_storage_postgres::testing::reachable_url().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let location = Location::fresh(Backend::Postgres, dir.path(), &url, StorageLayer::None);
        let (storage, injector) = open(&location, 1.0, 7).await.unwrap();
        let before = storage.load("s").await;
        injector.arm();
        let (_, proxy) = addresses(&injector);
        let (mut conn, _) = startup(&proxy, &url).await;
        let (reply, answered) = exchange(&mut conn, POSTGRES_SYNC).await;
        location.cleanup().await.unwrap();
        assert!(before.is_ok(), "{before:?}");
        assert!(
            !answered && reply.is_empty(),
            "the Sync's reply came: {reply:?}"
        );
        // At least: the pool's ping of a connection it got back may be cut too.
        assert!(injector.injected() > 0);
    }

    /// Armed at probability 1, a worker's PostgreSQL proxies let a transaction's `BEGIN`
    /// and simple statements through, and cut the reply to its `COMMIT`, which the server
    /// applied: the write whose caller never hears.
    #[tokio::test]
    async fn postgres_faults_lose_a_commits_reply_after_it_applied() {
        let Some(url) = fusion_storage_postgres::testing::reachable_url().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let location = Location::fresh(Backend::Postgres, dir.path(), &url, StorageLayer::None);
        let (_storage, injector) = open(&location, 1.0, 7).await.unwrap();
        injector.arm();
        let (server, proxy) = addresses(&injector);
        let schema = format!("fusion_stress_commit_{}", std::process::id());
        let (mut conn, _) = startup(&proxy, &url).await;
        let (begun, began) = exchange(&mut conn, &simple_query("BEGIN")).await;
        let create = simple_query(&format!("CREATE SCHEMA {schema}"));
        let (created, create_answered) = exchange(&mut conn, &create).await;
        let (committed, commit_answered) = exchange(&mut conn, POSTGRES_COMMIT).await;
        // Straight to the server, past the proxies: the schema is there to drop.
        let (mut direct, _) = startup(&server, &url).await;
        let drop = simple_query(&format!("DROP SCHEMA {schema}"));
        let (dropped, _) = exchange(&mut direct, &drop).await;
        location.cleanup().await.unwrap();
        assert!(began, "{begun:?}");
        assert!(create_answered, "{created:?}");
        assert!(
            !commit_answered && committed.is_empty(),
            "the COMMIT's reply came: {committed:?}"
        );
        assert!(injector.injected() > 0);
        let dropped_ok = dropped.windows(12).any(|w| w == b"DROP SCHEMA\0");
        assert!(
            dropped_ok,
            "the COMMIT did not apply: {:?}",
            String::from_utf8_lossy(&dropped)
        );
    }
}
