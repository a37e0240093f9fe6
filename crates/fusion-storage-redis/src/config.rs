//! [`RedisOptions`]: what a conversation store on Redis decides (key prefix, TTL, how
//! long to wait for the server), with their defaults and checks.
//!
//! The rest is baked in by the `connect` module: a `ConnectionManager` whose
//! reconnect attempts are bounded, so a server that is down gives an error quickly, never a
//! hang.

use std::time::Duration;

use fusion_core::{Error, Result};

/// The key prefix used unless [`RedisOptions::key_prefix`] says otherwise.
pub const DEFAULT_KEY_PREFIX: &str = "fusion";
/// How long one connection attempt may take, unless configured otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may wait for its reply, unless configured otherwise.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a failed connection attempt is retried, unless configured otherwise.
pub const DEFAULT_RECONNECT_RETRIES: usize = 2;
// Backoff between connection attempts (and, on a cluster, between tries of a request
// the cluster refused for now): 100 ms doubling, capped at 1 s, so the default two
// retries add well under a second to a refused connection.
pub(crate) const RETRY_MIN_DELAY: Duration = Duration::from_millis(100);
pub(crate) const RETRY_MAX_DELAY: Duration = Duration::from_secs(1);
/// The longest TTL [`RedisOptions::ttl`] accepts: 2^62 ms, about 146 million years.
///
/// Redis stores an expiry as the current time plus the TTL, in milliseconds, in a signed
/// 64-bit integer, and refuses a `PEXPIRE` whose sum would pass 2^63 - 1. Half of that
/// range keeps every accepted TTL valid for as long as anyone will run this code, and it
/// is checked when connecting so that no write can fail on it.
pub const MAX_TTL: Duration = Duration::from_millis(1 << 62);

/// Options for [`RedisStorage::connect_with`](crate::RedisStorage::connect_with): key
/// prefix, TTL and timeouts. The server's URL is the other argument of `connect_with`.
///
/// ```no_run
/// # async fn demo() -> fusion_core::Result<()> {
/// use std::time::Duration;
/// use fusion_storage_redis::{RedisOptions, RedisStorage};
///
/// let options = RedisOptions::new()
///     .key_prefix("chatbot")
///     .ttl(Duration::from_secs(7 * 24 * 3600));
/// let storage = RedisStorage::connect_with("redis://:secret@127.0.0.1:6379/2", options).await?;
/// assert_eq!(storage.key_prefix(), "chatbot");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    pub(crate) key_prefix: String,
    pub(crate) ttl: Option<Duration>,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) reconnect_retries: usize,
    pub(crate) replica_acks: Option<ReplicaAcks>,
    pub(crate) publish_changes: bool,
}

/// How many replicas must acknowledge each write, and how long to wait for them
/// ([`RedisOptions::replica_acks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplicaAcks {
    /// The number of replicas `WAIT` asks for.
    pub(crate) replicas: usize,
    /// How long `WAIT` may block.
    pub(crate) timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            key_prefix: DEFAULT_KEY_PREFIX.to_string(),
            ttl: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            reconnect_retries: DEFAULT_RECONNECT_RETRIES,
            replica_acks: None,
            publish_changes: false,
        }
    }
}

impl RedisOptions {
    /// The defaults: prefix `fusion`, no TTL, 2 s connect and 5 s response timeouts,
    /// 2 reconnect retries.
    pub fn new() -> Self {
        Self::default()
    }

    /// The prefix of every key this storage touches, so several apps can share a server.
    ///
    /// ASCII letters, digits and `- _ . : @ + /`; checked when connecting. Braces are
    /// refused because they would change the keys' Redis Cluster hash tag.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Expire a session `ttl` after its last write (at least 1 ms, at most [`MAX_TTL`];
    /// millisecond precision, checked when connecting).
    ///
    /// Every write (save, append, truncate) sets the expiry of the session's keys again;
    /// reads do not. Without a TTL, a write makes the session's keys persistent again. A
    /// session with an expiry of its own ([`fusion_core::Expiry`]) has its keys dropped at
    /// that instant instead, or after the TTL if that comes first. A session copied with
    /// `create_session_with_times` keeps an earlier `updated_at` as its last write, but
    /// its TTL counts from the copy's own write, as its keys were written then.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long one attempt to open a connection may take. Default 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a command may wait for the server's reply before failing with a
    /// retryable error. Default 5 s; raise it for very long histories on slow links. On
    /// a cluster it also bounds each call of a listing's (or owner change's) prune on the
    /// expiry index's node, retries included: past it the prune is left for a later
    /// listing, and its drop of those entries after its second look for a take-up or a
    /// purge; the second look at the look-again entries a delete or prune took up,
    /// past which they are left for later; and the repair of the indexes after a write
    /// whose reply was lost, past which they are left to the write's retry.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How many times a failed connection attempt is retried (with a backoff from 100 ms
    /// up to 1 s) before the waiting call fails. Default 2. On a Redis Cluster, also how
    /// many times a request is sent again after a redirection or refusal (a write only
    /// when it was not applied: see the crate README's "Failures").
    pub fn reconnect_retries(mut self, retries: usize) -> Self {
        self.reconnect_retries = retries;
        self
    }

    /// Make every write wait until `replicas` replicas have acknowledged it, for at most
    /// `timeout` (Redis's `WAIT`, sent in the write's own round trip).
    ///
    /// Redis replicates asynchronously: a write acknowledged by a primary that fails
    /// before its replicas received it is lost when a replica takes over. With this
    /// option a write returns only once `replicas` replicas hold it, so such a failover
    /// loses nothing that was acknowledged (short of losing those replicas too). A
    /// write that is not acknowledged in time is stored on the primary but fails with a
    /// non-retryable error saying so. Each write then costs the replication delay on top
    /// of its round trip (docs/performance.md measures it). `replicas` is at least 1;
    /// `timeout` at least 1 ms (Redis would read 0 as "wait forever"). Checked when
    /// connecting.
    pub fn replica_acks(mut self, replicas: usize, timeout: Duration) -> Self {
        self.replica_acks = Some(ReplicaAcks { replicas, timeout });
        self
    }

    /// Publish every change this storage makes to a session on the Redis channel
    /// `PREFIX:changes`, for [`RedisStorage::subscribe_changes`] in any process. Default
    /// off.
    ///
    /// The write's own script publishes, in the same atomic step as the change, so a
    /// session's changes arrive in the order they were made, each with the session's
    /// generation and length after it (on one server, all changes do; on a cluster,
    /// changes to sessions on different primaries may arrive in either order). Every storage that writes the sessions must have it on for
    /// subscribers to see all their changes. Publishing costs each write one more call
    /// inside its script (docs/performance.md measures it). Redis channels are not per
    /// database: applications that share a server need different key prefixes.
    ///
    /// [`RedisStorage::subscribe_changes`]: crate::RedisStorage::subscribe_changes
    pub fn publish_changes(mut self, publish: bool) -> Self {
        self.publish_changes = publish;
        self
    }

    /// Checks the prefix, the TTL and the replica acknowledgements, giving
    /// [`Error::Config`] for any of them.
    pub(crate) fn check(&self) -> Result<()> {
        check_prefix(&self.key_prefix)?;
        if let Some(acks) = self.replica_acks
            && (acks.replicas == 0 || acks.timeout < Duration::from_millis(1))
        {
            return Err(Error::Config(format!(
                "Redis replica acknowledgements need at least 1 replica and a timeout of at \
                 least 1 ms (got {} replicas, {:?})",
                acks.replicas, acks.timeout
            )));
        }
        // Compared in whole milliseconds, the unit the scripts are given.
        let ttl_ms = self.ttl.map(|ttl| ttl.as_millis());
        if ttl_ms == Some(0) {
            return Err(Error::Config(
                "Redis TTL must be at least 1 ms; leave it unset for sessions that never expire"
                    .into(),
            ));
        }
        if let Some(ms) = ttl_ms.filter(|&ms| ms > MAX_TTL.as_millis()) {
            return Err(Error::Config(format!(
                "Redis TTL of {ms} ms is longer than the most Redis can hold ({} ms, about \
                 146 million years); leave it unset for sessions that never expire",
                MAX_TTL.as_millis()
            )));
        }
        Ok(())
    }
}

fn check_prefix(prefix: &str) -> Result<()> {
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@' | '+' | '/');
    if prefix.is_empty() || prefix.len() > 64 || !prefix.chars().all(allowed) {
        return Err(Error::Config(format!(
            "invalid Redis key prefix {prefix:?}: use 1 to 64 ASCII letters, digits or - _ . : @ + / \
             (no braces, which would change the Cluster hash tag, and no glob characters)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_that_break_hash_tags_or_globs_are_refused() {
        for bad in [
            "",
            "a{b",
            "a}b",
            "x*",
            "x?",
            "[x]",
            "with space",
            "é",
            &"p".repeat(65),
        ] {
            assert!(
                matches!(check_prefix(bad), Err(Error::Config(_))),
                "{bad:?}"
            );
        }
        for good in ["fusion", "app-1:prod", "team/app", "a.b_c+d@e"] {
            check_prefix(good).unwrap();
        }
    }

    #[test]
    fn replica_acks_need_a_replica_and_a_timeout() {
        let second = Duration::from_secs(1);
        for (replicas, timeout) in [
            (0, second),
            (1, Duration::ZERO),
            (1, Duration::from_micros(999)),
        ] {
            let err = RedisOptions::new().replica_acks(replicas, timeout).check();
            assert!(
                matches!(err, Err(Error::Config(_))),
                "{replicas} {timeout:?}: {err:?}"
            );
        }
        RedisOptions::new()
            .replica_acks(1, Duration::from_millis(1))
            .check()
            .unwrap();
    }

    #[test]
    fn a_zero_ttl_is_refused_and_a_millisecond_is_not() {
        let zero = RedisOptions::new().ttl(Duration::ZERO).check();
        assert!(matches!(zero, Err(Error::Config(_))), "{zero:?}");
        RedisOptions::new()
            .ttl(Duration::from_millis(1))
            .check()
            .unwrap();
        RedisOptions::new().check().unwrap();
    }

    #[test]
    fn a_ttl_up_to_max_ttl_is_accepted_and_a_millisecond_more_is_refused() {
        RedisOptions::new().ttl(MAX_TTL).check().unwrap();
        // A fraction of a millisecond is not sent, so it does not count.
        let fraction = MAX_TTL + Duration::from_micros(999);
        RedisOptions::new().ttl(fraction).check().unwrap();
        for too_long in [
            MAX_TTL + Duration::from_millis(1),
            Duration::from_millis(1 << 63),
            Duration::MAX,
        ] {
            let err = RedisOptions::new().ttl(too_long).check().unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{err:?}");
            assert!(err.to_string().contains("4611686018427387904 ms"), "{err}");
        }
    }
}
