//! One raw Redis connection type for a single server and for a Redis Cluster, so the
//! floor's and the clean-up's commands are written once for both.
//!
//! A cluster is named the way `fusion-storage-redis` takes it, and its URL split into seed
//! nodes by that crate's `cluster_node_urls`:
//! `redis+cluster://[user:password@]host1:port1,host2:port2,...` (`rediss+cluster://`
//! for TLS); any other URL is a single server's, handed to the `redis` crate as is.

use anyhow::Result;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A multiplexed connection to one server, or to every node of a cluster.
#[derive(Clone)]
pub enum RedisConn {
    /// A single server.
    Server(MultiplexedConnection),
    /// A Redis Cluster: each command goes to the node owning its key's slot.
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Connects to the server or cluster at `url`.
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(match fusion_storage_redis::cluster_node_urls(url)? {
            Some(nodes) => RedisConn::Cluster(
                redis::cluster::ClusterClient::new(nodes)?
                    .get_async_connection()
                    .await?,
            ),
            None => RedisConn::Server(
                redis::Client::open(url)?
                    .get_multiplexed_async_connection()
                    .await?,
            ),
        })
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }

    /// The driver type, for reports.
    pub fn describe(&self) -> &'static str {
        match self {
            RedisConn::Server(_) => "redis MultiplexedConnection",
            RedisConn::Cluster(_) => "redis cluster_async::ClusterConnection",
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Server(conn) => conn.req_packed_command(cmd),
            RedisConn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Server(conn) => conn.get_db(),
            RedisConn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The `(host, port)` of every reachable primary in the output of `CLUSTER NODES`
/// (`<id> <ip:port@cport[,hostname]> <flags> ...`, one node per line).
pub fn cluster_primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            let is_primary = flags.split(',').any(|f| f == "master")
                && !flags
                    .split(',')
                    .any(|f| f.starts_with("fail") || f == "noaddr");
            let (host, port) = address.split(['@', ',']).next()?.rsplit_once(':')?;
            let port: u16 = port.parse().ok()?;
            (is_primary && port != 0).then(|| (host.to_string(), port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_primaries_skip_replicas_and_failed_nodes() {
        let nodes = "\
a1 127.0.0.1:7100@17100 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7101@17101,node-b master - 0 1 2 connected 5461-10922
c3 127.0.0.1:7103@17103 slave a1 0 1 1 connected
d4 127.0.0.1:7102@17102 master,fail - 0 1 3 connected
e5 :0@0 master,noaddr - 0 1 3 connected
";
        assert_eq!(
            cluster_primaries(nodes),
            vec![
                ("127.0.0.1".to_string(), 7100),
                ("127.0.0.1".to_string(), 7101)
            ]
        );
    }
}
