//! The sqlx path: a storage on `sqlite::memory:` or on a caller's pool writes and loads
//! through sqlx only.
//!
//! A storage on a database file it opened itself runs writes and loads through
//! `crate::direct`, which steps the statements one by one with SQLite on the caller's
//! thread. Here there is only sqlx, and every sqlx call on a SQLite connection is a round
//! trip to that connection's worker thread; on a small machine those hand-offs cost more
//! than SQLite's own work for a short write. So each write goes as one multi-statement
//! script, `BEGIN IMMEDIATE; ...; COMMIT` (`WriteSql::script` in `crate::sql`), that the
//! worker runs start to finish: one round trip whatever the number of statements and rows. sqlx's
//! `Transaction` cannot do this (it sends `BEGIN` and `COMMIT` as calls of their own), so
//! this module does the job of its guard: a script that fails or is cancelled can stop
//! after `BEGIN` with the write lock held, and its connection must not be used again like
//! that. A write with a check (a conditional write, a creation, a metadata update, an
//! append whose messages carry ids) takes two round trips: `BEGIN IMMEDIATE` and the read
//! of the row to check, then the rest of the script or `ROLLBACK`. A load is one query ([`LOAD_ARRAY`]) returning the whole
//! history as one string of messages; `load_revision` is one query too ([`LOAD_REVISION_ARRAY`]),
//! the revision beside the messages.
//!
//! A plain append or save runs as [`WriteSql::counted`], the same script ending by reading
//! what its last statement changed (one trivial statement more, still one round trip).
//! When that is nothing the session had expired (`crate::expiry`) and the script wrote
//! nothing; then a second script removes the session and runs the write again. A check
//! that finds the session expired has it removed at the start of the rest of the script.

use std::borrow::Cow;

use fusion_core::sql::{check_count, revision_of};
use fusion_core::{ChatMessage, RecentIds, Result, Revision, is_expired};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{Arguments, Column, FromRow, Row, TypeInfo, ValueRef};

use crate::error::{BACKEND, Op, is_no_transaction, is_too_big, parse_sqlite_error};
use crate::meta::InfoRow;
use crate::sql::{
    BEGIN_WRITE, Check, Ends, Found, LOAD_ARRAY, LOAD_REVISION_ARRAY, LOAD_ROWS, MESSAGE_SEPARATOR,
    READ_LAST_IDS, READ_REVISION, REMOVE, REMOVE_EXPIRED, Value, Verdict, Write, WriteSql, Written,
    decode_row,
};

/// Runs `write` as one script on a connection from `pool`, in one round trip (two for a
/// conditional write, or for a plain write that found its session expired).
///
/// On success every statement ran, `COMMIT` included, or a conditional write's check
/// failed and it rolled back. On failure whatever the script left open is rolled back
/// before the error is returned, and if the call is cancelled midway the rollback still
/// happens, in the background, before the connection is reused.
pub(crate) async fn write(pool: &SqlitePool, write: Write) -> sqlx::Result<Written> {
    // `deciding` statements call functions only the direct path's writer has: the check
    // decides here.
    let Write {
        sql, values, check, ..
    } = write;
    let mut conn = Unfinished(Some(pool.acquire().await?));
    let result = async {
        match (check, sql.ends) {
            (None, Ends::Written) => {
                sqlx::query_with(sql.script, arguments(values)?)
                    .execute(conn.get())
                    .await?;
                Ok(Written::Committed(None))
            }
            (None, ends) => {
                let changed: Vec<i64> =
                    sqlx::query_scalar_with(sql.counted, arguments(values.iter().cloned())?)
                        .fetch_all(conn.get())
                        .await?;
                let changed = changed.first().copied().unwrap_or_default();
                if ends == Ends::Counted {
                    return Ok(Written::Purged(usize::try_from(changed).unwrap_or(0)));
                }
                if changed == 0 {
                    // Expired: remove it and write again, checking again in a transaction
                    // of its own.
                    let again = format!("{BEGIN_WRITE}; {}{}", REMOVE_EXPIRED.body, sql.rest);
                    sqlx::query_with(&again, arguments(values)?)
                        .execute(conn.get())
                        .await?;
                }
                Ok(Written::Committed(None))
            }
            (Some(check), _) => write_checked(&mut conn, sql, values, check).await,
        }
    }
    .await;
    match result {
        Ok(written) => {
            conn.release();
            Ok(written)
        }
        Err(e) => {
            conn.roll_back().await;
            Err(e)
        }
    }
}

/// A write with a check on `conn`: begin and read the row the check names, then run the
/// write's statements and `COMMIT` ([`WriteSql::rest`]) with what the check decided (an
/// append's batch cut down to the messages not stored yet), after removing the session if
/// it found it expired, or roll back.
async fn write_checked(
    conn: &mut Unfinished,
    sql: &'static WriteSql,
    values: Vec<Value>,
    check: Check,
) -> sqlx::Result<Written> {
    // ?1, the session id, is all the read binds.
    let read = || arguments(values.iter().take(1).cloned());
    // `fetch_all` rather than `fetch_optional`: it drives the script to its end.
    let mut found = match &check {
        Check::Revision { .. } => {
            let rows: Vec<SqliteRow> = sqlx::query_with(check.begin_and_read(), read()?)
                .fetch_all(conn.get())
                .await?;
            found_revision(&check, rows.first())?
        }
        Check::Meta { .. } => {
            let rows: Vec<SqliteRow> = sqlx::query_with(check.begin_and_read(), read()?)
                .fetch_all(conn.get())
                .await?;
            Found::Info(rows.first().map(InfoRow::from_sqlx).transpose()?)
        }
    };
    // A second round trip in the same transaction, only when the fingerprints of the
    // session's last ids cannot decide (`Check::confirm_from`).
    if let Some(from) = check.confirm_from(&found)
        && let Found::Revision { stored, .. } = &mut found
    {
        let ids: Vec<Option<String>> = sqlx::query_scalar_with(
            READ_LAST_IDS,
            arguments(values.iter().take(1).cloned().chain([Value::Int(from)]))?,
        )
        .fetch_all(conn.get())
        .await?;
        *stored = Some(ids);
    }
    match check.decide(found) {
        Verdict::Go(go) => {
            let (values, remove_first, written) = go.bind(Cow::Owned(values));
            let arguments = arguments(values.into_owned())?;
            if remove_first {
                let rest = format!("{}{}", REMOVE.body, sql.rest);
                sqlx::query_with(&rest, arguments)
                    .execute(conn.get())
                    .await?;
            } else {
                sqlx::query_with(sql.rest, arguments)
                    .execute(conn.get())
                    .await?;
            }
            Ok(written)
        }
        Verdict::Stop(written) => {
            sqlx::query("ROLLBACK").execute(conn.get()).await?;
            Ok(written)
        }
    }
}

/// A write's values as the arguments of ?1, ?2, ...
fn arguments(values: impl IntoIterator<Item = Value>) -> sqlx::Result<SqliteArguments<'static>> {
    let mut arguments = SqliteArguments::default();
    for value in values {
        match value {
            Value::Text(text) => arguments.add(text),
            Value::Int(n) => arguments.add(n),
            Value::Blob(bytes) => arguments.add(bytes),
            Value::Null => arguments.add(None::<String>),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(arguments)
}

/// What a check's read of a revision found, from its row whichever of the three shapes
/// [`Check::read`] gives it: generation, count and `expires_at`, then `recent_ids` when the
/// check [`reads_recent`](Check::reads_recent) and `updated_at` when it
/// [`reads_updated`](Check::reads_updated) (the read under `UnwrittenSince` has the
/// fourth column whether or not the check uses it). As on the direct path
/// (`crate::direct::run`), a `recent_ids` that is not a blob (NULL after a truncate, a
/// hand edit) is unknown: text of four bytes taken for a fingerprint would say "not
/// stored" of ids that are, and the append would store them twice.
fn found_revision(check: &Check, row: Option<&SqliteRow>) -> sqlx::Result<Found> {
    let Some(row) = row else {
        return Ok(Found::Revision {
            revision: revision_of(None),
            expires_at: None,
            recent: None,
            updated_at: None,
            stored: None,
        });
    };
    revision_in(check, row).map_err(|e| naming_column(row, e))
}

/// [`found_revision`] of a row there is.
fn revision_in(check: &Check, row: &SqliteRow) -> sqlx::Result<Found> {
    let recent = match check.reads_recent() {
        // A NULL's type is the column's declared one, BLOB: asked first.
        true => match row.try_get_raw(3)? {
            value if value.is_null() || value.type_info().name() != "BLOB" => None,
            _ => RecentIds::from_bytes(row.try_get(3)?),
        },
        false => None,
    };
    Ok(Found::Revision {
        revision: revision_of(Some((row.try_get(0)?, row.try_get(1)?))),
        expires_at: row.try_get(2)?,
        recent,
        updated_at: match check.reads_updated() {
            true => Some(row.try_get(4)?),
            false => None,
        },
        stored: None,
    })
}

/// The `T` that `row` holds, a cell of the wrong type named by its column
/// ([`naming_column`]).
fn decoded<T: for<'r> FromRow<'r, SqliteRow>>(row: &SqliteRow) -> sqlx::Result<T> {
    T::from_row(row).map_err(|e| naming_column(row, e))
}

/// `err`, a cell of `row` that sqlx could not decode, naming the cell's column where sqlx
/// gives its position ("column 1"): SQLite keeps any type in any column, so a hand edit
/// meets this, and the [`Error::Corrupt`](fusion_core::Error::Corrupt) it becomes should
/// say which column to mend, as the direct path's does.
fn naming_column(row: &SqliteRow, err: sqlx::Error) -> sqlx::Error {
    match err {
        sqlx::Error::ColumnDecode { index, source } => {
            let column = index
                .parse::<usize>()
                .ok()
                .and_then(|i| row.columns().get(i));
            sqlx::Error::ColumnDecode {
                index: column.map_or(index, |column| format!("`{}`", column.name())),
                source,
            }
        }
        other => other,
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

    /// Returns the connection to the pool: its script committed, or rolled back itself.
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

/// Loads `session_id` as one string of messages that SQLite assembles ([`one_array`]),
/// with the rows read one by one only when it does not hold exactly the stored rows as
/// valid messages, or SQLite cannot make it (`SQLITE_TOOBIG`: a history longer than its
/// longest string, which appends of shorter messages can store). `op` names the load in
/// errors.
pub(crate) async fn load(
    pool: &SqlitePool,
    session_id: &str,
    now: i64,
    op: Op<'_>,
) -> Result<Vec<ChatMessage>> {
    let array: Option<(String, Vec<u8>)> = unless_too_big(
        sqlx::query_as(LOAD_ARRAY)
            .bind(session_id)
            .bind(now)
            .fetch_one(pool)
            .await,
    )
    .map_err(|e| parse_sqlite_error(e, op))?;
    match array.and_then(|(seqs, array)| one_array(&seqs, &array)) {
        Some(history) => Ok(history),
        None => load_row_by_row(pool, session_id, now, op).await,
    }
}

/// The row of a one-array read ([`LOAD_ARRAY`], [`LOAD_REVISION_ARRAY`]), or `None` when
/// SQLite could not join the messages (`SQLITE_TOOBIG`: the history is longer than the
/// connection's longest string), which sends the load to the rows one by one.
fn unless_too_big<T>(read: sqlx::Result<T>) -> sqlx::Result<Option<T>> {
    match read {
        Ok(row) => Ok(Some(row)),
        Err(e) if is_too_big(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The history in the joined messages of [`LOAD_ARRAY`] or [`LOAD_REVISION_ARRAY`], with
/// `seqs` the rows' seqs; `None` unless it holds exactly the stored rows, as valid
/// messages, in order. Each message must end right at a [`MESSAGE_SEPARATOR`] (or the
/// end), so each is one row's: a row holding more or less than one JSON value fails.
/// Parsing message by message finds the ends without a scan for the separators, which
/// cost about 440 instructions a row (`str::split`, 1,000 messages of 330 bytes,
/// callgrind), where this costs no more than parsing one JSON array did. The messages are
/// taken as bytes and checked as UTF-8 here, the one pass sqlx's decoding into a `String`
/// made (`serde_json::from_slice` checks as it parses, slower on short messages): a row
/// of bytes that are not UTF-8 (SQLite stores text unchecked) fails it, and the rows then
/// name it, where decoding the messages as a `String` failed the load with sqlx's error.
fn one_array(seqs: &str, messages: &[u8]) -> Option<Vec<ChatMessage>> {
    let rows = counts_up_from_zero(seqs)?;
    let mut rest = std::str::from_utf8(messages).ok()?;
    let mut history = Vec::with_capacity(rows);
    while history.len() < rows {
        let mut one = serde_json::Deserializer::from_str(rest).into_iter::<ChatMessage>();
        history.push(one.next()?.ok()?);
        rest = &rest[one.byte_offset()..];
        if history.len() < rows {
            rest = rest.strip_prefix(MESSAGE_SEPARATOR)?;
        }
    }
    rest.is_empty().then_some(history)
}

/// Loads `session_id` and its revision in one query ([`LOAD_REVISION_ARRAY`]), like
/// [`load`]. When the joined messages do not hold exactly the stored rows as valid messages (or is
/// too long to make), the revision and the rows are read again one by one, in one read transaction. A `sessions`
/// row whose count disagrees with the rows is
/// [`Error::Corrupt`](fusion_core::Error::Corrupt).
pub(crate) async fn load_revision(
    pool: &SqlitePool,
    session_id: &str,
    now: i64,
    op: Op<'_>,
) -> Result<(Vec<ChatMessage>, Revision)> {
    let read: Option<(i64, i64, String, Vec<u8>)> = unless_too_big(
        sqlx::query(LOAD_REVISION_ARRAY)
            .bind(session_id)
            .bind(now)
            .fetch_one(pool)
            .await
            .and_then(|row| decoded(&row)),
    )
    .map_err(|e| parse_sqlite_error(e, op))?;
    let history = match read {
        Some((generation, count, seqs, array)) => {
            // `generation` is 0 only when there is no `sessions` row (the column is above
            // 0), or it has expired.
            let revision = revision_of(Some((generation, count)));
            if !revision.exists() {
                return Ok((Vec::new(), Revision::ABSENT));
            }
            one_array(&seqs, &array).map(|history| (history, revision))
        }
        // A history longer than SQLite's longest string: row by row below.
        None => None,
    };
    let (history, revision) = match history {
        Some(read) => read,
        None => {
            let read = async {
                let mut snapshot = pool.begin().await?;
                let row: Option<(i64, i64, Option<i64>)> = sqlx::query(READ_REVISION)
                    .bind(session_id)
                    .fetch_optional(&mut *snapshot)
                    .await?
                    .map(|row| decoded(&row))
                    .transpose()?;
                let row = row
                    .filter(|&(_, _, expires_at)| !is_expired(expires_at, now))
                    .map(|(generation, count, _)| (generation, count));
                let rows = rows(&mut *snapshot, session_id, now).await?;
                snapshot.rollback().await?;
                Ok((revision_of(row), rows))
            };
            let (revision, rows) = read.await.map_err(|e| parse_sqlite_error(e, op))?;
            if !revision.exists() {
                return Ok((Vec::new(), Revision::ABSENT));
            }
            (decode_rows(session_id, rows)?, revision)
        }
    };
    check_count(BACKEND, session_id, revision.len, history.len())?;
    Ok((history, revision))
}

/// Reads the rows one by one in seq order, returning the first fault as
/// [`Error::Corrupt`](fusion_core::Error::Corrupt) naming its seq. The slow path of
/// [`load`], taken only when the one-array read shows something is wrong.
async fn load_row_by_row(
    pool: &SqlitePool,
    session_id: &str,
    now: i64,
    op: Op<'_>,
) -> Result<Vec<ChatMessage>> {
    let rows = rows(pool, session_id, now)
        .await
        .map_err(|e| parse_sqlite_error(e, op))?;
    decode_rows(session_id, rows)
}

/// The `(seq, message)` rows of `session_id`, in seq order, none if it has expired at
/// `now` ([`LOAD_ROWS`]). A message's bytes are its text whether SQLite holds them as text
/// or as a blob (as on the direct path and in [`LOAD_ARRAY`]); bytes that are not UTF-8
/// (SQLite stores both unchecked) are `None`, for [`decode_row`] to report naming the seq,
/// where decoding them as a `String` failed the load with a driver error that named none.
/// A `seq` of the wrong type is named by its column ([`decoded`]).
async fn rows<'c>(
    executor: impl sqlx::Executor<'c, Database = Sqlite>,
    session_id: &str,
    now: i64,
) -> sqlx::Result<Vec<(i64, Option<String>)>> {
    let rows = sqlx::query(LOAD_ROWS)
        .bind(session_id)
        .bind(now)
        .fetch_all(executor)
        .await?;
    rows.iter()
        .map(|row| {
            // The column is NOT NULL and its affinity turns numbers into text: bytes.
            let (seq, message): (i64, Vec<u8>) = decoded(row)?;
            Ok((seq, String::from_utf8(message).ok()))
        })
        .collect()
}

/// The rows as messages, the first fault being [`Error::Corrupt`](fusion_core::Error::Corrupt).
fn decode_rows(session_id: &str, rows: Vec<(i64, Option<String>)>) -> Result<Vec<ChatMessage>> {
    (0..)
        .zip(rows)
        .map(|(expected, (seq, json))| decode_row(session_id, expected, seq, json.as_deref()))
        .collect()
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

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Executor};

    use super::*;
    use crate::sql::BEGIN_WRITE;

    #[tokio::test]
    async fn rollback_outside_a_transaction_is_told_apart() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        let err = conn.execute("ROLLBACK").await.unwrap_err();
        assert!(is_no_transaction(&err), "{err}");
        conn.execute(BEGIN_WRITE).await.unwrap();
        conn.execute("ROLLBACK").await.unwrap();
        assert!(!is_no_transaction(&sqlx::Error::PoolTimedOut));
    }

    /// Only `SQLITE_TOOBIG` (a history SQLite cannot join into one string) sends a load
    /// to the rows one by one; any other failure is the load's. `zeroblob` makes a real
    /// one on a sqlx connection without holding the bytes.
    #[tokio::test]
    async fn only_a_string_too_long_to_make_sends_the_load_row_by_row() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        let blob = |len: i64| sqlx::query_scalar::<_, Vec<u8>>("SELECT zeroblob(?1)").bind(len);
        let too_big = blob(i64::from(i32::MAX)).fetch_one(&mut conn).await;
        assert!(matches!(unless_too_big(too_big), Ok(None)));
        let fits = blob(3).fetch_one(&mut conn).await;
        assert_eq!(unless_too_big(fits).unwrap(), Some(vec![0; 3]));
        let other = conn.fetch_one("SELECT * FROM nowhere").await.map(|_| ());
        assert!(unless_too_big(other).is_err());
    }

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
