//! Removing a run's Redis keys: every key under one prefix, by `SCAN` + `DEL`. Shared by
//! the benchmark runner and the stress checker (`fusion-stress`), which both store each
//! run under a prefix of its own on a server other data may live on.

use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Deletes every key of the Redis server at `url` that starts with `{prefix}:`, and returns
/// how many went. Refuses a prefix holding a glob character, which would make the `MATCH`
/// pattern reach other keys; connecting is given 5 s.
pub async fn delete_under_prefix(url: &str, prefix: &str) -> Result<usize> {
    if prefix.contains(['*', '?', '[', ']', '\\']) {
        bail!("refusing to SCAN with a glob character in prefix {prefix}");
    }
    let client = redis::Client::open(url)?;
    let connect = client.get_multiplexed_async_connection();
    let mut conn = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .context("connecting to Redis timed out")??;
    let pattern = format!("{prefix}:*");
    let (mut cursor, mut deleted) = (0u64, 0usize);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let n: usize = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}
