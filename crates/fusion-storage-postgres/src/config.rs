//! Connection options for [`PostgresStorage`](crate::PostgresStorage) and parsing of
//! `postgres://` URLs.
//!
//! Unlike the raw `sqlx` options, these only expose what a conversation store needs to
//! tune (the schema its tables live in, pool size, timeouts, how durable a commit is) and
//! pass everything else in the URL (`sslmode`, `sslrootcert`, `application_name`, ...)
//! through to sqlx unchanged; a parameter neither reads is refused (`crate::url_query`).
//! Per-connection settings (`search_path`, `statement_timeout`,
//! `synchronous_commit`) travel in the startup packet, so they cost no round trip.

use std::str::FromStr;
use std::time::Duration;

use fusion_core::{Error, Result, redact_url};
use sqlx::postgres::PgConnectOptions;

use crate::url_query::{self, SCHEMA_PARAM};

/// The schema of a storage whose options or URL name none.
const DEFAULT_SCHEMA: &str = "fusion";

/// The statement timeout of a storage whose options or URL set none.
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest timeout this storage passes on: PostgreSQL's own longest
/// (`statement_timeout` is an `int` of milliseconds, and the server refuses to start a
/// session with a larger one), about 24.8 days. A longer connect timeout is also taken as
/// this one: the driver adds it to the clock and would overflow (a panic) on
/// `Duration::MAX`, the natural way to say "wait as long as it takes".
pub(crate) const LONGEST_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// How hard the server works to make a commit survive a crash (`synchronous_commit`).
///
/// Both levels keep the database consistent after any crash; they differ only in whether
/// the last acknowledged commits survive a crash of the *server*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// The server's `synchronous_commit` as configured (the default; PostgreSQL's own
    /// default is `on`): `append`/`save` return once the commit is flushed to the WAL (and,
    /// if the server is set up so, to synchronous standbys). An acknowledged message
    /// survives a server crash or power loss. Costs one WAL flush per call.
    #[default]
    Server,
    /// `synchronous_commit = off` for this storage's own connections only: a commit
    /// returns before its WAL record is flushed. A server crash or power loss may lose the
    /// commits of the last moments (up to three times `wal_writer_delay`, 600 ms by
    /// default) that were already acknowledged, never corrupt or half-apply one. A crash
    /// of the application loses nothing. Other applications on the server are unaffected.
    Relaxed,
}

/// Options for [`PostgresStorage::connect_with`](crate::PostgresStorage::connect_with).
///
/// ```no_run
/// # async fn demo() -> fusion_core::Result<()> {
/// use std::time::Duration;
/// use fusion_storage_postgres::{Durability, PostgresOptions, PostgresStorage};
///
/// let options = PostgresOptions::new("postgres://app@db.internal/app?sslmode=require")
///     .schema("chat")
///     .statement_timeout(Some(Duration::from_secs(10)))
///     .durability(Durability::Relaxed);
/// let storage = PostgresStorage::connect_with(options).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) max_connections: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) statement_timeout: Option<Duration>,
    pub(crate) durability: Durability,
}

impl PostgresOptions {
    /// The defaults for the server at `url` (`postgres://` or `postgresql://`): schema
    /// `fusion` (or the URL's `schema` parameter, which is Fusion's and is taken out of the
    /// URL before the driver sees it), 8 connections, 5 s connect timeout, 30 s statement
    /// timeout (or none of ours when the URL sets `statement_timeout` in its `options`,
    /// as `?options=-c%20statement_timeout%3D5000` or `?options[statement_timeout]=5000`
    /// do, or the `PGOPTIONS` environment variable does: that one then applies),
    /// [`Durability::Server`].
    ///
    /// The URL is checked when connecting: a query parameter that neither Fusion
    /// (`schema`) nor sqlx reads, or `schema` given twice or without a value, is an
    /// [`Error::Config`] naming it.
    pub fn new(url: impl Into<String>) -> Self {
        let (url, schema) = fusion_core::split_url_param(&url.into(), SCHEMA_PARAM);
        let statement_timeout =
            (!url_sets(&url, "statement_timeout")).then_some(DEFAULT_STATEMENT_TIMEOUT);
        Self {
            url,
            schema: schema.unwrap_or_else(|| DEFAULT_SCHEMA.to_string()),
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout,
            durability: Durability::Server,
        }
    }

    /// The schema that holds every table of this storage, sqlx's `_sqlx_migrations`
    /// included, so several applications (or several Fusion deployments) can share one
    /// database. Created when missing. A lowercase SQL identifier: ASCII letters, digits
    /// and `_`, not starting with a digit, at most 63 bytes, a keyword such as `user`
    /// included, but not starting with `pg_` (PostgreSQL's own). Default `fusion`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most connections the pool opens (at least 1). Default 8.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How long opening a connection may take, and how long a call waits for a pooled
    /// connection, before failing with a retryable error (one that waited for a pooled
    /// connection then tries a new one, as long again at most, to say why none came).
    /// Default 5 s; at most about 24.8
    /// days (2^31 - 1 ms, PostgreSQL's longest timeout): a longer one, `Duration::MAX`
    /// included, is taken as that. Zero, which no connection could meet, is an
    /// [`Error::Config`] when connecting.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.min(LONGEST_TIMEOUT);
        self
    }

    /// The server's `statement_timeout` for this storage's connections: a statement that
    /// runs (or waits for a lock) longer is cancelled with a retryable error. `None` keeps
    /// the server's setting (or the URL's or `PGOPTIONS`'s). Default 30 s, or none when
    /// the URL's options or `PGOPTIONS` set one (see [`new`](Self::new)). Rounded up to
    /// whole milliseconds; set here, it wins over the URL's. A timeout longer than
    /// PostgreSQL's longest (2^31 - 1 ms, about 24.8 days), `Duration::MAX` included, is
    /// taken as that; a zero one, which would cancel every statement, is an
    /// [`Error::Config`] when connecting (the URL's `options[statement_timeout]=0` turns
    /// the server's timeout off). It also bounds a whole call on the client: one that
    /// has not finished within twice the connect and statement timeouts (a server that
    /// stopped answering) gives up with a retryable error; with `None` nothing does.
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// The crash-durability of a commit; see [`Durability`]. Default [`Durability::Server`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How long a call may take, start to end, before it is given up: twice the connect
    /// timeout (a connection from the pool, or a new one) plus the statement timeout (the
    /// longest any statement may run or wait for a lock before the server cancels it), so
    /// a call that waits out both still has as long again for its other round trips. Only
    /// a server that has stopped answering (frozen, or cut off by a network that drops its
    /// packets) gets there: the server enforces its statement timeout only while it runs,
    /// and nothing else would end the wait for an answer that never comes (the driver
    /// sets no TCP keepalive). `None` without a statement timeout of ours.
    pub(crate) fn call_limit(&self) -> Option<Duration> {
        let statement = self.statement_timeout?.min(LONGEST_TIMEOUT);
        Some(2 * (self.connect_timeout + statement))
    }
}

/// A URL and options turned into everything needed to connect.
#[derive(Debug)]
pub(crate) struct Target {
    /// The URL with its password hidden, for messages and logs.
    pub(crate) label: String,
    /// How every connection of the pool opens.
    pub(crate) connect: PgConnectOptions,
}

/// Parses `postgres://...` or `postgresql://...` (with any libpq query parameters sqlx
/// knows, `sslmode` among them; any other is refused) and applies `options`.
pub(crate) fn parse(options: &PostgresOptions) -> Result<Target> {
    let url = options.url.as_str();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        // Print only the scheme: the URL may carry a password.
        let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
        return Err(Error::Config(format!(
            "not a PostgreSQL URL (scheme `{scheme}`); use postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
        )));
    }
    let label = redact_url(url);
    url_query::check(url)?;
    check_schema(&options.schema)?;
    // Ours would come after the URL's and win unseen; the schema has a parameter of its own.
    if url_sets(url, "search_path") {
        return Err(Error::Config(format!(
            "PostgreSQL URL {label} (or PGOPTIONS) sets search_path in its options: name the \
             schema with the `schema` parameter (or PostgresOptions::schema) instead"
        )));
    }
    let connect = PgConnectOptions::from_str(url).map_err(|e| {
        // libpq reads `postgres://user@/db?host=h`; the driver's URL parser needs a host
        // wherever a user or password is given.
        let hint = if e.to_string().contains("empty host") {
            "; with a user or password, give the host before the path \
             (postgres://USER@HOST/DATABASE), or give them all as parameters \
             (postgres:///DATABASE?host=HOST&user=USER)"
        } else {
            ""
        };
        Error::Config(format!("invalid PostgreSQL URL {label}: {e}{hint}"))
    })?;
    // Names stay unqualified in every statement and migration; the schema alone is
    // searched (pg_catalog is always searched first, implicitly).
    let mut settings = vec![("search_path", options.schema.clone())];
    if options.connect_timeout.is_zero() {
        return Err(Error::Config(format!(
            "a connect timeout of 0 for {label} would fail every connection as timed out: \
             give a positive one"
        )));
    }
    if let Some(timeout) = options.statement_timeout {
        if timeout.is_zero() {
            return Err(Error::Config(format!(
                "a statement timeout of 0 for {label} would cancel every statement: give a \
                 positive one, or None to keep the server's (the URL's \
                 `options[statement_timeout]=0` turns the server's off)"
            )));
        }
        let millis = timeout.min(LONGEST_TIMEOUT).as_micros().div_ceil(1000);
        settings.push(("statement_timeout", millis.to_string()));
    }
    if options.durability == Durability::Relaxed {
        settings.push(("synchronous_commit", "off".to_string()));
    }
    Ok(Target {
        label,
        connect: connect.options(settings),
    })
}

/// Whether the server setting `name` is set where sqlx takes settings from: the
/// `PGOPTIONS` environment variable, and the `options` of `url`'s query (libpq's
/// `options=-c NAME=VALUE ...`, or sqlx's `options[NAME]=VALUE`). Setting names are
/// compared as the server compares them: without case, `-` as `_`.
fn url_sets(url: &str, name: &str) -> bool {
    let query = fusion_core::url_query(url).unwrap_or_default();
    let in_env = std::env::var("PGOPTIONS").is_ok_and(|options| sets_in_options(&options, name));
    in_env
        || url::form_urlencoded::parse(query.as_bytes()).any(|(key, value)| {
            let indexed = key
                .strip_prefix("options[")
                .and_then(|rest| rest.strip_suffix(']'));
            match indexed {
                Some(setting) => same_setting(setting, name),
                None => key == "options" && sets_in_options(&value, name),
            }
        })
}

/// Whether a libpq `options` string (`-c NAME=VALUE`, `-cNAME=VALUE` or `--NAME=VALUE`,
/// separated by spaces; a backslash keeps the next character, a space included, in its
/// word) sets `name`.
fn sets_in_options(options: &str, name: &str) -> bool {
    let words = option_words(options);
    let mut words = words.iter().map(String::as_str);
    while let Some(word) = words.next() {
        let setting = match word {
            "-c" => words.next().unwrap_or_default(),
            _ => word
                .strip_prefix("-c")
                .or_else(|| word.strip_prefix("--"))
                .unwrap_or_default(),
        };
        let key = setting.split_once('=').map_or(setting, |(key, _)| key);
        if same_setting(key, name) {
            return true;
        }
    }
    false
}

/// The words of a libpq `options` string, split at unescaped whitespace, escapes removed.
fn option_words(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Whether `key` names the setting `name` for the server: without case, `-` as `_`.
fn same_setting(key: &str, name: &str) -> bool {
    key.len() == name.len()
        && key
            .bytes()
            .zip(name.bytes())
            .all(|(k, n)| k.to_ascii_lowercase() == n || (k == b'-' && n == b'_'))
}

/// Refuses a schema name that would need quoting, so it is the same in `search_path`, in
/// `CREATE SCHEMA` and in `psql`, and one PostgreSQL reserves for itself (`pg_...`, which
/// `CREATE SCHEMA` refuses). A keyword (`user`, `order`) is a valid name: the schema's
/// statements quote it (`crate::migrate`).
fn check_schema(schema: &str) -> Result<()> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(Error::Config(format!(
            "invalid PostgreSQL schema name {schema:?}: use 1 to 63 lowercase ASCII letters, \
             digits and `_`, not starting with a digit"
        )));
    }
    if schema.starts_with("pg_") {
        return Err(Error::Config(format!(
            "invalid PostgreSQL schema name {schema:?}: names starting with `pg_` are \
             reserved for PostgreSQL's own schemas; choose another"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_urls_schema_parameter_is_the_schema_and_the_option_overrides_it() {
        let options = PostgresOptions::new("postgres://u:pw@h/db?sslmode=disable&schema=chat");
        assert_eq!(options.schema, "chat");
        assert_eq!(options.url, "postgres://u:pw@h/db?sslmode=disable");
        let options = PostgresOptions::new("postgres://h/db?schema=chat").schema("other");
        assert_eq!(options.schema, "other");
        assert_eq!(PostgresOptions::new("postgres://h/db").schema, "fusion");
        let bad = parse(&PostgresOptions::new(
            "postgres://u:pw@h/db?schema=Bad-Name",
        ));
        assert!(matches!(bad, Err(Error::Config(_))));
    }

    #[test]
    fn a_statement_timeout_in_the_urls_options_is_kept_and_a_search_path_is_refused() {
        for url in [
            "postgres://h/db?options=-c%20statement_timeout%3D500",
            "postgres://h/db?options=-cstatement_timeout=500+-c+lock_timeout=100",
            "postgres://h/db?options=--statement-timeout%3D500",
            "postgres://h/db?options%5Bstatement_timeout%5D=500",
            "postgres://h/db?options=-c%20STATEMENT_TIMEOUT%3D500",
            "postgres://h/db?options[Statement-Timeout]=500",
        ] {
            let options = PostgresOptions::new(url);
            assert_eq!(options.statement_timeout, None, "{url}");
            let target = parse(&options).unwrap();
            // The URL's setting is sent, and no default of ours after it.
            let sent = target.connect.get_options().unwrap_or_default().to_string();
            assert!(sent.contains("500"), "{url}: {sent}");
            assert!(!sent.contains("30000"), "{url}: {sent}");
        }
        // An explicit option still wins (it is sent after the URL's).
        let explicit = PostgresOptions::new("postgres://h/db?options[statement_timeout]=500")
            .statement_timeout(Some(Duration::from_secs(2)));
        assert_eq!(explicit.statement_timeout, Some(Duration::from_secs(2)));
        for url in [
            "postgres://h/db",
            "postgres://h/db?options=-c%20lock_timeout%3D100",
            "postgres://h/db?application_name=statement_timeout",
            // An escaped space keeps `--statement_timeout=1` inside the name's value.
            "postgres://h/db?options=-c%20application_name%3Dmy%5C%20--statement_timeout%3D1",
        ] {
            assert_eq!(
                PostgresOptions::new(url).statement_timeout,
                Some(DEFAULT_STATEMENT_TIMEOUT),
                "{url}"
            );
        }
        for url in [
            "postgres://h/db?options=-c%20search_path%3Dother",
            "postgres://h/db?options[search_path]=other",
            "postgres://h/db?options[SEARCH_PATH]=other",
            "postgres://h/db?options=-c%20Search_Path%3Dx",
        ] {
            let err = parse(&PostgresOptions::new(url)).unwrap_err();
            assert!(err.to_string().contains("`schema` parameter"), "{err}");
        }
    }

    #[test]
    fn accepts_both_schemes_and_passes_sslmode_through() {
        for url in [
            "postgres://app:pw@db:5433/chat?sslmode=require",
            "postgresql://app:pw@db:5433/chat?sslmode=require",
        ] {
            let target = parse(&PostgresOptions::new(url)).unwrap();
            assert!(!target.label.contains("pw"), "{}", target.label);
            assert_eq!(target.connect.get_port(), 5433);
            assert_eq!(target.connect.get_database(), Some("chat"));
            let debug = format!("{:?}", target.connect);
            assert!(debug.contains("Require"), "{debug}");
        }
    }

    #[test]
    fn foreign_urls_and_bad_schemas_are_config_errors_without_the_password() {
        let err = parse(&PostgresOptions::new("redis://:hunter2@db")).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        for schema in ["", "Chat", "1st", "a-b", "a\"b", &"x".repeat(64)] {
            let options = PostgresOptions::new("postgres://db/app").schema(schema);
            assert!(matches!(parse(&options), Err(Error::Config(_))), "{schema}");
        }
        let bad = PostgresOptions::new("postgres://u:hunter2@db/app?sslmode=bogus");
        let err = parse(&bad).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    /// Found by an audit: libpq's `postgresql://u@/db?host=h` failed with the driver's
    /// bare "empty host".
    #[test]
    fn a_user_without_a_host_says_how_to_write_the_url() {
        let err = parse(&PostgresOptions::new(
            "postgresql://u:hunter2@/db?host=127.0.0.1",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("empty host"), "{err}");
        assert!(
            err.contains("postgres:///DATABASE?host=HOST&user=USER"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        assert!(
            parse(&PostgresOptions::new(
                "postgresql:///db?host=127.0.0.1&user=u"
            ))
            .is_ok()
        );
    }

    #[test]
    fn a_call_is_given_up_after_twice_the_connect_and_statement_timeouts() {
        let options = PostgresOptions::new("postgres://db/app");
        assert_eq!(options.call_limit(), Some(Duration::from_secs(70)));
        let longest = options
            .clone()
            .connect_timeout(Duration::MAX)
            .statement_timeout(Some(Duration::MAX));
        assert_eq!(longest.call_limit(), Some(4 * LONGEST_TIMEOUT));
        assert_eq!(options.statement_timeout(None).call_limit(), None);
    }

    #[test]
    fn options_clamp_the_pool_and_default_to_the_servers_durability() {
        let options = PostgresOptions::new("postgres://db/app").max_connections(0);
        assert_eq!(options.max_connections, 1);
        assert_eq!(options.durability, Durability::Server);
        assert_eq!(options.schema, "fusion");
    }
}
