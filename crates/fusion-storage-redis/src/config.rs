//! Connection options for [`RedisStorage`](crate::RedisStorage), URL checks and password redaction.
//!
//! The options cover what a conversation store needs to decide (key prefix, TTL, how long
//! to wait for the server) and bake in the rest: a `ConnectionManager` whose reconnect
//! attempts are bounded, so a server that is down gives an error in seconds, never a hang.

use std::fmt;
use std::time::Duration;

use fusion_core::{Error, Result, redact_url};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::RedisStorage;
use crate::error::{Op, parse_redis_error};

/// The key prefix used unless [`RedisOptions::key_prefix`] says otherwise.
pub const DEFAULT_KEY_PREFIX: &str = "fusion";
/// How long one connection attempt may take, unless configured otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may wait for its reply, unless configured otherwise.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a failed connection attempt is retried, unless configured otherwise.
pub const DEFAULT_RECONNECT_RETRIES: usize = 2;

// Backoff between connection attempts: 100 ms doubling, capped at 1 s, so the default
// two retries add well under a second to a refused connection.
const RETRY_MIN_DELAY: Duration = Duration::from_millis(100);
const RETRY_MAX_DELAY: Duration = Duration::from_secs(1);

/// Options for a [`RedisStorage`]: URL, key prefix, TTL and timeouts.
///
/// ```no_run
/// # async fn demo() -> fusion_core::Result<()> {
/// use std::time::Duration;
/// use fusion_storage_redis::RedisOptions;
///
/// let storage = RedisOptions::new("redis://:secret@127.0.0.1:6379/2")
///     .key_prefix("chatbot")
///     .ttl(Duration::from_secs(7 * 24 * 3600))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisOptions {
    url: String,
    key_prefix: String,
    ttl: Option<Duration>,
    connect_timeout: Duration,
    response_timeout: Duration,
    reconnect_retries: usize,
}

impl fmt::Debug for RedisOptions {
    // Hand-written so the password in the URL never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("ttl", &self.ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("reconnect_retries", &self.reconnect_retries)
            .finish()
    }
}

impl RedisOptions {
    /// Options for `url` (`redis://[user[:password]@]host[:port][/db]` or `rediss://...`)
    /// with the defaults: prefix `fusion`, no TTL, 2 s connect and 5 s response timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: DEFAULT_KEY_PREFIX.to_string(),
            ttl: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            reconnect_retries: DEFAULT_RECONNECT_RETRIES,
        }
    }

    /// The prefix of every key this storage touches, so several apps can share a server.
    ///
    /// ASCII letters, digits and `- _ . : @ + /`; checked by [`connect`](Self::connect).
    /// Braces are refused because they would change the keys' Redis Cluster hash tag.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Expire a session `ttl` after its last write (at least 1 ms; millisecond precision).
    ///
    /// Every write (save, append, truncate) sets the expiry of the session's keys again;
    /// reads do not. Without a TTL, a write makes the session's keys persistent again.
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
    /// retryable error. Default 5 s; raise it for very long histories on slow links.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How many times a failed connection attempt is retried (with a backoff from 100 ms
    /// up to 1 s) before the waiting call fails. Default 2.
    pub fn reconnect_retries(mut self, retries: usize) -> Self {
        self.reconnect_retries = retries;
        self
    }

    /// The configured key prefix.
    pub fn get_key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The configured TTL, if any.
    pub fn get_ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The URL with any password replaced by `***`, for messages.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Checks the options, connects and returns the storage.
    ///
    /// Fails with [`Error::Config`] for a bad URL, prefix or TTL, with
    /// [`Error::FeatureDisabled`] for `rediss://` without the `tls` feature, and with a
    /// retryable [`Error::Backend`] when the server cannot be reached within roughly
    /// `(reconnect_retries + 1) × connect_timeout` plus the backoff.
    pub async fn connect(self) -> Result<RedisStorage> {
        let redacted = self.redacted_url();
        check_scheme(&self.url, &redacted)?;
        check_prefix(&self.key_prefix)?;
        if self.ttl.is_some_and(|ttl| ttl.as_millis() == 0) {
            return Err(Error::Config(
                "Redis TTL must be at least 1 ms; leave it unset for sessions that never expire"
                    .into(),
            ));
        }
        // The redis crate's URL errors are fixed strings, so quoting them leaks nothing.
        let client = redis::Client::open(self.url.as_str())
            .map_err(|err| Error::Config(format!("invalid Redis URL {redacted}: {err}")))?;
        #[cfg(feature = "tls")]
        install_crypto_provider();

        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(self.reconnect_retries)
            .set_min_delay(RETRY_MIN_DELAY)
            .set_max_delay(RETRY_MAX_DELAY);
        // The manager bounds each attempt and the number of attempts; this outer limit is
        // a backstop in case a future driver version retries differently.
        let attempts = u32::try_from(self.reconnect_retries).unwrap_or(u32::MAX);
        let budget = (self.connect_timeout + 2 * RETRY_MAX_DELAY) * attempts.saturating_add(1);
        let op = Op::new("connect", &redacted, None);
        let manager =
            match tokio::time::timeout(budget, ConnectionManager::new_with_config(client, config))
                .await
            {
                Ok(Ok(manager)) => manager,
                Ok(Err(err)) => return Err(parse_redis_error(err, op)),
                Err(_elapsed) => {
                    return Err(Error::Backend {
                        backend: crate::error::BACKEND,
                        message: format!(
                            "{op}: no connection within {budget:?}; is the server up?"
                        ),
                        retryable: true,
                        source: None,
                    });
                }
            };
        tracing::debug!(url = %redacted, prefix = %self.key_prefix, "connected to Redis");
        Ok(RedisStorage::from_parts(
            manager,
            &self.key_prefix,
            self.ttl,
            redacted,
        ))
    }
}

fn check_scheme(url: &str, redacted: &str) -> Result<()> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("redis") => Ok(()),
        Some("rediss") if cfg!(feature = "tls") => Ok(()),
        Some("rediss") => Err(Error::FeatureDisabled {
            what: format!(
                "TLS to Redis ({redacted}; the `tls` feature of fusion-storage-redis when used directly)"
            ),
            feature: "redis-tls",
        }),
        _ => Err(Error::Config(format!(
            "unsupported Redis URL {redacted}: use redis://[user[:password]@]host[:port][/db] or rediss://..."
        ))),
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
    fn options_debug_never_shows_the_password() {
        let options = RedisOptions::new("redis://:hunter2@host:6379").ttl(Duration::from_secs(1));
        let shown = format!("{options:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis://:***@host:6379"), "{shown}");
    }

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

    #[cfg(feature = "tls")]
    #[test]
    fn rediss_with_tls_is_accepted() {
        check_scheme("rediss://h:6380", "rediss://h:6380").unwrap();
    }
}
