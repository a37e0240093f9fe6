//! The embedded schema migrations, the creation of the storage's schema, and the check
//! that refuses schemas written by newer releases.
//!
//! sqlx records applied migrations in `_sqlx_migrations`, which lives in the storage's own
//! schema (it is the first and only schema on the `search_path`), so applications sharing
//! a database never see each other's records. A version there that this build does not
//! have means a newer release upgraded the schema; opening it anyway could misread or
//! damage data, so that is an error naming the schema, and nothing is written.

use fusion_core::Result;
use fusion_core::sql::{Schema, check_migrations};
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection};

use crate::error::{Op, PLACE, newer_schema, parse_postgres_error};

/// The schema, embedded at build time: connecting never needs the migration files on disk.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The first key of the advisory lock that serializes creating and migrating one schema
/// (the second is the hash of the schema name): "fusn" in ASCII.
const LOCK_SPACE: i32 = 0x6675_736e;

/// Brings `schema` (the one on `conn`'s `search_path`) up to this build's version,
/// creating it when missing and refusing newer ones. `db` names the server in errors.
///
/// An up-to-date schema is only read, so a user without CREATE rights can open it.
/// Otherwise the work runs in one transaction holding an advisory lock on the schema's
/// name, so processes opening a new schema at once do not race to create it: the later
/// ones wait, then find it current.
pub(crate) async fn run(conn: &mut PgConnection, schema: &str, db: &str) -> Result<()> {
    let op = Op::open(PLACE, db);
    let found = match look(conn, schema)
        .await
        .map_err(|e| parse_postgres_error(e, op))?
    {
        Some(found) => found,
        None => migrate_locked(conn, schema)
            .await
            .map_err(|e| parse_postgres_error(e, op))?,
    };
    match found {
        Schema::Current => Ok(()),
        Schema::Newer(unknown) => Err(newer_schema(db, Some(schema), &unknown)),
    }
}

/// Creates and migrates `schema` under the advisory lock, unless a look under the lock
/// finds nothing to do. Dropping the transaction on an error rolls everything back.
async fn migrate_locked(conn: &mut PgConnection, schema: &str) -> sqlx::Result<Schema> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(LOCK_SPACE)
        .bind(schema)
        .execute(&mut *tx)
        .await?;
    if let Some(found) = look(&mut tx, schema).await? {
        return Ok(found);
    }
    // The name is checked (`crate::config`) to need no quoting.
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&mut *tx)
        .await?;
    // `run_direct` rather than `run`: `run` takes an `Acquire` whose lifetime bound makes
    // this future not `Send` (a known sqlx quirk the method exists to avoid). Each
    // migration's own transaction becomes a savepoint of this one.
    MIGRATOR.run_direct(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(
        schema,
        "PostgreSQL conversation storage schema is up to date"
    );
    Ok(Schema::Current)
}

/// The schema when nothing is left to do: every migration of this build applied,
/// unchanged, or a migration recorded that this build does not have. `None` when the
/// schema must be created or migrated.
async fn look(conn: &mut PgConnection, schema: &str) -> sqlx::Result<Option<Schema>> {
    let has_table: bool =
        sqlx::query_scalar("SELECT to_regclass(format('%I._sqlx_migrations', $1)) IS NOT NULL")
            .bind(schema)
            .fetch_one(&mut *conn)
            .await?;
    if !has_table {
        return Ok(None);
    }
    let applied: Vec<(i64, Vec<u8>, bool)> =
        sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations")
            .fetch_all(&mut *conn)
            .await?;
    let known = MIGRATOR.iter().map(|m| (m.version, &*m.checksum));
    Ok(check_migrations(&applied, known))
}
