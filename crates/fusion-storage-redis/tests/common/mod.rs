//! Shared test setup: a private key prefix per case on the server at `REDIS_URL`, or on
//! the Redis Cluster at `FUSION_REDIS_CLUSTER_URL`.
//!
//! Every harness gets a random prefix, so parallel cases and repeated runs never see each
//! other's keys, and deletes every key under it when dropped.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use fusion_core::testkit::{StorageHarness, unavailable};
use fusion_storage_redis::{RedisOptions, RedisStorage};
use redis::aio::MultiplexedConnection;

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
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let random = RandomState::new().hash_one((nanos, std::process::id()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("fusion-test:{random:016x}-{n}")
}

/// One test case's private location: the server at `REDIS_URL` (or the cluster at
/// `FUSION_REDIS_CLUSTER_URL`) and a fresh key prefix.
pub struct Harness {
    pub url: String,
    pub prefix: String,
}

impl Harness {
    /// Options for a new storage instance on this harness's prefix.
    pub fn options(&self) -> RedisOptions {
        RedisOptions::new().key_prefix(&self.prefix)
    }

    /// A new storage instance on this harness's server with `options`.
    pub async fn connect(&self, options: RedisOptions) -> fusion_core::Result<RedisStorage> {
        RedisStorage::connect_with(&self.url, options).await
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
        let seeds: Vec<String> = self
            .url
            .strip_prefix("redis+cluster://")
            .expect("a redis+cluster:// URL")
            .split(',')
            .map(|node| format!("redis://{node}"))
            .collect();
        redis::cluster::ClusterClient::new(seeds)
            .expect("the cluster URL parses")
            .get_async_connection()
            .await
            .expect("connecting to the cluster")
    }

    /// The list key of `session_id` (the layout documented in the README).
    pub fn list_key(&self, session_id: &str) -> String {
        format!("{}:s:{{{session_id}}}", self.prefix)
    }

    /// The meta hash key of `session_id`.
    pub fn meta_key(&self, session_id: &str) -> String {
        format!("{}:m:{{{session_id}}}", self.prefix)
    }

    /// The session index key.
    pub fn index_key(&self) -> String {
        format!("{}:sessions", self.prefix)
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
    let Some(seeds) = url.strip_prefix("redis+cluster://") else {
        return vec![url.to_string()];
    };
    for seed in seeds.split(',') {
        let Ok(mut conn) = redis::Client::open(format!("redis://{seed}"))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        else {
            continue;
        };
        let Ok(nodes) = redis::cmd("CLUSTER")
            .arg("NODES")
            .query::<String>(&mut conn)
        else {
            continue;
        };
        // `<id> <ip:port@cport> <flags> ...`: the live primaries.
        return nodes
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                let addr = fields.nth(1)?.split('@').next()?;
                let flags = fields.next()?;
                (flags.contains("master") && !flags.contains("fail"))
                    .then(|| format!("redis://{addr}"))
            })
            .collect();
    }
    Vec::new()
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
    })
}

/// A TCP port on 127.0.0.1 that nothing listens on (it was free a moment ago).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").port()
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
