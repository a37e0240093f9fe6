//! Write transactions: each defined once, as statements run in one `BEGIN IMMEDIATE`
//! transaction, and the sqlx way of running them.
//!
//! A storage on a database file it opened itself runs writes through
//! [`Direct`](crate::direct::Direct), which steps the statements one by one with SQLite on
//! the caller's thread. A storage on `sqlite::memory:` or on a caller's pool has only sqlx,
//! and every sqlx call on a SQLite connection is a round trip to that connection's worker
//! thread; on a small machine those hand-offs cost more than SQLite's own work for a short
//! write. So there each write goes as one multi-statement script, `BEGIN IMMEDIATE; ...;
//! COMMIT`, that the worker runs start to finish: one round trip whatever the number of
//! statements and rows. sqlx's `Transaction` cannot do this (it sends `BEGIN` and `COMMIT`
//! as calls of their own), so this module does the job of its guard: a script that fails
//! or is cancelled can stop after `BEGIN` with the write lock held, and its connection
//! must not be used again like that.

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{Sqlite, SqliteConnection, SqlitePool};

use crate::error::is_no_transaction;

/// One write transaction's SQL, in the two forms its two runners need.
#[derive(Debug)]
pub(crate) struct WriteSql {
    /// The statements between `BEGIN IMMEDIATE` and `COMMIT`, for stepping one by one.
    pub(crate) statements: &'static [&'static str],
    /// The same wrapped as one `BEGIN IMMEDIATE; ...; COMMIT` script, for sqlx.
    pub(crate) script: &'static str,
    /// Whether its work grows only with the values bound to it, never with what is already
    /// stored: only such a write, and a small one, may run on an async task's own thread.
    pub(crate) bounded: bool,
}

/// Defines a [`WriteSql`] from its statements, so both forms come from one text.
macro_rules! write_sql {
    (bounded: $bounded:expr, $($statement:literal),+ $(,)?) => {
        $crate::script::WriteSql {
            statements: &[$($statement),+],
            script: concat!("BEGIN IMMEDIATE; ", $($statement, "; ",)+ "COMMIT"),
            bounded: $bounded,
        }
    };
}
pub(crate) use write_sql;

/// A value bound to a write's parameters `?1`, `?2`, ... in order.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Text(String),
    Int(i64),
}

/// A write ready to run: its SQL and the values of its parameters.
#[derive(Debug)]
pub(crate) struct Write {
    pub(crate) sql: &'static WriteSql,
    pub(crate) values: Vec<Value>,
}

impl Write {
    /// The bytes bound to the write, which is what its cost grows with when it is bounded.
    pub(crate) fn bound_bytes(&self) -> usize {
        self.values
            .iter()
            .map(|value| match value {
                Value::Text(text) => text.len(),
                Value::Int(_) => 8,
            })
            .sum()
    }
}

/// Runs `write` as one script on a connection from `pool`, in one round trip.
///
/// On success every statement ran, `COMMIT` included. On failure whatever the script left
/// open is rolled back before the error is returned, and if the call is cancelled midway
/// the rollback still happens, in the background, before the connection is reused.
pub(crate) async fn run(pool: &SqlitePool, write: Write) -> sqlx::Result<()> {
    let mut script = sqlx::query(write.sql.script);
    for value in write.values {
        script = match value {
            Value::Text(text) => script.bind(text),
            Value::Int(n) => script.bind(n),
        };
    }
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

/// Rolls back the transaction a pooled connection may be in; when that fails the
/// connection may still hold the write lock, so it is closed instead of returned.
async fn roll_back_pooled(conn: &mut PoolConnection<Sqlite>) {
    match sqlx::query("ROLLBACK").execute(&mut **conn).await {
        // Either it was in a transaction and now is not, or it never was (the script
        // failed at `BEGIN`, or SQLite already rolled back on the error).
        Ok(_) => {}
        Err(e) if is_no_transaction(&e) => {}
        Err(e) => {
            tracing::warn!(error = %e, "closing a SQLite connection whose failed write could not be rolled back");
            conn.close_on_drop();
        }
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
