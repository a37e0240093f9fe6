//! The embedded schema migrations, the creation of the storage's schema, and the check
//! that refuses schemas written by newer releases.
//!
//! sqlx records applied migrations in `_sqlx_migrations`, which lives in the storage's own
//! schema (it is the first and only schema on the `search_path`), so applications sharing
//! a database never see each other's records. A version there that this build does not
//! have means a newer release upgraded the schema; opening it anyway could misread or
//! damage data, so that is an error naming the schema, and nothing is written.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use fusion_core::Result;
use fusion_core::sql::Schema;
use fusion_core::sql::migrations::{Applied, Migrations};
use sqlx::{Connection, PgConnection, PgPool};

use crate::error::{
    BACKEND, Op, PLACE, newer_schema, no_answer, parse_postgres_error, upgraded_elsewhere,
};

/// The first key of the advisory lock that serializes creating and migrating one schema
/// (the second is the hash of the schema name): "fusn" in ASCII.
const LOCK_SPACE: i32 = 0x6675_736e;

/// The schema, embedded at build time (connecting never needs the migration files on disk),
/// read the same from an LF or a CRLF checkout, and from databases either made.
static MIGRATIONS: LazyLock<Migrations> =
    LazyLock::new(|| Migrations::new(sqlx::migrate!("./migrations")));

/// What [`run`] does with a schema that holds no storage (no `_sqlx_migrations` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfMissing {
    /// Create the schema (when it does not exist) and its tables.
    Create,
    /// Create nothing: [`run`] answers `false`.
    Leave,
}

/// Brings `schema` (the one on `conn`'s `search_path`) up to this build's version,
/// creating it when missing as `if_missing` says and refusing newer ones: `true` when the
/// storage is there now, `false`, having written nothing, when it holds no storage and
/// `if_missing` is [`IfMissing::Leave`]. `db` names the server in errors.
///
/// Bounded like every call of the storage (`PostgresOptions::call_limit`): a server that
/// stops answering here (frozen, or cut off by a network that drops its packets) would
/// otherwise hold the open for good, out of reach of its statement timeout. The look gets
/// one call limit; creating or upgrading the schema, whose statements each have the
/// statement timeout, gets one for each migration of this build and one for the lock, so
/// that a long upgrade of a large storage is not taken for a server that stopped
/// answering. On that error the caller's `close` of `conn` only writes (the rollback the
/// dropped transaction queued, and a goodbye) and shuts the socket, waiting for no answer;
/// a server that resumes then rolls back and frees the advisory lock.
///
/// An up-to-date schema is only read, so a user without CREATE rights can open it.
/// Otherwise the work runs in one transaction holding an advisory lock on the schema's
/// name, so processes opening a new schema at once do not race to create it: the later
/// ones wait, then find it current. They wait as any statement of the storage waits for
/// a lock, up to the statement timeout (or a `lock_timeout` the URL sets); one whose
/// wait ends there fails retryably saying another process is creating or upgrading the
/// schema ([`Locked::Elsewhere`]), not with the bare timeout of an unnamed statement.
pub(crate) async fn run(
    conn: &mut PgConnection,
    schema: &str,
    db: &str,
    if_missing: IfMissing,
    call_limit: Option<Duration>,
) -> Result<bool> {
    let op = Op::open(PLACE, db);
    let found = match within(call_limit, op, look(conn, schema)).await? {
        Found::Done(found) => Some(found),
        Found::Nothing if if_missing == IfMissing::Leave => None,
        Found::Nothing | Found::Behind => {
            let steps = MIGRATIONS.migrator().iter().count() as u32 + 1;
            let limit = call_limit.map(|limit| limit.saturating_mul(steps));
            match within(limit, op, migrate_locked(conn, schema, if_missing)).await? {
                Locked::Done(found) => found,
                Locked::Elsewhere => return Err(upgraded_elsewhere(op, schema)),
            }
        }
    };
    match found {
        None => Ok(false),
        Some(Schema::Current) => Ok(true),
        Some(Schema::Newer(unknown)) => Err(newer_schema(db, Some(schema), &unknown)),
    }
}

/// `work` given up after `limit`, if any, with a retryable "no answer" error.
async fn within<T>(
    limit: Option<Duration>,
    op: Op<'_>,
    work: impl Future<Output = sqlx::Result<T>>,
) -> Result<T> {
    let done = match limit {
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .map_err(|_| no_answer(op, limit))?,
        None => work.await,
    };
    done.map_err(|e| parse_postgres_error(e, op))
}

/// What [`migrate_locked`] did.
enum Locked {
    /// It held the schema's lock: the schema as it left it, or `None` when (with
    /// [`IfMissing::Leave`]) it found no storage any more.
    Done(Option<Schema>),
    /// The wait for the lock ended at the statement timeout (or a `lock_timeout`):
    /// another connection held it all along, creating or upgrading the schema.
    Elsewhere,
}

/// SQLSTATEs that end a wait for a lock: `query_canceled` (the statement timeout) and
/// `lock_not_available` (a `lock_timeout` set through the URL's options).
const WAIT_ENDED: [&str; 2] = ["57014", "55P03"];

/// Creates and migrates `schema` under the advisory lock, unless a look under the lock
/// finds nothing to do, or (with [`IfMissing::Leave`]) no storage any more.
/// Dropping the transaction on an error rolls everything back.
async fn migrate_locked(
    conn: &mut PgConnection,
    schema: &str,
    if_missing: IfMissing,
) -> sqlx::Result<Locked> {
    let mut tx = conn.begin().await?;
    let lock = sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(LOCK_SPACE)
        .bind(schema)
        .execute(&mut *tx)
        .await;
    match lock {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.code().is_some_and(|c| WAIT_ENDED.contains(&&*c)) => {
            return Ok(Locked::Elsewhere);
        }
        Err(e) => return Err(e),
    }
    let applied = recorded(&mut tx, schema).await?;
    match found(applied.as_deref()) {
        Found::Done(found) => return Ok(Locked::Done(Some(found))),
        // Dropped since the first look, by hand.
        Found::Nothing if if_missing == IfMissing::Leave => return Ok(Locked::Done(None)),
        Found::Nothing | Found::Behind => {}
    }
    // The name is checked (`crate::config`) to hold no quote, but it may be a keyword
    // (`user`, `order`), which only a quoted identifier may be. (`search_path`, set at
    // connect, is a list of names and takes keywords as they are.)
    sqlx::query(&format!(r#"CREATE SCHEMA IF NOT EXISTS "{schema}""#))
        .execute(&mut *tx)
        .await?;
    // `run_direct` rather than `run`: `run` takes an `Acquire` whose lifetime bound makes
    // this future not `Send` (a known sqlx quirk the method exists to avoid). Each
    // migration's own transaction becomes a savepoint of this one. Records a CRLF build
    // made are taken as they are. Without sqlx's own lock, which is on the whole database
    // (`pg_advisory_lock` of its name): the schema's lock above is the one that matters,
    // and every release has taken it; sqlx's would make this open wait for any sqlx
    // migration of another schema (another application's, or another storage's upgrade)
    // and fail at the statement timeout.
    let mut migrator = MIGRATIONS.matching(&applied.unwrap_or_default());
    migrator.set_locking(false);
    migrator.run_direct(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(
        schema,
        "PostgreSQL conversation storage schema is up to date"
    );
    Ok(Locked::Done(Some(Schema::Current)))
}

/// What [`look`] found in a schema.
enum Found {
    /// No `_sqlx_migrations` table: no storage (the schema itself may not exist).
    Nothing,
    /// A storage with migrations of this build still to apply.
    Behind,
    /// Nothing left to do: every migration of this build applied, unchanged, or a
    /// migration recorded that this build does not have.
    Done(Schema),
}

/// Reads `schema`'s `_sqlx_migrations`, if it has one, writing nothing.
async fn look(conn: &mut PgConnection, schema: &str) -> sqlx::Result<Found> {
    Ok(found(recorded(conn, schema).await?.as_deref()))
}

/// What `schema`'s `_sqlx_migrations` records, written by whichever build; `None` when it
/// has no such table.
async fn recorded(conn: &mut PgConnection, schema: &str) -> sqlx::Result<Option<Vec<Applied>>> {
    let has_table: bool =
        sqlx::query_scalar("SELECT to_regclass(format('%I._sqlx_migrations', $1)) IS NOT NULL")
            .bind(schema)
            .fetch_one(&mut *conn)
            .await?;
    if !has_table {
        return Ok(None);
    }
    sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations")
        .fetch_all(&mut *conn)
        .await
        .map(Some)
}

/// What the records `recorded` of a schema (`None`: no `_sqlx_migrations`) say, those a
/// CRLF build made read as this build's.
fn found(recorded: Option<&[Applied]>) -> Found {
    let Some(applied) = recorded else {
        return Found::Nothing;
    };
    MIGRATIONS.check(applied).map_or(Found::Behind, Found::Done)
}

/// The migration versions `schema`'s `_sqlx_migrations` records that this build does not
/// have, read on a connection of `pool`: a newer release upgraded the schema while this
/// storage was open (the check at open cannot see that). Empty when there are none, or
/// when the records cannot be read (the caller then reports the error it met).
pub(crate) async fn newer_under(pool: &PgPool, schema: &str) -> Vec<i64> {
    let Ok(mut conn) = pool.acquire().await else {
        return Vec::new();
    };
    match recorded(&mut conn, schema).await {
        Ok(Some(applied)) => match MIGRATIONS.check(&applied) {
            Some(Schema::Newer(unknown)) => unknown,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The error of a call of operation `op` that met `err` (a statement that no longer fits
/// the schema) on `schema`, which a newer release upgraded to versions `unknown` while
/// this storage was open. Said so, with what to do: the schema is fine, this process is
/// the one behind.
pub(crate) fn upgraded_under(
    op: Op<'_>,
    schema: &str,
    unknown: &[i64],
    err: sqlx::Error,
) -> fusion_core::Error {
    let versions: Vec<String> = unknown.iter().map(i64::to_string).collect();
    let message = format!(
        "{op}: schema \"{schema}\" was upgraded to schema version {} by a newer Fusion \
         release while this process had it open, and this build's statements no longer fit \
         it ({err}); restart this process on that release",
        versions.join(", ")
    );
    fusion_core::Error::backend(BACKEND, message, false, err)
}
