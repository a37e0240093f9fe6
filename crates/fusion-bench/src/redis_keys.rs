//! Removing a run's Redis keys: every key under one prefix, by `SCAN` + `UNLINK`. Shared by
//! the benchmark runner and the stress checker (`fusion-stress`), which both store each
//! run under a prefix of its own on a server other data may live on.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use crate::redis_conn::{RedisConn, cluster_primaries};

/// Deletes every key of the Redis server (or cluster, for a `redis+cluster://` URL) at
/// `url` that starts with `{prefix}:`, and returns how many went. Refuses a prefix holding
/// a glob character, which would make the `MATCH` pattern reach other keys; connecting is
/// given 5 s.
pub async fn delete_under_prefix(url: &str, prefix: &str) -> Result<usize> {
    if prefix.contains(['*', '?', '[', ']', '\\']) {
        bail!("refusing to SCAN with a glob character in prefix {prefix}");
    }
    let mut conn = tokio::time::timeout(Duration::from_secs(5), RedisConn::connect(url))
        .await
        .context("connecting to Redis timed out")??;
    let pattern = format!("{prefix}:*");
    let RedisConn::Cluster(cluster) = &mut conn else {
        return scan_and_delete(&mut conn, None, &pattern).await;
    };
    // SCAN walks one node's keys, so a cluster is scanned primary by primary.
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(cluster)
        .await?;
    let mut deleted = 0;
    for (host, port) in cluster_primaries(&nodes) {
        let node = SingleNodeRoutingInfo::ByAddress { host, port };
        deleted += scan_and_delete(&mut conn, Some(node), &pattern).await?;
    }
    Ok(deleted)
}

/// `SCAN`s the keys matching `pattern` (on `node`, for a cluster) and unlinks them.
async fn scan_and_delete(
    conn: &mut RedisConn,
    node: Option<SingleNodeRoutingInfo>,
    pattern: &str,
) -> Result<usize> {
    let (mut cursor, mut deleted) = (0u64, 0usize);
    loop {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        let (next, keys): (u64, Vec<String>) = match (&mut *conn, &node) {
            (RedisConn::Cluster(cluster), Some(node)) => redis::from_redis_value(
                cluster
                    .route_command(scan, RoutingInfo::SingleNode(node.clone()))
                    .await?,
            )?,
            _ => scan.query_async(conn).await?,
        };
        if !keys.is_empty() {
            // UNLINK, not DEL: W6 leaves sorted sets of a million members, which DEL frees
            // inline for longer than the client waits for a reply; UNLINK frees them in
            // the background. On a cluster the driver splits a multi-key UNLINK by slot and
            // sums the counts.
            let n: usize = redis::cmd("UNLINK").arg(&keys).query_async(conn).await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}
