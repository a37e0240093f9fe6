//! The direct path's load, which reads the rows on a blocking thread while the caller's
//! task parses them.
//!
//! Reading a long history is two jobs of similar size: SQLite stepping through the rows
//! (an index lookup per row) and `serde_json` parsing each row's text. The direct path
//! runs them side by side: the blocking thread copies the rows' text out in batches of
//! growing size and the async task parses each batch as it arrives, so a load takes about
//! as long as the slower of the two instead of their sum (figures in docs/performance.md),
//! and the async thread is never held for longer than one batch's parse.
//!
//! `load_revision` is the same load with the session's revision read first, in the same
//! read transaction as the rows, so both come from one snapshot of the database.
//!
//! Both read a session that has expired at `now` (`crate::expiry`) as absent: `load`'s
//! statement skips its rows, `load_revision` skips them once the revision's row shows
//! the expiry.

use std::ops::Range;
use std::sync::Arc;

use fusion_core::sql::{check_count, revision_of};
use fusion_core::{ChatMessage, Result, Revision, is_expired};
use rusqlite::OptionalExtension;
use tokio::sync::mpsc;

use super::Direct;
use crate::error::{BACKEND, DirectError};
use crate::sql::{LOAD_ROWS, READ_REVISION, decode_row};

/// Row text in the first batch, so that parsing starts early; each batch after it is
/// twice the size of the one before, up to [`BATCH_MAX_BYTES`]. Every batch costs a
/// wake-up of the parsing task, so short histories go in one or two batches and long ones
/// in a few big ones.
const BATCH_FIRST_BYTES: usize = 32 * 1024;

/// Row text per batch at most: ~800 messages of an agent's history.
const BATCH_MAX_BYTES: usize = 256 * 1024;

/// Batches in flight between the reading thread and the parsing task.
const BATCHES_IN_FLIGHT: usize = 4;

/// Consecutive rows copied out of SQLite: their texts end to end in `text`, and per row
/// its seq and its range in `text` (`None` when the column's bytes are not UTF-8).
#[derive(Debug, Default)]
struct Batch {
    text: String,
    rows: Vec<(i64, Option<Range<usize>>)>,
}

impl Direct {
    /// Loads `session_id` as of `now` (Unix µs): rows read on a blocking thread, parsed
    /// here as they arrive. A damaged row is
    /// [`Error::Corrupt`](fusion_core::Error::Corrupt) naming its seq; `on_error` maps
    /// SQLite's own errors.
    pub(crate) async fn load(
        self: &Arc<Self>,
        session_id: &str,
        now: i64,
        on_error: impl FnOnce(DirectError) -> fusion_core::Error,
    ) -> Result<Vec<ChatMessage>> {
        self.load_rows(session_id, now, false, on_error)
            .await
            .map(|(history, _)| history)
    }

    /// Loads `session_id` and its revision as of `now` (Unix µs), read in one
    /// transaction: a `sessions` row whose count disagrees with the rows is
    /// [`Error::Corrupt`](fusion_core::Error::Corrupt).
    pub(crate) async fn load_revision(
        self: &Arc<Self>,
        session_id: &str,
        now: i64,
        on_error: impl FnOnce(DirectError) -> fusion_core::Error,
    ) -> Result<(Vec<ChatMessage>, Revision)> {
        let (history, revision) = self.load_rows(session_id, now, true, on_error).await?;
        let revision = revision.unwrap_or(Revision::ABSENT);
        check_count(BACKEND, session_id, revision.len, history.len())?;
        Ok((history, revision))
    }

    /// The load, with the revision read first in the same transaction when `with_revision`.
    async fn load_rows(
        self: &Arc<Self>,
        session_id: &str,
        now: i64,
        with_revision: bool,
        on_error: impl FnOnce(DirectError) -> fusion_core::Error,
    ) -> Result<(Vec<ChatMessage>, Option<Revision>)> {
        let (batches, mut received) = mpsc::channel(BATCHES_IN_FLIGHT);
        let id = session_id.to_owned();
        let reading = self.read(move |conn| {
            if with_revision {
                read_revision_and_batches(conn, &id, now, &batches).map(Some)
            } else {
                read_batches(conn, &id, now, &batches).map(|()| None)
            }
        });
        // Owns the receiver: `join!` drops a finished future at once, so when parsing stops
        // early at a damaged row, the reading thread's next send fails and it stops too.
        let parsing = async move {
            let mut history = Vec::new();
            while let Some(Batch { text, rows }) = received.recv().await {
                for (seq, range) in rows {
                    let json = range.map(|range| &text[range]);
                    let expected = i64::try_from(history.len()).unwrap_or(i64::MAX);
                    history.push(decode_row(session_id, expected, seq, json)?);
                }
            }
            Ok::<_, fusion_core::Error>(history)
        };
        let (read, parsed) = tokio::join!(reading, parsing);
        // SQLite's error first: rows cut short by it would otherwise pass for a short history.
        let revision = read.map_err(on_error)?;
        Ok((parsed?, revision))
    }
}

/// [`READ_REVISION`], then (for a session that exists and has not expired at `now`) the
/// rows, in one read transaction: in WAL mode its snapshot is taken by the first read and
/// holds for the second.
fn read_revision_and_batches(
    conn: &rusqlite::Connection,
    session_id: &str,
    now: i64,
    batches: &mpsc::Sender<Batch>,
) -> rusqlite::Result<Revision> {
    // Dropping it ends the transaction (a rollback, which for a read changes nothing).
    let _snapshot = conn.unchecked_transaction()?;
    let row: Option<(i64, i64, Option<i64>)> = conn
        .prepare_cached(READ_REVISION)?
        .query_row([session_id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    let row = row.filter(|&(_, _, expires_at)| !is_expired(expires_at, now));
    let revision = revision_of(row.map(|(generation, count, _)| (generation, count)));
    if revision.exists() {
        read_batches(conn, session_id, now, batches)?;
    }
    Ok(revision)
}

/// Steps through the rows of `session_id` (none if it has expired at `now`), sending them
/// in batches. Stops early, without an error, when the receiving side is gone (a damaged
/// row, or the load was cancelled).
fn read_batches(
    conn: &rusqlite::Connection,
    session_id: &str,
    now: i64,
    batches: &mpsc::Sender<Batch>,
) -> rusqlite::Result<()> {
    let mut statement = conn.prepare_cached(LOAD_ROWS)?;
    let mut rows = statement.query(rusqlite::params![session_id, now])?;
    let mut batch = Batch::default();
    let mut batch_bytes = BATCH_FIRST_BYTES;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        // A message's bytes are its text, held as text or as a blob (`LOAD_ARRAY`).
        let text = row.get_ref(1)?.as_bytes().ok();
        let range = text
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .map(|json| {
                let start = batch.text.len();
                batch.text.push_str(json);
                start..batch.text.len()
            });
        batch.rows.push((seq, range));
        if batch.text.len() >= batch_bytes {
            batch_bytes = (batch_bytes * 2).min(BATCH_MAX_BYTES);
            let full = std::mem::take(&mut batch);
            if batches.blocking_send(full).is_err() {
                return Ok(());
            }
        }
    }
    if !batch.rows.is_empty() {
        // A closed receiver has stopped caring; nothing to report.
        let _ = batches.blocking_send(batch);
    }
    Ok(())
}
