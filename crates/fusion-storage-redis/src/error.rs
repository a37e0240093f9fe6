//! The one place where `redis` errors become [`fusion_core::Error`]s.
//!
//! Every driver call in this crate funnels its error through [`parse_redis_error`], so
//! what counts as retryable and how the server is named is decided once. The server is
//! always named by its redacted URL; the driver's own messages never contain the URL.

use std::fmt;

use fusion_core::Error;
use redis::{ErrorKind, RedisError};

/// The backend name used in every error of this crate.
pub(crate) const BACKEND: &str = "redis";

/// What was being done when an error happened, for the message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op<'a> {
    /// The operation: `connect`, `append`, `load`, ...
    pub(crate) name: &'static str,
    /// The server's URL, password already redacted.
    pub(crate) url: &'a str,
    /// The session involved, if any.
    pub(crate) session_id: Option<&'a str>,
    /// The keys the command addressed, when known: a write touches the session's list
    /// and meta hash, and on one server the indexes of every session.
    pub(crate) keys: [Option<&'a str>; 4],
}

impl<'a> Op<'a> {
    /// An operation on `url`, optionally about one session.
    pub(crate) fn new(name: &'static str, url: &'a str, session_id: Option<&'a str>) -> Self {
        Self {
            name,
            url,
            session_id,
            keys: [None; 4],
        }
    }

    /// The same operation, naming the single key it addressed.
    pub(crate) fn on_key(self, key: &'a str) -> Self {
        self.on_keys(&[key])
    }

    /// The same operation, naming the keys it addressed (at most four are kept).
    pub(crate) fn on_keys(mut self, keys: &[&'a str]) -> Self {
        self.keys = [None; 4];
        for (slot, key) in self.keys.iter_mut().zip(keys) {
            *slot = Some(key);
        }
        self
    }

    /// Whether the operation ran on a Redis Cluster (its URL's scheme says so, in any
    /// case, as `connect` reads it).
    fn is_cluster(&self) -> bool {
        crate::connect::names_a_cluster(self.url)
    }

    fn describe_keys(&self) -> String {
        let keys: Vec<String> = self
            .keys
            .iter()
            .flatten()
            .map(|k| format!("`{k}`"))
            .collect();
        match keys.as_slice() {
            [] => "one of its keys".to_string(),
            [one] => format!("key {one}"),
            [init @ .., last] => format!("key {} or {last}", init.join(", ")),
        }
    }
}

impl fmt::Display for Op<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.session_id {
            Some(id) => write!(f, "{} of session \"{id}\" on {}", self.name, self.url),
            None => write!(f, "{} on {}", self.name, self.url),
        }
    }
}

/// The error of `op` when no connection was made within `waited`: retryable, since the
/// server may be up again on the next try.
pub(crate) fn no_connection(op: Op<'_>, waited: std::time::Duration) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!("{op}: no connection within {waited:?}; is the server up?"),
        retryable: true,
        source: None,
    }
}

/// Maps a driver error to a Fusion error, naming the server, operation and session.
///
/// Dropped, refused and timed-out connections, a server that is loading or failing over,
/// one short of the replicas its `min-replicas-to-write` asks for (`NOREPLICAS`), one
/// at its `maxclients` and one refusing writes until it can persist again (`MISCONF`: a
/// failed snapshot under `stop-writes-on-bgsave-error`, or its append-only file) are
/// retryable; a key of the wrong type, refused credentials and anything else
/// are not. A retryable write may or may not have been applied before the connection
/// broke, so retrying an `append` can store its messages twice.
pub(crate) fn parse_redis_error(err: RedisError, op: Op<'_>) -> Error {
    let (code, detail) = server_error(&err).unzip();
    let (message, retryable) = match code.as_deref() {
        Some("WRONGTYPE") => {
            let key = op.describe_keys();
            let detail = detail.flatten();
            let detail = detail.as_deref().unwrap_or("wrong kind of value");
            (
                format!(
                    "{op}: {key} holds a value of the wrong type ({detail}); something other \
                     than Fusion wrote under this key prefix: delete that key or use another prefix"
                ),
                false,
            )
        }
        Some("WRONGPASS") => (
            format!("{op}: the server refused the credentials in the URL ({err})"),
            false,
        ),
        Some("NOAUTH") => (
            format!(
                "{op}: the server requires a password, which the URL does not give: use \
                 redis://[user]:password@host ({err})"
            ),
            false,
        ),
        // Redis 7 drops a client that sends a large command before authenticating.
        _ if err.to_string().contains("Protocol error: unauthenticated") => (
            format!(
                "{op}: the server requires a password, which the URL does not give: use \
                 redis://[user]:password@host ({err})"
            ),
            false,
        ),
        // Not retryable: memory frees only when someone deletes, an operator raises the
        // limit, or keys expire; on one server a refused write script stored nothing.
        Some("OOM") => (
            format!(
                "{op}: the server is out of memory (used memory above `maxmemory`, with a \
                 `maxmemory-policy` that evicts nothing) and refused the command: delete \
                 sessions or raise `maxmemory` ({err})"
            ),
            false,
        ),
        // Retryable: the storage closes the connection (`storage/replica.rs`), and a
        // name that follows a failover (DNS, a proxy, a managed endpoint) reaches the new
        // primary from the next connection on. A URL naming a replica fails every time,
        // and says what to do. On a cluster it is a slot whose primary is failing over.
        Some("READONLY") if !op.is_cluster() => (
            format!(
                "{op}: the server answered as a read-only replica and refused the write; \
                 nothing was written, and the connection is opened anew (after a failover \
                 the URL may now reach the new primary); if the URL names a replica, point \
                 it at the primary ({err})"
            ),
            true,
        ),
        // Retryable: the server retries its save (every `save` point, and at once on
        // `BGSAVE`), and takes writes again as soon as one succeeds, which a disk filled
        // for a moment or a fork refused for lack of memory often lets it do. Retrying
        // is safe: it refuses a write script at its first write, so the command wrote
        // nothing. Not "nothing was written", as for `NOREPLICAS`: on a cluster the
        // refused command may be an index request after the session's write.
        // The same refusal when the server cannot write its append-only file (a disk
        // full, an fsync failed): `stop-writes-on-bgsave-error` plays no part, and it
        // writes the file again on its own, taking writes once that succeeds.
        Some("MISCONF") if detail.iter().flatten().any(|detail| detail.contains("AOF")) => (
            format!(
                "{op}: the server cannot write its append-only file (AOF) to disk and \
                 refuses writes until it can; it refused the command, which wrote nothing: \
                 retry once the file is written again, and if it keeps failing fix the \
                 server's disk ({err})"
            ),
            true,
        ),
        Some("MISCONF") => (
            format!(
                "{op}: the server cannot save its data to disk and refuses writes while \
                 `stop-writes-on-bgsave-error` is on; it refused the command, which wrote \
                 nothing: retry once a save succeeds, and if it keeps failing fix the \
                 server's disk or persistence settings ({err})"
            ),
            true,
        ),
        Some("NOPERM") => (
            format!("{op}: the Redis user lacks a permission this storage needs ({err})"),
            false,
        ),
        // The cluster client follows redirections itself; one that still reaches us
        // means the slots kept moving through all its tries.
        Some("MOVED" | "ASK") if op.is_cluster() => (
            format!("{op}: the cluster's slots are moving; retry shortly ({err})"),
            true,
        ),
        Some("MOVED" | "ASK" | "CROSSSLOT") => (
            format!(
                "{op}: the server is a Redis Cluster node; connect with a \
                 redis+cluster://host:port,host:port,... URL ({err})"
            ),
            false,
        ),
        // Retryable: replicas reconnect (a restart, a network blip) and the server takes
        // writes again; it refuses a write script at its first write, so the command
        // wrote nothing. Not "nothing was written": on a cluster the refused command may
        // be an index request after the session's write, which was stored
        // (`index::stored_before` says so).
        Some("NOREPLICAS") => (
            format!(
                "{op}: the server has fewer good replicas than its `min-replicas-to-write` \
                 asks and refused the command, which wrote nothing: retry once its replicas \
                 are back ({err})"
            ),
            true,
        ),
        // Retryable: the server refuses new connections while it is at `maxclients`, and
        // takes them again as other clients leave.
        _ if err.to_string().contains("max number of clients reached") => (
            format!(
                "{op}: the server is at its `maxclients` connections and refused this one; \
                 retry once clients leave, or raise `maxclients` ({err})"
            ),
            true,
        ),
        Some("LOADING" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "READONLY") => (
            format!("{op}: the server is temporarily unavailable ({err})"),
            true,
        ),
        _ if err.kind() == ErrorKind::ClusterConnectionNotFound => (
            format!(
                "{op}: no connection to the cluster node serving this key; the cluster may be \
                 failing over or moving its slot ({err})"
            ),
            true,
        ),
        _ if err.kind() == ErrorKind::AuthenticationFailed => {
            (format!("{op}: authentication failed ({err})"), false)
        }
        _ if err.is_timeout() => (
            format!("{op}: timed out waiting for the server ({err})"),
            true,
        ),
        _ if err.is_connection_refusal() => (
            format!("{op}: connection refused; is the Redis server running? ({err})"),
            true,
        ),
        _ if err.is_io_error() || err.is_connection_dropped() => (
            format!("{op}: connection to the server failed or was lost ({err})"),
            true,
        ),
        _ if is_value_too_long(&err) => (
            format!(
                "{op}: a message is larger than the server accepts as one value (its \
                 `proto-max-bulk-len`, 512 MB unless configured lower); nothing was written: \
                 raise that limit or store smaller messages ({err})"
            ),
            false,
        ),
        _ if err.kind() == ErrorKind::Parse => (
            format!(
                "{op}: the reply is not Redis protocol; is that port a Redis server, and does \
                 it need rediss:// (TLS)? ({err})"
            ),
            false,
        ),
        _ if err.kind() == ErrorKind::InvalidClientConfig => {
            return Error::Config(format!("{op}: {err}"));
        }
        _ => (format!("{op}: {err}"), false),
    };
    Error::backend(BACKEND, message, retryable, err)
}

/// Whether the server refused a command for a value longer than it takes as one (its
/// `proto-max-bulk-len`): the reply it sends before closing the connection, when the
/// client reads it before the close.
pub(crate) fn is_value_too_long(err: &RedisError) -> bool {
    err.to_string()
        .contains("Protocol error: invalid bulk length")
}

/// Whether the server refused a command for lack of memory (`OOM`, also from inside a
/// transaction): under `maxmemory-policy noeviction` it refuses every command queued in a
/// `MULTI`, reads included.
pub(crate) fn is_out_of_memory(err: &RedisError) -> bool {
    server_error(err).is_some_and(|(code, _)| code == "OOM")
}

/// The server's error code (`WRONGTYPE`, `LOADING`, ...) and detail, also from inside a
/// pipeline or transaction, where the first failing command's error counts (a `MULTI`
/// the server refused to queue is `EXECABORT`, with the reason in its commands' errors).
fn server_error(err: &RedisError) -> Option<(String, Option<String>)> {
    if let Some(code) = err.code().filter(|code| *code != "EXECABORT") {
        return Some((code.to_string(), err.detail().map(str::to_string)));
    }
    let errors = err.clone().into_server_errors()?;
    let (_, first) = errors.first()?;
    Some((
        first.code().to_string(),
        first.details().map(str::to_string),
    ))
}

/// An [`Error::Corrupt`] for a list element of `session_id` that is not a message.
pub(crate) fn corrupt_element(
    session_id: &str,
    key: &str,
    index: usize,
    err: &serde_json::Error,
) -> Error {
    Error::corrupt(
        BACKEND,
        session_id,
        format!("element {index} of list `{key}` is not a valid JSON message: {err}"),
    )
}

/// The error of a server's `-CODE detail` reply, as the redis crate makes it: for the
/// unit tests that classify server errors.
#[cfg(test)]
pub(crate) fn server_reply_error(reply: &str) -> redis::RedisError {
    redis::parse_redis_value(format!("-{reply}\r\n").as_bytes())
        .unwrap()
        .extract_error()
        .unwrap_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "redis://:***@h:6379";

    #[test]
    fn refused_connections_are_retryable_and_name_the_server() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err = parse_redis_error(RedisError::from(io), Op::new("append", URL, Some("s1")));
        assert!(err.is_retryable());
        let shown = err.to_string();
        assert!(shown.contains(URL) && shown.contains("\"s1\""), "{shown}");
    }

    #[test]
    fn timeouts_are_retryable() {
        let io = std::io::Error::from(std::io::ErrorKind::TimedOut);
        let err = parse_redis_error(RedisError::from(io), Op::new("load", URL, None));
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key_and_session() {
        let server = redis::make_extension_error(
            "WRONGTYPE".into(),
            Some("Operation against a key holding the wrong kind of value".into()),
        );
        let op = Op::new("load", URL, Some("s1")).on_key("fusion:s:{s1}");
        let err = parse_redis_error(server, op);
        assert!(!err.is_retryable());
        let shown = err.to_string();
        assert!(shown.contains("`fusion:s:{s1}`"), "{shown}");
        assert!(shown.contains("wrong type"), "{shown}");
    }

    #[test]
    fn redirections_are_retryable_on_a_cluster_and_a_misconfiguration_on_one_server() {
        let moved =
            || redis::make_extension_error("MOVED".into(), Some("3999 10.0.0.2:7001".into()));
        let single = parse_redis_error(moved(), Op::new("load", "redis://h:7000", Some("s1")));
        assert!(!single.is_retryable(), "{single}");
        assert!(single.to_string().contains("redis+cluster://"), "{single}");
        // `connect` reads the scheme in any case, and the URL keeps the case it was given.
        for url in [
            "redis+cluster://h:7000,h:7001",
            "Redis+Cluster://h:7000,h:7001",
        ] {
            let err = parse_redis_error(moved(), Op::new("load", url, Some("s1")));
            assert!(err.is_retryable(), "{url}: {err}");
            assert!(err.to_string().contains("slots are moving"), "{url}: {err}");
        }
    }

    /// The server's own words for states a deployment meets, as the driver parses them.
    fn reply(resp: &str) -> RedisError {
        match redis::parse_redis_value(resp.as_bytes()).unwrap() {
            redis::Value::ServerError(err) => err.into(),
            other => panic!("not an error reply: {other:?}"),
        }
    }

    #[test]
    fn server_states_that_last_are_not_retryable_and_say_what_to_do() {
        let single = || Op::new("append", URL, Some("s1"));
        for (resp, says) in [
            (
                "-OOM command not allowed when used memory > 'maxmemory'.\r\n",
                "out of memory",
            ),
            (
                "-NOAUTH Authentication required.\r\n",
                "requires a password",
            ),
            (
                "-ERR Protocol error: unauthenticated multibulk length\r\n",
                "requires a password",
            ),
            (
                "-ERR Protocol error: invalid bulk length\r\n",
                "proto-max-bulk-len",
            ),
        ] {
            let err = parse_redis_error(reply(resp), single());
            assert!(!err.is_retryable(), "{err}");
            assert!(err.to_string().contains(says), "{err}");
        }
        // `READONLY` passes once the connection reaches a primary: on one server after
        // a failover, on a cluster once a slot's replica has been promoted.
        let readonly = || reply("-READONLY You can't write against a read only replica.\r\n");
        let err = parse_redis_error(readonly(), single());
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("point it at the primary"), "{err}");
        let cluster = Op::new("append", "redis+cluster://h:7000", Some("s1"));
        let err = parse_redis_error(readonly(), cluster);
        assert!(err.is_retryable(), "{err}");
    }

    /// Found by a review: these states pass on their own (replicas reconnect, clients
    /// leave, the server's next save succeeds), but were not retryable, so the retry
    /// layer gave up on them and a listing's prune warned at every listing.
    #[test]
    fn too_few_replicas_too_many_clients_and_a_failed_save_are_retryable() {
        for (resp, says) in [
            (
                "-NOREPLICAS Not enough good replicas to write.\r\n",
                "min-replicas-to-write",
            ),
            (
                "-NOREPLICAS Not enough good replicas to write. script: \
                 abc, on @user_script:12.\r\n",
                "which wrote nothing",
            ),
            ("-ERR max number of clients reached\r\n", "maxclients"),
            (
                "-MISCONF Redis is configured to save RDB snapshots, but it's currently \
                 unable to persist to disk. Commands that may modify the data set are \
                 disabled.\r\n",
                "retry once a save succeeds",
            ),
        ] {
            let err = parse_redis_error(reply(resp), Op::new("append", URL, Some("s1")));
            assert!(err.is_retryable(), "{err}");
            let shown = err.to_string();
            assert!(shown.contains(says) && shown.contains(URL), "{shown}");
        }
    }

    /// Found by a review: a server that cannot write its append-only file refuses writes
    /// with `MISCONF` too, and was said to refuse them "while
    /// `stop-writes-on-bgsave-error` is on" until "a save succeeds", which sent an
    /// operator to a setting that plays no part. The replies are the server's own
    /// (`writeCommandsGetDiskErrorMessage`, and the one for a script declaring flags).
    #[test]
    fn a_failed_aof_write_is_not_blamed_on_the_snapshot_settings() {
        for resp in [
            "-MISCONF Errors writing to the AOF file: No space left on device\r\n",
            "-MISCONF Redis is configured to persist data to AOF, but it's currently unable \
             to persist to disk. Writable scripts are blocked. Use 'no-writes' flag for read \
             only scripts. AOF error: No space left on device\r\n",
        ] {
            let err = parse_redis_error(reply(resp), Op::new("append", URL, Some("s1")));
            assert!(err.is_retryable(), "{err}");
            let shown = err.to_string();
            assert!(shown.contains("append-only file (AOF)"), "{shown}");
            assert!(shown.contains("which wrote nothing"), "{shown}");
            assert!(!shown.contains("stop-writes-on-bgsave-error"), "{shown}");
            assert!(!shown.contains("a save succeeds"), "{shown}");
        }
    }

    #[test]
    fn corrupt_elements_name_session_and_index() {
        let json = serde_json::from_str::<serde_json::Value>("{nope").unwrap_err();
        let err = corrupt_element("s1", "fusion:s:{s1}", 3, &json);
        assert!(
            matches!(&err, Error::Corrupt { backend: "redis", session_id, detail }
                if session_id == "s1" && detail.contains("element 3")),
            "{err}"
        );
    }
}
