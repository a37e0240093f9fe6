//! The embedded schema migrations, and the check that refuses databases from newer releases.
//!
//! sqlx records applied migrations in `_sqlx_migrations`. A version there that this build
//! does not have means a newer release upgraded the file; opening it anyway could misread
//! or damage data, so that is an error naming the file, and nothing is written.

use std::time::Duration;

use fusion_core::Result;
use fusion_core::sql::{Schema, check_migrations};
use sqlx::SqlitePool;
use sqlx::migrate::Migrator;

use crate::busy::wait_while_busy;
use crate::error::{Op, PLACE, newer_schema, parse_sqlite_error};
use crate::sql::BEGIN_WRITE;

/// The schema, embedded at build time: opening never needs the migration files on disk.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Brings the schema of `db` up to this build's version, refusing newer databases.
///
/// An up-to-date database is only read, so a read-only file opens fine. Otherwise the
/// migrations run inside one write transaction, so two processes opening a new file at
/// once do not both try to create the tables: the second waits for the first, then finds
/// the schema current. A try that meets a busy database is rolled back whole and repeated
/// for up to `busy_timeout` (see `crate::busy`).
pub(crate) async fn run(pool: &SqlitePool, db: &str, busy_timeout: Duration) -> Result<()> {
    let schema = wait_while_busy(busy_timeout, || migrate_once(pool, db))
        .await
        .map_err(|e| parse_sqlite_error(e, Op::open(PLACE, db)))?;
    match schema {
        Schema::Current => Ok(()),
        Schema::Newer(unknown) => Err(newer_schema(db, &unknown)),
    }
}

/// One try of [`run`]: reads the schema and, unless it is current or newer, migrates it.
async fn migrate_once(pool: &SqlitePool, db: &str) -> sqlx::Result<Schema> {
    if let Some(schema) = look(pool).await? {
        return Ok(schema);
    }
    // Dropping the transaction on an error rolls it back, so a failed try leaves nothing.
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    // `run_direct` rather than `run`: `run` takes an `Acquire` whose lifetime bound
    // makes this future not `Send` (a known sqlx quirk the method exists to avoid).
    MIGRATOR.run_direct(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(db, "SQLite conversation storage schema is up to date");
    Ok(Schema::Current)
}

/// The schema when nothing is left to do: every migration of this build applied,
/// unchanged, or a migration recorded that this build does not have. `None` when
/// migrations must run.
async fn look(pool: &SqlitePool) -> sqlx::Result<Option<Schema>> {
    let has_table: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master \
         WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(pool)
    .await?;
    if !has_table {
        return Ok(None);
    }
    let applied: Vec<(i64, Vec<u8>, bool)> =
        sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations")
            .fetch_all(pool)
            .await?;
    let known = MIGRATOR.iter().map(|m| (m.version, &*m.checksum));
    Ok(check_migrations(&applied, known))
}
