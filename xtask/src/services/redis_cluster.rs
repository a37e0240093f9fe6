//! Redis Clusters for the tests: three primaries and three replicas of `redis-server
//! --cluster-enabled yes` on loopback ports reserved for them ([`try_reserve_port`]), joined with `redis-cli --cluster
//! create`, data in a temporary directory, stopped and removed when the guard drops.
//!
//! [`redis_cluster`] is the one the conformance suite and the other cluster tests share
//! (`FUSION_REDIS_CLUSTER_URL` if set, else started here). [`failover_cluster`] is always
//! started here, for the one test that kills a primary: nothing else may run on it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::redis::{answers_ping, ensure_redis_server_installed, host_port, pings};
use super::{Reach, reach, redact};
use fusion_test_ports::{ReservedPort, try_reserve_port};

/// Primaries, and one replica per primary.
const PRIMARIES: usize = 3;
const NODES: usize = PRIMARIES * 2;

/// How long a node may be unreachable before the cluster fails it over, on the shared
/// cluster: Redis's default, since nothing there wants a failover and a busy 2-core CI
/// machine can hold a node up for seconds, which would fail a primary over under tests
/// that did not ask for it.
const SHARED_NODE_TIMEOUT_MS: &str = "15000";

/// The same on the failover test's own cluster: 2 s keeps that test short, and nothing
/// else runs there.
const FAILOVER_NODE_TIMEOUT_MS: &str = "2000";

/// A Redis Cluster for the tests; stops its nodes on drop if this task started them.
pub struct RedisCluster {
    /// The `redis+cluster://` URL tests connect to, every node listed.
    pub url: String,
    /// Where the URL came from, for the log.
    pub origin: &'static str,
    nodes: Vec<Child>,
    /// Each node's client and cluster bus ports, kept from every other reservation while
    /// the nodes run (dropped after `Drop` stopped them).
    ports: Vec<ReservedPort>,
    dir: Option<PathBuf>,
}

impl RedisCluster {
    /// The URL with any password masked, for messages.
    pub fn shown(&self) -> String {
        redact(&self.url)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The shared cluster: `FUSION_REDIS_CLUSTER_URL` if set (its first node must answer),
/// else one started here.
pub fn redis_cluster() -> Result<RedisCluster> {
    ensure_redis_server_installed()?;
    if let Ok(url) = std::env::var("FUSION_REDIS_CLUSTER_URL") {
        check_cluster_url(&url)?;
        return Ok(RedisCluster {
            url,
            origin: "FUSION_REDIS_CLUSTER_URL",
            nodes: Vec::new(),
            ports: Vec::new(),
            dir: None,
        });
    }
    start("shared", SHARED_NODE_TIMEOUT_MS)
}

/// Fails unless the first node `FUSION_REDIS_CLUSTER_URL` (`url`) names answers PING,
/// saying whether its host name does not resolve or it does not answer; the URL's
/// password masked.
fn check_cluster_url(url: &str) -> Result<()> {
    let shown = redact(url);
    let first = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(',').next())
        .and_then(|node| host_port(&format!("redis://{node}")))
        .with_context(|| {
            format!("FUSION_REDIS_CLUSTER_URL={shown} is not a redis+cluster://host:port,... URL")
        })?;
    match reach(&first, pings) {
        Reach::Answers => Ok(()),
        Reach::Silent => bail!(
            "FUSION_REDIS_CLUSTER_URL={shown}: {first} does not answer PING; start that cluster or unset the variable"
        ),
        Reach::Unresolved(why) => bail!(
            "FUSION_REDIS_CLUSTER_URL={shown}: {why}; correct the host name or unset the variable"
        ),
    }
}

/// A cluster of its own for the failover test, which kills one of its primaries.
pub fn failover_cluster() -> Result<RedisCluster> {
    ensure_redis_server_installed()?;
    start("failover", FAILOVER_NODE_TIMEOUT_MS)
}

fn start(name: &str, node_timeout_ms: &str) -> Result<RedisCluster> {
    let dir = std::env::temp_dir().join(format!(
        "fusion-xtask-redis-cluster-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cluster = RedisCluster {
        url: String::new(),
        origin: "throwaway cluster started by xtask",
        nodes: Vec::new(),
        ports: Vec::new(),
        dir: Some(dir.clone()),
    };
    let mut addrs = Vec::new();
    for _ in 0..NODES {
        let (client, bus) = (try_reserve_port()?, try_reserve_port()?);
        let (port, bus_port) = (client.port.to_string(), bus.port.to_string());
        cluster.ports.extend([client, bus]);
        let node = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            // Its own bus port: the default, the client port + 10000, is nobody's reservation.
            .args(["--cluster-port", &bus_port])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", node_timeout_ms])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting redis-server for a cluster node")?;
        cluster.nodes.push(node);
        addrs.push(format!("127.0.0.1:{port}"));
    }
    for addr in &addrs {
        wait_until(addr, "answer PING", || answers_ping(addr))?;
    }
    let output = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .output()
        .context("running redis-cli --cluster create (redis-cli comes with redis-server)")?;
    if !output.status.success() {
        bail!(
            "redis-cli --cluster create failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Every node must have learned the whole topology before a test relies on it, or
    // the first requests meet `CLUSTERDOWN` from a node still catching up.
    for addr in &addrs {
        wait_until(addr, "report cluster_state:ok", || cluster_ok(addr))?;
    }
    cluster.url = format!("redis+cluster://{}", addrs.join(","));
    Ok(cluster)
}

/// Waits (at most 30 s, a bound against a node that never comes up) until `ready()`.
fn wait_until(addr: &str, what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        if Instant::now() > deadline {
            bail!("the Redis Cluster node at {addr} did not {what} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// True when the node at `addr` reports `cluster_state:ok` and sees all its nodes.
fn cluster_ok(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"CLUSTER INFO\r\n").is_err() {
        return false;
    }
    // The reply is one bulk string: `$LEN\r\n`, LEN bytes, `\r\n`.
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    let complete = |reply: &[u8]| {
        let text = String::from_utf8_lossy(reply);
        let Some((header, body)) = text.strip_prefix('$').and_then(|t| t.split_once("\r\n")) else {
            return false;
        };
        header.parse::<usize>().is_ok_and(|len| body.len() >= len)
    };
    while !complete(&reply) {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
        }
    }
    let info = String::from_utf8_lossy(&reply);
    info.contains("cluster_state:ok") && info.contains(&format!("cluster_known_nodes:{NODES}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `FUSION_REDIS_CLUSTER_URL`'s password is masked in what is said of it, as
    /// `FUSION_POSTGRES_URL`'s is: an error message lands in CI logs.
    #[test]
    fn a_cluster_url_s_password_is_masked_in_its_errors() {
        let nobody = fusion_test_ports::reserve_port();
        for (url, shown) in [
            (
                "redis+cluster://:hunter2@nowhere.invalid:7000,h2:7001".to_string(),
                "FUSION_REDIS_CLUSTER_URL=redis+cluster://:***@nowhere.invalid:7000,h2:7001: the host name".to_string(),
            ),
            (
                format!("redis+cluster://app:hunter2@127.0.0.1:{},h2", nobody.port),
                format!(
                    "FUSION_REDIS_CLUSTER_URL=redis+cluster://app:***@127.0.0.1:{},h2: 127.0.0.1:{} does not answer PING",
                    nobody.port, nobody.port
                ),
            ),
        ] {
            let err = check_cluster_url(&url).unwrap_err().to_string();
            assert!(err.starts_with(&shown), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }
}
