//! The embedded schema migrations, and the check that refuses databases from newer releases.
//!
//! sqlx records applied migrations in `_sqlx_migrations`. A version there that this build
//! does not have means a newer release upgraded the file; opening it anyway could misread
//! or damage data, so that is an error naming the file, and nothing is written.
//!
//! A database holding tables but not Fusion's first migration belongs to another
//! application (or to a build of Fusion that shares no history with this one): adding
//! Fusion's tables to it, or failing halfway because one of its tables is named
//! `sessions`, would alter a file that is not Fusion's. That is refused too, before
//! anything is written: [`refuse_foreign_file`] even before the first connection switches
//! the file to WAL.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use fusion_core::Result;
use fusion_core::sql::Schema;
use fusion_core::sql::migrations::{Applied, Migrations};
use sqlx::{SqliteConnection, SqlitePool};

use crate::busy::wait_while_busy_until;
use crate::config::DirectOptions;
use crate::direct::open;
use crate::error::{
    DirectError, MaybeBusy, Op, foreign_database, newer_schema, parse_direct_error,
    parse_sqlite_error,
};
use crate::sql::BEGIN_WRITE;

/// The schema, embedded at build time (opening never needs the migration files on disk),
/// read the same from an LF or a CRLF checkout, and from databases either made.
static MIGRATIONS: LazyLock<Migrations> =
    LazyLock::new(|| Migrations::new(sqlx::migrate!("./migrations")));

/// Brings the schema of `db` up to this build's version, refusing newer databases.
///
/// An up-to-date database is only read, so a read-only file opens fine. Otherwise the
/// migrations run inside one write transaction, so two processes opening a new file at
/// once do not both try to create the tables: the second waits for the first, then finds
/// the schema current. A try that meets a busy database is rolled back whole and repeated
/// until `deadline`, the end of the busy timeout of the whole opening (see `crate::busy`).
/// `given_pool`: the caller's pool, which the refusal of another application's database
/// then speaks of instead of a URL.
pub(crate) async fn run(
    pool: &SqlitePool,
    opening: Op<'_>,
    deadline: Instant,
    given_pool: bool,
) -> Result<()> {
    let db = opening.db;
    let schema = wait_while_busy_until(deadline, || migrate_once(pool, db))
        .await
        .map_err(|e| parse_sqlite_error(e, opening))?;
    match schema {
        Found::Schema(Schema::Current) => Ok(()),
        Found::Schema(Schema::Newer(unknown)) => Err(newer_schema(db, &unknown)),
        Found::Foreign(tables) => Err(foreign_database(db, &tables, given_pool)),
    }
}

/// What a try of [`run`] found.
enum Found {
    /// Fusion's schema, brought up to date or newer than this build.
    Schema(Schema),
    /// Another application's tables (some of their names), and no Fusion schema.
    Foreign(Vec<String>),
}

/// Refuses an existing database file (`file`) that holds another application's tables,
/// reading it through a connection of its own (read-write, but it writes nothing and
/// sets no journal mode) before the pool opens one that would switch it to WAL. A missing or empty file is a new database; one that cannot be
/// read is left to the pool, which reports why.
///
/// The connection is SQLite called directly (the same library sqlx links), on this thread:
/// a sqlx connection costs a worker thread started and stopped, ten times the ~0.2 ms
/// this look takes. It waits for nothing inside SQLite; a busy file is tried again until
/// `deadline`, which the pool's first connection shares: a file still busy then fails the
/// open here, retryable, rather than being waited for a second time by the pool.
/// `?immutable=true` reads the file as the pool will, taking no locks and creating no
/// `-wal` or `-shm` beside it.
pub(crate) async fn refuse_foreign_file(
    file: &DirectOptions,
    deadline: Instant,
    opening: Op<'_>,
) -> Result<()> {
    if std::fs::metadata(&file.path).map_or(true, |metadata| metadata.len() == 0) {
        return Ok(());
    }
    // Read-write unless the storage is read-only, like the connection the look replaced:
    // a read-only connection, the last to close a WAL database, leaves its log for every
    // connection opened next to recover, reading the whole log and checksumming it (W1:
    // +5.5% instructions for the whole run).
    let options = DirectOptions {
        create: false,
        busy_timeout: Duration::ZERO,
        ..file.clone()
    };
    let look =
        || std::future::ready(open(&options, false).and_then(|conn| foreign_tables_of(&conn)));
    match wait_while_busy_until(deadline, look).await {
        Ok(Some(tables)) => Err(foreign_database(opening.db, &tables, false)),
        Err(e) if e.is_busy() => Err(parse_direct_error(DirectError::Sqlite(e), opening)),
        Ok(None) | Err(_) => Ok(()),
    }
}

/// The tables of a database, but SQLite's own.
const TABLES: &str = "SELECT name FROM sqlite_master WHERE type = 'table' \
     AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name";

/// The checksums `_sqlx_migrations` records for Fusion's first migration (?1 its
/// version): it is Fusion's when one of them is that migration's, in either form
/// ([`Migrations::is_ours`]).
const FIRST_RECORDED: &str = "SELECT checksum FROM _sqlx_migrations WHERE version = ?1";

/// Whether a database holding `tables` is another application's, given whether it
/// records Fusion's first migration (`ours`) and, when `_sqlx_migrations` is its only
/// table, how many migrations that records (`recorded`): see [`foreign_tables`]. The
/// two are read only when needed.
fn foreign<E>(
    tables: Vec<String>,
    ours: impl FnOnce(&sqlx::migrate::Migration) -> Result<bool, E>,
    recorded: impl FnOnce() -> Result<i64, E>,
) -> Result<Option<Vec<String>>, E> {
    if tables.is_empty() {
        return Ok(None);
    }
    if tables.iter().any(|table| table == "_sqlx_migrations")
        && let Some(first) = MIGRATIONS.migrator().iter().next()
        && (ours(first)? || (tables.len() == 1 && recorded()? == 0))
    {
        return Ok(None);
    }
    Ok(Some(tables))
}

/// [`foreign_tables`] on a connection of the direct path's kind.
fn foreign_tables_of(conn: &rusqlite::Connection) -> rusqlite::Result<Option<Vec<String>>> {
    let tables = conn
        .prepare(TABLES)?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    foreign(
        tables,
        |first| {
            let recorded = conn
                .prepare(FIRST_RECORDED)?
                .query_map([first.version], |row| row.get::<_, Vec<u8>>(0))?
                .collect::<rusqlite::Result<Vec<Vec<u8>>>>()?;
            Ok(recorded.iter().any(|sum| MIGRATIONS.is_ours(first, sum)))
        },
        || {
            conn.query_row("SELECT count(*) FROM _sqlx_migrations", [], |row| {
                row.get(0)
            })
        },
    )
}

/// Some of the tables of a database that holds tables but does not record Fusion's first
/// migration; `None` for a database with no tables (new) or one Fusion created. An empty
/// `_sqlx_migrations` alone is sqlx's own bookkeeping, made before a first migration
/// (`sqlx migrate run`, a migration that failed), not another application's data.
async fn foreign_tables(conn: &mut SqliteConnection) -> sqlx::Result<Option<Vec<String>>> {
    let tables: Vec<String> = sqlx::query_scalar(TABLES).fetch_all(&mut *conn).await?;
    if tables.is_empty() {
        return Ok(None);
    }
    // The two reads `foreign` may need, done up front: they are async here.
    let (mut ours, mut recorded) = (false, 1);
    if tables.iter().any(|table| table == "_sqlx_migrations")
        && let Some(first) = MIGRATIONS.migrator().iter().next()
    {
        let sums: Vec<Vec<u8>> = sqlx::query_scalar(FIRST_RECORDED)
            .bind(first.version)
            .fetch_all(&mut *conn)
            .await?;
        ours = sums.iter().any(|sum| MIGRATIONS.is_ours(first, sum));
        if !ours && tables.len() == 1 {
            recorded = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
                .fetch_one(&mut *conn)
                .await?;
        }
    }
    foreign(tables, |_| Ok(ours), || Ok(recorded))
}

/// One try of [`run`]: refuses another application's database, reads the schema and,
/// unless it is current or newer, migrates it.
async fn migrate_once(pool: &SqlitePool, db: &str) -> sqlx::Result<Found> {
    let looked = look(&mut *pool.acquire().await?).await?;
    // The connection of the look is back in the pool here: an in-memory database's pool
    // has only the one, which the migration needs.
    match looked {
        Look::Found(found) => Ok(found),
        Look::Behind(_) => migrate_locked(pool, db).await,
    }
}

/// The migration, under the write lock: what decides it is read again there, since
/// another process may have migrated the file between the first look and the lock (a
/// build of another release, or one whose records carry other checksums, which the
/// records read before would not match).
async fn migrate_locked(pool: &SqlitePool, db: &str) -> sqlx::Result<Found> {
    // Dropping the transaction on an error rolls it back, so a failed try leaves nothing.
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let applied = match look(&mut tx).await? {
        Look::Found(found) => return Ok(found),
        Look::Behind(applied) => applied,
    };
    // `run_direct` rather than `run`: `run` takes an `Acquire` whose lifetime bound
    // makes this future not `Send` (a known sqlx quirk the method exists to avoid).
    // Records a CRLF build made are taken as they are.
    MIGRATIONS.matching(&applied).run_direct(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(db, "SQLite conversation storage schema is up to date");
    Ok(Found::Schema(Schema::Current))
}

/// What a look at a database found: enough to answer, or a schema to migrate, with what
/// `_sqlx_migrations` records.
enum Look {
    Found(Found),
    Behind(Vec<Applied>),
}

/// Refuses another application's database and reads the schema of `conn`'s.
async fn look(conn: &mut SqliteConnection) -> sqlx::Result<Look> {
    if let Some(tables) = foreign_tables(conn).await? {
        return Ok(Look::Found(Found::Foreign(tables)));
    }
    let applied = recorded(conn).await?;
    Ok(match MIGRATIONS.check(&applied) {
        Some(schema) => Look::Found(Found::Schema(schema)),
        None => Look::Behind(applied),
    })
}

/// What `_sqlx_migrations` records, written by whichever build; nothing when the database
/// has no such table yet.
async fn recorded(conn: &mut SqliteConnection) -> sqlx::Result<Vec<Applied>> {
    let has_table: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master \
         WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !has_table {
        return Ok(Vec::new());
    }
    sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations")
        .fetch_all(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The migration waits for a busy database only until the deadline of the whole
    /// opening, which the steps before it (the look at the file, the pool's first
    /// connection) may have used up: then it tries once and fails, retryable, instead of
    /// waiting a busy timeout of its own.
    #[tokio::test]
    async fn the_migration_waits_only_until_the_deadline_of_the_opening() {
        let logs = fusion_core::testkit::logs::Logs::new();
        let _logging = tracing::subscriber::set_default(logs.subscriber(tracing::Level::DEBUG));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.db");
        let connect = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .busy_timeout(Duration::ZERO);
        let pool = SqlitePool::connect_with(connect).await.unwrap();
        // Rollback-journal mode, where an exclusive lock keeps every reader out.
        let holder = rusqlite::Connection::open(&path).unwrap();
        holder
            .execute_batch("PRAGMA user_version = 1; BEGIN EXCLUSIVE;")
            .unwrap();
        let db = path.display().to_string();
        let opening = Op::open(crate::error::PLACE, &db);
        let err = run(&pool, opening, Instant::now(), false)
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("locked"), "{err}");
        let text = logs.text();
        assert!(text.contains("tries=1\n"), "{text}");
        holder.execute_batch("ROLLBACK").unwrap();
        pool.close().await;
    }

    /// Found by an audit: the migration decided on records read before it took the write
    /// lock, so a process that waited for that lock while a build from a CRLF checkout
    /// migrated the file ran sqlx with the LF checksums, which sqlx refused as a changed
    /// migration (a permanent error for a sound database). Here the file is as that other
    /// build left it when the lock comes free.
    #[tokio::test]
    async fn the_migration_decides_on_what_it_reads_under_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("migrated-meanwhile.db");
        let connect = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(connect).await.unwrap();
        let db = path.display().to_string();
        migrate_locked(&pool, &db).await.unwrap();
        for m in MIGRATIONS.migrator().iter() {
            let crlf = sqlx::migrate::Migration::new(
                m.version,
                m.description.clone(),
                m.migration_type,
                m.sql.replace('\n', "\r\n").into(),
                m.no_tx,
            );
            sqlx::query("UPDATE _sqlx_migrations SET checksum = ?1 WHERE version = ?2")
                .bind(&*crlf.checksum)
                .bind(m.version)
                .execute(&pool)
                .await
                .unwrap();
        }
        let found = migrate_locked(&pool, &db).await.unwrap();
        assert!(matches!(found, Found::Schema(Schema::Current)));
        pool.close().await;
    }
}
