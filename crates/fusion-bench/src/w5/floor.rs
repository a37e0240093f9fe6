//! W5's floor: the raw drivers doing W5's appends and loads on many sessions at once,
//! shared by all tasks of a process the way the library's storage is.
//!
//! Unlike W1's floor (one session, one connection, sequence numbers kept in memory),
//! several tasks and processes append to one session here, so each layout lets the
//! database order the rows: SQLite and PostgreSQL number them with a row id / identity
//! column, Redis appends to a list, fs appends to a file opened with O_APPEND (one
//! `write` per turn, atomic between processes on a local file system). Messages are
//! still serialised and parsed with `serde_json` on both sides.
//!
//! The fs floor makes its file calls on Tokio's blocking pool: with many tasks on a
//! runtime, a blocking call made on the task would stall every other task on that thread
//! without that wait showing in its own latency, which no async service can afford.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result};
use fusion_bench::redis_conn::RedisConn;
use fusion_core::ChatMessage;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{PgPool, SqlitePool};

use crate::backends::{Backend, Kind};
use crate::raw::{
    json_lines, json_rows, parse_lines, parse_rows, postgres_options, sqlite_options,
};

/// Connections in the SQLite and PostgreSQL pools: the library's pool size.
const POOL: u32 = 8;

const SQLITE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS messages (\
    id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, message TEXT NOT NULL); \
    CREATE INDEX IF NOT EXISTS messages_session ON messages (session_id, id)";
const SQLITE_INSERT: &str = "INSERT INTO messages (session_id, message) VALUES (?1, ?2)";
const SQLITE_LOAD: &str = "SELECT message FROM messages WHERE session_id = ?1 ORDER BY id";

const POSTGRES_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS messages (\
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
    session_id TEXT NOT NULL, message TEXT NOT NULL); \
    CREATE INDEX IF NOT EXISTS messages_session ON messages (session_id, id)";
/// A whole turn in one statement; the identity follows the turn's order.
const POSTGRES_INSERT: &str = "INSERT INTO messages (session_id, message) \
    SELECT $1, m FROM unnest($2::text[]) WITH ORDINALITY AS t(m, n) ORDER BY n";
const POSTGRES_LOAD: &str = "SELECT message FROM messages WHERE session_id = $1 ORDER BY id";

/// A raw driver handle for one namespace, shared by a process's tasks.
pub enum Floor {
    Memory(Mutex<HashMap<String, Vec<ChatMessage>>>),
    /// The directory holding one `{session}.jsonl` per session.
    Fs(PathBuf),
    Sqlite(SqlitePool),
    Postgres(PgPool),
    Redis {
        prefix: String,
        conn: RedisConn,
    },
}

impl Floor {
    /// Opens namespace `ns` of `backend`; `create` makes its directory or table (the
    /// worker processes open what their parent created).
    pub async fn open(backend: &Backend, ns: &str, create: bool) -> Result<Self> {
        Ok(match backend.kind {
            Kind::Memory => Floor::Memory(Mutex::default()),
            Kind::Fs => {
                let dir = backend.path(ns)?;
                if create {
                    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
                }
                Floor::Fs(dir)
            }
            Kind::Sqlite => {
                let pool = SqlitePoolOptions::new()
                    .max_connections(POOL)
                    .connect_with(sqlite_options(&backend.path(ns)?))
                    .await?;
                if create {
                    sqlx::raw_sql(SQLITE_SCHEMA).execute(&pool).await?;
                }
                Floor::Sqlite(pool)
            }
            Kind::Postgres => {
                let pool = PgPoolOptions::new()
                    .max_connections(POOL)
                    .connect_with(postgres_options(backend, ns).await?)
                    .await?;
                if create {
                    sqlx::raw_sql(POSTGRES_SCHEMA).execute(&pool).await?;
                }
                Floor::Postgres(pool)
            }
            Kind::Redis | Kind::RedisCluster => Floor::Redis {
                prefix: backend.redis_prefix(ns)?,
                conn: RedisConn::connect(backend.redis_url()?).await?,
            },
        })
    }

    /// What this floor does, for the report.
    pub fn describe(&self) -> String {
        match self {
            Floor::Memory(_) => "Mutex<HashMap<String, Vec<ChatMessage>>>: extend / clone".into(),
            Floor::Fs(_) => {
                "std::fs on the blocking pool: open O_APPEND + one write() per turn; read + parse"
                    .into()
            }
            Floor::Sqlite(_) => format!(
                "sqlx SqlitePool of {POOL}: BEGIN, INSERT per message, COMMIT; SELECT by id"
            ),
            Floor::Postgres(_) => format!(
                "sqlx PgPool of {POOL}: one INSERT ... SELECT unnest per turn; SELECT by id"
            ),
            Floor::Redis { conn, .. } => {
                format!("{}: one pipelined RPUSH per turn; LRANGE", conn.describe())
            }
        }
    }

    /// Appends `turn` to `session`.
    pub async fn append(&self, session: &str, turn: &[ChatMessage]) -> Result<()> {
        match self {
            Floor::Memory(store) => {
                let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
                store
                    .entry(session.to_string())
                    .or_default()
                    .extend_from_slice(turn);
            }
            Floor::Fs(dir) => {
                let lines = json_lines(turn)?;
                let path = dir.join(format!("{session}.jsonl"));
                tokio::task::spawn_blocking(move || {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)?
                        .write_all(&lines)
                })
                .await??;
            }
            Floor::Sqlite(pool) => {
                let rows = json_rows(turn)?;
                let mut tx = pool.begin().await?;
                for row in &rows {
                    sqlx::query(SQLITE_INSERT)
                        .bind(session)
                        .bind(row.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            Floor::Postgres(pool) => {
                sqlx::query(POSTGRES_INSERT)
                    .bind(session)
                    .bind(json_rows(turn)?)
                    .execute(pool)
                    .await?;
            }
            Floor::Redis { prefix, conn } => {
                let mut pipe = redis::pipe();
                pipe.cmd("RPUSH")
                    .arg(format!("{prefix}:{session}"))
                    .arg(json_rows(turn)?)
                    .ignore();
                pipe.query_async::<()>(&mut conn.clone()).await?;
            }
        }
        Ok(())
    }

    /// Reads and parses the whole of `session`.
    pub async fn load(&self, session: &str) -> Result<Vec<ChatMessage>> {
        Ok(match self {
            Floor::Memory(store) => {
                let store = store.lock().unwrap_or_else(|e| e.into_inner());
                store.get(session).cloned().unwrap_or_default()
            }
            Floor::Fs(dir) => {
                let path = dir.join(format!("{session}.jsonl"));
                let bytes = tokio::task::spawn_blocking(move || std::fs::read(path)).await??;
                parse_lines(&bytes)?
            }
            Floor::Sqlite(pool) => {
                let rows: Vec<String> = sqlx::query_scalar(SQLITE_LOAD)
                    .bind(session)
                    .fetch_all(pool)
                    .await?;
                parse_rows(rows.iter().map(String::as_bytes))?
            }
            Floor::Postgres(pool) => {
                let rows: Vec<String> = sqlx::query_scalar(POSTGRES_LOAD)
                    .bind(session)
                    .fetch_all(pool)
                    .await?;
                parse_rows(rows.iter().map(String::as_bytes))?
            }
            Floor::Redis { prefix, conn } => {
                let rows: Vec<Vec<u8>> = redis::cmd("LRANGE")
                    .arg(format!("{prefix}:{session}"))
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn.clone())
                    .await?;
                parse_rows(rows.iter().map(Vec::as_slice))?
            }
        })
    }
}
