//! Opening the connection: URL checks, then either the bounded-retry
//! `ConnectionManager` of one server or the cluster client of a Redis Cluster (sending
//! requests again as `cluster.rs` says), and TLS set-up.
//! [`RedisStorage::connect_with`](crate::RedisStorage::connect_with) calls [`open`] and
//! wraps what it returns.

use std::sync::Arc;
use std::time::Duration;

use fusion_core::{Error, Result, redact_url};
use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;

use crate::cluster::{Cluster, Direct};
use crate::config::{RETRY_MAX_DELAY, RETRY_MIN_DELAY, RedisOptions};
use crate::connection::Connection;
use crate::error::{Op, no_connection, parse_redis_error};
use crate::{settings, url_query};

/// The port a node of a cluster URL without one listens on.
const DEFAULT_PORT: u16 = 6379;

/// A live connection to the server or cluster and its URL with the password hidden.
pub(crate) struct Opened {
    /// The connection every clone of the storage shares.
    pub(crate) conn: Connection,
    /// The one its reads go on: a second connection to one server, a second cluster
    /// client (one more connection to each node) to a cluster, since a server reads
    /// nothing more from a connection whose write `CLIENT PAUSE WRITE` holds (a
    /// failover), so reads behind it would wait as long.
    pub(crate) reads: Connection,
    /// The URL for messages and `Debug`, password replaced by `***`.
    pub(crate) redacted_url: String,
    /// The server, or each seed node of a cluster: where a subscription to the changes
    /// channel connects (a cluster forwards every `PUBLISH` to every node).
    pub(crate) subscribe_to: Vec<redis::Client>,
    /// The longest value the server (every primary of a cluster) takes as one (its
    /// `proto-max-bulk-len`, a cluster's smallest), where the user may read it.
    pub(crate) max_value: Option<usize>,
    /// Whether the read scripts go as `EVALSHA_RO` from the start: not on a server older
    /// than Redis 7, which lacks it (tried a minute later all the same, the server maybe
    /// upgraded). Where the version is unknown (a cluster, a user who may not send
    /// `HELLO`) a refusal turns it off for a minute (`storage/read_only.rs`).
    pub(crate) read_only_scripts: bool,
    /// The options with the URL's own parameters (`key_prefix`, `publish_changes`)
    /// applied.
    pub(crate) options: RedisOptions,
}

/// Checks `url` and `options`, then connects.
///
/// Fails with [`Error::Config`] for a bad URL (a query parameter neither Fusion nor the
/// driver reads among them; see `crate::url_query`), prefix or TTL, with
/// [`Error::FeatureDisabled`] for `rediss://` without the `tls` feature, and with a
/// retryable [`Error::Backend`] when the server (or every seed node of a cluster) cannot
/// be reached within roughly `(reconnect_retries + 1) × connect_timeout` plus the
/// backoff.
pub(crate) async fn open(url: &str, options: RedisOptions) -> Result<Opened> {
    let redacted = redact_url(url);
    let cluster = check_scheme(url, &redacted)?;
    let (driver_url, options) = url_query::apply(url, options)?;
    let url = driver_url.as_str();
    options.check()?;
    // The redis crate's URL errors are fixed strings, so quoting them leaks nothing.
    let invalid =
        |err: redis::RedisError| Error::Config(format!("invalid Redis URL {redacted}: {err}"));
    let nodes = if cluster {
        cluster_nodes(url, &redacted)?
    } else {
        vec![url.to_string()]
    };
    let subscribe_to = nodes
        .iter()
        .map(|node| redis::Client::open(node.as_str()))
        .collect::<redis::RedisResult<Vec<_>>>()
        .map_err(invalid)?;
    let connecting: BoxFuture<'_, redis::RedisResult<(Connection, Connection)>> = if cluster {
        let client = cluster_client(nodes, &redacted, &options)?;
        let retries = options.reconnect_retries;
        let direct = Direct::new(
            &subscribe_to[0],
            options.connect_timeout,
            response_timeout(&options),
        );
        Box::pin(async move {
            let (conn, reads) = futures::future::try_join(
                client.get_async_connection(),
                client.get_async_connection(),
            )
            .await?;
            let direct = Arc::new(direct);
            let cluster =
                |conn| Connection::Cluster(Cluster::new(conn, Arc::clone(&direct), retries));
            Ok((cluster(conn), cluster(reads)))
        })
    } else {
        let client = subscribe_to[0].clone();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(response_timeout(&options)))
            .set_number_of_retries(options.reconnect_retries)
            .set_min_delay(RETRY_MIN_DELAY)
            .set_max_delay(RETRY_MAX_DELAY);
        Box::pin(async move {
            let manager = || ConnectionManager::new_with_config(client.clone(), config.clone());
            let (conn, reads) = futures::future::try_join(manager(), manager()).await?;
            Ok((Connection::Single(conn), Connection::Single(reads)))
        })
    };
    #[cfg(feature = "tls")]
    install_crypto_provider();

    // The manager and the cluster client bound each attempt and the number of attempts;
    // this outer limit is a backstop in case a future driver version retries differently.
    let attempts = u32::try_from(options.reconnect_retries).unwrap_or(u32::MAX);
    let budget = (options.connect_timeout + 2 * RETRY_MAX_DELAY) * attempts.saturating_add(1);
    let op = Op::new("connect", &redacted, None);
    let (conn, reads) = match tokio::time::timeout(budget, connecting).await {
        Ok(Ok(conns)) => conns,
        Ok(Err(err)) => return Err(parse_redis_error(err, op)),
        Err(_elapsed) => return Err(no_connection(op, budget)),
    };
    let probed = match probe(conn.clone(), &redacted, response_timeout(&options)).await {
        Ok(probed) => probed,
        Err(err) => return Err(parse_redis_error(err, op)),
    };
    tracing::debug!(url = %redacted, prefix = %options.key_prefix, cluster = conn.is_cluster(), "connected to Redis");
    Ok(Opened {
        conn,
        reads,
        redacted_url: redacted,
        subscribe_to,
        max_value: probed.max_value,
        read_only_scripts: probed.major_version.is_none_or(|major| major >= 7),
        options,
    })
}

/// What [`probe`] learnt of the server or cluster.
#[derive(Debug, Default)]
struct Probed {
    /// The longest value it takes (`proto-max-bulk-len`; a cluster's primaries', the
    /// smallest), if the user may read it.
    max_value: Option<usize>,
    /// Its major version, from `HELLO`, if it answered (one server only).
    major_version: Option<u32>,
}

/// Fails if one server wants a password the URL does not give (`NOAUTH` to a `PING`);
/// else returns the longest value the server (every primary of a cluster) takes, if the
/// user may read it, and one server's version.
///
/// Opening a connection sends no command that needs a password, so without the `PING`
/// `connect` succeeds and the first call fails instead: a write with a protocol error, as
/// Redis 7 drops a client that sends a large command before authenticating, and the reads
/// after it with a dropped connection, which looks retryable. Any other refusal
/// (`LOADING`, `MISCONF`, a user not allowed `PING`) is the calls' to meet, and the
/// server is read all the same; a cluster client already fails to read the slot map
/// without the password.
///
/// The longest value (`proto-max-bulk-len`) lets a write refuse a message over it before
/// sending it: the server answers one with an error and closes the connection while the
/// client is still sending, which the client may see as a reset connection (retryable,
/// wrongly) instead of the refusal. A cluster's is the smallest of its primaries' (see
/// `settings.rs`). Managed services often refuse `CONFIG`: then the server's refusal is
/// all there is. The same read warns about an evicting `maxmemory-policy`.
///
/// The version (`HELLO` without arguments, which changes nothing) says whether the read
/// scripts may go as `EVALSHA_RO` (Redis 7), which `CLIENT PAUSE WRITE` does not hold,
/// where it holds every `EVALSHA`. The configuration is read for at most `limit`.
async fn probe(conn: Connection, redacted: &str, limit: Duration) -> redis::RedisResult<Probed> {
    let mut major_version = None;
    if let Connection::Single(mut server) = conn.clone() {
        match redis::cmd("PING")
            .query_async::<redis::Value>(&mut server)
            .await
        {
            Err(err) if err.code() == Some("NOAUTH") => return Err(err),
            // No reply at all: nor would `HELLO` or `CONFIG GET` get one.
            Err(err) if err.code().is_none() => return Ok(Probed::default()),
            // A refusal (`LOADING`, `MISCONF`, a user not allowed `PING`): the server
            // still answers `HELLO` and `CONFIG GET`, and its limit holds once it takes
            // writes again.
            Err(_) | Ok(_) => {}
        }
        major_version = redis::cmd("HELLO")
            .query_async(&mut server)
            .await
            .ok()
            .and_then(major_version_of);
    }
    // Nothing read is no failure: the writes meet the servers' own refusals instead. No
    // longer than a reply may take: a cluster sends it again while a primary is out of
    // reach.
    let reading = settings::read(&conn, &settings::AT_CONNECT);
    let nodes = match tokio::time::timeout(limit, reading).await {
        Ok(Ok(nodes)) => nodes,
        Ok(Err(_)) | Err(_) => Vec::new(),
    };
    settings::warn_if_evicting(&nodes, redacted);
    Ok(Probed {
        max_value: settings::smallest_limit(&nodes),
        major_version,
    })
}

/// The major version in a `HELLO` reply: a map (RESP3) or its pairs in a row (RESP2),
/// whose `version` is `7.0.15`, say.
fn major_version_of(hello: redis::Value) -> Option<u32> {
    let fields: Vec<(String, redis::Value)> = match hello {
        redis::Value::Map(pairs) => redis::from_redis_value(redis::Value::Map(pairs)).ok()?,
        flat => {
            let items: Vec<redis::Value> = redis::from_redis_value(flat).ok()?;
            let mut items = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(key), Some(value)) = (items.next(), items.next()) {
                pairs.push((redis::from_redis_value(key).ok()?, value));
            }
            pairs
        }
    };
    let (_, version) = fields.into_iter().find(|(key, _)| key == "version")?;
    let version: String = redis::from_redis_value(version).ok()?;
    version.split('.').next()?.parse().ok()
}

/// The client of the cluster whose seed nodes' URLs are `nodes`, with the options'
/// timeouts and no retries: its one budget covers every kind, a request whose connection
/// dropped (and which may have been applied) included, so `cluster.rs` sends requests
/// again itself, a write only when it was not applied.
fn cluster_client(
    nodes: Vec<String>,
    redacted: &str,
    options: &RedisOptions,
) -> Result<ClusterClient> {
    ClusterClient::builder(nodes)
        .connection_timeout(options.connect_timeout)
        .response_timeout(response_timeout(options))
        .retries(0)
        .min_retry_wait(millis(RETRY_MIN_DELAY))
        .max_retry_wait(millis(RETRY_MAX_DELAY))
        .build()
        .map_err(|err| Error::Config(format!("invalid Redis Cluster URL {redacted}: {err}")))
}

/// How long a reply may take: the configured response timeout, plus the replicas'
/// `WAIT` when writes wait for them, so a `WAIT` that runs out reports how many replicas
/// it got instead of being cut off as a timeout.
fn response_timeout(options: &RedisOptions) -> Duration {
    let waiting = options
        .replica_acks
        .map_or(Duration::ZERO, |acks| acks.timeout);
    options.response_timeout.saturating_add(waiting)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The seed nodes of a `redis+cluster://` or `rediss+cluster://` URL, as one `redis://`
/// (or `rediss://`) URL each carrying the credentials, the driver's query parameters and
/// any `#insecure`; `None` for any other URL. Fusion's own parameters (`key_prefix`,
/// `publish_changes`) are left out: the redis crate does not read them.
///
/// For tools that talk to the same cluster with the redis crate directly. Fails with
/// [`Error::Config`] (password hidden) for an empty node, a database other than 0, or a
/// query parameter that neither Fusion nor the driver reads, as connecting would.
///
/// ```
/// let nodes = fusion_storage_redis::cluster_node_urls("redis+cluster://:pw@h1:7000,h2")?;
/// assert_eq!(nodes, Some(vec!["redis://:pw@h1:7000".into(), "redis://:pw@h2:6379".into()]));
/// assert_eq!(fusion_storage_redis::cluster_node_urls("redis://h1:6379")?, None);
/// # Ok::<(), fusion_core::Error>(())
/// ```
pub fn cluster_node_urls(url: &str) -> Result<Option<Vec<String>>> {
    if !names_a_cluster(url) {
        return Ok(None);
    }
    let driver_url = url_query::split(url)?.driver_url;
    cluster_nodes(&driver_url, &redact_url(url)).map(Some)
}

/// Whether `url` (or its redacted form) names a Redis Cluster: its scheme, in any case
/// as [`check_scheme`] reads it, is `redis+cluster` or `rediss+cluster`.
pub(crate) fn names_a_cluster(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| scheme.to_ascii_lowercase().ends_with("+cluster"))
}

/// The seed nodes of `redis+cluster://[user[:password]@]host[:port],host[:port]...[/0][?query][#fragment]`
/// as one `redis://` (or `rediss://`) URL each, every one with the credentials, query and
/// fragment (`#insecure`).
///
/// A cluster has only database 0, so any other database number is refused rather than
/// silently ignored.
fn cluster_nodes(url: &str, redacted: &str) -> Result<Vec<String>> {
    let bad = |what: &str| Error::Config(format!("invalid Redis Cluster URL {redacted}: {what}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no `://`"))?;
    let node_scheme = scheme
        .to_ascii_lowercase()
        .strip_suffix("+cluster")
        .map(str::to_string)
        .ok_or_else(|| bad("not a +cluster scheme"))?;
    // The fragment goes first: it follows the query, and `#insecure` may come without one.
    let (rest, fragment) = rest.split_once('#').map_or((rest, ""), |(r, f)| (r, f));
    let (rest, query) = rest.split_once('?').map_or((rest, ""), |(r, q)| (r, q));
    // Credentials holding a `/`, `?` or `#` as it is were refused before (`url_query`).
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !matches!(path, "" | "0") {
        return Err(bad(
            "a Redis Cluster has only database 0; drop the database number",
        ));
    }
    let (credentials, hosts) = authority
        .rsplit_once('@')
        .map_or(("", authority), |(user, hosts)| (user, hosts));
    let credentials = if credentials.is_empty() {
        String::new()
    } else {
        format!("{credentials}@")
    };
    let mut query = if query.is_empty() {
        String::new()
    } else {
        format!("/?{query}")
    };
    if !fragment.is_empty() {
        query.push('#');
        query.push_str(fragment);
    }
    hosts
        .split(',')
        .map(|node| {
            if node.is_empty() {
                return Err(bad(
                    "an empty node in the list; separate host:port pairs with single commas",
                ));
            }
            // `[::1]` has colons of its own; a port follows the closing bracket.
            let has_port = match node.rfind(']') {
                Some(close) => node[close..].contains(':'),
                None => node.contains(':'),
            };
            let node = if has_port {
                node.to_string()
            } else {
                format!("{node}:{DEFAULT_PORT}")
            };
            Ok(format!("{node_scheme}://{credentials}{node}{query}"))
        })
        .collect()
}

/// Checks the scheme; returns whether it names a cluster.
fn check_scheme(url: &str, redacted: &str) -> Result<bool> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let (tls, cluster) = match scheme.as_deref() {
        Some("redis") => (false, false),
        Some("rediss") => (true, false),
        Some("redis+cluster") => (false, true),
        Some("rediss+cluster") => (true, true),
        _ => {
            return Err(Error::Config(format!(
                "unsupported Redis URL {redacted}: use redis://[user[:password]@]host[:port][/db], \
                 redis+cluster://[user[:password]@]host:port,host:port,... for a Redis Cluster, \
                 or rediss:// / rediss+cluster:// for TLS"
            )));
        }
    };
    if tls && !cfg!(feature = "tls") {
        return Err(Error::FeatureDisabled {
            what: format!(
                "TLS to Redis ({redacted}; the `tls` feature of fusion-storage-redis when used directly)"
            ),
            feature: "redis-tls",
        });
    }
    Ok(cluster)
}

/// rustls needs one process-wide crypto provider; install ring's unless the application
/// already chose one, so `rediss://` works without the caller knowing about rustls.
#[cfg(feature = "tls")]
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race against another installer is fine: any provider will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_major_version_is_read_from_either_protocol() {
        use redis::Value;
        let text = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let resp2 = Value::Array(vec![
            text("server"),
            text("redis"),
            text("version"),
            text("7.0.15"),
            text("proto"),
            Value::Int(2),
        ]);
        assert_eq!(major_version_of(resp2), Some(7));
        let resp3 = Value::Map(vec![
            (text("server"), text("redis")),
            (text("version"), text("6.2.14")),
        ]);
        assert_eq!(major_version_of(resp3), Some(6));
        assert_eq!(major_version_of(Value::Array(vec![text("server")])), None);
        assert_eq!(major_version_of(Value::Nil), None);
    }

    #[test]
    fn redact_url_hides_passwords() {
        let cases = [
            (
                "redis://user:s3cret@host:6379/2",
                "redis://user:***@host:6379/2",
            ),
            ("redis://:s3cret@host", "redis://:***@host"),
            ("redis://host:6379", "redis://host:6379"),
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("rediss://tok@host/0", "rediss://***@host/0"),
            ("redis://:pa/ss@host:6379/0", "redis://:***@host:6379/0"),
            ("redis://:p@ss@host", "redis://:***@host"),
            (
                "redis+unix:///tmp/r.sock?db=1&pass=s3cret",
                "redis+unix:///tmp/r.sock?db=1&pass=***",
            ),
            ("user:s3cret@host", "user:***@host"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
            assert!(!redact_url(url).contains("s3cret"), "{url}");
        }
    }

    #[test]
    fn unknown_schemes_are_refused_without_leaking_the_password() {
        let err = check_scheme("http://:hunter2@h", &redact_url("http://:hunter2@h")).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn rediss_without_tls_names_the_feature() {
        let url = "rediss://:hunter2@h:6380";
        let err = check_scheme(url, &redact_url(url)).unwrap_err();
        let shown = err.to_string();
        assert!(
            matches!(
                err,
                Error::FeatureDisabled {
                    feature: "redis-tls",
                    ..
                }
            ),
            "{shown}"
        );
        assert!(
            shown.contains("`tls` feature of fusion-storage-redis"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn cluster_urls_give_one_node_url_each_with_credentials_and_query() {
        let url = "redis+cluster://app:s3cret@10.0.0.1:7000,node-b,[::1]:7002/0?protocol=resp3";
        assert_eq!(
            cluster_nodes(url, "x").unwrap(),
            [
                "redis://app:s3cret@10.0.0.1:7000/?protocol=resp3",
                "redis://app:s3cret@node-b:6379/?protocol=resp3",
                "redis://app:s3cret@[::1]:7002/?protocol=resp3",
            ]
        );
        assert_eq!(
            cluster_nodes("REDIS+CLUSTER://h1:1,h2:2", "x").unwrap(),
            ["redis://h1:1", "redis://h2:2"]
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://:pw@[::1]", "x").unwrap(),
            ["rediss://:pw@[::1]:6379"]
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://h1,h2:7001?protocol=3#insecure", "x").unwrap(),
            [
                "rediss://h1:6379/?protocol=3#insecure",
                "rediss://h2:7001/?protocol=3#insecure"
            ]
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://h1,h2:7001#insecure", "x").unwrap(),
            ["rediss://h1:6379#insecure", "rediss://h2:7001#insecure"]
        );
        assert!(check_scheme("redis+cluster://h:1", "redis+cluster://h:1").unwrap());
        assert!(!check_scheme("redis://h:1", "redis://h:1").unwrap());
    }

    #[test]
    fn bad_cluster_urls_are_refused_without_leaking_the_password() {
        for url in [
            "redis+cluster://:hunter2@h1:7000,,h2:7001",
            "redis+cluster://:hunter2@h1:7000/1",
            "redis+cluster://:hunter2@",
        ] {
            let err = cluster_nodes(url, &redact_url(url)).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{url}: {err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    /// Found by a review: a password holding a `/` written as it is was refused with "a
    /// Redis Cluster has only database 0; drop the database number", the rest of the
    /// password read as the path. The error says what to do about the `/`.
    #[test]
    fn a_password_with_a_slash_is_refused_naming_the_slash() {
        let url = "redis+cluster://:hun/ter2@h1:7000,h2:7001";
        let shown = cluster_node_urls(url).unwrap_err().to_string();
        assert!(shown.contains("percent-encode it as %2F"), "{shown}");
        assert!(!shown.contains("database"), "{shown}");
        assert!(!shown.contains("hun") && !shown.contains("ter2"), "{shown}");
        let encoded = "redis+cluster://:hun%2Fter2@h1:7000";
        let nodes = cluster_nodes(encoded, &redact_url(encoded)).unwrap();
        assert_eq!(nodes, ["redis://:hun%2Fter2@h1:7000"]);
    }

    #[cfg(feature = "tls")]
    #[test]
    fn rediss_with_tls_is_accepted() {
        check_scheme("rediss://h:6380", "rediss://h:6380").unwrap();
    }
}
