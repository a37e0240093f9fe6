//! The floor: the raw driver doing W1's writes and W2's loads with no library around it.
//!
//! Each floor does the least the backend's data layout needs, and still serialises and
//! parses the messages with `serde_json` (a library cannot skip that either): SQLite is
//! one transaction of plain INSERTs per turn on a bare `messages` table over one
//! connection; PostgreSQL is one `INSERT ... SELECT unnest` per turn (one round trip) on
//! a bare `messages` table over one connection; Redis (a server or a cluster) is one
//! pipelined RPUSH per turn; fs is one `write` of the JSON lines per turn to a file kept
//! open with O_APPEND; memory is a `Vec` behind a `Mutex`.
//!
//! W5's floor, many sessions at once over pools, is `crate::w5::floor`; it shares this
//! file's helpers.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fusion_bench::redis_conn::RedisConn;
use fusion_core::ChatMessage;
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, PgConnection, SqliteConnection};

use crate::backends::{Backend, Kind};
use crate::stats::{Stats, Timed};

/// One kind of call, measured on its own.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// What was done.
    pub call: &'static str,
    /// Timings of each call.
    pub stats: Stats,
}

/// How many calls the round-trip probe times.
pub const ROUND_TRIPS: usize = 2_000;

/// A raw driver handle for one backend, in namespace `floor`.
pub enum Raw {
    Memory(Mutex<HashMap<String, Vec<ChatMessage>>>),
    Fs {
        dir: std::path::PathBuf,
        w1: Mutex<std::fs::File>,
    },
    Sqlite {
        path: std::path::PathBuf,
        conn: tokio::sync::Mutex<(SqliteConnection, i64)>,
    },
    /// A single server or a cluster (`url` is then `redis+cluster://`).
    Redis {
        url: String,
        prefix: String,
        conn: RedisConn,
    },
    Postgres {
        // Boxed: the options are several times the size of the other variants.
        options: Box<PgConnectOptions>,
        conn: tokio::sync::Mutex<(PgConnection, i64)>,
    },
}

const SQLITE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS messages (\
    session_id TEXT NOT NULL, seq INTEGER NOT NULL, message TEXT NOT NULL, \
    PRIMARY KEY (session_id, seq))";
const SQLITE_INSERT: &str = "INSERT INTO messages (session_id, seq, message) VALUES (?1, ?2, ?3)";

const POSTGRES_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS messages (\
    session_id TEXT NOT NULL, seq BIGINT NOT NULL, message TEXT NOT NULL, \
    PRIMARY KEY (session_id, seq))";
/// A whole turn in one statement, numbered from `$2`.
const POSTGRES_INSERT: &str = "INSERT INTO messages (session_id, seq, message) \
    SELECT $1, $2 + n - 1, m FROM unnest($3::text[]) WITH ORDINALITY AS t(m, n)";

impl Raw {
    /// Opens the raw driver for `backend`, in a namespace of its own.
    pub async fn open(backend: &Backend) -> Result<Self> {
        Ok(match backend.kind {
            Kind::Memory => Raw::Memory(Mutex::default()),
            Kind::Fs => {
                let dir = backend.path("floor")?;
                std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("w1.jsonl"))?;
                Raw::Fs {
                    dir,
                    w1: Mutex::new(file),
                }
            }
            Kind::Sqlite => {
                let path = backend.path("floor")?;
                let mut conn = sqlite_connect(&path).await?;
                sqlx::query(SQLITE_SCHEMA).execute(&mut conn).await?;
                Raw::Sqlite {
                    path,
                    conn: tokio::sync::Mutex::new((conn, 0)),
                }
            }
            Kind::Redis | Kind::RedisCluster => {
                let url = backend.redis_url()?.to_string();
                let conn = RedisConn::connect(&url).await?;
                Raw::Redis {
                    url,
                    prefix: backend.redis_prefix("floor")?,
                    conn,
                }
            }
            Kind::Postgres => {
                let options = postgres_options(backend, "floor").await?;
                let mut conn = options.connect().await?;
                sqlx::query(POSTGRES_SCHEMA).execute(&mut conn).await?;
                Raw::Postgres {
                    options: Box::new(options),
                    conn: tokio::sync::Mutex::new((conn, 0)),
                }
            }
        })
    }

    /// What this floor does, for the report.
    pub fn describe(&self) -> &'static str {
        match self {
            Raw::Memory(_) => "Mutex<HashMap<String, Vec<ChatMessage>>>: extend / clone",
            Raw::Fs { .. } => "std::fs: one write() per turn on an O_APPEND file; read + parse",
            Raw::Sqlite { .. } => "sqlx SqliteConnection: BEGIN, INSERT per message, COMMIT",
            Raw::Redis { conn, .. } if conn.is_cluster() => {
                "redis cluster_async::ClusterConnection: one RPUSH per turn; LRANGE"
            }
            Raw::Redis { .. } => "redis MultiplexedConnection: one RPUSH per turn; LRANGE",
            Raw::Postgres { .. } => {
                "sqlx PgConnection: one INSERT ... SELECT unnest per turn; SELECT by seq"
            }
        }
    }

    /// Times [`ROUND_TRIPS`] of the cheapest call the driver can make, one at a time, as
    /// W1 makes its writes, and for SQLite the floor's work through `rusqlite` on this
    /// thread (see [`sqlite_in_thread`]). Nothing for memory and fs, which have no server
    /// or worker.
    pub async fn probes(&self) -> Result<Vec<Probe>> {
        let mut samples = Vec::with_capacity(ROUND_TRIPS);
        let call = match self {
            Raw::Memory(_) | Raw::Fs { .. } => return Ok(Vec::new()),
            Raw::Sqlite { conn, path } => {
                let mut guard = conn.lock().await;
                for _ in 0..ROUND_TRIPS {
                    let start = Instant::now();
                    sqlx::query("SELECT 1").execute(&mut guard.0).await?;
                    samples.push(start.elapsed());
                }
                drop(guard);
                let round_trip = Probe {
                    call: "one round trip (sqlx SqliteConnection: SELECT 1)",
                    stats: Stats::of(&samples),
                };
                let mut probes = vec![round_trip];
                probes.extend(sqlite_in_thread(path)?);
                return Ok(probes);
            }
            Raw::Redis { conn, .. } => {
                // The driver sends a PING to every primary of a cluster; ECHO goes to one node.
                let (command, call) = if conn.is_cluster() {
                    (
                        redis::cmd("ECHO").arg("x").clone(),
                        "one round trip (redis cluster_async::ClusterConnection: ECHO)",
                    )
                } else {
                    (
                        redis::cmd("PING"),
                        "one round trip (redis MultiplexedConnection: PING)",
                    )
                };
                let mut conn = conn.clone();
                for _ in 0..ROUND_TRIPS {
                    let start = Instant::now();
                    command.query_async::<()>(&mut conn).await?;
                    samples.push(start.elapsed());
                }
                call
            }
            Raw::Postgres { conn, .. } => {
                let mut guard = conn.lock().await;
                for _ in 0..ROUND_TRIPS {
                    let start = Instant::now();
                    sqlx::query("SELECT 1").execute(&mut guard.0).await?;
                    samples.push(start.elapsed());
                }
                "one round trip (sqlx PgConnection: SELECT 1)"
            }
        };
        Ok(vec![Probe {
            call,
            stats: Stats::of(&samples),
        }])
    }

    /// W1's write of one turn to session `w1`.
    pub async fn append(&self, turn: &[ChatMessage]) -> Result<()> {
        match self {
            Raw::Memory(store) => {
                let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
                store
                    .entry("w1".into())
                    .or_default()
                    .extend_from_slice(turn);
            }
            Raw::Fs { w1, .. } => {
                let lines = json_lines(turn)?;
                w1.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write_all(&lines)?;
            }
            Raw::Sqlite { conn, .. } => {
                let mut guard = conn.lock().await;
                let (conn, next_seq) = &mut *guard;
                *next_seq = sqlite_insert(conn, "w1", *next_seq, turn).await?;
            }
            Raw::Redis { prefix, conn, .. } => {
                let rows = json_rows(turn)?;
                let mut pipe = redis::pipe();
                pipe.cmd("RPUSH")
                    .arg(format!("{prefix}:w1"))
                    .arg(&rows)
                    .ignore();
                pipe.query_async::<()>(&mut conn.clone()).await?;
            }
            Raw::Postgres { conn, .. } => {
                let mut guard = conn.lock().await;
                let (conn, next_seq) = &mut *guard;
                *next_seq = postgres_insert(conn, "w1", *next_seq, turn).await?;
            }
        }
        Ok(())
    }

    /// Stores `messages` as `session` (untimed).
    pub async fn seed(&self, session: &str, messages: &[ChatMessage]) -> Result<()> {
        let session = session.to_string();
        match self {
            Raw::Memory(store) => {
                let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
                store.insert(session, messages.to_vec());
            }
            Raw::Fs { dir, .. } => {
                std::fs::write(dir.join(format!("{session}.jsonl")), json_lines(messages)?)?;
            }
            Raw::Sqlite { conn, .. } => {
                let mut guard = conn.lock().await;
                sqlite_insert(&mut guard.0, &session, 0, messages).await?;
            }
            Raw::Redis { prefix, conn, .. } => {
                redis::cmd("RPUSH")
                    .arg(format!("{prefix}:{session}"))
                    .arg(json_rows(messages)?)
                    .query_async::<()>(&mut conn.clone())
                    .await?;
            }
            Raw::Postgres { conn, .. } => {
                let mut guard = conn.lock().await;
                postgres_insert(&mut guard.0, &session, 0, messages).await?;
            }
        }
        Ok(())
    }

    /// A fresh handle (connection, file) reading and parsing `session`.
    pub async fn open_and_load(&self, session: &str) -> Result<Timed> {
        let opened = Instant::now();
        let (loading, messages) = match self {
            Raw::Memory(store) => {
                let loading = Instant::now();
                let store = store.lock().unwrap_or_else(|e| e.into_inner());
                (loading, store.get(session).cloned().unwrap_or_default())
            }
            Raw::Fs { dir, .. } => {
                // Opening the file is part of reading it; there is no instance to build.
                let loading = Instant::now();
                let bytes = std::fs::read(dir.join(format!("{session}.jsonl")))?;
                (loading, parse_lines(&bytes)?)
            }
            Raw::Sqlite { path, .. } => {
                let mut conn = sqlite_connect(path).await?;
                let loading = Instant::now();
                let rows: Vec<String> = sqlx::query_scalar(
                    "SELECT message FROM messages WHERE session_id = ?1 ORDER BY seq",
                )
                .bind(session)
                .fetch_all(&mut conn)
                .await?;
                let messages = parse_rows(rows.iter().map(String::as_bytes))?;
                let done = Instant::now();
                conn.close().await?;
                return Ok(Timed {
                    len: messages.len(),
                    opened,
                    loading,
                    done,
                });
            }
            Raw::Redis { url, prefix, .. } => {
                let mut conn = RedisConn::connect(url).await?;
                let loading = Instant::now();
                let rows: Vec<Vec<u8>> = redis::cmd("LRANGE")
                    .arg(format!("{prefix}:{session}"))
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await?;
                (loading, parse_rows(rows.iter().map(Vec::as_slice))?)
            }
            Raw::Postgres { options, .. } => {
                let mut conn = options.connect().await?;
                let loading = Instant::now();
                let rows: Vec<String> = sqlx::query_scalar(
                    "SELECT message FROM messages WHERE session_id = $1 ORDER BY seq",
                )
                .bind(session)
                .fetch_all(&mut conn)
                .await?;
                let messages = parse_rows(rows.iter().map(String::as_bytes))?;
                let done = Instant::now();
                conn.close().await?;
                return Ok(Timed {
                    len: messages.len(),
                    opened,
                    loading,
                    done,
                });
            }
        };
        Ok(Timed {
            len: messages.len(),
            opened,
            loading,
            done: Instant::now(),
        })
    }
}

/// The floor's SQLite work through `rusqlite` on the calling thread, with no worker thread
/// to hand it to: W1's turns to 10,001 messages (BEGIN, INSERT per message, COMMIT) and
/// five read + parse of the 10,000-message session W2 seeded, if it did.
fn sqlite_in_thread(path: &Path) -> Result<Vec<Probe>> {
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let mut writes = Vec::new();
    let mut seq = 0_i64;
    for turn in crate::workload::turns_reaching(10_001) {
        let rows = json_rows(&turn)?;
        let start = Instant::now();
        conn.execute_batch("BEGIN")?;
        for row in &rows {
            conn.prepare_cached(SQLITE_INSERT)?
                .execute(rusqlite::params!["w1-in-thread", seq, row])?;
            seq += 1;
        }
        conn.execute_batch("COMMIT")?;
        writes.push(start.elapsed());
    }
    let mut probes = vec![Probe {
        call: "rusqlite on this thread: BEGIN, INSERT per message, COMMIT (W1 turns to 10k)",
        stats: Stats::of(&writes),
    }];
    let mut loads = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut statement =
            conn.prepare_cached("SELECT message FROM messages WHERE session_id = ?1 ORDER BY seq")?;
        let mut rows = statement.query(["w2-10000"])?;
        let mut messages = Vec::new();
        while let Some(row) = rows.next()? {
            messages.push(serde_json::from_slice::<ChatMessage>(
                row.get_ref(0)?.as_bytes()?,
            )?);
        }
        loads.push(start.elapsed());
        if messages.len() != 10_000 {
            // W2 did not seed the session (a smaller --quick size, or W2 not run).
            return Ok(probes);
        }
    }
    probes.push(Probe {
        call: "rusqlite on this thread: read + parse 10,000 messages",
        stats: Stats::of(&loads),
    });
    Ok(probes)
}

/// Connect options for namespace `ns` of the postgres backend: its schema (created if
/// missing) as the search path, and the library's commit durability.
pub(crate) async fn postgres_options(backend: &Backend, ns: &str) -> Result<PgConnectOptions> {
    let schema = backend.postgres_schema(ns)?;
    let options: PgConnectOptions = backend.postgres_url()?.parse()?;
    let mut conn = options.connect().await?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let mut settings = vec![("search_path", schema.as_str())];
    if backend.postgres_relaxed() {
        // The same commit durability as the library's storage.
        settings.push(("synchronous_commit", "off"));
    }
    Ok(options.options(settings))
}

/// Opens the floor database with the library's pragmas (see [`sqlite_options`]).
async fn sqlite_connect(path: &Path) -> Result<SqliteConnection> {
    Ok(sqlite_options(path).connect().await?)
}

/// The library's pragmas for a floor database: WAL, synchronous=NORMAL, 5 s busy timeout.
pub(crate) fn sqlite_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
}

/// One transaction inserting `messages` from `first_seq`; returns the next seq.
async fn sqlite_insert(
    conn: &mut SqliteConnection,
    session: &str,
    first_seq: i64,
    messages: &[ChatMessage],
) -> Result<i64> {
    let rows = json_rows(messages)?;
    let mut tx = conn.begin().await?;
    let mut seq = first_seq;
    for row in &rows {
        sqlx::query(SQLITE_INSERT)
            .bind(session)
            .bind(seq)
            .bind(row.as_str())
            .execute(&mut *tx)
            .await?;
        seq += 1;
    }
    tx.commit().await?;
    Ok(seq)
}

/// One statement inserting `messages` from `first_seq`; returns the next seq.
async fn postgres_insert(
    conn: &mut PgConnection,
    session: &str,
    first_seq: i64,
    messages: &[ChatMessage],
) -> Result<i64> {
    let rows = json_rows(messages)?;
    sqlx::query(POSTGRES_INSERT)
        .bind(session)
        .bind(first_seq)
        .bind(&rows)
        .execute(conn)
        .await?;
    Ok(first_seq + i64::try_from(rows.len())?)
}

/// Each message as one JSON text (a row, a list element).
pub(crate) fn json_rows(messages: &[ChatMessage]) -> Result<Vec<String>> {
    Ok(messages
        .iter()
        .map(serde_json::to_string)
        .collect::<serde_json::Result<_>>()?)
}

/// The messages as JSON lines, ready for one `write`.
pub(crate) fn json_lines(messages: &[ChatMessage]) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(messages.len() * 700);
    for message in messages {
        serde_json::to_writer(&mut buf, message)?;
        buf.push(b'\n');
    }
    Ok(buf)
}

/// Parses one JSON message per row.
pub(crate) fn parse_rows<'a>(rows: impl Iterator<Item = &'a [u8]>) -> Result<Vec<ChatMessage>> {
    Ok(rows
        .map(serde_json::from_slice)
        .collect::<serde_json::Result<_>>()?)
}

/// Parses the JSON lines [`json_lines`] wrote.
pub(crate) fn parse_lines(bytes: &[u8]) -> Result<Vec<ChatMessage>> {
    parse_rows(bytes.split(|&b| b == b'\n').filter(|line| !line.is_empty()))
}
