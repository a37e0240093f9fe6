//! The one place where driver errors become [`fusion_core::Error`]s.
//!
//! Every sqlx call in this crate funnels its error through [`parse_postgres_error`], which
//! reads the server's SQLSTATE, so what counts as retryable is decided once. Messages name
//! the server by its URL with the password hidden ([`fusion_core::redact_url`]), plus the
//! operation and session involved.

use std::time::Duration;

use fusion_core::Error;
pub(crate) use fusion_core::sql::Op;
use fusion_core::sql::Place;
use sqlx::migrate::MigrateError;

/// The backend name used in every error of this crate.
pub(crate) const BACKEND: &str = "postgres";

/// Messages of this crate place a session on its server.
pub(crate) const PLACE: Place = Place::OnServer;

/// Maps a sqlx error to a Fusion error, naming the server and the operation.
pub(crate) fn parse_postgres_error(err: sqlx::Error, op: Op<'_>) -> Error {
    let err = match err {
        sqlx::Error::Migrate(e) => return migrate_error(*e, op),
        sqlx::Error::Configuration(e) => return Error::Config(format!("{op}: {e}")),
        other => other,
    };
    if let sqlx::Error::Database(e) = &err
        && e.constraint() == Some("messages_pkey")
        && let Some(session_id) = op.session_id
    {
        return fusion_core::sql::count_behind_rows(BACKEND, session_id, op, e.message());
    }
    let (message, retryable) = match &err {
        sqlx::Error::Database(e) => {
            database_error(e.code().as_deref().unwrap_or("?????"), e.message(), op)
        }
        // The TLS handshake's own failures (a certificate that is not trusted or does not
        // name the URL's host) reach the driver as I/O errors of this kind; retrying cannot
        // mend them, and the server is reachable.
        sqlx::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            (tls_failed(op, e), false)
        }
        // Refused, reset or unreachable: the server is down, restarting or cut off.
        sqlx::Error::Io(e) => (
            format!(
                "{op}: cannot reach the PostgreSQL server ({e}); check that it is running \
                 and reachable, then retry"
            ),
            true,
        ),
        sqlx::Error::Tls(e) => (tls_failed(op, e), false),
        // sqlx retries a connection the server refuses as too many (53300) or starting
        // (57P03) until the timeout, and then reports only the timeout: so each cause.
        // Calls find out which (`crate::timed_out`, `pool_timed_out`); this is the
        // wording where nothing is known.
        sqlx::Error::PoolTimedOut => (
            format!(
                "{op}: no connection to the server within the connect timeout: every \
                 connection of the pool was busy (raise PostgresOptions::max_connections), \
                 the server is down, starting or unreachable, or it refuses more \
                 connections (too many clients: raise the server's max_connections or \
                 lower the pools' PostgresOptions::max_connections); retry later"
            ),
            true,
        ),
        sqlx::Error::PoolClosed => (format!("{op}: the storage was closed"), false),
        // Met when a connection is cut in the middle of a reply (sqlx reads the end of
        // the stream as a byte it did not expect: "unexpected response from SSLRequest:
        // 0x00"), so worth retrying; and when the port is not a PostgreSQL server's.
        sqlx::Error::Protocol(detail) => (
            format!(
                "{op}: the server's reply did not follow PostgreSQL's protocol ({detail}): the \
                 connection was cut mid-reply (retry), or the URL's port is not a PostgreSQL \
                 server's"
            ),
            true,
        ),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::Decode(_)
        | sqlx::Error::RowNotFound => (
            format!("{op}: unexpected data, was the schema changed outside Fusion? ({err})"),
            false,
        ),
        other => (format!("{op}: {other}"), false),
    };
    Error::backend(BACKEND, message, retryable, err)
}

/// The message of a failed TLS connection, `cause` saying why.
fn tls_failed(op: Op<'_>, cause: &dyn std::fmt::Display) -> String {
    format!(
        "{op}: TLS failed ({cause}); check the URL's `sslmode` (and `sslrootcert`) and that \
         the server's certificate is trusted and names the URL's host"
    )
}

/// The message and retryability of the server's SQLSTATE `code`, with its `detail` text.
fn database_error(code: &str, detail: &str, op: Op<'_>) -> (String, bool) {
    match code {
        "57014" => (
            format!(
                "{op}: the statement ran past the statement timeout and was cancelled (a \
                 long lock wait or an overloaded server: retry later; or more work than the \
                 timeout allows, such as a very long history: raise \
                 PostgresOptions::statement_timeout) ({detail})"
            ),
            true,
        ),
        // The server ended the session of a transaction that sat idle (between two of a
        // call's statements: a slow or busy client) or ran past its limit. The whole
        // transaction was rolled back, so the call can be made again.
        "25P03" | "25P04" => (
            format!(
                "{op}: the server ended the connection in the middle of the call's \
                 transaction, which it rolled back ({detail}): the transaction sat idle \
                 between statements past the server's idle_in_transaction_session_timeout, \
                 or ran past its transaction_timeout; retry, and raise that setting if it \
                 is this short (SQLSTATE {code})"
            ),
            true,
        ),
        // The server's (or the role's, or the database's) connection limit: each process
        // opens up to its pool's size, so the fix is one of two numbers.
        "53300" => (
            format!(
                "{op}: the server refuses more connections ({detail}): lower \
                 PostgresOptions::max_connections (each storage's pool opens up to that \
                 many, in every process) or raise the server's max_connections (or the \
                 role's or database's CONNECTION LIMIT); retry later (SQLSTATE {code})"
            ),
            true,
        ),
        // Serialization failure, deadlock, lock not available.
        "40001" | "40P01" | "55P03" => (format!("{op}: {detail}; retry (SQLSTATE {code})"), true),
        _ if code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") => (
            format!(
                "{op}: the server is unavailable or out of resources: {detail} (SQLSTATE {code}); retry later"
            ),
            true,
        ),
        _ if code.starts_with("28") => (
            format!(
                "{op}: authentication failed ({detail}); check the user and password in the URL"
            ),
            false,
        ),
        "3D000" => (
            format!("{op}: {detail}; create the database or fix the URL's database name"),
            false,
        ),
        "42501" => (
            format!(
                "{op}: permission denied ({detail}); the user needs CREATE on the database \
                 (for the schema) or USAGE and CREATE on the schema"
            ),
            false,
        ),
        // "cannot execute INSERT in a read-only transaction": the statement's own word
        // (SELECT for an append's WITH ... INSERT) says little about why.
        "25006" => (
            format!(
                "{op}: the database is read-only ({detail}): the URL reaches a standby (a \
                 replica, or a primary demoted by a failover) or a database or user with \
                 default_transaction_read_only = on; point it at the primary for writes \
                 (SQLSTATE {code})"
            ),
            false,
        ),
        "42P01" | "42703" => (
            format!("{op}: {detail}: the schema was changed outside Fusion (SQLSTATE {code})"),
            false,
        ),
        _ => (format!("{op}: {detail} (SQLSTATE {code})"), false),
    }
}

/// What a new connection to the server met, tried once a call had waited out the connect
/// timeout for a pooled one (see `crate::timed_out`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cause {
    /// It opened at once, and the pool had all its connections open: they were all in use.
    InUse,
    /// It opened, though the pool, which had room for more connections, opened none
    /// within the timeout: the server refused or did not answer its tries then (down,
    /// starting, at its limit), and takes a connection now.
    Reopened,
    /// It failed: why, as [`parse_postgres_error`] words it (without an operation in
    /// front), and whether a retry may succeed.
    Failed { cause: String, retryable: bool },
    /// It failed for a cause retrying cannot mend (`cause`, a wrong password, a TLS
    /// failure), though the pool had all the connections it may: they were all in use,
    /// and work (the pool opening one would have failed at once), so a retry may succeed.
    InUseAndFailed { cause: String },
    /// It got no answer within the connect timeout either.
    NoAnswer,
}

impl Cause {
    /// The cause a new connection's `err` gives.
    pub(crate) fn failed(err: sqlx::Error) -> Self {
        // Worded for an operation whose words are then taken off: every message of
        // `parse_postgres_error` starts with them.
        let op = Op::new(PLACE, "the server", "connect", None);
        let err = parse_postgres_error(err, op);
        let retryable = err.is_retryable();
        let text = match err {
            Error::Backend { message, .. } => message,
            other => other.to_string(),
        };
        let cause = match text.strip_prefix(&format!("{op}: ")) {
            Some(cause) => cause.to_string(),
            None => text,
        };
        Self::Failed { cause, retryable }
    }
}

/// A call of `op` found no connection of its pool (of at most `max` connections) within
/// the connect timeout `timeout` (sqlx's `PoolTimedOut`), and a new connection tried then
/// met `cause`: the error says that cause, which sqlx drops (it retries a connection the
/// server refuses as too many, as starting, or outright, until the timeout, then reports
/// the timeout alone). Retryable unless the cause is not.
pub(crate) fn pool_timed_out(op: Op<'_>, timeout: Duration, max: u32, cause: &Cause) -> Error {
    let (message, retryable) = match cause {
        Cause::InUse => (
            format!(
                "{op}: no connection within the connect timeout of {timeout:?}: every \
                 connection of the pool ({max}) was in use, and the server takes new ones (one \
                 opened at once): raise PostgresOptions::max_connections, or make fewer calls \
                 at once; retry later"
            ),
            true,
        ),
        Cause::Reopened => (
            format!(
                "{op}: no connection within the connect timeout of {timeout:?}: the pool could \
                 not open one (the server refused its connections or did not answer, as when \
                 it restarts or is at its connection limit), though a new connection tried \
                 then opened; retry"
            ),
            true,
        ),
        Cause::Failed { cause, retryable } => (
            format!(
                "{op}: no connection within the connect timeout of {timeout:?}: the pool could \
                 not open one, and a new connection tried then failed: {cause}"
            ),
            *retryable,
        ),
        Cause::InUseAndFailed { cause } => (
            format!(
                "{op}: no connection within the connect timeout of {timeout:?}: every \
                 connection of the pool ({max}) was in use, and a new connection tried then \
                 failed: {cause}; the pool's connections work, so retry later, but it cannot \
                 open more until that is mended"
            ),
            true,
        ),
        Cause::NoAnswer => (
            format!(
                "{op}: no connection within the connect timeout of {timeout:?}, and no answer \
                 to a new connection within it either: the server is down, starting, stuck or \
                 unreachable; check that it is running and reachable, then retry"
            ),
            true,
        ),
    };
    Error::backend(BACKEND, message, retryable, sqlx::Error::PoolTimedOut)
}

/// The first connection did not open within the connect timeout.
pub(crate) fn connect_timed_out(op: Op<'_>, timeout: Duration) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!(
            "{op}: no answer from the PostgreSQL server within the connect timeout of \
             {timeout:?}; check that it is running and reachable, then retry"
        ),
        retryable: true,
        source: None,
    }
}

/// A call gave up waiting for the server after `limit` (`PostgresOptions::call_limit`).
/// Retryable: the server or the network may come back. Whether the call took effect is
/// unknown, as when a connection drops.
pub(crate) fn no_answer(op: Op<'_>, limit: Duration) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!(
            "{op}: no answer from the PostgreSQL server within {limit:?} (twice the connect \
             and statement timeouts), though the server cancels a statement at its timeout: \
             the server is stuck or the network drops its packets. The call may or may not \
             have taken effect (an append whose messages have ids is safe to retry); retry \
             later"
        ),
        retryable: true,
        source: None,
    }
}

/// Opening waited for the lock under which another connection creates or upgrades
/// `schema` until the statement timeout (or a `lock_timeout`) ended the wait. Retryable:
/// once that upgrade commits, opening finds the schema current.
pub(crate) fn upgraded_elsewhere(op: Op<'_>, schema: &str) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!(
            "{op}: another process is creating or upgrading schema \"{schema}\" (it holds \
             the schema's migration lock), and did not finish within the time this open \
             waits for a lock (the statement timeout, or a lock_timeout the URL sets); retry \
             once it has (a long upgrade of a large storage may need a longer \
             PostgresOptions::statement_timeout, or lock_timeout if the URL sets one)"
        ),
        retryable: true,
        source: None,
    }
}

/// Migration failures, by what the user must do about them.
fn migrate_error(err: MigrateError, op: Op<'_>) -> Error {
    match err {
        // What matters is the server error underneath (permissions, timeouts).
        MigrateError::Execute(inner) | MigrateError::ExecuteMigration(inner, _) => {
            parse_postgres_error(inner, op)
        }
        MigrateError::VersionMissing(version) => newer_schema(op.db, None, &[version]),
        MigrateError::VersionMismatch(version) => schema_error(format!(
            "{op}: schema migration {version} recorded in the database differs from the one \
             in this build of fusion-storage-postgres; it was written by an incompatible build"
        )),
        MigrateError::Dirty(version) => schema_error(format!(
            "{op}: schema migration {version} failed partway; restore a backup"
        )),
        other => schema_error(format!("{op}: schema migration failed: {other}")),
    }
}

fn schema_error(message: String) -> Error {
    Error::Backend {
        backend: BACKEND,
        message,
        retryable: false,
        source: None,
    }
}

/// The schema records migration versions this build does not know: a newer release wrote it.
pub(crate) fn newer_schema(db: &str, schema: Option<&str>, unknown_versions: &[i64]) -> Error {
    let versions = unknown_versions
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let schema = schema
        .map(|s| format!("schema \"{s}\" of "))
        .unwrap_or_default();
    schema_error(format!(
        "{schema}{db} has schema version {versions}, which is newer than this build of \
         fusion-storage-postgres knows; it was written by a newer Fusion release. Upgrade \
         Fusion to open it (nothing was changed)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> Op<'static> {
        Op::new(
            PLACE,
            "postgres://app:***@db/chat",
            "append",
            Some("user-1"),
        )
    }

    #[test]
    fn unreachable_servers_and_pool_timeouts_are_retryable_and_name_the_server() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for err in [sqlx::Error::Io(refused), sqlx::Error::PoolTimedOut] {
            let err = parse_postgres_error(err, op());
            assert!(err.is_retryable(), "{err}");
            let text = err.to_string();
            assert!(
                text.starts_with(
                    "postgres: append of session \"user-1\" on postgres://app:***@db/chat"
                ),
                "{text}"
            );
        }
        assert!(connect_timed_out(op(), Duration::from_secs(1)).is_retryable());
    }

    /// Found by a stress run cutting connections: a handshake cut after its `SSLRequest`
    /// said only "encountered unexpected or invalid data: unexpected response from
    /// SSLRequest: 0x00".
    #[test]
    fn a_reply_off_the_protocol_says_what_it_can_mean_and_is_retryable() {
        let cut = "unexpected response from SSLRequest: 0x00".to_string();
        let err = parse_postgres_error(sqlx::Error::Protocol(cut), op());
        assert!(err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(text.contains("SSLRequest: 0x00"), "{text}");
        assert!(text.contains("cut mid-reply"), "{text}");
        assert!(text.contains("not a PostgreSQL server's"), "{text}");
    }

    /// Found by an audit: `sslmode=verify-full` against a certificate for another name
    /// was "cannot reach the PostgreSQL server ... check that it is running", retryable.
    #[test]
    fn a_certificate_the_handshake_refuses_is_a_tls_error_not_worth_retrying() {
        let refused = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        );
        let err = parse_postgres_error(sqlx::Error::Io(refused), op());
        assert!(!err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(text.contains("TLS failed"), "{text}");
        assert!(text.contains("UnknownIssuer"), "{text}");
        assert!(!text.contains("cannot reach"), "{text}");
    }

    #[test]
    fn sqlstates_decide_retryability() {
        for (code, retryable) in [
            ("57014", true),
            ("40P01", true),
            ("08006", true),
            ("53300", true),
            ("57P01", true),
            ("25P03", true),
            ("25P04", true),
            ("28P01", false),
            ("42501", false),
            ("23505", false),
        ] {
            assert_eq!(database_error(code, "x", op()).1, retryable, "{code}");
        }
        assert!(
            database_error("57014", "x", op())
                .0
                .contains("statement timeout")
        );
    }

    /// Found by an audit: "sorry, too many clients already" said only "the server is
    /// unavailable or out of resources ... retry later", and a pool that timed out
    /// retrying it (sqlx reports only the timeout) "is it running, or are all
    /// connections busy?": neither named the two limits to change.
    #[test]
    fn too_many_connections_names_the_limits_to_change() {
        let (text, retryable) = database_error("53300", "sorry, too many clients already", op());
        assert!(retryable, "{text}");
        for pool_timeout in [false, true] {
            let text = match pool_timeout {
                false => text.clone(),
                true => parse_postgres_error(sqlx::Error::PoolTimedOut, op()).to_string(),
            };
            assert!(text.contains("PostgresOptions::max_connections"), "{text}");
            assert!(text.contains("server's max_connections"), "{text}");
        }
    }

    /// A wait for a pooled connection that ran out says what a new connection met: the
    /// server's words, worded as for a call, after the call's own operation once.
    #[test]
    fn a_pool_timeout_says_the_cause_a_new_connection_met() {
        let said = "Connection refused (os error 111)";
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, said);
        let cause = Cause::failed(sqlx::Error::Io(refused));
        let Cause::Failed {
            cause: text,
            retryable,
        } = &cause
        else {
            panic!("{cause:?}");
        };
        assert!(retryable);
        assert!(
            text.starts_with("cannot reach the PostgreSQL server ("),
            "{text}"
        );
        let timeout = Duration::from_secs(5);
        let err = pool_timed_out(op(), timeout, 8, &cause);
        assert!(err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(
                "postgres: append of session \"user-1\" on postgres://app:***@db/chat: no \
                 connection within the connect timeout of 5s: the pool could not open one, \
                 and a new connection tried then failed: cannot reach the PostgreSQL server"
            ),
            "{text}"
        );
        assert!(text.contains(said), "{text}");
        assert_eq!(text.matches("append of session").count(), 1, "{text}");

        // A cause retrying cannot mend makes the error one too.
        let tls = sqlx::Error::Tls("invalid peer certificate: UnknownIssuer".into());
        let err = pool_timed_out(op(), timeout, 8, &Cause::failed(tls));
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("TLS failed"), "{err}");

        let busy = pool_timed_out(op(), timeout, 8, &Cause::InUse).to_string();
        assert!(
            busy.contains("every connection of the pool (8) was in use"),
            "{busy}"
        );
        // A pool with room that could not open one does not blame its size.
        let back = pool_timed_out(op(), timeout, 8, &Cause::Reopened);
        assert!(back.is_retryable(), "{back}");
        let back = back.to_string();
        assert!(back.contains("the pool could not open one"), "{back}");
        assert!(!back.contains("max_connections"), "{back}");
        // A full pool's calls wait for its connections, which work, whatever a new one
        // meets.
        let cause = "password authentication failed for user \"app\"".to_string();
        let full = pool_timed_out(op(), timeout, 8, &Cause::InUseAndFailed { cause });
        assert!(full.is_retryable(), "{full}");
        let full = full.to_string();
        assert!(
            full.contains("every connection of the pool (8) was in use"),
            "{full}"
        );
        assert!(full.contains("password authentication failed"), "{full}");
        let silent = pool_timed_out(op(), timeout, 8, &Cause::NoAnswer);
        assert!(silent.is_retryable(), "{silent}");
        assert!(silent.to_string().contains("no answer"), "{silent}");
    }

    #[test]
    fn unknown_applied_migration_is_a_newer_schema() {
        let err = sqlx::Error::Migrate(Box::new(MigrateError::VersionMissing(7)));
        let err = parse_postgres_error(err, op());
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("schema version 7"), "{text}");
        assert!(text.contains("newer"), "{text}");
    }
}
