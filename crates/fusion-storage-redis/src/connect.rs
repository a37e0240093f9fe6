//! Opening the connection: URL checks, the bounded-retry `ConnectionManager`, and TLS
//! set-up. [`RedisStorage::connect_with`](crate::RedisStorage::connect_with) calls
//! [`open`] and wraps what it returns.

use std::time::Duration;

use fusion_core::{Error, Result, redact_url};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisOptions;
use crate::error::{BACKEND, Op, parse_redis_error};

// Backoff between connection attempts: 100 ms doubling, capped at 1 s, so the default
// two retries add well under a second to a refused connection.
const RETRY_MIN_DELAY: Duration = Duration::from_millis(100);
const RETRY_MAX_DELAY: Duration = Duration::from_secs(1);

/// A live connection to the server and its URL with the password hidden.
pub(crate) struct Opened {
    /// The connection every clone of the storage shares.
    pub(crate) manager: ConnectionManager,
    /// The URL for messages and `Debug`, password replaced by `***`.
    pub(crate) redacted_url: String,
}

/// Checks `url` and `options`, then connects.
///
/// Fails with [`Error::Config`] for a bad URL, prefix or TTL, with
/// [`Error::FeatureDisabled`] for `rediss://` without the `tls` feature, and with a
/// retryable [`Error::Backend`] when the server cannot be reached within roughly
/// `(reconnect_retries + 1) × connect_timeout` plus the backoff.
pub(crate) async fn open(url: &str, options: &RedisOptions) -> Result<Opened> {
    let redacted = redact_url(url);
    check_scheme(url, &redacted)?;
    options.check()?;
    // The redis crate's URL errors are fixed strings, so quoting them leaks nothing.
    let client = redis::Client::open(url)
        .map_err(|err| Error::Config(format!("invalid Redis URL {redacted}: {err}")))?;
    #[cfg(feature = "tls")]
    install_crypto_provider();

    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.response_timeout))
        .set_number_of_retries(options.reconnect_retries)
        .set_min_delay(RETRY_MIN_DELAY)
        .set_max_delay(RETRY_MAX_DELAY);
    // The manager bounds each attempt and the number of attempts; this outer limit is
    // a backstop in case a future driver version retries differently.
    let attempts = u32::try_from(options.reconnect_retries).unwrap_or(u32::MAX);
    let budget = (options.connect_timeout + 2 * RETRY_MAX_DELAY) * attempts.saturating_add(1);
    let op = Op::new("connect", &redacted, None);
    let manager = match tokio::time::timeout(
        budget,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    {
        Ok(Ok(manager)) => manager,
        Ok(Err(err)) => return Err(parse_redis_error(err, op)),
        Err(_elapsed) => {
            return Err(Error::Backend {
                backend: BACKEND,
                message: format!("{op}: no connection within {budget:?}; is the server up?"),
                retryable: true,
                source: None,
            });
        }
    };
    tracing::debug!(url = %redacted, prefix = %options.key_prefix, "connected to Redis");
    Ok(Opened {
        manager,
        redacted_url: redacted,
    })
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
