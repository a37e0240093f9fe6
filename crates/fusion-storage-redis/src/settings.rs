//! What the servers' configuration tells the storage: the longest value they take as one
//! ([`ValueLimit`], `proto-max-bulk-len`), so that a write refuses a message over it
//! before sending it, and whether they evict keys when memory runs out (a warning).
//!
//! One server, or every primary of a Redis Cluster, answers `CONFIG GET` the same way
//! ([`read`]); a cluster's limit is the smallest of its primaries'. `connect.rs` reads
//! them at connect, and a write whose connection dropped has the limit read again before
//! the next write is checked (`storage/write.rs`), since that is how a value over it
//! shows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use redis::{RedisError, RedisResult, Value};

use crate::connection::{Connection, Request};

/// One node's configuration parameters that its user may read, by name.
pub(crate) type Settings = HashMap<String, String>;

/// The parameter holding the longest value a server takes as one (512 MB by default, at
/// least 1 MB).
pub(crate) const VALUE_LIMIT: &str = "proto-max-bulk-len";

/// What `connect` reads: the value limit, and the memory settings it warns about.
pub(crate) const AT_CONNECT: [&str; 3] = [VALUE_LIMIT, "maxmemory", "maxmemory-policy"];

/// The settings among `parameters` that each node (the server, or every primary of a
/// cluster the client knows of) lets its user read: an empty map for a node that refuses
/// `CONFIG` (renamed or disabled, as managed services often do, or not allowed to the
/// user). Fails only when a node cannot be asked at all (no connection).
///
/// One `CONFIG GET` per parameter (Redis 6 takes one a call), each read on its own: a
/// node that lets the user read some parameters and not others gives what it can. Sent
/// again after a dropped connection, as a read is (on a cluster each goes to every
/// primary, `cluster.rs`): it follows a write whose connection dropped.
pub(crate) async fn read(conn: &Connection, parameters: &[&str]) -> RedisResult<Vec<Settings>> {
    let config_get = |parameter: &str| {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(parameter);
        cmd
    };
    match conn {
        Connection::Single(_) => {
            let mut pipe = redis::pipe();
            for parameter in parameters {
                pipe.add_command(config_get(parameter));
            }
            pipe.ignore_errors();
            let replies: Vec<RedisResult<Value>> = (conn.clone())
                .send_again_if(Request::Pipe(&pipe), RedisError::is_connection_dropped)
                .await?;
            Ok(vec![
                replies.into_iter().flatten().flat_map(parse).collect(),
            ])
        }
        Connection::Cluster(cluster) => {
            let mut nodes: HashMap<String, Settings> = HashMap::new();
            for parameter in parameters {
                for (node, reply) in cluster.on_every_primary(&config_get(parameter)).await? {
                    nodes.entry(node).or_default().extend(parse(reply));
                }
            }
            Ok(nodes.into_values().collect())
        }
    }
}

/// A `CONFIG GET` reply as its pairs; none for a refusal.
fn parse(reply: Value) -> Settings {
    redis::from_redis_value(reply).unwrap_or_default()
}

/// The smallest value limit among `nodes`' settings: the longest value every one of them
/// takes (a cluster's session may move to any primary). `None` where no node let its
/// user read it.
pub(crate) fn smallest_limit(nodes: &[Settings]) -> Option<usize> {
    nodes
        .iter()
        .filter_map(|settings| settings.get(VALUE_LIMIT)?.parse().ok())
        .min()
}

/// Warns, once per node of `nodes`, about an evicting `maxmemory-policy`
/// (`allkeys-*`), which drops sessions' keys and index entries when memory runs out (see
/// the README's "Server states"): nothing else would tell, until sessions are missing.
pub(crate) fn warn_if_evicting(nodes: &[Settings], redacted: &str) {
    for settings in nodes {
        // Without a `maxmemory` (0) the policy never applies.
        let bounded = settings.get("maxmemory").is_some_and(|bytes| bytes != "0");
        if let Some(policy) = settings
            .get("maxmemory-policy")
            .filter(|policy| bounded && policy.starts_with("allkeys-"))
        {
            tracing::warn!(
                url = %redacted,
                "the Redis server evicts any key when its memory runs out (maxmemory-policy \
                 {policy}): sessions may lose their messages, metadata or place in listings; \
                 use noeviction (fusion-storage-redis README, \"Server states\")"
            );
        }
    }
}

/// The longest value the server (every primary of a cluster) takes as one, if known;
/// shared by every clone of the storage.
#[derive(Debug, Default)]
pub(crate) struct ValueLimit {
    /// In bytes; 0 while unknown (a server's is 1 MB at least).
    bytes: AtomicUsize,
    /// How many writes' connections dropped ([`read_again_later`](Self::read_again_later)).
    drops: AtomicU64,
    /// The most `drops` was when a read of the limit that has ended began: the drops
    /// before it are read past.
    read_past: AtomicU64,
}

impl ValueLimit {
    /// A limit of `bytes`, or unknown.
    pub(crate) fn new(bytes: Option<usize>) -> Self {
        Self {
            bytes: AtomicUsize::new(bytes.unwrap_or(0)),
            drops: AtomicU64::new(0),
            read_past: AtomicU64::new(0),
        }
    }

    /// The limit, if known.
    pub(crate) fn get(&self) -> Option<usize> {
        Some(self.bytes.load(Ordering::Relaxed)).filter(|&bytes| bytes > 0)
    }

    /// Reads the limit again through `conn`, after a write on it dropped its connection:
    /// what a value over it does (the server refuses it and closes the connection while
    /// the client still sends). A primary that joined a cluster since (or a limit lowered
    /// since) is then known, and the write's retry is refused before it is sent, rather
    /// than sent again and again. Kept as it was when nothing could be read (the nodes
    /// still out of reach, `CONFIG` refused).
    async fn read_again(&self, conn: &Connection) {
        let nodes = read(conn, &[VALUE_LIMIT]).await;
        if let Some(bytes) = nodes.ok().as_deref().and_then(smallest_limit) {
            self.bytes.store(bytes, Ordering::Relaxed);
        }
    }

    /// Has the limit read again ([`read_again`](Self::read_again)) before the next write
    /// is checked against it ([`before_a_write`](Self::before_a_write)), after a write
    /// whose connection dropped. Not at once: the read waits for the connection to be
    /// made again (the reconnect's backoff, or longer for a server that does not answer),
    /// which would hold back the failed write's error; the next write waits for that
    /// connection anyway.
    pub(crate) fn read_again_later(&self) {
        self.drops.fetch_add(1, Ordering::AcqRel);
    }

    /// Before a write is checked against the limit: reads it again through `conn`, for at
    /// most `within`, if a write's connection dropped since it was read
    /// ([`read_again_later`](Self::read_again_later)) and no read begun since has ended.
    /// A write meeting a read still under way reads too rather than pass it by: checked
    /// against the limit as it was, it could send again the message whose drop started
    /// that read (its own retry, on another task). Once per drop: when a read fails (the
    /// nodes still out of reach) the limit is kept as it was, and writes after it do not
    /// wait for it again.
    pub(crate) async fn before_a_write(&self, conn: &Connection, within: Duration) {
        let drops = self.drops.load(Ordering::Acquire);
        if self.read_past.load(Ordering::Acquire) < drops {
            let _ = tokio::time::timeout(within, self.read_again(conn)).await;
            self.read_past.fetch_max(drops, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn the_smallest_limit_a_node_gave_is_kept() {
        let nodes = [
            settings(&[(VALUE_LIMIT, "536870912")]),
            settings(&[]), // `CONFIG` refused
            settings(&[(VALUE_LIMIT, "1048576"), ("maxmemory", "0")]),
        ];
        assert_eq!(smallest_limit(&nodes), Some(1_048_576));
        assert_eq!(smallest_limit(&nodes[1..2]), None);
        assert_eq!(smallest_limit(&[]), None);
    }

    #[test]
    fn a_refused_config_get_reads_as_no_settings() {
        let text = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let pairs = Value::Array(vec![text(VALUE_LIMIT), text("1048576")]);
        assert_eq!(parse(pairs), settings(&[(VALUE_LIMIT, "1048576")]));
        let map = Value::Map(vec![(text(VALUE_LIMIT), text("1048576"))]);
        assert_eq!(parse(map), settings(&[(VALUE_LIMIT, "1048576")]));
        let refused = redis::parse_redis_value(b"-ERR unknown command 'CONFIG'\r\n").unwrap();
        assert!(matches!(refused, Value::ServerError(_)), "{refused:?}");
        assert_eq!(parse(refused), Settings::new());
    }

    #[test]
    fn an_unknown_limit_stays_unknown_until_read() {
        assert_eq!(ValueLimit::new(None).get(), None);
        assert_eq!(ValueLimit::new(Some(1_048_576)).get(), Some(1_048_576));
    }
}
