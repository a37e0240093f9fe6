//! `PostgresStorage`: every session in two tables of one PostgreSQL schema, one row per
//! message, through a `sqlx` connection pool.
//!
//! ```no_run
//! # async fn demo() -> fusion_core::Result<()> {
//! use fusion_core::{ChatMessage, ConversationStorage};
//! use fusion_storage_postgres::PostgresStorage;
//!
//! let storage = PostgresStorage::connect("postgres://app@localhost/app").await?;
//! storage.append("user-123", &[ChatMessage::user("hello")]).await?;
//! assert_eq!(storage.load("user-123").await?.len(), 1);
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Expect, MetaUpdate, Result, Revision, SessionId,
    SessionInfo, SessionMeta, SessionPage, SessionQuery, SessionTimes, check_creation,
    check_purge_batch, check_storable,
};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::batch::Batch;
use crate::config::{PostgresOptions, parse};
use crate::error::{BACKEND, Op, PLACE, connect_timed_out, parse_postgres_error};
use crate::meta::{decode_info, page_query};
use crate::migrate::IfMissing;
use crate::sql::{self, LIST_SESSIONS, LOAD, LOAD_REVISION, PURGE, SESSION_INFO, decode_revision};
use crate::timed_out::{Finder, Waited};
use crate::{migrate, update, write};

mod calls;
mod plans;

/// How long a pooled connection may sit idle before it is checked with a ping when next
/// handed out.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(30);

/// Conversation storage in a PostgreSQL schema, through a `sqlx` connection pool.
///
/// Cloning is cheap and clones share the pool, so one `PostgresStorage` can serve a whole
/// application; any number of processes may share the schema. Histories are stored as one
/// row per message holding the message's JSON.
#[derive(Debug, Clone)]
pub struct PostgresStorage {
    pool: PgPool,
    /// The URL with its password hidden, for error messages.
    db: Arc<str>,
    /// The schema holding the tables.
    schema: Arc<str>,
    /// How long a call may take before it is given up
    /// (`PostgresOptions::call_limit`); `None` when the statement timeout is the
    /// server's, unknown here.
    call_limit: Option<Duration>,
    /// Why calls that waited out the connect timeout for a connection got none
    /// (`crate::timed_out`).
    timeouts: Arc<Finder>,
    /// Whether pooled connections hold statements prepared before the schema changed.
    plans: plans::StalePlans,
}

impl PostgresStorage {
    /// Connects to the server at `url` (`postgres://` or `postgresql://`) with default
    /// [`PostgresOptions`]; see [`connect_with`](Self::connect_with).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(PostgresOptions::new(url)).await
    }

    /// Connects with `options`, creating the schema and its tables when missing and
    /// upgrading them when this build has newer migrations.
    ///
    /// Opens one connection first, within the connect timeout, so an unreachable server,
    /// a wrong password or a missing database fails here with a clear error naming the URL
    /// (password hidden); a refused or timed-out connection is retryable. That connection
    /// checks the schema; then the pool opens its first connection, also here, so the
    /// first call does not wait for one (TCP, TLS and the server's startup: ~4 ms on
    /// localhost, more over a network). The pool opens more as concurrent calls need them
    /// and replaces ones the server dropped (a restart, an idle timeout): a connection
    /// idle for 30 s or more is pinged before it is handed out, and one that fails a call
    /// is checked and closed when released. A connection the server dropped while it was
    /// in recent use fails the one call that next uses it, with a retryable error.
    ///
    /// Fails, writing nothing, when the schema records a migration this build does not
    /// know: a newer release wrote it.
    pub async fn connect_with(options: PostgresOptions) -> Result<Self> {
        let opened = Self::open(options, IfMissing::Create).await?;
        Ok(opened.expect("IfMissing::Create creates a missing storage"))
    }

    /// Connects with `options` only if the schema holds a storage already: `None`, having
    /// created nothing, when it has no `_sqlx_migrations` table (the schema does not
    /// exist, or holds other tables only).
    ///
    /// For a program that reads, or changes only what exists, and must not leave an empty
    /// schema behind for a mistyped name (the `fusion` CLI's `sessions list`, a dry run's
    /// target). Otherwise as [`connect_with`](Self::connect_with): the same connection
    /// handling, timeouts and errors; a storage of an older release is upgraded in place,
    /// as every open upgrades it (this build could not read it otherwise), and one a newer
    /// release wrote is refused. A missing storage costs one connection and one query; no
    /// pool is opened for it.
    ///
    /// ```no_run
    /// # async fn demo() -> fusion_core::Result<()> {
    /// use fusion_core::ConversationStorage;
    /// use fusion_storage_postgres::{PostgresOptions, PostgresStorage};
    ///
    /// let options = PostgresOptions::new("postgres://app@localhost/app").schema("chat");
    /// match PostgresStorage::connect_existing(options).await? {
    ///     Some(storage) => println!("{} sessions", storage.list_sessions().await?.len()),
    ///     None => println!("no storage in schema chat"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn connect_existing(options: PostgresOptions) -> Result<Option<Self>> {
        Self::open(options, IfMissing::Leave).await
    }

    /// The body of both constructors: check (and, as `if_missing` says, create) the
    /// schema on one connection, then open the pool; `None` when the schema holds no
    /// storage and `if_missing` leaves it so.
    async fn open(options: PostgresOptions, if_missing: IfMissing) -> Result<Option<Self>> {
        let target = parse(&options)?;
        let db = target.label;
        let op = Op::open(PLACE, &db);
        let connect = target.connect.connect();
        let mut conn: PgConnection = tokio::time::timeout(options.connect_timeout, connect)
            .await
            .map_err(|_| connect_timed_out(op, options.connect_timeout))?
            .map_err(|e| parse_postgres_error(e, op))?;
        let limit = options.call_limit();
        let migrated = migrate::run(&mut conn, &options.schema, &db, if_missing, limit).await;
        // Closing politely is a courtesy to the server; the connection is done either way.
        // sqlx cannot adopt a connection into a pool, so the pool opens its own below.
        let _ = conn.close().await;
        if !migrated? {
            tracing::debug!(db, schema = options.schema, "no PostgreSQL storage to open");
            return Ok(None);
        }
        // sqlx pings every connection before handing it out by default: a second round
        // trip on every call, which would double the cost of `append`. Only connections
        // idle for a while are pinged (those a firewall or the server's idle timeout may
        // have cut); sqlx also pings each connection when it is released, in the
        // background, and closes it if that fails.
        // A connection that may hold statements prepared before the schema changed is
        // closed rather than handed out (`plans`).
        let plans = plans::StalePlans::default();
        let stale = plans.clone();
        let opened = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.connect_timeout)
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                let stale = stale.predate(meta.age);
                Box::pin(async move {
                    if stale {
                        return Ok(false);
                    }
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(target.connect.clone())
            .await;
        let timeouts = Arc::new(Finder::default());
        let pool = match opened {
            Ok(pool) => pool,
            // Worded as a call's, for a pool that holds no connection, being gone (the
            // connection above opened: one tried now says what the pool met since).
            Err(sqlx::Error::PoolTimedOut) => {
                let pool = Waited {
                    connect: &target.connect,
                    timeout: options.connect_timeout,
                    max: options.max_connections,
                    size: 0,
                };
                return Err(timeouts.timed_out(op, pool, Instant::now()).await);
            }
            Err(err) => return Err(parse_postgres_error(err, op)),
        };
        tracing::debug!(
            db,
            schema = options.schema,
            "opened PostgreSQL conversation storage"
        );
        Ok(Some(Self {
            pool,
            db: db.into(),
            call_limit: options.call_limit(),
            schema: options.schema.into(),
            timeouts,
            plans,
        }))
    }

    /// The underlying pool, for backups, inspection or running other queries. Its
    /// connections have the storage's schema as their `search_path`.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The server's URL as given, with its password hidden.
    pub fn database(&self) -> &str {
        &self.db
    }

    /// The schema that holds this storage's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Closes the pool (shared by every clone) once running operations finish; later calls
    /// fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Operation `name`: creates `session_id` at `times` (`None`: now), or refuses with a
    /// conflict when it exists (`crate::write::create`).
    async fn create(
        &self,
        name: &'static str,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: Option<SessionTimes>,
    ) -> Result<u64> {
        check_creation(BACKEND, session_id, meta, messages)?;
        let batch = Batch::of(session_id, messages)?;
        let run = write::create(&self.pool, session_id, &batch, meta, times);
        let created = self.run(name, Some(session_id), run).await?;
        created.map_err(|found| {
            Expect::Generation(0).conflict(BACKEND, session_id, found.generation, Some(found.len))
        })
    }
}

#[async_trait]
impl ConversationStorage for PostgresStorage {
    /// Replaces the history in one transaction: lock and update the session row (with the
    /// ids of the history's last messages), delete the old messages, insert the new ones.
    /// Five round trips whatever the length; cost O(len of `history`) on the server. A session that has expired is removed first
    /// (two more), and the history saved as a fresh session.
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        check_storable(BACKEND, session_id, history)?;
        let batch = Batch::of(session_id, history)?;
        // Dropping an uncommitted transaction (an error, a cancelled call) rolls it back.
        let run = async {
            let mut tx = self.pool.begin().await?;
            if batch.is_empty() {
                write::remove(&mut tx, session_id).await?;
            } else {
                write::replace(&mut tx, session_id, &batch, false, write::Times::Write).await?;
            }
            tx.commit().await
        };
        self.run("save", Some(session_id), run).await
    }

    /// One query, rows in seq order; none for a session that has expired (one lookup of
    /// its row). Cost: O(history). A row that is not a valid message, or a gap in the
    /// seqs, is [`Error::Corrupt`](fusion_core::Error::Corrupt) naming the seq.
    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        SessionId::validate(session_id)?;
        let rows = sqlx::query_as(LOAD).bind(session_id).fetch_all(&self.pool);
        let rows: Vec<(i64, String)> = self.run("load", Some(session_id), rows).await?;
        sql::decode_rows(session_id, rows)
    }

    /// Deletes the session's rows from both tables in one transaction.
    async fn delete(&self, session_id: &str) -> Result<()> {
        SessionId::validate(session_id)?;
        let run = async {
            let mut tx = self.pool.begin().await?;
            write::remove(&mut tx, session_id).await?;
            tx.commit().await
        };
        self.run("delete", Some(session_id), run).await
    }

    /// Reads the `sessions` table only, skipping expired sessions. Cost: O(number of
    /// sessions).
    async fn list_sessions(&self) -> Result<Vec<String>> {
        let ids = sqlx::query_scalar(LIST_SESSIONS).fetch_all(&self.pool);
        self.run("list_sessions", None, ids).await
    }

    /// One statement, so one round trip: bump the session's count under its row lock
    /// (moving an idle expiry) and insert the new rows numbered from it, when a message
    /// has an id only if no fingerprint of the batch's ids is in the row's window (see
    /// `crate::sql::APPEND_WITH_IDS`). Cost: O(`messages.len()`), independent of history
    /// length, plus, with ids, comparing and appending to the window of 64 integers.
    /// When a fingerprint matches (a retry), the statement returns the ids of the last 64
    /// messages and a second statement stores what they lack. When the session has
    /// expired, or a writer came in between, one transaction sorts it out under the row's
    /// lock, removing an expired session and creating it afresh (`crate::write::append`).
    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        if messages.is_empty() {
            return Ok(());
        }
        check_storable(BACKEND, session_id, messages)?;
        let batch = Batch::of(session_id, messages)?;
        let none = SessionMeta::new();
        let run = write::append(&self.pool, session_id, &batch, &none, write::Mode::Append);
        self.run("append", Some(session_id), run).await?;
        Ok(())
    }

    /// Lowers the count (with a fresh generation) and marks the window of id
    /// fingerprints unknown (the next append with ids reads the last ids instead), then
    /// deletes the rows from seq `len` on, in one transaction; nothing changes when the
    /// history is not longer than `len`, or the session has expired.
    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        SessionId::validate(session_id)?;
        let run = async {
            let mut tx = self.pool.begin().await?;
            if len == 0 {
                write::remove(&mut tx, session_id).await?;
            } else {
                write::truncate(&mut tx, session_id, len).await?;
            }
            tx.commit().await
        };
        self.run("truncate", Some(session_id), run).await
    }

    /// One statement joining the session row to its messages, so the revision and the
    /// history come from one snapshot; an expired session is
    /// [`Revision::ABSENT`]. Cost: what `load` costs.
    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        SessionId::validate(session_id)?;
        let rows = sqlx::query_as(LOAD_REVISION)
            .bind(session_id)
            .fetch_all(&self.pool);
        let rows = self.run("load_revision", Some(session_id), rows).await?;
        decode_revision(session_id, rows)
    }

    /// One transaction: `SELECT ... FOR UPDATE` of the session's row (one key lookup),
    /// compare its generation and count with `expected` (for [`Expect::UnwrittenSince`]
    /// also its `updated_at`, in microseconds, read by the same statement; an expired
    /// session is absent, and is removed before the write), then run the statements of
    /// `append`, `truncate` or `save`, or roll back with
    /// [`Error::Conflict`](fusion_core::Error::Conflict). A write that would create the
    /// session is refused if another writer created it after the check. An append checks
    /// ids as `append` does: one whose messages are all stored already adds nothing and
    /// returns the generation unchanged. Cost: the lookup plus what the plain write costs,
    /// and the `BEGIN`/`COMMIT` round trips, whatever `expected` is.
    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        SessionId::validate(session_id)?;
        check_storable(BACKEND, session_id, change.messages())?;
        let batch = Batch::of(session_id, change.messages())?;
        let run = async {
            let mut tx = self.pool.begin().await?;
            let outcome = write::conditional(&mut tx, session_id, expected, change, &batch).await?;
            match outcome {
                Ok(_) => tx.commit().await?,
                Err(_) => tx.rollback().await?,
            }
            Ok(outcome)
        };
        let outcome = self.run("write_if", Some(session_id), run).await?;
        outcome.map_err(|found| {
            expected.conflict(BACKEND, session_id, found.generation, Some(found.len))
        })
    }

    /// Reads one row of the `sessions` table (one key lookup); `None` for a session that
    /// has expired. Tags or data that do not read back (edited by hand) are
    /// [`Error::Corrupt`](fusion_core::Error::Corrupt).
    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        SessionId::validate(session_id)?;
        let row = sqlx::query(SESSION_INFO)
            .bind(session_id)
            .fetch_optional(&self.pool);
        let row = self.run("session_info", Some(session_id), row).await?;
        row.as_ref().map(decode_info).transpose()
    }

    /// One statement, one round trip: the statement of `append` as a creation runs it
    /// (`crate::sql::CREATE`), writing the row with its metadata and expiry and the
    /// messages only if the row does not exist. When it does, a transaction removes it if
    /// it has expired and runs the statement again; if it has not, a statement reads the
    /// revision the [`Error::Conflict`](fusion_core::Error::Conflict) reports. Nothing is
    /// written when the id, the metadata or a message is refused.
    async fn create_session(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
    ) -> Result<u64> {
        self.create("create_session", session_id, meta, messages, None)
            .await
    }

    /// What `create_session` does, in the same statement, the row created and last
    /// written at `times`, each at most the server's clock (`least(given, now())`, the
    /// clock of every write), an idle expiry counting from the second.
    async fn create_session_with_times(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: SessionTimes,
    ) -> Result<u64> {
        times.validate()?;
        let name = "create_session_with_times";
        self.create(name, session_id, meta, messages, Some(times))
            .await
    }

    /// One transaction: lock the session's row with `SELECT ... FOR UPDATE` (one key
    /// lookup), apply `update` to the metadata read there and validate the result, then
    /// write it, moving `updated_at` and an idle expiry (or storing the expiry `update`
    /// sets). Concurrent updates queue on the row lock, so none undoes another's change,
    /// and an update waits for a `write_if` holding it (none lands between its check of
    /// `updated_at` and its write).
    /// Four round trips (`BEGIN` and `COMMIT` included); an absent or expired session or a
    /// refused result rolls back, writing nothing.
    async fn update_session(
        &self,
        session_id: &str,
        update: &MetaUpdate,
    ) -> Result<Option<SessionInfo>> {
        SessionId::validate(session_id)?;
        let op = self.op("update_session", Some(session_id));
        let began = Instant::now();
        let run = async {
            let tx = match self.pool.begin().await {
                Ok(tx) => tx,
                Err(err) => return Err(self.call_error(err, op, began).await),
            };
            match update::locked(tx, session_id, update).await {
                Ok(updated) => updated,
                Err(err) => Err(self.call_error(err, op, began).await),
            }
        };
        self.bounded(op, run).await
    }

    /// One statement that walks an index from the cursor on and reads `limit + 1` rows
    /// (see `crate::meta`), planned for its arguments: two round trips (parse, execute).
    /// Cost: O(page) however many sessions are stored; filtered by a tag, plus the entries
    /// without the tag it skips; one owner's sessions by id, O(that owner's sessions).
    async fn list_page(&self, query: &SessionQuery) -> Result<SessionPage> {
        query.validate()?;
        let start = query.start()?;
        let op = || self.op("list_page", None);
        let (sql, args) =
            page_query(query, start.as_ref()).map_err(|e| parse_postgres_error(e, op()))?;
        let rows = sqlx::query_with(&sql, args)
            .persistent(false)
            .fetch_all(&self.pool);
        let rows = self.run("list_page", None, rows).await?;
        let infos = rows.iter().map(decode_info).collect::<Result<Vec<_>>>()?;
        // The rows come in the query's order and after its cursor already; `page_of`
        // keeps the first `limit` and makes the cursor from the last of them.
        query.page_of(infos)
    }

    /// One statement, one round trip: delete the first `batch` sessions of the
    /// `sessions_expiry` index that have expired (server clock), with their messages, each
    /// locked first (`FOR UPDATE SKIP LOCKED`), so still expired when deleted; see
    /// `crate::sql::PURGE`. Cost: O(`batch`) index entries plus the deleted rows, however
    /// many sessions are stored. Sessions another transaction holds are left for a later
    /// call, so concurrent purges (from any process) delete different sessions.
    async fn purge_expired(&self, batch: usize) -> Result<usize> {
        check_purge_batch(batch)?;
        let done = sqlx::query(PURGE)
            .bind(sql::count(batch))
            .execute(&self.pool);
        let done = self.run("purge_expired", None, done).await?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    fn backend_name(&self) -> &'static str {
        BACKEND
    }
}
