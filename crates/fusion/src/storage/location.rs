//! [`StorageLocation`]: what a storage URL opens, so two spellings of one storage compare
//! equal.
//!
//! URL text is a poor identity: `./d` and `/home/me/d`, or `sqlite:///x.db` and
//! `sqlite:/x.db`, name the same data. A command that must never read and write one
//! storage as if it were two (`fusion migrate`) compares these values instead. Working
//! this out touches the file system (to canonicalize paths) but never opens a database
//! or connects to a server.

use std::fmt;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use fusion_core::{Error, Result, percent_decode, redact_url, url_param, url_query};

/// The key prefix a Redis storage uses when its URL names none (the Redis backend's
/// `DEFAULT_KEY_PREFIX`).
pub(crate) const DEFAULT_REDIS_KEY_PREFIX: &str = "fusion";
/// The port a Redis URL without one connects to, with or without TLS.
const DEFAULT_REDIS_PORT: u16 = 6379;
/// The query parameter of a Redis URL that picks the key prefix.
pub(crate) const KEY_PREFIX_PARAM: &str = "key_prefix";
/// The schema a PostgreSQL storage uses when its URL names none (`PostgresOptions::new`).
const DEFAULT_POSTGRES_SCHEMA: &str = "fusion";
/// The port a PostgreSQL URL without one connects to.
const DEFAULT_POSTGRES_PORT: u16 = 5432;
/// The query parameter of a PostgreSQL URL that picks the schema (read by the backend
/// itself, `PostgresOptions::new`).
const SCHEMA_PARAM: &str = "schema";

/// Where a storage keeps its sessions, in a form where equal means "the same data".
///
/// Returned by [`StorageType::location`](super::StorageType::location). Paths are
/// canonical (symlinks, `.` and `..` resolved, relative paths made absolute). Server hosts
/// are names lower-cased or IP addresses in canonical form, with the default port and
/// database filled in, and every loopback spelling (`localhost`, `127.0.0.1`, `::1`,
/// `0.0.0.0`) is `localhost`: two loopback addresses compare as one server even when
/// two servers are bound to them, so that a command refusing to treat one storage as two
/// refuses then too. Other names of one host are not unified (that would need a DNS
/// lookup). A store that every open
/// creates afresh (`sqlite::memory:`) has no location at all.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageLocation {
    /// The process-wide in-memory store that every `memory://` of one process opens.
    ProcessMemory,
    /// The directory of a file-system storage.
    Directory(PathBuf),
    /// The database file of a SQLite storage.
    SqliteFile(PathBuf),
    /// The keys under one prefix in one database of one Redis server.
    Redis {
        /// The server's host, as this type's docs say.
        host: String,
        /// The port, 6379 when the URL has none.
        port: u16,
        /// The database number, 0 when the URL has none.
        db: i64,
        /// The key prefix, `fusion` when the URL has no `key_prefix` parameter.
        key_prefix: String,
    },
    /// The keys under one prefix in one Redis Cluster, known by its seed nodes.
    ///
    /// Two cluster locations are the same data when they share a node and a prefix
    /// ([`same_data`](StorageLocation::same_data)): two seed lists of one cluster
    /// rarely list the same nodes.
    RedisCluster {
        /// The seed nodes, `host:port` with hosts as this type's docs say and port 6379
        /// filled in, sorted.
        nodes: Vec<String>,
        /// The key prefix, `fusion` when the URL has no `key_prefix` parameter.
        key_prefix: String,
    },
    /// The tables in one schema of one database of one PostgreSQL server.
    Postgres {
        /// The server's host, as this type's docs say: the URL's, or its `host` or
        /// `hostaddr` parameter's, which the driver connects to instead.
        host: String,
        /// The port, 5432 when the URL has none (a `port` parameter overrides it).
        port: u16,
        /// The database, as the URL or its `dbname` parameter names it (the user name when
        /// neither does, as the server's default is).
        database: String,
        /// The schema, `fusion` when the URL has no `schema` parameter.
        schema: String,
    },
}

impl fmt::Display for StorageLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageLocation::ProcessMemory => f.write_str("the process's in-memory store"),
            StorageLocation::Directory(dir) => write!(f, "directory {}", dir.display()),
            StorageLocation::SqliteFile(file) => write!(f, "SQLite file {}", file.display()),
            StorageLocation::Redis {
                host,
                port,
                db,
                key_prefix,
            } => write!(
                f,
                "Redis {host}:{port} database {db}, key prefix {key_prefix}"
            ),
            StorageLocation::RedisCluster { nodes, key_prefix } => write!(
                f,
                "Redis Cluster {}, key prefix {key_prefix}",
                nodes.join(",")
            ),
            StorageLocation::Postgres {
                host,
                port,
                database,
                schema,
            } => write!(
                f,
                "PostgreSQL {host}:{port} database {database}, schema {schema}"
            ),
        }
    }
}

/// The location of a file-system storage in `dir`.
pub(crate) fn directory(dir: &Path) -> StorageLocation {
    StorageLocation::Directory(canonical(dir))
}

/// The location of a SQLite URL, read the way the SQLite backend reads it: `sqlite://PATH`
/// or `sqlite:PATH`, percent-decoded, with an optional `?query`. `None` for an in-memory
/// database, which every open creates anew.
pub(crate) fn sqlite(url: &str) -> Result<Option<StorageLocation>> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| Error::Config(format!("not a SQLite URL: {}", redact_url(url))))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let in_memory_mode = query.split('&').any(|pair| pair == "mode=memory");
    if path == ":memory:" || in_memory_mode {
        return Ok(None);
    }
    if path.is_empty() {
        return Err(Error::Config(
            "SQLite URL has no database path; use sqlite://PATH or sqlite::memory:".into(),
        ));
    }
    let path = percent_decode(path)
        .ok_or_else(|| Error::Config(format!("SQLite path {path} is not valid UTF-8")))?;
    Ok(Some(StorageLocation::SqliteFile(canonical(Path::new(
        &path,
    )))))
}

impl StorageLocation {
    /// Whether `self` and `other` hold the same data: equal, or two Redis Cluster
    /// locations with one prefix whose seed lists share a node.
    pub fn same_data(&self, other: &StorageLocation) -> bool {
        match (self, other) {
            (
                StorageLocation::RedisCluster { nodes, key_prefix },
                StorageLocation::RedisCluster {
                    nodes: theirs,
                    key_prefix: their_prefix,
                },
            ) => key_prefix == their_prefix && nodes.iter().any(|node| theirs.contains(node)),
            _ => self == other,
        }
    }
}

/// The location of a `redis://`, `rediss://` URL (host, port, database and key prefix)
/// or a `redis+cluster://` one (seed nodes and key prefix).
pub(crate) fn redis(url: &str) -> Result<StorageLocation> {
    let bad = bad_url("Redis", url);
    let key_prefix = url_param(url, KEY_PREFIX_PARAM).unwrap_or(DEFAULT_REDIS_KEY_PREFIX);
    if let Some((_scheme, rest)) = url
        .split_once("://")
        .filter(|(scheme, _)| scheme.to_ascii_lowercase().ends_with("+cluster"))
    {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let hosts = authority
            .rsplit_once('@')
            .map_or(authority, |(_, hosts)| hosts);
        let mut nodes = hosts
            .split(',')
            .map(|node| {
                let node_url = format!("redis://{node}");
                let server = Server::parse(&node_url, DEFAULT_REDIS_PORT, &bad)?;
                Ok(format!("{}:{}", server.host, server.port))
            })
            .collect::<Result<Vec<_>>>()?;
        nodes.sort();
        nodes.dedup();
        return Ok(StorageLocation::RedisCluster {
            nodes,
            key_prefix: key_prefix.to_string(),
        });
    }
    let server = Server::parse(url, DEFAULT_REDIS_PORT, &bad)?;
    let db = match server.path.trim_matches('/') {
        "" => 0,
        db => db.parse().map_err(|_| bad("invalid database number"))?,
    };
    Ok(StorageLocation::Redis {
        host: server.host,
        port: server.port,
        db,
        key_prefix: key_prefix.to_string(),
    })
}

/// The location of a `postgres://` or `postgresql://` URL: host, port, database and
/// schema. The driver's `host`, `hostaddr`, `port`, `dbname` and `user` query parameters
/// override the URL's own parts, the last one given winning, as sqlx reads them. A URL
/// must name a host, in its authority or a parameter.
pub(crate) fn postgres(url: &str) -> Result<StorageLocation> {
    let bad = bad_url("PostgreSQL", url);
    let mut server = Server::parse_any_host(url, DEFAULT_POSTGRES_PORT, &bad)?;
    let mut database = match server.path.trim_matches('/') {
        "" => None,
        database => Some(percent_decode(database).ok_or_else(|| bad("invalid database name"))?),
    };
    for (key, value) in query_pairs(url) {
        match key.as_ref() {
            // A path is a Unix socket's directory, whose case matters.
            "host" if value.starts_with('/') => server.host = value.into_owned(),
            "host" | "hostaddr" => server.host = host(&value),
            "port" => server.port = value.parse().map_err(|_| bad("invalid port"))?,
            "dbname" => database = Some(value.into_owned()),
            "user" => server.user = Some(value.into_owned()),
            _ => {}
        }
    }
    if server.host.is_empty() {
        return Err(bad("no host"));
    }
    let database = database.or(server.user).unwrap_or_default();
    if database.is_empty() {
        return Err(bad(
            "no database (and no user, whose name would be the default)",
        ));
    }
    let schema = url_param(url, SCHEMA_PARAM).unwrap_or(DEFAULT_POSTGRES_SCHEMA);
    Ok(StorageLocation::Postgres {
        host: server.host,
        port: server.port,
        database,
        schema: schema.to_string(),
    })
}

/// `Error::Config` for an invalid `kind` URL, naming it with its password hidden.
fn bad_url(kind: &'static str, url: &str) -> impl Fn(&str) -> Error {
    let redacted = redact_url(url);
    move |what: &str| Error::Config(format!("invalid {kind} URL {redacted}: {what}"))
}

/// The parts of a `scheme://[user[:password]@]host[:port][/path][?query]` URL that say
/// which server and which data on it.
struct Server<'a> {
    host: String,
    port: u16,
    user: Option<String>,
    path: &'a str,
}

impl<'a> Server<'a> {
    /// The server `url` names; fails when it names no host.
    fn parse(url: &'a str, default_port: u16, bad: &impl Fn(&str) -> Error) -> Result<Self> {
        let server = Self::parse_any_host(url, default_port, bad)?;
        if server.host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(server)
    }

    /// As [`parse`](Self::parse), with an empty host when the URL's authority has none
    /// (for a driver that reads the host from a query parameter).
    fn parse_any_host(
        url: &'a str,
        default_port: u16,
        bad: &impl Fn(&str) -> Error,
    ) -> Result<Self> {
        let (_scheme, rest) = url.split_once("://").ok_or_else(|| bad("no `://`"))?;
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let before_query = rest.split_once('?').map_or(rest, |(before, _)| before);
        let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
        // Credentials do not change which data is reached; the user name only names the
        // default PostgreSQL database.
        let (user_info, host_port) = authority
            .rsplit_once('@')
            .map_or((None, authority), |(user, after)| (Some(user), after));
        let user = user_info
            .map(|info| info.split(':').next().unwrap_or_default())
            .filter(|user| !user.is_empty())
            .and_then(percent_decode);
        let (host, port) = match host_port.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
                (host, after.strip_prefix(':'))
            }
            None => match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        let port = match port {
            None | Some("") => default_port,
            Some(port) => port.parse().map_err(|_| bad("invalid port"))?,
        };
        Ok(Server {
            host: self::host(host),
            port,
            user,
            path,
        })
    }
}

/// A server's host as locations compare it: a name lower-cased without a trailing dot, an
/// IP address in its canonical form, and every loopback spelling (`localhost`,
/// `*.localhost`, `127.0.0.0/8`, `::1`, and `0.0.0.0` or `::`, which reach this machine
/// too) as `localhost`. Telling other names of one host apart would need a DNS lookup.
///
/// Two loopback addresses could reach two different servers bound to each; they still
/// compare as one, so that a command which refuses to read and write one storage as two
/// refuses then too, rather than miss `localhost` and `127.0.0.1` naming one server.
pub(crate) fn host(host: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let literal = host.strip_prefix('[').and_then(|v6| v6.strip_suffix(']'));
    let loopback = "localhost".to_string();
    match literal.unwrap_or(&host).parse::<IpAddr>() {
        Ok(ip) => {
            let ip = ip.to_canonical();
            if ip.is_loopback() || ip.is_unspecified() {
                loopback
            } else {
                ip.to_string()
            }
        }
        Err(_) if host == "localhost" || host.ends_with(".localhost") => loopback,
        Err(_) => host,
    }
}

/// The `key=value` pairs of `url`'s query, decoded as the `url` crate decodes them for
/// sqlx (`%XX` escapes, and `+` as a space, in keys and values).
fn query_pairs(url: &str) -> url::form_urlencoded::Parse<'_> {
    url::form_urlencoded::parse(url_query(url).unwrap_or_default().as_bytes())
}

/// `path` made absolute with symlinks, `.` and `..` resolved, even when it does not
/// exist yet: the nearest existing ancestor is canonicalized and the rest joined to it
/// (a missing directory cannot be a symlink, so `..` after it is resolved by name).
fn canonical(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let components: Vec<Component<'_>> = absolute.components().collect();
    for existing in (1..=components.len()).rev() {
        let head: PathBuf = components[..existing].iter().collect();
        let Ok(mut resolved) = head.canonicalize() else {
            continue;
        };
        for component in &components[existing..] {
            match component {
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => resolved.push(name),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
        return resolved;
    }
    absolute
}
