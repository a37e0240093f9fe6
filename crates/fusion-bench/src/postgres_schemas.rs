//! Removing a run's PostgreSQL schemas: every schema whose name starts with one prefix.
//! Shared by the benchmark runner and the stress checker (`fusion-stress`), which both
//! store each run in schemas of its own on a server other data may live on, as
//! [`redis_keys`](crate::redis_keys) does for Redis.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use sqlx::{Connection, PgConnection};

/// Drops every schema of the server at `url` whose name starts with `{prefix}_`, with
/// what it holds, and returns how many went. Refuses a prefix that is not a plain
/// lower-case identifier (`[a-z0-9_]`), which is all the names are made of: the names are
/// spliced into `DROP SCHEMA`. Connecting is given 5 s.
pub async fn drop_under_prefix(url: &str, prefix: &str) -> Result<usize> {
    let plain = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if !plain(prefix) {
        bail!("refusing to drop schemas under prefix {prefix:?}: not [a-z0-9_]");
    }
    let mut conn = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(url))
        .await
        .context("connecting to PostgreSQL timed out")??;
    let schemas: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(format!("{prefix}_"))
            .fetch_all(&mut conn)
            .await?;
    // `starts_with` matched the plain prefix, but the rest of a name is whatever some other
    // program chose: leave alone a name that would need quoting.
    let schemas: Vec<String> = schemas.into_iter().filter(|name| plain(name)).collect();
    for schema in &schemas {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(schemas.len())
}
