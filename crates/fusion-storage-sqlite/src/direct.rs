//! SQLite called directly, without sqlx's worker threads, for the reads and writes of a
//! storage on a database file.
//!
//! sqlx runs every SQLite connection on a thread of its own, and each call is a hand-off
//! to that thread and back. An append comes after other work (an LLM call, a tool), so it
//! finds that thread parked and pays two wake-ups: 60–90 µs on this 2-vCPU machine for a
//! write SQLite itself does in 10–15 µs (docs/performance.md). Here SQLite runs on the
//! caller's own thread instead, through `rusqlite` (the same SQLite library sqlx links):
//!
//! - a small append, the write an agent makes every turn, runs right on the async task's
//!   thread when nothing in this process is writing and no other process holds the write
//!   lock. It then waits for nothing: its busy timeout is zero, and a busy database sends
//!   it down the next path instead of blocking the thread;
//! - every other write (a save or truncate of any size, a big append, any write at
//!   [`Durability::Full`](crate::Durability::Full), which waits for an fsync, and a small
//!   append that met a busy database) runs on a Tokio blocking thread with the configured
//!   busy timeout;
//! - loads run on a blocking thread, on a connection from a small set of idle readers, and
//!   step through the rows straight from SQLite's buffers.
//!
//! Writes queue on one async mutex, first come first served, over the one writer
//! connection: SQLite admits one writer at a time anyway. A write whose caller is
//! cancelled while it waits on a blocking thread still finishes there (commits or rolls
//! back) before the next write starts, so writes land in the order they were started and
//! no transaction is left open.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::checkpoint::{Checkpointer, checkpoint};
use crate::config::Durability;
use crate::script::{Value, Write};

/// The largest bound payload (the messages' JSON) a write may carry to run on an async
/// task's thread: SQLite parses it at ~3.5 ms per MiB, so this keeps such a write well
/// under 0.1 ms. W1's turns are 0.5–3 kB.
const INLINE_MAX_BYTES: usize = 16 * 1024;

/// How to open the database file.
#[derive(Debug, Clone)]
pub(crate) struct DirectOptions {
    pub(crate) path: PathBuf,
    /// The URL's `mode`: `ro`, or `immutable=true`, opens read-only.
    pub(crate) read_only: bool,
    /// Create the file when missing (no `mode`, or `mode=rwc`).
    pub(crate) create: bool,
    /// The URL's `vfs`, if any.
    pub(crate) vfs: Option<String>,
    /// The URL's `immutable=true`.
    pub(crate) immutable: bool,
    pub(crate) busy_timeout: Duration,
    pub(crate) durability: Durability,
    /// Reader connections at most, idle or in use: the pool size of [`SqliteOptions`].
    ///
    /// [`SqliteOptions`]: crate::SqliteOptions
    pub(crate) max_readers: usize,
}

/// Why a direct call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirectError {
    /// SQLite reported an error.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// [`Direct::close`] ran.
    #[error("the storage was closed")]
    Closed,
    /// The blocking task running the call panicked or was dropped by a shutting-down runtime.
    #[error("the task running the SQLite call stopped: {0}")]
    Stopped(#[from] tokio::task::JoinError),
}

/// The writer connection and idle readers of one database file.
#[derive(Debug)]
pub(crate) struct Direct {
    /// The database's path, for log messages.
    db: Arc<str>,
    options: DirectOptions,
    writer: Arc<tokio::sync::Mutex<Writer>>,
    /// Idle reader connections, at most `options.max_readers`.
    readers: Mutex<Vec<Reader>>,
    /// Loads running at once, at most `options.max_readers` (like the pool's size), so a
    /// burst of loads queues instead of opening a connection (and a file) each.
    loads: Arc<tokio::sync::Semaphore>,
    closed: AtomicBool,
    checkpoints: Arc<Checkpointer>,
}

#[derive(Debug)]
struct Writer {
    /// `None` after [`Direct::close`], or after a failed rollback (reopened on next use).
    conn: Option<Connection>,
    closed: bool,
}

/// An idle read connection. A newtype only so that `Debug` does not list SQLite handles.
struct Reader(Connection);

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reader")
    }
}

impl Direct {
    /// Opens the writer connection of the database `db` and one reader, so that neither
    /// the first write nor the first load pays for opening; more readers open on demand.
    pub(crate) async fn open(db: Arc<str>, options: DirectOptions) -> Result<Self, DirectError> {
        let opening = options.clone();
        let (writer, reader) = tokio::task::spawn_blocking(move || -> rusqlite::Result<_> {
            Ok((open(&opening, true)?, open(&opening, false)?))
        })
        .await??;
        Ok(Self {
            db,
            writer: Arc::new(tokio::sync::Mutex::new(Writer {
                conn: Some(writer),
                closed: false,
            })),
            readers: Mutex::new(vec![Reader(reader)]),
            loads: Arc::new(tokio::sync::Semaphore::new(options.max_readers)),
            closed: AtomicBool::new(false),
            checkpoints: Arc::default(),
            options,
        })
    }

    /// Runs `write` in one transaction after the writes started before it. A write that
    /// committed counts towards the next background checkpoint.
    pub(crate) async fn write(self: &Arc<Self>, write: Write) -> Result<(), DirectError> {
        let result = match self.write_inline(&write) {
            Some(result) => {
                // Nothing above awaited: let a task that writes in a loop give way to the
                // others on its thread now and then, as an awaited write would.
                tokio::task::consume_budget().await;
                result
            }
            None => self.write_blocking(write).await,
        };
        if result.is_ok() && self.checkpoints.wrote() {
            let this = Arc::clone(self);
            tokio::task::spawn_blocking(move || {
                match this.with_reader(checkpoint) {
                    // Closing the last connection checkpoints instead.
                    Ok(()) | Err(DirectError::Closed) => {}
                    // The data is safe in the log either way; the next checkpoint retries.
                    Err(e) => {
                        tracing::warn!(db = %this.db, error = %e, "background WAL checkpoint failed");
                    }
                }
                this.checkpoints.finished();
            });
        }
        result
    }

    /// Runs `write` on this thread if it is small and bounded, no other write of this
    /// storage is running or queued, and no other connection holds the write lock. `None`
    /// when it did not run (or met a busy database and rolled back): it goes to a
    /// blocking thread then.
    fn write_inline(&self, write: &Write) -> Option<Result<(), DirectError>> {
        let inline = write.sql.bounded
            && write.bound_bytes() <= INLINE_MAX_BYTES
            && self.options.durability == Durability::Normal;
        if !inline {
            return None;
        }
        let mut writer = self.writer.try_lock().ok()?;
        let conn = writer.conn.as_ref()?;
        // The writer's busy timeout is zero except while a blocking write runs.
        match run(conn, write) {
            Ok(()) => Some(Ok(())),
            Err(failure) => {
                let busy = is_busy(&failure.error);
                let error = writer.after(failure);
                (!busy).then_some(Err(error))
            }
        }
    }

    /// Runs `write` on a blocking thread, waiting up to the busy timeout for the lock.
    async fn write_blocking(&self, write: Write) -> Result<(), DirectError> {
        let mut writer = Arc::clone(&self.writer).lock_owned().await;
        if writer.closed {
            return Err(DirectError::Closed);
        }
        let options = self.options.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match writer.conn.take() {
                Some(conn) => conn,
                None => open(&options, true)?,
            };
            conn.busy_timeout(options.busy_timeout)?;
            let result = run(&conn, &write);
            // Back to zero for the next inline write; a connection that cannot be set
            // back is dropped (the next write opens one with zero), not reported: the
            // write itself is done.
            if conn.busy_timeout(Duration::ZERO).is_ok() {
                writer.conn = Some(conn);
            }
            result.map_err(|failure| writer.after(failure))
        })
        .await?
    }

    /// Runs `read` on a blocking thread with an idle reader connection, or a new one.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T, DirectError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let Ok(permit) = Arc::clone(&self.loads).acquire_owned().await else {
            return Err(DirectError::Closed);
        };
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let result = this.with_reader(read);
            drop(permit);
            result
        })
        .await?
    }

    /// Runs `read` on this thread with an idle reader connection, or a new one.
    fn with_reader<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, DirectError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(DirectError::Closed);
        }
        let idle = self.idle_readers().pop();
        let conn = match idle {
            Some(Reader(conn)) => conn,
            None => open(&self.options, false)?,
        };
        let result = read(&conn);
        // A reader returned after close, or beyond the idle limit, is dropped, closing it.
        let mut idle = self.idle_readers();
        if !self.closed.load(Ordering::Acquire) && idle.len() < self.options.max_readers {
            idle.push(Reader(conn));
        }
        drop(idle);
        Ok(result?)
    }

    fn idle_readers(&self) -> std::sync::MutexGuard<'_, Vec<Reader>> {
        // The list is only pushed to and popped from; a panic elsewhere cannot leave it
        // half-changed.
        self.readers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the writer after the write in progress, and every idle reader; later calls
    /// fail with [`DirectError::Closed`].
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.loads.close();
        let mut writer = self.writer.lock().await;
        writer.closed = true;
        let conn = writer.conn.take();
        drop(writer);
        let readers = std::mem::take(&mut *self.idle_readers());
        // Closing the last connection checkpoints the log: file I/O, off the async thread.
        let closing = tokio::task::spawn_blocking(move || {
            drop(conn);
            drop(readers);
        });
        if let Err(e) = closing.await {
            tracing::debug!(error = %e, "closing SQLite connections failed");
        }
    }
}

impl Writer {
    /// What to return for a failed write, dropping the connection when its transaction
    /// could not be rolled back: closing it makes SQLite roll back, and the next write
    /// opens a new one.
    fn after(&mut self, failure: Failure) -> DirectError {
        if failure.still_in_transaction {
            self.conn = None;
        }
        failure.error.into()
    }
}

/// A failed write, and whether its connection may still be in the transaction.
struct Failure {
    error: rusqlite::Error,
    still_in_transaction: bool,
}

/// Runs `write`'s statements in one `BEGIN IMMEDIATE` transaction. On failure the
/// transaction is rolled back, if SQLite did not already.
fn run(conn: &Connection, write: &Write) -> Result<(), Failure> {
    let steps = || -> rusqlite::Result<()> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.raw_execute()?;
        for sql in write.sql.statements {
            let mut statement = conn.prepare_cached(sql)?;
            // A statement's parameters are ?1..?n, a prefix of the write's values.
            for (index, value) in (1..=statement.parameter_count()).zip(&write.values) {
                match value {
                    Value::Text(text) => statement.raw_bind_parameter(index, text.as_str())?,
                    Value::Int(n) => statement.raw_bind_parameter(index, n)?,
                }
            }
            statement.raw_execute()?;
        }
        conn.prepare_cached("COMMIT")?.raw_execute()?;
        Ok(())
    };
    let error = match steps() {
        Ok(()) => return Ok(()),
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

/// Another connection holds the lock the write needs.
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Opens a connection the way sqlx opens the pool's (same flags, same per-connection
/// settings). The writer also leaves checkpoints to the background task
/// (`crate::checkpoint`) and starts with a zero busy timeout (see [`Direct::write_inline`]).
fn open(options: &DirectOptions, writer: bool) -> rusqlite::Result<Connection> {
    let access = if options.read_only || options.immutable {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else if options.create {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    };
    let flags = access
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_PRIVATE_CACHE;
    let name = if options.immutable {
        immutable_uri(&options.path)
    } else {
        options.path.display().to_string()
    };
    let conn = match &options.vfs {
        Some(vfs) => Connection::open_with_flags_and_vfs(name, flags, vfs)?,
        None => Connection::open_with_flags(name, flags)?,
    };
    let synchronous = match options.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    if writer {
        conn.busy_timeout(Duration::ZERO)?;
        if !options.read_only && !options.immutable {
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
    } else {
        conn.busy_timeout(options.busy_timeout)?;
    }
    Ok(conn)
}

/// `file:PATH?immutable=1`, the only way to pass `immutable` to SQLite, with every byte
/// of the path but letters and digits percent-encoded as sqlx does.
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for byte in path.as_os_str().as_encoded_bytes() {
        if byte.is_ascii_alphanumeric() {
            uri.push(char::from(*byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}
