//! Whether an error is SQLite saying the database is busy or locked: what the callers
//! that wait out another connection's lock (`crate::busy`, the direct path) retry on.

use sqlx::migrate::MigrateError;

use super::{DirectError, SQLITE_BUSY, SQLITE_LOCKED};

/// An error that may be SQLite saying another connection holds a lock the call needs
/// (`SQLITE_BUSY` or `SQLITE_LOCKED`, any extended code), so that the same call can succeed
/// once that connection lets go.
pub(crate) trait MaybeBusy {
    /// Whether this is a busy or locked database.
    fn is_busy(&self) -> bool;
}

fn is_busy_code(code: i64) -> bool {
    matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED)
}

impl MaybeBusy for sqlx::Error {
    fn is_busy(&self) -> bool {
        match self {
            sqlx::Error::Database(e) => e
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .is_some_and(is_busy_code),
            sqlx::Error::Migrate(e) => match &**e {
                MigrateError::Execute(inner) | MigrateError::ExecuteMigration(inner, _) => {
                    inner.is_busy()
                }
                _ => false,
            },
            _ => false,
        }
    }
}

impl MaybeBusy for rusqlite::Error {
    fn is_busy(&self) -> bool {
        self.sqlite_error_code().is_some_and(|code| {
            matches!(
                code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            )
        })
    }
}

impl MaybeBusy for DirectError {
    fn is_busy(&self) -> bool {
        match self {
            DirectError::Sqlite(e) => e.is_busy(),
            DirectError::Closed
            | DirectError::Deleted { .. }
            | DirectError::Moved
            | DirectError::FoundCorrupt
            | DirectError::Stopped(_) => false,
        }
    }
}
