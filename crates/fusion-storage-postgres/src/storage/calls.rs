//! How each call of [`PostgresStorage`] is run: its errors mapped, naming the operation,
//! and the whole call bounded by the call limit.

use std::future::Future;
use std::time::Instant;

use fusion_core::Result;

use super::PostgresStorage;
use crate::error::{BACKEND, Op, PLACE, no_answer, parse_postgres_error};

impl PostgresStorage {
    pub(super) fn op<'a>(&'a self, name: &'static str, session_id: Option<&'a str>) -> Op<'a> {
        Op::new(PLACE, &self.db, name, session_id)
    }

    /// Awaits `work`, the SQL of operation `name` (on `session_id`), mapping its error, as
    /// [`bounded`](Self::bounded) does.
    pub(super) async fn run<T>(
        &self,
        name: &'static str,
        session_id: Option<&str>,
        work: impl Future<Output = sqlx::Result<T>>,
    ) -> Result<T> {
        let op = self.op(name, session_id);
        let began = Instant::now();
        let mapped = async {
            match work.await {
                Ok(done) => Ok(done),
                Err(err) => Err(self.call_error(err, op, began).await),
            }
        };
        self.bounded(op, mapped).await
    }

    /// Maps `err`, met by operation `op` (begun at `began`), as [`parse_postgres_error`]
    /// does; a wait for a pooled connection that ran out says why no connection came
    /// (`crate::timed_out`).
    pub(super) async fn call_error(
        &self,
        err: sqlx::Error,
        op: Op<'_>,
        began: Instant,
    ) -> fusion_core::Error {
        match (err, op.session_id) {
            (err, _) if super::plans::is_stale_plan(&err) => {
                self.plans.met();
                stale_plan(op, err)
            }
            (sqlx::Error::PoolTimedOut, _) => {
                self.timeouts.pool_timed_out(&self.pool, op, began).await
            }
            (err, Some(id)) if is_time_conversion(&err) => {
                match crate::meta::damaged_time(&self.pool, id).await {
                    Some(corrupt) => corrupt,
                    None => parse_postgres_error(err, op),
                }
            }
            (err, _) if is_schema_mismatch(&err) => {
                let unknown = crate::migrate::newer_under(&self.pool, &self.schema).await;
                if unknown.is_empty() {
                    parse_postgres_error(err, op)
                } else {
                    crate::migrate::upgraded_under(op, &self.schema, &unknown, err)
                }
            }
            (err, _) => parse_postgres_error(err, op),
        }
    }

    /// Awaits `call`, the whole of operation `op`, giving it up with a retryable error when
    /// it has not finished within the call limit (`PostgresOptions::call_limit`). The
    /// connection it was using goes back to the pool, which waits (in the background,
    /// holding that one connection) for the server's answer before handing it out again;
    /// a transaction it left open is rolled back.
    pub(super) async fn bounded<T>(
        &self,
        op: Op<'_>,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match self.call_limit {
            Some(limit) => tokio::time::timeout(limit, call)
                .await
                .unwrap_or_else(|_| Err(no_answer(op, limit))),
            None => call.await,
        }
    }
}

/// Whether `err` is a conversion to `int8` that failed (`cannot convert infinity to
/// bigint`, `bigint out of range`), as a statement that converts a session's time to
/// microseconds meets on a time a hand edit stored (see [`crate::meta::damaged_time`]).
fn is_time_conversion(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    // 0A000: feature_not_supported (infinity); 22003: numeric_value_out_of_range.
    matches!(db.code().as_deref(), Some("0A000" | "22003"))
}

/// Whether `err` says a statement no longer fits the schema (a table, column or function
/// gone or changed, a new constraint refusing what this build writes, a column of another
/// type than this build reads): what a newer release's upgrade of the schema does to a
/// process still running the older build (see [`crate::migrate::newer_under`]).
fn is_schema_mismatch(err: &sqlx::Error) -> bool {
    match err {
        // undefined_table, undefined_column, datatype_mismatch, undefined_function,
        // not_null_violation, check_violation.
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            Some("42P01" | "42703" | "42804" | "42883" | "23502" | "23514")
        ),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::ColumnNotFound(_) => true,
        _ => false,
    }
}

/// The error of a call of operation `op` whose statement, prepared on its connection
/// before the schema changed, PostgreSQL refused to run (`err`); the
/// connections prepared before are replaced (`super::plans`), so a retry runs it afresh.
fn stale_plan(op: Op<'_>, err: sqlx::Error) -> fusion_core::Error {
    let message = format!(
        "{op}: the schema changed under this storage (a newer Fusion release's upgrade, or \
         a hand edit) since its connection prepared the statement, which PostgreSQL then \
         refused to run ({err}); the connections prepared before are being replaced: \
         retry"
    );
    fusion_core::Error::backend(BACKEND, message, true, err)
}
