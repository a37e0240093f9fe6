//! `SqliteStorage`: every session in one SQLite database file, one row per message.
//!
//! Where the file-system backend keeps one human-readable file per session and Redis
//! needs a server, SQLite gives transactions in a single embedded file: an append is one
//! short transaction that inserts only the new rows, several processes can share the file
//! (writers queue on SQLite's write lock for up to the busy timeout), and the data can be
//! inspected with the `sqlite3` shell (see the crate README).
//!
//! ```no_run
//! # async fn demo() -> fusion_core::Result<()> {
//! use fusion_core::{ChatMessage, ConversationStorage};
//! use fusion_storage_sqlite::SqliteStorage;
//!
//! let storage = SqliteStorage::connect("sqlite://sessions.db").await?; // created if missing
//! storage.append("user-123", &[ChatMessage::user("hello")]).await?;
//! assert_eq!(storage.load("user-123").await?.len(), 1);
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use fusion_core::{ChatMessage, ConversationStorage, Result, SessionId, SessionInfo};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};

use crate::config::{Location, SqliteOptions, ensure_parent_dir, parse_url};
use crate::direct::Direct;
use crate::error::{Op, parse_direct_error, parse_sqlite_error};
use crate::migrate;
use crate::rows::{self, LOAD_ROWS, decode_row};
use crate::script::{self, Value, Write, WriteSql, write_sql};

/// Every write starts with this (`crate::script` and `crate::direct` spell it out) so the
/// transaction holds SQLite's write lock from its first statement. A plain (deferred) `BEGIN` would start as
/// a reader and fail with `SQLITE_BUSY` when upgrading to a writer while another writer is
/// active, which the busy timeout cannot wait out; `IMMEDIATE` makes concurrent writers
/// queue instead.
pub(crate) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

// Each write is one `BEGIN IMMEDIATE` transaction of these statements (see
// `crate::script`). Parameters: ?1 the session id, ?2 now in Unix milliseconds, ?3 a
// message count, ?4 the messages as one JSON array whose elements are each message as
// `serde_json` writes it. `json_each(?4)` yields the elements in order, with `key` the
// index and `value` an object's JSON text: minified JSON goes in, so the same text comes
// out and is what the `message` column stores (`tests/write_scripts.rs` checks it).

// An append: bump the session's count (creating the row), then insert the new messages
// after the old ones. The seqs come from the count read inside the write transaction,
// so concurrent appenders in any process queue on the write lock and never collide.
// `MAX` keeps updated_at monotonic if the clock steps back.
static APPEND: WriteSql = write_sql!(
    bounded: true,
    "INSERT INTO sessions (id, created_at, updated_at, message_count) VALUES (?1, ?2, ?2, ?3) \
     ON CONFLICT (id) DO UPDATE SET \
         updated_at = MAX(excluded.updated_at, sessions.updated_at), \
         message_count = sessions.message_count + excluded.message_count",
    "INSERT INTO messages (session_id, seq, message) \
     SELECT ?1, s.message_count - ?3 + j.key, j.value \
     FROM sessions AS s, json_each(?4) AS j WHERE s.id = ?1",
);

// A full save: set the count (keeping created_at of an existing session) and replace
// every message.
static SAVE: WriteSql = write_sql!(
    bounded: false,
    "INSERT INTO sessions (id, created_at, updated_at, message_count) VALUES (?1, ?2, ?2, ?3) \
     ON CONFLICT (id) DO UPDATE SET \
         updated_at = MAX(excluded.updated_at, sessions.updated_at), \
         message_count = excluded.message_count",
    "DELETE FROM messages WHERE session_id = ?1",
    "INSERT INTO messages (session_id, seq, message) SELECT ?1, j.key, j.value FROM json_each(?4) AS j",
);

// Keeps the first ?3 messages. The count only ever goes down; the DELETE finds nothing
// when the session was already that short.
static TRUNCATE: WriteSql = write_sql!(
    bounded: false,
    "UPDATE sessions SET message_count = ?3, updated_at = MAX(?2, updated_at) \
     WHERE id = ?1 AND message_count > ?3",
    "DELETE FROM messages WHERE session_id = ?1 AND seq >= ?3",
);

// Both tables explicitly: a pool given to `from_pool` may have foreign keys (and so the
// cascade) off.
static REMOVE: WriteSql = write_sql!(
    bounded: false,
    "DELETE FROM messages WHERE session_id = ?1",
    "DELETE FROM sessions WHERE id = ?1",
);

// A whole history as one row, for sqlx: the stored JSON texts joined into one JSON
// array, and the seqs joined the same way. sqlx hands each result row across from the connection's
// worker thread on its own, which for a long history costs several times SQLite's scan;
// one row and one serde parse avoid that. The rows reach the aggregate in the order of
// the inner ORDER BY (SQLite runs an ordered subquery under an aggregate as is), and
// because both lists are built in that one pass, seqs reading 0,1,2,... prove the
// messages are complete and in order. `group_concat(x ORDER BY seq)` would say so
// itself but sorts a copy of every message, doubling the cost.
const LOAD_ARRAY: &str = "\
    SELECT coalesce(group_concat(seq), ''), '[' || coalesce(group_concat(message), '') || ']' \
    FROM (SELECT seq, message FROM messages WHERE session_id = ?1 ORDER BY seq)";

/// Conversation storage in a SQLite database, through a `sqlx` connection pool and, on a
/// database file it opens itself, SQLite called directly for loads and writes.
///
/// Cloning is cheap and clones share the connections, so one `SqliteStorage` can serve a
/// whole application. Histories are stored as one row per message holding the message's
/// JSON.
#[derive(Debug, Clone)]
pub struct SqliteStorage {
    pool: SqlitePool,
    /// The database path (or `:memory:`) for error messages.
    db: Arc<str>,
    /// The connections that loads and writes go through, and the WAL checkpoints the
    /// writes call for, for a database file this crate opened; `None` loads and writes
    /// through the pool (`:memory:`, a caller's pool, with SQLite's own checkpoints).
    direct: Option<Arc<Direct>>,
}

impl SqliteStorage {
    /// Opens (creating when missing) the database at `url` with default [`SqliteOptions`].
    ///
    /// `url` is `sqlite://PATH`, `sqlite:PATH` or `sqlite::memory:`; see
    /// [`connect_with`](Self::connect_with).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, SqliteOptions::default()).await
    }

    /// Opens the database at `url` with `options`, upgrading its schema if needed.
    ///
    /// - `sqlite://PATH` or `sqlite:PATH`: a file, created (with its directory) when
    ///   missing. sqlx query parameters are honoured; `?mode=ro` opens read-only and
    ///   `?mode=rw` refuses to create the file.
    /// - `sqlite::memory:`: a private in-memory database. The pool then has exactly one
    ///   connection that is never recycled, because the database lives only as long as a
    ///   connection to it; clones of the storage share it.
    ///
    /// Fails with a clear error naming the path when the file is not a SQLite database or
    /// was written by a newer release with a schema this build does not know.
    pub async fn connect_with(url: &str, options: SqliteOptions) -> Result<Self> {
        let target = parse_url(url, &options)?;
        let db = target.label();
        let pool_options = match &target.location {
            Location::Memory => SqlitePoolOptions::new()
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None),
            Location::File { path, create } => {
                if *create {
                    ensure_parent_dir(path)?;
                }
                SqlitePoolOptions::new().max_connections(options.get_max_connections())
            }
        };
        // sqlx pings a pooled connection before handing it out, to catch dropped network
        // links. An in-process SQLite connection does not go stale, so that is a wasted
        // round trip to its worker thread on every call; worse, a call cancelled during
        // the ping makes sqlx close the connection, and with `:memory:` the database.
        let pool = pool_options
            .test_before_acquire(false)
            .connect_with(target.connect)
            .await
            .map_err(|e| parse_sqlite_error(e, open_op(&db)))?;
        let mut storage = Self {
            pool,
            db: db.into(),
            direct: None,
        };
        let opened = match migrate::run(&storage.pool, &storage.db).await {
            Ok(()) => match target.direct {
                Some(options) => Direct::open(Arc::clone(&storage.db), options)
                    .await
                    .map(|direct| storage.direct = Some(Arc::new(direct)))
                    .map_err(|e| parse_direct_error(e, open_op(&storage.db))),
                None => Ok(()),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = opened {
            // Release the file now rather than whenever the caller drops the error.
            storage.close().await;
            return Err(e);
        }
        tracing::debug!(db = %storage.db, "opened SQLite conversation storage");
        Ok(storage)
    }

    /// Uses an existing pool, upgrading the database's schema if needed.
    ///
    /// The pool's own settings are kept: configure WAL, the busy timeout and foreign keys
    /// on its `SqliteConnectOptions` as [`connect_with`](Self::connect_with) does. The
    /// database should be dedicated to Fusion, because sqlx records the migrations of
    /// every user of a database in one `_sqlx_migrations` table.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self> {
        let db = pool.connect_options().get_filename().display().to_string();
        // On failure the pool is left open: it is the caller's.
        migrate::run(&pool, &db).await?;
        // The pool's checkpoint settings are its owner's; SQLite's own apply by default.
        Ok(Self {
            pool,
            db: db.into(),
            direct: None,
        })
    }

    /// The underlying pool, for backups, inspection or running other queries.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The database's path as given in the URL, or `:memory:`.
    pub fn database(&self) -> &str {
        &self.db
    }

    /// Closes the pool (shared by every clone, and with the caller of
    /// [`from_pool`](Self::from_pool)) and the direct connections once running operations
    /// finish; later calls fail.
    ///
    /// Dropping the last clone closes the pool too, but not before returning; call this
    /// when the file must be released at a known point (before copying it, say).
    pub async fn close(&self) {
        if let Some(direct) = &self.direct {
            direct.close().await;
        }
        // sqlx returns a released connection to the pool from a spawned task, and
        // `Pool::close` can finish while one is still on its way back, leaving it open.
        // Closing again once it has arrived catches it; the loop ends when none are left.
        loop {
            self.pool.close().await;
            if self.pool.size() == 0 {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    fn op<'a>(&'a self, name: &'static str, session_id: Option<&'a str>) -> Op<'a> {
        Op {
            db: &self.db,
            name,
            session_id,
        }
    }

    /// Reads the rows one by one in seq order, returning the first fault as
    /// [`Error::Corrupt`](fusion_core::Error::Corrupt) naming its seq. The slow path
    /// of `load`, taken only when the one-array read shows something is wrong.
    async fn load_row_by_row(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        let rows: Vec<(i64, String)> = sqlx::query_as(LOAD_ROWS)
            .bind(session_id)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| parse_sqlite_error(e, self.op("load", Some(session_id))))?;
        (0..)
            .zip(rows)
            .map(|(expected, (seq, json))| decode_row(session_id, expected, seq, Some(&json)))
            .collect()
    }

    /// Deletes a session's rows in both tables in one transaction.
    async fn remove(&self, session_id: &str, name: &'static str) -> Result<()> {
        self.write(&REMOVE, Vec::new(), name, session_id).await
    }

    /// Runs one write transaction (see `crate::script`) for operation `name` on
    /// `session_id`, binding the session id and then `values` to its parameters.
    async fn write(
        &self,
        sql: &'static WriteSql,
        values: Vec<Value>,
        name: &'static str,
        session_id: &str,
    ) -> Result<()> {
        let values = std::iter::once(Value::Text(session_id.to_owned()))
            .chain(values)
            .collect();
        let write = Write { sql, values };
        let op = self.op(name, Some(session_id));
        match &self.direct {
            Some(direct) => direct
                .write(write)
                .await
                .map_err(|e| parse_direct_error(e, op)),
            None => script::run(&self.pool, write)
                .await
                .map_err(|e| parse_sqlite_error(e, op)),
        }
    }
}

/// The context of errors while opening a database.
pub(crate) fn open_op(db: &str) -> Op<'_> {
    Op {
        db,
        name: "open",
        session_id: None,
    }
}

/// Serialises messages as one JSON array before a transaction starts, so the write lock
/// is held only for the inserts and a serialisation failure touches nothing. The array's
/// elements are exactly each message's `serde_json::to_string`.
fn encode(messages: &[ChatMessage]) -> Result<String> {
    serde_json::to_string(messages).map_err(Into::into)
}

/// The number of entries when `list` is exactly `0,1,2,...,n-1` (empty for none).
fn counts_up_from_zero(list: &str) -> Option<usize> {
    if list.is_empty() {
        return Some(0);
    }
    let mut n = 0;
    for seq in list.split(',') {
        if seq.parse::<usize>().ok()? != n {
            return None;
        }
        n += 1;
    }
    Some(n)
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_millis(ms: i64) -> Option<SystemTime> {
    u64::try_from(ms)
        .ok()
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

#[async_trait]
impl ConversationStorage for SqliteStorage {
    /// Replaces the history in one transaction. Cost: O(len of `history`), on a blocking
    /// thread or in one round trip to a connection's worker thread.
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        if history.is_empty() {
            return self.remove(session_id, "save").await;
        }
        let values = vec![
            Value::Int(now_millis()),
            Value::Int(count(history.len())),
            Value::Text(encode(history)?),
        ];
        self.write(&SAVE, values, "save", session_id).await
    }

    /// Reads the rows in seq order: on a database file opened by this crate, on a blocking
    /// thread while this task parses them (`crate::rows`); otherwise as one JSON array that SQLite
    /// assembles, parsed once, with the rows read one by one only when that array does not
    /// hold exactly the stored rows as valid messages. Cost: O(history). A row that is not
    /// a valid message, or a gap in the seqs, is
    /// [`Error::Corrupt`](fusion_core::Error::Corrupt) naming the seq.
    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        SessionId::validate(session_id)?;
        if let Some(direct) = &self.direct {
            let op = self.op("load", Some(session_id));
            return rows::load(direct, session_id, |e| parse_direct_error(e, op)).await;
        }
        let (seqs, array): (String, String) = sqlx::query_as(LOAD_ARRAY)
            .bind(session_id)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| parse_sqlite_error(e, self.op("load", Some(session_id))))?;
        // A row holding more or less than one JSON value shows up as a length mismatch.
        if let Some(rows) = counts_up_from_zero(&seqs)
            && let Ok(history) = serde_json::from_str::<Vec<ChatMessage>>(&array)
            && history.len() == rows
        {
            return Ok(history);
        }
        self.load_row_by_row(session_id).await
    }

    /// Deletes the session's rows from both tables in one transaction.
    async fn delete(&self, session_id: &str) -> Result<()> {
        SessionId::validate(session_id)?;
        self.remove(session_id, "delete").await
    }

    /// Reads the `sessions` table only. Cost: O(number of sessions).
    async fn list_sessions(&self) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT id FROM sessions ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| parse_sqlite_error(e, self.op("list_sessions", None)))
    }

    /// One `BEGIN IMMEDIATE` transaction: bump the session's count, insert the new rows.
    /// Cost: O(`messages.len()`), independent of history length. On a database file this
    /// crate opened a small append runs on the calling thread when the database is free
    /// (see `crate::direct`); otherwise on a blocking thread, or in one round trip to a
    /// pooled connection's worker thread.
    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        if messages.is_empty() {
            return Ok(());
        }
        let values = vec![
            Value::Int(now_millis()),
            Value::Int(count(messages.len())),
            Value::Text(encode(messages)?),
        ];
        self.write(&APPEND, values, "append", session_id).await
    }

    /// Deletes the rows from seq `len` on and lowers the count, in one transaction.
    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        SessionId::validate(session_id)?;
        if len == 0 {
            return self.remove(session_id, "truncate").await;
        }
        let values = vec![Value::Int(now_millis()), Value::Int(count(len))];
        self.write(&TRUNCATE, values, "truncate", session_id).await
    }

    /// Reads one row of the `sessions` table. Cost: O(1).
    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        SessionId::validate(session_id)?;
        let row: Option<(i64, i64, i64)> = sqlx::query_as(
            "SELECT message_count, created_at, updated_at FROM sessions WHERE id = ?1",
        )
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| parse_sqlite_error(e, self.op("session_info", Some(session_id))))?;
        Ok(row.map(|(message_count, created, updated)| SessionInfo {
            id: session_id.to_string(),
            message_count: usize::try_from(message_count).unwrap_or(0),
            created_at: from_millis(created),
            updated_at: from_millis(updated),
        }))
    }

    fn backend_name(&self) -> &'static str {
        crate::error::BACKEND
    }
}

#[cfg(test)]
mod tests {
    use super::counts_up_from_zero;

    #[test]
    fn only_a_gapless_run_from_zero_counts() {
        assert_eq!(counts_up_from_zero(""), Some(0));
        assert_eq!(counts_up_from_zero("0"), Some(1));
        assert_eq!(counts_up_from_zero("0,1,2"), Some(3));
        for bad in ["1", "0,2", "0,1,1", "1,0", "0,,1", "0,x", "-1,0"] {
            assert_eq!(counts_up_from_zero(bad), None, "{bad}");
        }
    }
}
