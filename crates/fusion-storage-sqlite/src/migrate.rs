//! The embedded schema migrations, and the check that refuses databases from newer releases.
//!
//! sqlx records applied migrations in `_sqlx_migrations`. A version there that this build
//! does not have means a newer release upgraded the file; opening it anyway could misread
//! or damage data, so that is an error naming the file, and nothing is written.

use fusion_core::Result;
use sqlx::SqlitePool;
use sqlx::migrate::Migrator;

use crate::error::{Op, newer_schema, parse_sqlite_error};
use crate::sql::BEGIN_WRITE;

/// The schema, embedded at build time: opening never needs the migration files on disk.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Brings the schema of `db` up to this build's version, refusing newer databases.
///
/// An up-to-date database is only read, so a read-only file opens fine. Otherwise the
/// migrations run inside one write transaction, so two processes opening a new file at
/// once do not both try to create the tables.
pub(crate) async fn run(pool: &SqlitePool, db: &str) -> Result<()> {
    let err = |e| parse_sqlite_error(e, Op::open(db));
    if schema_is_current(pool, db).await? {
        return Ok(());
    }
    let mut tx = pool.begin_with(BEGIN_WRITE).await.map_err(err)?;
    // `run_direct` rather than `run`: `run` takes an `Acquire` whose lifetime bound
    // makes this future not `Send` (a known sqlx quirk the method exists to avoid).
    MIGRATOR
        .run_direct(&mut *tx)
        .await
        .map_err(|e| err(sqlx::Error::from(e)))?;
    tx.commit().await.map_err(err)?;
    tracing::info!(db, "SQLite conversation storage schema is up to date");
    Ok(())
}

/// Whether every migration of this build is applied, unchanged. Errors when the
/// database records a migration this build does not have.
async fn schema_is_current(pool: &SqlitePool, db: &str) -> Result<bool> {
    let err = |e| parse_sqlite_error(e, Op::open(db));
    let has_table: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master \
         WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(pool)
    .await
    .map_err(err)?;
    if !has_table {
        return Ok(false);
    }
    let applied: Vec<(i64, Vec<u8>, bool)> =
        sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations")
            .fetch_all(pool)
            .await
            .map_err(err)?;
    let unknown: Vec<i64> = applied
        .iter()
        .map(|(version, ..)| *version)
        .filter(|version| !MIGRATOR.iter().any(|m| m.version == *version))
        .collect();
    if !unknown.is_empty() {
        return Err(newer_schema(db, &unknown));
    }
    Ok(MIGRATOR.iter().all(|m| {
        applied
            .iter()
            .any(|(v, sum, ok)| *v == m.version && *ok && **sum == *m.checksum)
    }))
}
