//! Write transactions sent as one script, and the connections they run on.
//!
//! Every sqlx call on a SQLite connection is a round trip to that connection's worker
//! thread, and on a small machine those hand-offs cost more than SQLite's own work for a
//! short write. So each write is one multi-statement script, `BEGIN IMMEDIATE; ...;
//! COMMIT`, that the worker runs start to finish: one round trip whatever the number of
//! statements and rows. sqlx's `Transaction` cannot do this (it sends `BEGIN` and `COMMIT`
//! as calls of their own), so this module does the job of its guard: a script that fails
//! or is cancelled can stop after `BEGIN` with the write lock held, and its connection
//! must not be used again like that.
//!
//! A database file gets a [`Writer`]: one connection of its own that runs every write of
//! the storage in turn. SQLite lets one writer in at a time anyway, so nothing is lost by
//! queueing in process, and the same worker thread handles write after write instead of
//! whichever of the pool's connections (each with its own, long-idle thread) comes next:
//! 15–20% off an append here. An in-memory database, which lives in its single pooled
//! connection, and a caller's pool write through [`run`] on a pooled connection instead.

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnectOptions, SqliteConnection, SqlitePool};
use sqlx::{ConnectOptions, Connection};

use crate::checkpoint::Checkpointer;
use crate::error::is_no_transaction;

/// A `BEGIN IMMEDIATE; ...; COMMIT` script with its bound parameters.
pub(crate) type Script<'q> = Query<'q, Sqlite, SqliteArguments<'q>>;

/// Runs `script` on a connection from `pool` in one round trip.
///
/// On success every statement ran, `COMMIT` included. On failure whatever the script left
/// open is rolled back before the error is returned, and if the call is cancelled midway
/// the rollback still happens, in the background, before the connection is reused.
pub(crate) async fn run(pool: &SqlitePool, script: Script<'_>) -> sqlx::Result<()> {
    let mut conn = Unfinished(Some(pool.acquire().await?));
    match script.execute(conn.get()).await {
        Ok(_) => {
            conn.release();
            Ok(())
        }
        Err(e) => {
            conn.roll_back().await;
            Err(e)
        }
    }
}

/// The connection a storage on a database file writes through, opened on first use, and
/// the background WAL checkpoints its writes call for.
#[derive(Debug)]
pub(crate) struct Writer {
    options: SqliteConnectOptions,
    state: tokio::sync::Mutex<WriterState>,
    checkpoints: Arc<Checkpointer>,
}

#[derive(Debug, Default)]
struct WriterState {
    conn: Option<SqliteConnection>,
    /// A script was sent and not seen to finish: its caller was cancelled, and it may
    /// have left a transaction open.
    unfinished: bool,
    /// [`Writer::close`] ran: writes fail as they do on the closed pool.
    closed: bool,
}

impl Writer {
    /// A writer that connects with `options` (the pool's) when it first writes.
    pub(crate) fn new(options: SqliteConnectOptions) -> Self {
        Self {
            options,
            state: tokio::sync::Mutex::default(),
            checkpoints: Arc::default(),
        }
    }

    /// Runs `script` after the writes queued before it, in one round trip, with the same
    /// guarantees as [`run`]: on failure whatever it left open is rolled back before the
    /// error is returned, and a cancelled script is rolled back before the next one. A
    /// write that committed counts towards the next checkpoint, run on `pool`.
    pub(crate) async fn run(
        &self,
        script: Script<'_>,
        pool: &SqlitePool,
        db: &Arc<str>,
    ) -> sqlx::Result<()> {
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        if state.closed {
            return Err(sqlx::Error::PoolClosed);
        }
        state.settle().await;
        if state.conn.is_none() {
            state.conn = Some(self.options.connect().await?);
        }
        let conn = state.conn.as_mut().expect("connected above");
        state.unfinished = true;
        let result = script.execute(&mut *conn).await;
        if result.is_ok() {
            state.unfinished = false;
            self.checkpoints.wrote(pool, db);
        } else {
            state.settle().await;
        }
        result.map(drop)
    }

    /// Closes the connection after the write in progress, if any.
    pub(crate) async fn close(&self) {
        let mut state = self.state.lock().await;
        state.settle().await;
        state.closed = true;
        if let Some(conn) = state.conn.take()
            && let Err(e) = conn.close().await
        {
            tracing::debug!(error = %e, "closing the SQLite writer connection failed");
        }
    }
}

impl WriterState {
    /// Ends any transaction an unfinished script left open. When even that fails the
    /// connection is dropped (closing it makes SQLite roll back) and the next write opens
    /// a new one.
    async fn settle(&mut self) {
        if !std::mem::take(&mut self.unfinished) {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if !roll_back(conn).await {
            self.conn = None;
        }
    }
}

/// A pooled connection whose script has not been seen to finish.
///
/// Dropping it while it still holds the connection (the caller's future was cancelled)
/// rolls back in a spawned task: the worker runs commands in order, so that `ROLLBACK`
/// runs after whatever part of the script the worker still executes.
struct Unfinished(Option<PoolConnection<Sqlite>>);

impl Unfinished {
    fn get(&mut self) -> &mut SqliteConnection {
        self.0.as_mut().expect("used only until released")
    }

    /// Returns the connection to the pool: its script committed.
    fn release(mut self) {
        self.0 = None;
    }

    /// Ends any transaction the script left open, then releases the connection.
    async fn roll_back(&mut self) {
        if let Some(conn) = self.0.as_mut() {
            roll_back_pooled(conn).await;
        }
        self.0 = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some(mut conn) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { roll_back_pooled(&mut conn).await });
            }
            // No runtime to roll back on: closing the connection makes SQLite roll back.
            Err(_) => drop(conn.detach()),
        }
    }
}

/// Rolls back the transaction `conn` may be in. False when that failed: the connection
/// may still hold the write lock and must not be used again.
async fn roll_back(conn: &mut SqliteConnection) -> bool {
    match sqlx::query("ROLLBACK").execute(conn).await {
        // Either it was in a transaction and now is not, or it never was (the script
        // failed at `BEGIN`, or SQLite already rolled back on the error).
        Ok(_) => true,
        Err(e) if is_no_transaction(&e) => true,
        Err(e) => {
            tracing::warn!(error = %e, "closing a SQLite connection whose failed write could not be rolled back");
            false
        }
    }
}

/// [`roll_back`] for a pooled connection, which is closed instead of returned to the pool
/// when the rollback fails.
async fn roll_back_pooled(conn: &mut PoolConnection<Sqlite>) {
    if !roll_back(conn).await {
        conn.close_on_drop();
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Executor};

    use super::*;

    #[tokio::test]
    async fn rollback_outside_a_transaction_is_told_apart() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        let err = conn.execute("ROLLBACK").await.unwrap_err();
        assert!(is_no_transaction(&err), "{err}");
        conn.execute("BEGIN IMMEDIATE").await.unwrap();
        conn.execute("ROLLBACK").await.unwrap();
        assert!(!is_no_transaction(&sqlx::Error::PoolTimedOut));
    }
}
