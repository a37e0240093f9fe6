//! The one place where driver errors become [`fusion_core::Error`]s.
//!
//! Every sqlx call in this crate funnels its error through [`parse_sqlite_error`] and every
//! direct SQLite call ([`DirectError`]) through [`parse_direct_error`]; both read SQLite's result code with
//! [`database_error`], so what counts as retryable and how a database is named in messages
//! is decided once.
//! Messages name the database by its file path (SQLite URLs hold no credentials, and the
//! full URL is never printed) plus the operation and session involved.

use std::path::Path;

use fusion_core::Error;
use fusion_core::sql::Place;
use sqlx::migrate::MigrateError;

use crate::files::{log_holds_writes, special_file, symlink_beside, wal_without_shared_memory};

mod busy;
mod schema;

pub(crate) use busy::MaybeBusy;
use schema::schema_error;
pub(crate) use schema::{foreign_database, newer_schema};

/// The backend name used in every error of this crate.
pub(crate) const BACKEND: &str = "sqlite";

/// Messages of this crate place a session in its database file.
pub(crate) const PLACE: Place = Place::InFile;

// SQLite primary result codes (https://sqlite.org/rescode.html). The driver reports
// extended codes; the low byte is the primary code.
const SQLITE_ERROR: i64 = 1;
const SQLITE_PERM: i64 = 3;
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_NOMEM: i64 = 7;
const SQLITE_READONLY: i64 = 8;
const SQLITE_IOERR: i64 = 10;
const SQLITE_CORRUPT: i64 = 11;
const SQLITE_FULL: i64 = 13;
const SQLITE_TOOBIG: i64 = 18;
const SQLITE_CANTOPEN: i64 = 14;
const SQLITE_AUTH: i64 = 23;
const SQLITE_NOTADB: i64 = 26;
/// An extended code: a row's primary key is taken.
const SQLITE_CONSTRAINT_PRIMARYKEY: i64 = 1555;

/// What was being done on which database, for messages ([`fusion_core::sql::Op`]), and
/// the database file as the file system names it, for the hints that look at it (is it a
/// directory, is its `-shm` missing). The two differ: a path is shown with its control
/// characters escaped (`crate::files::shown`), and a hint looking at the shown name
/// would look at another file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op<'a> {
    shown: fusion_core::sql::Op<'a>,
    /// The database as messages name it: its path, escaped, or `:memory:`.
    pub(crate) db: &'a str,
    /// The database file itself; `None` when there is none to look at.
    file: Option<&'a Path>,
}

impl<'a> Op<'a> {
    /// Operation `name` on the database shown as `db`, about `session_id` if any.
    pub(crate) fn new(
        place: Place,
        db: &'a str,
        name: &'static str,
        session_id: Option<&'a str>,
    ) -> Self {
        let shown = fusion_core::sql::Op::new(place, db, name, session_id);
        Self {
            shown,
            db,
            file: None,
        }
    }

    /// Opening the storage on the database shown as `db`.
    pub(crate) fn open(place: Place, db: &'a str) -> Self {
        Self::new(place, db, "open", None)
    }

    /// `self` on the database file `file`, which the hints of its errors look at.
    pub(crate) fn at(self, file: Option<&'a Path>) -> Self {
        Self { file, ..self }
    }
}

impl std::fmt::Display for Op<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shown.fmt(f)
    }
}

/// Why a call of the direct path (`crate::direct`) failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirectError {
    /// SQLite reported an error.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The storage was closed.
    #[error("the storage was closed")]
    Closed,
    /// The database file was deleted, or replaced by another, while this storage had it
    /// open. `written`: the call that found it committed to the deleted file (so its
    /// write is lost with the file); otherwise nothing was done.
    #[error("the database file was deleted while open")]
    Deleted { written: bool },
    /// The database file is still there, but no longer at the path this storage opened
    /// (moved away, or another file now in its place), so no new connection can be
    /// opened to it; the open ones go on.
    #[error("the database file was moved while open")]
    Moved,
    /// An earlier call found the database file corrupt: writes are refused from then on.
    #[error("the database file was found corrupt")]
    FoundCorrupt,
    /// The blocking task running the call panicked or was dropped by a shutting-down runtime.
    #[error("the task running the SQLite call stopped: {0}")]
    Stopped(#[from] tokio::task::JoinError),
}

/// Maps a sqlx error to a Fusion error, naming the database and the operation.
pub(crate) fn parse_sqlite_error(err: sqlx::Error, op: Op<'_>) -> Error {
    let err = match err {
        sqlx::Error::Migrate(e) => return migrate_error(*e, op),
        sqlx::Error::Configuration(e) => return Error::Config(format!("{op}: {e}")),
        other => other,
    };
    let (message, retryable) = match &err {
        sqlx::Error::Database(e) => {
            let code = e.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(-1);
            if let Some(corrupt) = count_behind_rows(code, e.message(), op) {
                return corrupt;
            }
            database_error(code, e.message(), op)
        }
        sqlx::Error::Io(e) => (
            format!("{op}: I/O error: {e}"),
            matches!(
                e.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
            ),
        ),
        sqlx::Error::PoolTimedOut => (
            format!("{op}: timed out waiting for a free connection"),
            true,
        ),
        // A value of the wrong type in the one session read (SQLite keeps any type).
        sqlx::Error::ColumnDecode { index, source } if op.shown.session_id.is_some() => {
            let what = format!("column {index} of what it reads: {source}");
            return fusion_core::sql::wrongly_typed(BACKEND, op.shown, &what);
        }
        sqlx::Error::PoolClosed => (format!("{op}: the storage was closed"), false),
        sqlx::Error::WorkerCrashed => (format!("{op}: the SQLite worker thread stopped"), true),
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

/// Maps an error of the direct SQLite path (`crate::direct`) like [`parse_sqlite_error`].
pub(crate) fn parse_direct_error(err: DirectError, op: Op<'_>) -> Error {
    let (message, retryable) = match &err {
        DirectError::Sqlite(rusqlite::Error::SqliteFailure(e, detail)) => {
            let detail = detail.clone().unwrap_or_else(|| e.to_string());
            let code = i64::from(e.extended_code);
            if let Some(corrupt) = count_behind_rows(code, &detail, op) {
                return corrupt;
            }
            database_error(code, &detail, op)
        }
        DirectError::Sqlite(rusqlite::Error::InvalidColumnType(_, name, found))
            if op.shown.session_id.is_some() =>
        {
            let what = format!("`{name}` holds {found}");
            return fusion_core::sql::wrongly_typed(BACKEND, op.shown, &what);
        }
        // Text that is not UTF-8, a number past the type read: sqlx's `ColumnDecode` too.
        DirectError::Sqlite(
            e @ (rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)),
        ) if op.shown.session_id.is_some() => {
            return fusion_core::sql::wrongly_typed(BACKEND, op.shown, &e.to_string());
        }
        DirectError::Sqlite(other) => (format!("{op}: {other}"), false),
        DirectError::Closed => (format!("{op}: the storage was closed"), false),
        DirectError::Deleted { written } => (
            format!(
                "{op}: the database file was deleted or replaced while this storage had it \
                 open; {} the deleted file, which goes away with every write since when the \
                 storage closes. Open the storage again to use the file now at that path",
                if *written {
                    "this write went only to"
                } else {
                    "nothing was done: writes would go only to"
                }
            ),
            false,
        ),
        DirectError::Moved => (
            format!(
                "{op}: the database file was moved away from its path while this storage \
                 had it open (or another file now stands there), so this call, which needs \
                 a new connection, cannot open one to it; nothing was done. Open the \
                 storage again at the file's new path"
            ),
            false,
        ),
        DirectError::FoundCorrupt => (
            format!(
                "{op}: an earlier call found the database file corrupt, so this storage \
                 writes nothing more to it, which could spread the damage; nothing was \
                 done. Check it with `sqlite3 {db} 'PRAGMA integrity_check'`, restore it \
                 from a backup or `.recover` it, then open the storage again",
                db = op.db
            ),
            false,
        ),
        DirectError::Stopped(e) => (format!("{op}: the SQLite call stopped: {e}"), false),
    };
    Error::backend(BACKEND, message, retryable, err)
}

/// [`Error::Corrupt`] for a write of a session whose new message met a stored seq (SQLite's
/// `code` and `detail`; [`fusion_core::sql::count_behind_rows`]), `None` for any other
/// error. Every write numbers new rows from the `sessions` row's count inside its
/// `BEGIN IMMEDIATE`, so this happens only when the count is behind the rows.
fn count_behind_rows(code: i64, detail: &str, op: Op<'_>) -> Option<Error> {
    let session_id = op.shown.session_id?;
    (code == SQLITE_CONSTRAINT_PRIMARYKEY && detail.contains("messages.seq"))
        .then(|| fusion_core::sql::count_behind_rows(BACKEND, session_id, op.shown, detail))
}

/// The message and retryability of SQLite's (extended) result `code`, with the driver's
/// `detail` text.
///
/// Busy and locked databases are retryable: another connection held the write lock for
/// longer than the busy timeout, and the same call can succeed once it lets go.
fn database_error(code: i64, detail: &str, op: Op<'_>) -> (String, bool) {
    let db = op.db;
    // The hints look at the file itself, by its real name, never by the shown one.
    let file = |check: fn(&Path) -> bool| op.file.is_some_and(check);
    match code & 0xff {
        SQLITE_BUSY | SQLITE_LOCKED => (
            format!(
                "{op}: the database is locked by another connection and stayed locked \
                 past the busy timeout; retry later ({detail})"
            ),
            true,
        ),
        // A writable file in a read-only directory fails read-only, not "cannot open",
        // for want of its shared-memory file: explained below with the other case.
        SQLITE_READONLY if !file(wal_without_shared_memory) => (
            format!(
                "{op}: the database is read-only (file or directory permissions, a \
                 `mode=ro` URL, or a read-only mount): {detail}"
            ),
            false,
        ),
        SQLITE_NOTADB => (
            format!(
                "{op}: the file is not a SQLite database ({detail}); it was left \
                 untouched, point the URL at a SQLite file or a new path"
            ),
            false,
        ),
        SQLITE_CORRUPT => (
            format!(
                "{op}: the database file is corrupt ({detail}); restore it from a \
                 backup or try `sqlite3 {db} .recover`"
            ),
            false,
        ),
        SQLITE_CANTOPEN if file(Path::is_dir) => (
            format!(
                "{op}: cannot open the database file ({detail}): it is a directory; name a \
                 file in it instead, such as {db}/sessions.db"
            ),
            false,
        ),
        SQLITE_CANTOPEN | SQLITE_IOERR if file(special_file) => (
            format!(
                "{op}: cannot use the database file ({detail}): it is not a regular file \
                 but a FIFO, socket or device; name a regular file instead"
            ),
            false,
        ),
        SQLITE_CANTOPEN if let Some(link) = op.file.and_then(symlink_beside) => (
            format!(
                "{op}: cannot open the database file ({detail}): {link} is a symbolic link \
                 where SQLite keeps a file of its own, which SQLite refuses to follow (it \
                 would write through it). Nothing was written through it; remove the link"
            ),
            false,
        ),
        SQLITE_CANTOPEN | SQLITE_READONLY if file(wal_without_shared_memory) => {
            let read_it = if file(log_holds_writes) {
                format!(
                    "Its log {db}-wal holds writes not yet in the file, which \
                     `?immutable=true` would not read: copy both files somewhere writable"
                )
            } else {
                "Add `?immutable=true` to the URL to read it there, only while nothing \
                 writes to it, or copy it somewhere writable"
                    .to_owned()
            };
            (
                format!(
                    "{op}: cannot open the database file ({detail}): it is in WAL mode, and \
                     SQLite cannot create the shared-memory file {db}-shm beside it, which \
                     even a read-only open needs (a read-only directory or file system, a \
                     backup or snapshot mount). {read_it}"
                ),
                false,
            )
        }
        SQLITE_CANTOPEN => (
            format!(
                "{op}: cannot open the database file ({detail}); check that it exists \
                 and that its directory is accessible"
            ),
            false,
        ),
        SQLITE_PERM | SQLITE_AUTH => (format!("{op}: permission denied: {detail}"), false),
        SQLITE_FULL => (
            format!(
                "{op}: disk full or quota reached ({detail}); the write was rolled back, \
                 nothing of it is stored: free space, then retry"
            ),
            false,
        ),
        SQLITE_IOERR => (format!("{op}: I/O error: {detail}"), false),
        SQLITE_NOMEM => (format!("{op}: SQLite ran out of memory: {detail}"), true),
        // A table or column this build's statements name is gone: a newer release's
        // upgrade, made by a process on that release while this storage was open, or a
        // hand edit, made then or before the open (which reads the migration records
        // only). Opening again refuses the first, naming the version, and not the second.
        SQLITE_ERROR
            if detail.starts_with("no such table") || detail.starts_with("no such column") =>
        {
            (
                format!(
                    "{op}: {detail} (SQLite code {code}): a table or column this build uses \
                     is missing from the database: either a newer Fusion release upgraded \
                     its schema while this storage had it open (restart this process on \
                     that release; opening the database again then refuses it, naming the \
                     version), or it was changed outside Fusion (a table or column dropped \
                     or renamed by hand)"
                ),
                false,
            )
        }
        _ => (format!("{op}: {detail} (SQLite code {code})"), false),
    }
}

/// Whether `err` is SQLite finding the database file damaged (`SQLITE_CORRUPT`) or not a
/// database at all (`SQLITE_NOTADB`), any extended code.
pub(crate) fn is_corruption(err: &rusqlite::Error) -> bool {
    err.sqlite_error_code().is_some_and(|code| {
        matches!(
            code,
            rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
        )
    })
}

/// [`is_corruption`] for a sqlx error: SQLite's (extended) code is a string there.
pub(crate) fn is_sqlx_corruption(err: &sqlx::Error) -> bool {
    sqlx_code(err).is_some_and(|code| matches!(code & 0xff, SQLITE_CORRUPT | SQLITE_NOTADB))
}

/// Whether `err` is `SQLITE_TOOBIG`: a string or blob the statement made was longer than
/// SQLite's limit (`SQLITE_MAX_LENGTH`, 10^9 bytes by default).
pub(crate) fn is_too_big(err: &sqlx::Error) -> bool {
    sqlx_code(err) == Some(SQLITE_TOOBIG)
}

/// SQLite's (extended) result code of a sqlx error from the database.
fn sqlx_code(err: &sqlx::Error) -> Option<i64> {
    match err {
        sqlx::Error::Database(e) => e.code().and_then(|c| c.parse::<i64>().ok()),
        _ => None,
    }
}

/// What SQLite says when a write's statement meets a session whose `created_at` or
/// `updated_at` holds no time Fusion writes (`times_hold!` of `crate::sql`), with plain
/// `SQLITE_ERROR`: no other statement of a write can overflow an integer.
const TIMES_REFUSED: &str = "integer overflow";

/// Whether `err`, a write's error as mapped from either path's, is SQLite refusing the
/// write for its session's damaged times ([`TIMES_REFUSED`]): the storage then reads the
/// session's facts to say which (`crate::meta::damaged`).
pub(crate) fn refused_for_times(err: &Error) -> bool {
    let Error::Backend {
        source: Some(source),
        ..
    } = err
    else {
        return false;
    };
    let sqlx = source.downcast_ref::<sqlx::Error>();
    let failure = match (sqlx, source.downcast_ref::<DirectError>()) {
        (Some(e @ sqlx::Error::Database(db)), _) => sqlx_code(e).zip(Some(db.message())),
        (_, Some(DirectError::Sqlite(rusqlite::Error::SqliteFailure(e, Some(detail))))) => {
            Some((i64::from(e.extended_code), detail.as_str()))
        }
        _ => None,
    };
    failure == Some((SQLITE_ERROR, TIMES_REFUSED))
}

/// Whether `err` is `ROLLBACK` finding no transaction to end (plain `SQLITE_ERROR`, "cannot
/// rollback - no transaction is active"): the connection is then already out of any
/// transaction. Every other `ROLLBACK` failure is an I/O or internal error.
pub(crate) fn is_no_transaction(err: &sqlx::Error) -> bool {
    sqlx_code(err) == Some(SQLITE_ERROR)
}

/// Migration failures, by what the user must do about them.
fn migrate_error(err: MigrateError, op: Op<'_>) -> Error {
    let db = op.db;
    match err {
        // What matters is the SQLite error underneath (busy, read-only, not a database).
        MigrateError::Execute(inner) | MigrateError::ExecuteMigration(inner, _) => {
            parse_sqlite_error(inner, op)
        }
        MigrateError::VersionMissing(version) => newer_schema(db, &[version]),
        MigrateError::VersionMismatch(version) => schema_error(format!(
            "{op}: schema migration {version} recorded in the database differs from the one \
             in this build of fusion-storage-sqlite; it was written by an incompatible build"
        )),
        MigrateError::Dirty(version) => schema_error(format!(
            "{op}: schema migration {version} failed partway; restore a backup"
        )),
        other => schema_error(format!("{op}: schema migration failed: {other}")),
    }
}

/// A stored message of `session_id` whose bytes are not text: not UTF-8, held as text or
/// as a blob (SQLite stores both unchecked; a number never stays one in the column).
pub(crate) fn not_text(session_id: &str, seq: i64) -> Error {
    Error::corrupt(
        BACKEND,
        session_id,
        format!("message seq {seq} is not text, so not a chat message's JSON"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::beside;

    fn op() -> Op<'static> {
        Op::new(PLACE, "/data/sessions.db", "append", Some("user-1"))
    }

    /// A WAL-mode database read where SQLite cannot create its `-shm` file (a read-only
    /// file system; not reproducible here as root, whom permissions do not stop) is
    /// explained, with the way to read it there; other files that cannot be opened are not.
    #[test]
    fn a_wal_database_that_cannot_get_its_shared_memory_file_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        // A control character in its name: the hints look at the file by its real name,
        // the message shows it escaped.
        let wal = dir.path().join("wal\n.db");
        let journal = dir.path().join("journal.db");
        for (path, mode) in [(&wal, "WAL"), (&journal, "DELETE")] {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.pragma_update(None, "journal_mode", mode).unwrap();
            conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
                .unwrap();
        }
        let garbage = dir.path().join("notes.db");
        std::fs::write(&garbage, [b'x'; 100]).unwrap();
        let missing = dir.path().join("missing.db");

        let cantopen = |path: &Path| {
            let db = crate::files::shown(&path.display().to_string());
            let op = Op::open(PLACE, &db).at(Some(path));
            database_error(14, "unable to open database file", op).0
        };
        let text = cantopen(&wal);
        assert!(text.contains("it is in WAL mode"), "{text}");
        assert!(text.contains("?immutable=true"), "{text}");
        let shown_shm = format!("{}-shm", dir.path().join("wal\\n.db").display());
        assert!(text.contains(&shown_shm), "{text}");
        assert!(!text.contains('\n'), "{text}");
        for path in [&journal, &garbage, &missing] {
            let text = cantopen(path);
            assert!(!text.contains("WAL"), "{text}");
            assert!(text.contains("check that it exists"), "{text}");
        }
        // A log holding writes would be skipped by `immutable`: copying is the way.
        let log = beside(&wal, "-wal");
        std::fs::write(&log, b"frames").unwrap();
        let text = cantopen(&wal);
        assert!(text.contains("holds writes not yet in the file"), "{text}");
        assert!(text.contains("copy both files"), "{text}");
        std::fs::remove_file(&log).unwrap();
        // With the shared-memory file there, the cause is something else.
        let shm = beside(&wal, "-shm");
        std::fs::write(&shm, b"").unwrap();
        assert!(!cantopen(&wal).contains("WAL"));
    }

    #[test]
    fn pool_timeouts_are_retryable_and_name_the_database() {
        let err = parse_sqlite_error(sqlx::Error::PoolTimedOut, op());
        assert!(err.is_retryable());
        let text = err.to_string();
        assert!(
            text.starts_with("sqlite: append of session \"user-1\""),
            "{text}"
        );
        assert!(text.contains("/data/sessions.db"), "{text}");
    }

    #[test]
    fn unknown_applied_migration_is_a_newer_schema() {
        let err = sqlx::Error::Migrate(Box::new(MigrateError::VersionMissing(7)));
        let err = parse_sqlite_error(err, op());
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("schema version 7"), "{text}");
        assert!(text.contains("newer"), "{text}");
        assert!(text.contains("/data/sessions.db"), "{text}");
    }

    #[test]
    fn busy_and_locked_are_told_apart_from_other_failures() {
        let sqlite = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        // SQLITE_BUSY, SQLITE_LOCKED and an extended code of each (BUSY_SNAPSHOT, LOCKED_SHAREDCACHE).
        for code in [5, 6, 517, 262] {
            assert!(sqlite(code).is_busy(), "{code}");
            assert!(DirectError::Sqlite(sqlite(code)).is_busy(), "{code}");
        }
        // SQLITE_ERROR, SQLITE_READONLY, SQLITE_NOTADB.
        for code in [1, 8, 26] {
            assert!(!sqlite(code).is_busy(), "{code}");
        }
        assert!(!DirectError::Closed.is_busy());
        assert!(!sqlx::Error::PoolTimedOut.is_busy());
    }

    #[test]
    fn io_errors_name_the_path() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let text = parse_sqlite_error(sqlx::Error::Io(io), op()).to_string();
        assert!(text.contains("in /data/sessions.db: I/O error"), "{text}");
    }

    #[test]
    fn corrupt_rows_name_session_and_seq() {
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        match fusion_core::sql::corrupt_row(BACKEND, "user-1", 4, &json) {
            Error::Corrupt {
                backend,
                session_id,
                detail,
            } => {
                assert_eq!((backend, session_id.as_str()), ("sqlite", "user-1"));
                assert!(detail.contains("seq 4"), "{detail}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
