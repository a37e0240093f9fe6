//! The direct path's write transaction: one [`Write`] stepped statement by statement on
//! the writer connection, with its check decided inside the transaction and an expired
//! session removed before the write runs again.
//!
//! Removing a session deletes its whole history, work that grows with what is stored: a
//! write running on an async task's thread (`inline`) that finds it must do so rolls back
//! instead ([`Written::Deferred`]), and runs again on a blocking thread.

use std::borrow::Cow;

use fusion_core::RecentIds;
use fusion_core::sql::revision_of;
use rusqlite::Connection;
use rusqlite::types::ValueRef;

use crate::meta::InfoRow;
use crate::sql::{
    BEGIN_WRITE, Check, Ends, Found, Go, READ_LAST_IDS, REMOVE, REMOVE_EXPIRED, Value, Verdict,
    Write, WriteSql, Written, is_undecided,
};

/// A failed write, and whether its connection may still be in the transaction.
pub(super) struct Failure {
    pub(super) error: rusqlite::Error,
    pub(super) still_in_transaction: bool,
}

/// Runs `write`'s statements in one [`BEGIN_WRITE`] transaction, after its check, if it
/// has one, decided from the row it read in that transaction (rolling back when the check
/// stops the write, removing the session first when it found it expired, leaving out the
/// messages of an append that are stored already). A write with
/// [`deciding`](Write::deciding) statements runs those first, with no check, and only
/// when they cannot decide goes on as above in the same transaction. A write whose
/// last statement changed no row because the session had expired ([`Ends::UnlessExpired`])
/// removes it and runs again in the same transaction. When `inline`, a write that would
/// remove a session rolls back instead ([`Written::Deferred`]). On failure the transaction
/// is rolled back, if SQLite did not already.
pub(super) fn run(conn: &Connection, write: &Write, inline: bool) -> Result<Written, Failure> {
    let steps = || -> rusqlite::Result<Written> {
        conn.prepare_cached(BEGIN_WRITE)?.raw_execute()?;
        if let Some(deciding) = write.deciding {
            match checked(conn, deciding, None, &write.values, inline) {
                // The statement that could not decide changed nothing.
                Err(e) if is_undecided(&e) => {}
                done => return done,
            }
        }
        checked(conn, write.sql, write.check.as_ref(), &write.values, inline)
    };
    let error = match steps() {
        Ok(written) => return Ok(written),
        Err(error) => error,
    };
    let still_in_transaction = !conn.is_autocommit()
        && match conn.execute_batch("ROLLBACK") {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(error = %e, "closing a SQLite connection whose failed write could not be rolled back");
                true
            }
        };
    Err(Failure {
        error,
        still_in_transaction,
    })
}

/// Inside the transaction: `sql`'s statements with `values`, after `check` (if any), to
/// `COMMIT` or `ROLLBACK` (see [`run`]).
fn checked(
    conn: &Connection,
    sql: &WriteSql,
    check: Option<&Check>,
    values: &[Value],
    inline: bool,
) -> rusqlite::Result<Written> {
    let go = match check {
        None => Go::unchecked(),
        Some(check) => match check.decide(read_found(conn, check, values)?) {
            Verdict::Go(go) => go,
            Verdict::Stop(written) => {
                conn.prepare_cached("ROLLBACK")?.raw_execute()?;
                return Ok(written);
            }
        },
    };
    let (values, remove_first, written) = go.bind(Cow::Borrowed(values));
    let values = &values[..];
    let defer = || -> rusqlite::Result<Written> {
        conn.prepare_cached("ROLLBACK")?.raw_execute()?;
        Ok(Written::Deferred)
    };
    if remove_first {
        if inline {
            return defer();
        }
        execute(conn, REMOVE.statements, values)?;
    }
    let changed = execute(conn, sql.statements, values)?;
    let written = match sql.ends {
        Ends::Written => written,
        Ends::UnlessExpired => {
            if changed == 0 {
                if inline {
                    return defer();
                }
                execute(conn, REMOVE_EXPIRED.statements, values)?;
                execute(conn, sql.statements, values)?;
            }
            written
        }
        Ends::Counted => Written::Purged(changed),
    };
    conn.prepare_cached("COMMIT")?.raw_execute()?;
    Ok(written)
}

/// Steps each of `statements` with `values` bound, returning how many rows the last one
/// changed.
fn execute(conn: &Connection, statements: &[&str], values: &[Value]) -> rusqlite::Result<usize> {
    let mut changed = 0;
    for sql in statements {
        let mut statement = conn.prepare_cached(sql)?;
        bind(&mut statement, values)?;
        changed = statement.raw_execute()?;
    }
    Ok(changed)
}

/// What `check` decides on, read by [`Check::read`] inside its transaction (bound to ?1,
/// the session id, the first of the write's `values`), and then the ids of the session's
/// last messages when the check asks for them ([`Check::confirm_from`]).
fn read_found(conn: &Connection, check: &Check, values: &[Value]) -> rusqlite::Result<Found> {
    let mut statement = conn.prepare_cached(check.read())?;
    bind(&mut statement, &values[..1])?;
    let mut rows = statement.raw_query();
    let row = rows.next()?;
    let mut found = match check {
        Check::Revision { .. } => match row {
            Some(row) => Found::Revision {
                revision: revision_of(Some((row.get(0)?, row.get(1)?))),
                expires_at: row.get(2)?,
                // Parsed where it is read, without copying the blob out of SQLite; what is
                // not a blob of fingerprints (NULL after a truncate, a hand edit) is unknown,
                // which makes the check read the stored ids.
                recent: match check.reads_recent() {
                    true => match row.get_ref(3)? {
                        ValueRef::Blob(bytes) => RecentIds::from_bytes(bytes),
                        _ => None,
                    },
                    false => None,
                },
                updated_at: match check.reads_updated() {
                    true => Some(row.get(4)?),
                    false => None,
                },
                stored: None,
            },
            None => Found::Revision {
                revision: revision_of(None),
                expires_at: None,
                recent: None,
                updated_at: None,
                stored: None,
            },
        },
        Check::Meta { .. } => Found::Info(row.map(InfoRow::from_rusqlite).transpose()?),
    };
    drop(rows);
    if let Some(from) = check.confirm_from(&found)
        && let Found::Revision { stored, .. } = &mut found
    {
        let mut statement = conn.prepare_cached(READ_LAST_IDS)?;
        bind(&mut statement, &values[..1])?;
        statement.raw_bind_parameter(2, from)?;
        let mut rows = statement.raw_query();
        let mut ids = Vec::new();
        while let Some(row) = rows.next()? {
            ids.push(row.get(0)?);
        }
        *stored = Some(ids);
    }
    Ok(found)
}

/// Binds a statement's parameters ?1..?n to the first n of a write's values.
fn bind(statement: &mut rusqlite::Statement<'_>, values: &[Value]) -> rusqlite::Result<()> {
    for (index, value) in (1..=statement.parameter_count()).zip(values) {
        match value {
            Value::Text(text) => statement.raw_bind_parameter(index, text.as_str())?,
            Value::Int(n) => statement.raw_bind_parameter(index, n)?,
            Value::Blob(bytes) => statement.raw_bind_parameter(index, bytes.as_slice())?,
            Value::Null => statement.raw_bind_parameter(index, rusqlite::types::Null)?,
        }
    }
    Ok(())
}
