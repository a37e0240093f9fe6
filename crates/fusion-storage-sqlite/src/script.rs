//! Write transactions sent as one script, and the guard that rolls back a script cut short.
//!
//! Every sqlx call on a SQLite connection is a round trip to that connection's worker
//! thread, and on a small machine those hand-offs cost more than SQLite's own work for a
//! short write. So each write is one multi-statement script, `BEGIN IMMEDIATE; ...;
//! COMMIT`, that the worker runs start to finish: one round trip whatever the number of
//! statements and rows. sqlx's `Transaction` cannot do this (it sends `BEGIN` and `COMMIT`
//! as calls of their own), so this module does the job of its guard: a script that fails
//! or is cancelled can stop after `BEGIN` with the write lock held, and its connection
//! must not go back to the pool like that.

use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnection, SqlitePool};

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
            roll_back(conn).await;
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
                runtime.spawn(async move { roll_back(&mut conn).await });
            }
            // No runtime to roll back on: closing the connection makes SQLite roll back.
            Err(_) => drop(conn.detach()),
        }
    }
}

/// Rolls back the transaction `conn` may be in; when that fails, marks `conn` to be
/// closed instead of returned to the pool, since it may still hold the write lock.
async fn roll_back(conn: &mut PoolConnection<Sqlite>) {
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
