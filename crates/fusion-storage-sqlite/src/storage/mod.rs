//! `SqliteStorage`: every session in one SQLite database file, one row per message.
//!
//! Where the file-system backend keeps one human-readable file per session and Redis
//! needs a server, SQLite gives transactions in a single embedded file: an append is one
//! short transaction that inserts only the new rows, several processes can share the file
//! (writers queue on SQLite's write lock for up to the busy timeout), and the data can be
//! inspected with the `sqlite3` shell (see the crate README). Sessions carry an owner, a
//! title, tags and data, and are listed a page at a time by walking an index from a
//! cursor, so a page of one owner's sessions costs the same at a thousand sessions as at
//! a million (`crate::listing`). A session may expire ([`fusion_core::Expiry`]): from
//! then on it is absent for every read and write, and `purge_expired` deletes it
//! (`crate::expiry`).
//!
//! ```no_run
//! # async fn demo() -> fusion_core::Result<()> {
//! use fusion_core::{ChatMessage, ConversationStorage, SessionMeta, SessionQuery};
//! use fusion_storage_sqlite::SqliteStorage;
//!
//! let storage = SqliteStorage::connect("sqlite://sessions.db").await?; // created if missing
//! storage.append("user-123", &[ChatMessage::user("hello")]).await?;
//! assert_eq!(storage.load("user-123").await?.len(), 1);
//!
//! let meta = SessionMeta::new().owner("alice").title("Tidy the logs").tags(["ops"]);
//! storage.create_session("chat-1", &meta, &[ChatMessage::user("hi")]).await?;
//! let page = storage.list_page(&SessionQuery::new().owner("alice").limit(20)).await?;
//! assert_eq!(page.sessions[0].meta.title.as_deref(), Some("Tidy the logs"));
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Expect, MetaUpdate, Result, Revision, SessionId,
    SessionInfo, SessionMeta, SessionPage, SessionQuery, SessionTimes, check_creation,
    check_purge_batch,
};
use sqlx::sqlite::SqlitePool;

use crate::corrupt::CorruptFlag;
use crate::direct::Direct;
use crate::error::{
    BACKEND, DirectError, Op, PLACE, parse_direct_error, parse_sqlite_error, refused_for_times,
};
use crate::expiry::now_micros;
use crate::listing;
use crate::meta::{self, InfoRow};
use crate::pooled;
use crate::sql::{LIST_SESSIONS, READ_INFO, Write, Written};

mod open;

/// Conversation storage in a SQLite database, through a `sqlx` connection pool and, on a
/// database file it opens itself, SQLite called directly for loads and writes.
///
/// Cloning is cheap and clones share the connections, so one `SqliteStorage` can serve a
/// whole application. Histories are stored as one row per message holding the message's
/// JSON.
#[derive(Debug, Clone)]
pub struct SqliteStorage {
    pool: SqlitePool,
    /// The database path (control characters escaped) or `:memory:`, for messages.
    db: Arc<str>,
    /// The database file, which the hints of error messages look at (`crate::error::Op`).
    file: Option<Arc<Path>>,
    /// The connections that loads and writes go through, and the WAL checkpoints the
    /// writes call for, for a database file this crate opened; `None` loads and writes
    /// through the pool (`:memory:`, a caller's pool, with SQLite's own checkpoints).
    direct: Option<Arc<Direct>>,
    /// Set once any call found the file damaged: writes are refused (`crate::corrupt`).
    corrupt: Arc<CorruptFlag>,
}

impl SqliteStorage {
    /// The underlying pool, for backups, inspection or running other queries.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The database's path as given in the URL (control characters escaped), or `:memory:`.
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
        Op::new(PLACE, &self.db, name, session_id).at(self.file.as_deref())
    }

    /// `result`, after setting the corrupt flag if it failed finding the file damaged.
    fn noted<T>(&self, result: Result<T>) -> Result<T> {
        result.inspect_err(|e| self.corrupt.note_error(&self.db, e))
    }

    /// Runs `write` for operation `name`: through the direct connections when this
    /// storage opened the file itself, otherwise as one script on the pool.
    async fn write(&self, write: Write, name: &'static str, session_id: &str) -> Result<()> {
        self.run(write, name, Some(session_id)).await.map(drop)
    }

    /// [`write`](Self::write), telling how it ended: what a conditional write needs. A
    /// purge names no session.
    async fn run(
        &self,
        write: Write,
        name: &'static str,
        session_id: Option<&str>,
    ) -> Result<Written> {
        let op = self.op(name, session_id);
        let written = match &self.direct {
            Some(direct) => direct
                .write(write)
                .await
                .map_err(|e| parse_direct_error(e, op)),
            // The direct path checks the flag in the writer's turn; the pool here.
            None if self.corrupt.is_set() => Err(parse_direct_error(DirectError::FoundCorrupt, op)),
            None => self.noted(
                pooled::write(&self.pool, write)
                    .await
                    .map_err(|e| parse_sqlite_error(e, op)),
            ),
        };
        match (written, session_id) {
            // Said as `session_info` says it, naming the damaged column.
            (Err(err), Some(id)) if refused_for_times(&err) => {
                Err(meta::damaged(&self.pool, id).await.unwrap_or(err))
            }
            (written, _) => written,
        }
    }

    /// The one creation path of `create_session` and `create_session_with_times`: creates
    /// `session_id` at `times` (clamped to the write's clock), or at the write's own time
    /// when `None`, refusing with a conflict when it exists.
    async fn create(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: Option<SessionTimes>,
    ) -> Result<u64> {
        check_creation(BACKEND, session_id, meta, messages)?;
        let name = match times {
            None => "create_session",
            Some(_) => "create_session_with_times",
        };
        let write = Write::create(session_id, meta, messages, times)?;
        match self.run(write, name, Some(session_id)).await? {
            Written::Committed(generation) => Ok(generation.unwrap_or_default()),
            written => {
                let found = written.refused();
                let absent = Expect::Generation(0);
                Err(absent.conflict(BACKEND, session_id, found.generation, Some(found.len)))
            }
        }
    }
}

#[async_trait]
impl ConversationStorage for SqliteStorage {
    /// Replaces the history in one transaction. Cost: O(len of `history`), on a blocking
    /// thread or in one round trip to a connection's worker thread.
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        fusion_core::check_storable(BACKEND, session_id, history)?;
        let write = if history.is_empty() {
            Write::remove(session_id)
        } else {
            Write::save(session_id, history)?
        };
        self.write(write, "save", session_id).await
    }

    /// Reads the rows in seq order: on a database file opened by this crate, on a blocking
    /// thread while this task parses them (`crate::direct`); otherwise as one JSON array
    /// that SQLite assembles, parsed once (`crate::pooled`). An expired session reads
    /// empty (its statement looks its `sessions` row up once). Cost: O(history). A row
    /// that is not a valid message, or a gap in the seqs, is
    /// [`Error::Corrupt`](fusion_core::Error::Corrupt) naming the seq.
    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        SessionId::validate(session_id)?;
        let op = self.op("load", Some(session_id));
        let now = now_micros();
        match &self.direct {
            Some(direct) => {
                direct
                    .load(session_id, now, |e| parse_direct_error(e, op))
                    .await
            }
            None => self.noted(pooled::load(&self.pool, session_id, now, op).await),
        }
    }

    /// Deletes the session's rows from both tables in one transaction.
    async fn delete(&self, session_id: &str) -> Result<()> {
        SessionId::validate(session_id)?;
        self.write(Write::remove(session_id), "delete", session_id)
            .await
    }

    /// Reads the `sessions` table only, skipping expired sessions. Cost: O(number of
    /// sessions).
    async fn list_sessions(&self) -> Result<Vec<String>> {
        let listed = sqlx::query_scalar(LIST_SESSIONS)
            .bind(now_micros())
            .fetch_all(&self.pool)
            .await;
        self.noted(listed.map_err(|e| parse_sqlite_error(e, self.op("list_sessions", None))))
    }

    /// One `BEGIN IMMEDIATE` transaction: bump the session's count (moving an idle
    /// expiry), insert the new rows. Cost: O(`messages.len()`), independent of history
    /// length. On a database file this crate opened a small append runs on the calling
    /// thread when the database is free (see `crate::direct`); otherwise on a blocking
    /// thread, or in one round trip to a pooled connection's worker thread. An append to
    /// an expired session writes nothing in those statements; then the session is removed
    /// and the append runs again, creating it afresh (in the same transaction, or a second
    /// round trip on the pool).
    ///
    /// When messages carry ids, the transaction first reads which of those ids the session
    /// stores (one probe of an index per id, and the lookup of the session's row; on the
    /// pool that read is a round trip of its own), and stores only the other messages, in
    /// order and numbered on from the count. If none is left it writes nothing at all. The
    /// whole session is looked at, not only its last `DEDUP_WINDOW` messages. A batch
    /// without ids does none of this.
    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        if messages.is_empty() {
            return Ok(());
        }
        fusion_core::check_storable(BACKEND, session_id, messages)?;
        let write = Write::append(session_id, messages)?;
        self.write(write, "append", session_id).await
    }

    /// Deletes the rows from seq `len` on and lowers the count, in one transaction. An
    /// expired session is absent: nothing is truncated.
    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        SessionId::validate(session_id)?;
        let write = if len == 0 {
            Write::remove(session_id)
        } else {
            Write::truncate(session_id, len)
        };
        self.write(write, "truncate", session_id).await
    }

    /// Reads the session's `sessions` row, then its messages, in one read transaction (on a
    /// database file this crate opened), or both in one statement (the pool): the revision
    /// and the history come from one snapshot. An expired session is
    /// [`Revision::ABSENT`]. Cost: what `load` costs, plus one lookup.
    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        SessionId::validate(session_id)?;
        let op = self.op("load_revision", Some(session_id));
        let now = now_micros();
        match &self.direct {
            Some(direct) => {
                direct
                    .load_revision(session_id, now, |e| parse_direct_error(e, op))
                    .await
            }
            None => self.noted(pooled::load_revision(&self.pool, session_id, now, op).await),
        }
    }

    /// One `BEGIN IMMEDIATE` transaction: read the session's generation, count and expiry
    /// (one lookup of its `sessions` row; under [`Expect::UnwrittenSince`] its
    /// `updated_at` too, in the same lookup), compare them with `expected` (an expired
    /// session is absent), then run the statements of `append`, `truncate` or `save`
    /// (removing an expired session first), or roll back with
    /// [`Error::Conflict`](fusion_core::Error::Conflict). An append whose messages carry
    /// ids reads which are stored in the same lookup and leaves them out, as `append`
    /// does; when none is left it writes nothing and returns the generation unchanged.
    /// Cost: the lookup plus what the plain write costs; a small conditional append runs
    /// on the calling thread like an append. On the pool it is two round trips instead of
    /// one.
    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        SessionId::validate(session_id)?;
        fusion_core::check_storable(BACKEND, session_id, change.messages())?;
        let write = Write::conditional(session_id, expected, change)?;
        match self.run(write, "write_if", Some(session_id)).await? {
            Written::Committed(generation) => Ok(generation.unwrap_or_default()),
            Written::AllStored(generation) => Ok(generation),
            written => {
                let found = written.refused();
                Err(expected.conflict(BACKEND, session_id, found.generation, Some(found.len)))
            }
        }
    }

    /// Reads the session's `sessions` row (count, timestamps, generation, owner, expiry)
    /// and its `session_meta` row (title, tags, data): one lookup each, O(1). An expired
    /// session is `None`. Damaged `tags` or `data` cells are
    /// [`Error::Corrupt`](fusion_core::Error::Corrupt) naming the session.
    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        SessionId::validate(session_id)?;
        let now = now_micros();
        let row = sqlx::query(READ_INFO)
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await
            .and_then(|row| row.as_ref().map(InfoRow::from_sqlx).transpose())
            .map_err(|e| parse_sqlite_error(e, self.op("session_info", Some(session_id))));
        let row = self.noted(row)?;
        row.filter(|row| !row.is_expired_at(now))
            .map(InfoRow::decode)
            .transpose()
    }

    /// One `BEGIN IMMEDIATE` transaction: look the session up (refusing with
    /// [`Error::Conflict`](fusion_core::Error::Conflict) if it exists and has not expired;
    /// removing it if it has), then insert its row with the owner and expiry, its
    /// messages, its `session_meta` row (when it has a title, tags or data) and one
    /// `session_tags` row per tag. Cost: what an append of `messages` costs, plus a row
    /// per tag; runs on the calling thread like a small append.
    async fn create_session(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
    ) -> Result<u64> {
        self.create(session_id, meta, messages, None).await
    }

    /// [`create_session`](Self::create_session) with `times` for the row's `created_at`
    /// and `updated_at`, in the same transaction: each clamped to the clock reading the
    /// write takes (`SessionTimes::stored_at`), then cut to whole milliseconds like every
    /// write's own; an idle expiry counts from that `updated_at`, so the row may be
    /// stored expired already. Checked before anything is written. Cost: that of
    /// `create_session`.
    async fn create_session_with_times(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: SessionTimes,
    ) -> Result<u64> {
        times.validate()?;
        self.create(session_id, meta, messages, Some(times)).await
    }

    /// One `BEGIN IMMEDIATE` transaction: read the session's facts, apply `update` and
    /// validate the result in Rust, then write the owner, `updated_at` (moved, never back)
    /// and the expiry (the one set, or an idle one moved), the `session_meta` row and the
    /// `session_tags` rows; or roll back, writing nothing, when the session is absent or
    /// expired (`None`), the result is invalid
    /// ([`Error::InvalidMeta`](fusion_core::Error::InvalidMeta)) or the stored metadata is
    /// damaged. Concurrent updates queue on the write lock, so none undoes another. An
    /// empty `update` only reads. Cost: O(tags).
    async fn update_session(
        &self,
        session_id: &str,
        update: &MetaUpdate,
    ) -> Result<Option<SessionInfo>> {
        SessionId::validate(session_id)?;
        if update.is_empty() {
            return self.session_info(session_id).await;
        }
        let write = Write::update_meta(session_id, update);
        match self.run(write, "update_session", Some(session_id)).await? {
            Written::Updated(info) => Ok(info.map(|info| *info)),
            Written::Rejected(e) => Err(e),
            other => unreachable!("a metadata update ended as {other:?}"),
        }
    }

    /// One keyset query on the pool walking one index from the cursor, `limit + 1` rows:
    /// O(limit) however many sessions are stored, except an owner's sessions with a tag
    /// (O(the owner's sessions) at worst) and a tag's sessions newest first (O(the tag's
    /// sessions)). See `crate::listing` for the queries and their plans.
    async fn list_page(&self, query: &SessionQuery) -> Result<SessionPage> {
        let op = self.op("list_page", None);
        self.noted(listing::page(&self.pool, query, now_micros(), op).await)
    }

    /// One `BEGIN IMMEDIATE` transaction: delete, from every table, the first `batch`
    /// sessions of the `sessions_by_expiry` index whose expiry is not after now. The
    /// transaction holds the write lock, so each is still expired when deleted (a session
    /// written again since has a later expiry, or none, and is not among them). Cost:
    /// O(`batch`) index steps plus the deleted rows, however many sessions are stored; on a
    /// blocking thread, or one round trip on the pool.
    async fn purge_expired(&self, batch: usize) -> Result<usize> {
        check_purge_batch(batch)?;
        match self.run(Write::purge(batch), "purge_expired", None).await? {
            Written::Purged(deleted) => Ok(deleted),
            other => unreachable!("a purge ended as {other:?}"),
        }
    }

    fn backend_name(&self) -> &'static str {
        BACKEND
    }
}

#[cfg(test)]
mod tests {
    use super::SqliteStorage;

    impl SqliteStorage {
        /// The steps of SQLite's plan for `sql` (`EXPLAIN QUERY PLAN`), for the tests that
        /// pin which index a statement walks.
        pub(crate) async fn query_plan(&self, sql: &str) -> Vec<String> {
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .fetch_all(&self.pool)
                    .await
                    .unwrap();
            rows.into_iter().map(|row| row.3).collect()
        }
    }
}
