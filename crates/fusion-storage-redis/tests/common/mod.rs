//! Shared test setup: a private key prefix per case on the server at `REDIS_URL`, or on
//! the Redis Cluster at `FUSION_REDIS_CLUSTER_URL`.
//!
//! Every harness gets a prefix of its own, so parallel cases and repeated runs never see each
//! other's keys, and deletes every key under it when dropped.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fusion_core::testkit::port::{ReservedPort, reserve_port};
use fusion_core::testkit::{StorageHarness, unavailable, unique_name};
use fusion_storage_redis::{RedisOptions, RedisStorage, cluster_node_urls};
use redis::aio::MultiplexedConnection;

pub mod cluster_node;
pub mod proxied_cluster;
pub mod two_nodes;

/// Generous limit for anything that must not hang; reaching it is the failure.
pub const NO_HANG: Duration = Duration::from_secs(30);

/// The reason printed when `REDIS_URL` is not set.
pub const NO_SERVER: &str = "set REDIS_URL=redis://127.0.0.1:6379 to run the Redis tests";

/// The reason printed when `FUSION_REDIS_CLUSTER_URL` is not set.
pub const NO_CLUSTER: &str = "set FUSION_REDIS_CLUSTER_URL=redis+cluster://HOST:PORT,... (a \
     cluster of primaries with replicas; `cargo xtask test-all-backends` starts one) to run the \
     Redis Cluster tests";

/// The server under test, from `REDIS_URL`.
pub fn redis_url() -> Option<String> {
    env_url("REDIS_URL")
}

/// The value of the environment variable `name`, if set and not blank.
pub fn env_url(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// A key prefix no other run or case uses.
pub fn unique_prefix() -> String {
    unique_name("fusion-test")
}

/// One test case's private location: the server at `REDIS_URL` (or the cluster at
/// `FUSION_REDIS_CLUSTER_URL`) and a fresh key prefix.
pub struct Harness {
    pub url: String,
    pub prefix: String,
    /// Whether the storages it opens publish their changes (`publish_changes`).
    pub publish: bool,
}

impl Harness {
    /// Waits (up to 15 s) until both keys of `id` are gone, as a TTL removes them;
    /// returns whether they went.
    pub async fn wait_until_expired(&self, id: &str) -> bool {
        let raw = self.raw().await;
        let keys = [self.list_key(id), self.meta_key(id)];
        wait_until(Duration::from_secs(15), || {
            let (mut raw, keys) = (raw.clone(), keys.clone());
            async move {
                let n: usize = redis::AsyncCommands::exists(&mut raw, &keys).await.unwrap();
                n == 0
            }
        })
        .await
    }

    /// Options for a new storage instance on this harness's prefix.
    pub fn options(&self) -> RedisOptions {
        RedisOptions::new()
            .key_prefix(&self.prefix)
            .publish_changes(self.publish)
    }

    /// A new storage instance on this harness's server with `options`.
    pub async fn connect(&self, options: RedisOptions) -> fusion_core::Result<RedisStorage> {
        RedisStorage::connect_with(&self.url, options).await
    }

    /// A new storage instance with the harness's options; panics if it cannot connect.
    pub async fn open(&self) -> RedisStorage {
        self.connect(self.options())
            .await
            .unwrap_or_else(|err| panic!("connecting to {}: {err}", self.url))
    }

    /// A new storage instance on this harness's prefix at another `url`.
    pub async fn connect_to(&self, url: &str) -> fusion_core::Result<RedisStorage> {
        RedisStorage::connect_with(url, self.options()).await
    }

    /// A plain connection, for poking at keys the way another program would.
    pub async fn raw(&self) -> MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("REDIS_URL parses")
            .get_multiplexed_async_connection()
            .await
            .expect("connecting to REDIS_URL")
    }

    /// A plain cluster connection, for poking at keys the way another program would.
    pub async fn raw_cluster(&self) -> redis::cluster_async::ClusterConnection {
        let seeds = cluster_node_urls(&self.url)
            .expect("the cluster URL parses")
            .expect("a redis+cluster:// URL");
        redis::cluster::ClusterClient::new(seeds)
            .expect("the cluster URL parses")
            .get_async_connection()
            .await
            .expect("connecting to the cluster")
    }

    /// A plain connection to the server or cluster of this harness, whichever it is.
    pub async fn raw_any(&self) -> Raw {
        if self.url.contains("+cluster://") {
            Raw::Cluster(self.raw_cluster().await)
        } else {
            Raw::Single(self.raw().await)
        }
    }

    /// The list key of `session_id` (the layout documented in the README).
    pub fn list_key(&self, session_id: &str) -> String {
        format!("{}:s:{{{session_id}}}", self.prefix)
    }

    /// The meta hash key of `session_id`.
    pub fn meta_key(&self, session_id: &str) -> String {
        format!("{}:m:{{{session_id}}}", self.prefix)
    }

    /// The index of every session by id (a ZSET).
    pub fn ids_key(&self) -> String {
        format!("{}:ids", self.prefix)
    }

    /// The index of every session by update time (a ZSET).
    pub fn updated_key(&self) -> String {
        format!("{}:updated", self.prefix)
    }

    /// The index of `owner`'s sessions by id.
    pub fn owner_ids_key(&self, owner: &str) -> String {
        format!("{}:owner:{{{owner}}}:ids", self.prefix)
    }

    /// The index of `owner`'s sessions by update time.
    pub fn owner_updated_key(&self, owner: &str) -> String {
        format!("{}:owner:{{{owner}}}:updated", self.prefix)
    }

    /// The index of the sessions that have an expiry, by the ms they expire (a ZSET).
    pub fn expiry_key(&self) -> String {
        format!("{}:expiry", self.prefix)
    }

    /// The SET index of releases before the ZSETs.
    pub fn legacy_index_key(&self) -> String {
        format!("{}:sessions", self.prefix)
    }
}

/// A plain connection to one server or to a cluster, for tests that run on both.
#[derive(Clone)]
pub enum Raw {
    Single(MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Raw {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Raw::Single(conn) => conn.req_packed_command(cmd),
            Raw::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Raw::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Raw::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[async_trait::async_trait]
impl StorageHarness for Harness {
    type Storage = RedisStorage;

    async fn open(&self) -> fusion_core::Result<RedisStorage> {
        self.connect(self.options()).await
    }
}

impl Drop for Harness {
    // Drop cannot be async, so clean up with the driver's blocking client. SCAN is fine
    // here: it only runs in tests, over this case's own prefix. On a cluster every
    // primary holds some of the keys, so each is scanned on its own.
    fn drop(&mut self) {
        for node in primaries(&self.url) {
            delete_prefix(&node, &self.prefix);
        }
    }
}

/// The `redis://` URL of every node that holds keys: the server itself, or each primary
/// of a cluster as the first reachable seed node reports them.
pub fn primaries(url: &str) -> Vec<String> {
    match cluster_node_urls(url).expect("a valid Redis URL") {
        None => vec![url.to_string()],
        Some(seeds) => live_primaries(&seeds)
            .iter()
            .map(ClusterNode::url)
            .collect(),
    }
}

/// One node of a cluster, as `CLUSTER NODES` describes it.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    /// `host:port`.
    pub addr: String,
    pub primary: bool,
    pub failed: bool,
    /// The slot ranges it serves, inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    /// Whether it serves `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(lo, hi)| (lo..=hi).contains(&slot))
    }

    /// Its `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

/// The cluster's nodes as the node at `node_url` sees them, if it answers.
pub fn cluster_nodes_seen_by(node_url: &str) -> Option<Vec<ClusterNode>> {
    let client = redis::Client::open(node_url).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    let text: String = redis::cmd("CLUSTER").arg("NODES").query(&mut conn).ok()?;
    // `<id> <ip:port@cport> <flags> <primary> <ping> <pong> <epoch> <link> <slot>...`;
    // a slot being migrated is listed as `[slot->-id]`.
    let nodes = text
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let slots = fields[8..]
                .iter()
                .filter(|f| !f.starts_with('['))
                .map(|range| match range.split_once('-') {
                    Some((lo, hi)) => (lo.parse().unwrap(), hi.parse().unwrap()),
                    None => (range.parse().unwrap(), range.parse().unwrap()),
                })
                .collect();
            ClusterNode {
                id: fields[0].to_string(),
                addr: fields[1].split('@').next().unwrap().to_string(),
                primary: fields[2].contains("master"),
                failed: fields[2].contains("fail"),
                slots,
            }
        })
        .collect();
    Some(nodes)
}

/// The live primaries as the first of `seeds` (node URLs) that answers sees them; none if
/// no seed answers.
pub fn live_primaries(seeds: &[String]) -> Vec<ClusterNode> {
    let nodes = seeds.iter().find_map(|seed| cluster_nodes_seen_by(seed));
    nodes
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.primary && !n.failed)
        .collect()
}

/// Deletes every key under `prefix` on the one node at `url`, one key per `DEL` (a
/// cluster node refuses a `DEL` of keys in different slots).
fn delete_prefix(url: &str, prefix: &str) {
    let Ok(mut conn) = redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
    else {
        return;
    };
    let pattern = format!("{prefix}:*");
    let mut cursor = 0u64;
    loop {
        let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)
        else {
            return;
        };
        for key in keys {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(key).query(&mut conn);
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// A harness on `REDIS_URL`, or `None` (skip, or panic under `FUSION_REQUIRE_BACKENDS`).
pub async fn harness() -> Option<Harness> {
    let Some(url) = redis_url() else {
        return unavailable("redis", NO_SERVER);
    };
    Some(Harness {
        url,
        prefix: unique_prefix(),
        publish: false,
    })
}

/// A harness on the cluster at `FUSION_REDIS_CLUSTER_URL`, or `None` (skip, or panic
/// under `FUSION_REQUIRE_BACKENDS`).
pub async fn cluster_harness() -> Option<Harness> {
    let Some(url) = env_url("FUSION_REDIS_CLUSTER_URL") else {
        return unavailable("redis_cluster", NO_CLUSTER);
    };
    Some(Harness {
        url,
        prefix: unique_prefix(),
        publish: false,
    })
}

/// The `redis-server` binary on `PATH`, for tests that start servers of their own.
pub fn redis_server_on_path() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

/// A port of 127.0.0.1 for a server a test starts, its own while this lives: reserved
/// ([`reserve_port`]), or one of the range `FUSION_REDIS_TEST_PORTS` names
/// (`35000-35199`), for a machine that leaves these tests only those ports, handed out
/// again once this drops.
pub struct TestPort {
    pub port: u16,
    _reserved: Option<ReservedPort>,
    /// The range it was taken from, which gets it back when this drops.
    from: Option<Arc<PortRange>>,
}

impl Drop for TestPort {
    fn drop(&mut self) {
        if let Some(range) = &self.from {
            range.give_back(self.port);
        }
    }
}

/// The environment variable naming the ports, `LOW-HIGH` inclusive, that the servers
/// these tests start take, instead of reserved ones.
pub const TEST_PORTS: &str = "FUSION_REDIS_TEST_PORTS";

/// A [`TestPort`]. From a range ([`PortRange`]), ports go in turn (the tests of one
/// binary run side by side; the binaries one after another), each skipped while a
/// [`TestPort`] holds it or something listens on it.
///
/// # Panics
///
/// When the range is malformed, or no port of it is free.
pub fn test_port() -> TestPort {
    static RANGE: OnceLock<Arc<PortRange>> = OnceLock::new();
    let Some(range) = env_url(TEST_PORTS) else {
        let reserved = reserve_port();
        return TestPort {
            port: reserved.port,
            _reserved: Some(reserved),
            from: None,
        };
    };
    let ports = RANGE.get_or_init(|| {
        let ports = PortRange::parse(&range).unwrap_or_else(|| {
            panic!("{TEST_PORTS}={range}: expected LOW-HIGH, such as 35000-35199")
        });
        Arc::new(ports)
    });
    PortRange::take(ports)
        .unwrap_or_else(|| panic!("{TEST_PORTS}={range}: every port of it is held or in use"))
}

/// The ports `low..=high` a test binary hands out as [`TestPort`]s, in turn: each its
/// holder's until that drops, then free to hand out again. Handed out for good, a range
/// sized for the servers a binary runs at once ran out after as many servers in all.
pub struct PortRange {
    low: u16,
    high: u16,
    /// The ports held now, and the offset from `low` of the next one to try.
    state: Mutex<(BTreeSet<u16>, u32)>,
}

impl PortRange {
    /// The ports `low..=high`.
    pub fn new(low: u16, high: u16) -> Self {
        assert!(low <= high, "a port range from {low} to {high}");
        Self {
            low,
            high,
            state: Mutex::new((BTreeSet::new(), 0)),
        }
    }

    /// `LOW-HIGH`, inclusive; `None` when malformed.
    pub fn parse(range: &str) -> Option<Self> {
        let (low, high) = range.split_once('-')?;
        let (low, high) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
        (low <= high).then(|| Self::new(low, high))
    }

    /// The next port of the range, after the last one handed out, that no [`TestPort`]
    /// holds and nothing listens on; `None` when there is none.
    pub fn take(range: &Arc<Self>) -> Option<TestPort> {
        let len = u32::from(range.high - range.low) + 1;
        let mut state = range.state.lock().unwrap_or_else(|e| e.into_inner());
        let (held, next) = &mut *state;
        for step in 0..len {
            let offset = (*next + step) % len;
            let port = range.low + u16::try_from(offset).expect("within the range");
            if held.contains(&port) || std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            held.insert(port);
            *next = (offset + 1) % len;
            return Some(TestPort {
                port,
                _reserved: None,
                from: Some(Arc::clone(range)),
            });
        }
        None
    }

    /// Takes `port` back, for a later [`take`](Self::take).
    fn give_back(&self, port: u16) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0.remove(&port);
    }
}

/// A disposable `redis-server` on a loopback port of its own ([`test_port`]), without
/// persistence, with the configuration a test gives it (`--maxmemory 1mb`,
/// `--requirepass ...`); each [`start`](Self::start) runs it (again, on the same port),
/// killed and waited for when its handle drops, even if the test panics. For cases that change a
/// server's state or configuration, which the shared server at `REDIS_URL` must never see.
pub struct Throwaway {
    binary: std::path::PathBuf,
    pub port: u16,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    config: Vec<String>,
    /// The server's working directory, of its own: nothing it saves (`DEBUG RELOAD`)
    /// lands in the crate, and it never loads a `dump.rdb` another run or server left
    /// there. Removed when this drops.
    pub dir: cluster_node::PrivateDir,
    /// The port's reservation: no other test draws it while this lives, also while the
    /// server is down between two [`start`](Self::start)s.
    _reserved: TestPort,
}

impl Throwaway {
    /// A server with the defaults, or `None` (a skip, or a failure under
    /// `FUSION_REQUIRE_BACKENDS`) without `redis-server` on `PATH`.
    pub fn new() -> Option<Self> {
        Self::with_config(&[])
    }

    /// A server started with `config` (command-line arguments of `redis-server`) after
    /// its port and no persistence.
    pub fn with_config(config: &[&str]) -> Option<Self> {
        let Some(binary) = redis_server_on_path() else {
            return fusion_core::testkit::unavailable("redis", "install redis-server");
        };
        let reserved = test_port();
        let port = reserved.port;
        let dir = cluster_node::PrivateDir::new("fusion-redis");
        Some(Self {
            binary,
            port,
            _reserved: reserved,
            url: format!("redis://127.0.0.1:{port}"),
            config: config.iter().map(|arg| arg.to_string()).collect(),
            dir,
        })
    }

    /// Starts the server and waits (up to 10 s) until it answers. The server is killed,
    /// and waited for, when the returned handle drops (before this does, which gives
    /// its port back).
    pub async fn start(&self) -> cluster_node::Reaped {
        let child = tokio::process::Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting redis-server");
        let child = cluster_node::Reaped::new(child);
        let up = wait_until(Duration::from_secs(10), || answers(&self.url)).await;
        assert!(up, "redis-server on port {} never answered", self.port);
        child
    }
}

/// Whether a server answers at `url` on a fresh connection: any reply counts, an error
/// too (`NOAUTH` from a server that wants a password, `LOADING`).
pub async fn answers(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    match redis::cmd("PING")
        .query_async::<redis::Value>(&mut conn)
        .await
    {
        Ok(_) => true,
        Err(err) => !(err.is_io_error() || err.is_connection_dropped() || err.is_timeout()),
    }
}

/// Polls `check` every 20 ms until it returns true or `limit` passes; returns whether it
/// did. Tests wait for the server this way instead of sleeping a fixed time.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`harness`] whose storages publish their changes, so the publishing form of every
/// write script runs.
pub async fn publishing_harness() -> Option<Harness> {
    let mut h = harness().await?;
    h.publish = true;
    Some(h)
}

/// [`cluster_harness`] whose storages publish their changes.
pub async fn publishing_cluster_harness() -> Option<Harness> {
    let mut h = cluster_harness().await?;
    h.publish = true;
    Some(h)
}
