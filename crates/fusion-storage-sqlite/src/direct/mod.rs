//! SQLite called directly, without sqlx's worker threads, for the reads and writes of a
//! storage on a database file.
//!
//! sqlx runs every SQLite connection on a thread of its own, and each call is a hand-off
//! to that thread and back. An append comes after other work (an LLM call, a tool), so it
//! finds that thread parked and pays two wake-ups, which cost several times what SQLite
//! itself spends on a short write (figures in docs/performance.md). Here SQLite runs on the
//! caller's own thread instead, through `rusqlite` (the same SQLite library sqlx links):
//!
//! - a small append, the write an agent makes every turn (conditional or not: the check of
//!   a conditional write, or of an append whose messages carry ids, is one lookup inside
//!   the transaction, plus one index probe per id), runs right on the async task's thread
//!   once its turn comes, when no other process holds the write lock. It then waits for
//!   nothing: its busy timeout is zero, and a busy database sends it down the next path
//!   instead of blocking the thread. An append that waited its turn behind other writes
//!   of this storage runs there too: handing it to a blocking thread would add two
//!   wake-ups to every write while several tasks write, halving what they get through;
//! - every other write (a save or truncate of any size, a big append, any write at
//!   [`Durability::Full`], which waits for an fsync, a small append that met a busy
//!   database, and one that found its session expired and must first remove it: see
//!   `run.rs`) runs on a Tokio blocking thread with the configured busy timeout;
//! - loads run on a blocking thread, on a connection from a small set of idle readers, and
//!   step through the rows straight from SQLite's buffers.
//!
//! Writes queue on one async mutex, first come first served, over the one writer
//! connection: SQLite admits one writer at a time anyway. A write whose caller is
//! cancelled while it waits on a blocking thread still finishes there (commits or rolls
//! back) before the next write starts, so writes land in the order they were started and
//! no transaction is left open. Every committed write is counted towards the WAL
//! checkpoints of `crate::checkpoint`, which this module runs.
//!
//! A database file deleted (or replaced by another) while open stays writable through the
//! open connections: SQLite goes on writing to the file nobody can open any more, which
//! disappears, with every write since, when the storage closes. So on Linux each committed
//! write checks the file is still linked (one `fstat`; see `unlinked.rs`), and once it is
//! not, the write that found it and every later write and load here fail with
//! [`DirectError::Deleted`] instead of succeeding into nothing.

mod load;
mod open;
mod run;
mod unlinked;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::OwnedMutexGuard;

use crate::busy::wait_while_busy_until;
use crate::checkpoint::{self, Checkpointer, Due};
use crate::config::{DirectOptions, Durability};
use crate::corrupt::CorruptFlag;
use crate::error::{DirectError, MaybeBusy};
use crate::sql::{Write, Written};

pub(crate) use open::open;
use run::{Failure, run};
use unlinked::Watch;

/// The largest bound payload (the messages' JSON) a write may carry to run on an async
/// task's thread: SQLite parses the bound JSON as part of the write, so a bigger payload
/// would hold the async thread for longer than a short write should. An agent's turn is a
/// few kB.
const INLINE_MAX_BYTES: usize = 16 * 1024;

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
    /// Reader connections out of the idle list (a load, a background checkpoint), and the
    /// signal that the last one came back: `close` waits for them, since closing the last
    /// connection is what copies the log into the file and removes it.
    readers_out: AtomicUsize,
    returned: tokio::sync::Notify,
    checkpoints: Arc<Checkpointer>,
    /// The database file as opened, to notice it deleted.
    file: Watch,
    /// Set once the file was found deleted: every later write and load fails.
    deleted: AtomicBool,
    /// Set once any call of the storage (here or on the pool) found the file damaged:
    /// every later write fails (`crate::corrupt`). Reads go on.
    corrupt: Arc<CorruptFlag>,
}

#[derive(Debug)]
struct Writer {
    /// `None` after [`Direct::close`], or after a failed rollback (reopened on next use).
    conn: Option<Connection>,
    closed: bool,
}

/// A reader connection out of the idle list, counted in [`Direct::readers_out`] until
/// this is dropped, after the connection has been returned or closed.
struct ReaderOut<'a>(&'a Direct);

impl<'a> ReaderOut<'a> {
    fn enter(direct: &'a Direct) -> Self {
        direct.readers_out.fetch_add(1, Ordering::SeqCst);
        Self(direct)
    }
}

impl Drop for ReaderOut<'_> {
    fn drop(&mut self) {
        if self.0.readers_out.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.returned.notify_waiters();
        }
    }
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
    ///
    /// Opening reads the schema, which can meet a database another process is switching
    /// to WAL; like every step of opening, it is repeated while busy until `deadline`, the
    /// end of the busy timeout of the whole opening (see `crate::busy`), and SQLite's own
    /// busy handler waits no longer than that within a try either. The reader then waits
    /// the full busy timeout for the loads it serves.
    pub(crate) async fn open(
        db: Arc<str>,
        options: DirectOptions,
        corrupt: Arc<CorruptFlag>,
        deadline: Instant,
    ) -> Result<Self, DirectError> {
        let (writer, reader) = wait_while_busy_until(deadline, || {
            let left = deadline.saturating_duration_since(Instant::now());
            let full = options.busy_timeout;
            let opening = DirectOptions {
                busy_timeout: full.min(left),
                ..options.clone()
            };
            async move {
                tokio::task::spawn_blocking(move || -> rusqlite::Result<_> {
                    let writer = open(&opening, true)?;
                    let reader = open(&opening, false)?;
                    reader.busy_timeout(full)?;
                    Ok((writer, reader))
                })
                .await?
                .map_err(DirectError::from)
            }
        })
        .await?;
        let (file, deleted) = if options.read_only || options.immutable {
            (Watch::none(), false)
        } else {
            Watch::open(&options.path)
        };
        Ok(Self {
            db,
            file,
            deleted: AtomicBool::new(deleted),
            corrupt,
            writer: Arc::new(tokio::sync::Mutex::new(Writer {
                conn: Some(writer),
                closed: false,
            })),
            readers: Mutex::new(vec![Reader(reader)]),
            loads: Arc::new(tokio::sync::Semaphore::new(options.max_readers)),
            closed: AtomicBool::new(false),
            readers_out: AtomicUsize::new(0),
            returned: tokio::sync::Notify::new(),
            checkpoints: Arc::default(),
            options,
        })
    }

    /// Runs `write` in one transaction after the writes started before it. A write that
    /// committed counts towards the next checkpoint (see `crate::checkpoint`); when the
    /// log has reached its hard limit, it returns only once a checkpoint has completed.
    pub(crate) async fn write(self: &Arc<Self>, write: Write) -> Result<Written, DirectError> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(DirectError::Deleted { written: false });
        }
        let bound_bytes = write.bound_bytes();
        let units = checkpoint::units(bound_bytes);
        // The queue of this storage's writes, first come first served.
        let mut writer = Arc::clone(&self.writer).lock_owned().await;
        if self.corrupt.is_set() {
            return Err(DirectError::FoundCorrupt);
        }
        let result = match self.write_inline(&mut writer, &write, bound_bytes) {
            Some(result) => {
                drop(writer);
                // The lock may not have made it wait: let a task that writes in a loop
                // give way to the others on its thread now and then, as an awaited write
                // would.
                tokio::task::consume_budget().await;
                result
            }
            None => self.write_blocking(writer, write).await,
        };
        if let Err(e) = &result {
            self.corrupt.note_direct(&self.db, e);
        }
        if result.as_ref().is_ok_and(Written::committed) {
            if self.file.unlinked() {
                self.deleted.store(true, Ordering::Release);
                return Err(DirectError::Deleted { written: true });
            }
            match self.checkpoints.wrote(units) {
                Due::No => {}
                Due::Background => self.checkpoint_in_background(),
                Due::Now => self.checkpoint_now().await,
            }
        }
        result
    }

    /// Starts the periodic checkpoint on a blocking thread, on a reader connection.
    fn checkpoint_in_background(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            match this.with_reader(|conn| this.checkpoints.run(conn, false)) {
                Ok(true) => {}
                // A reader or another process held it up; the next one, or the writer at
                // the hard limit, tries again.
                Ok(false) => {
                    tracing::debug!(db = %this.db, "background WAL checkpoint did not complete");
                }
                // Closing the last connection checkpoints instead; a deleted file's log
                // goes with it.
                Err(DirectError::Closed | DirectError::Deleted { .. } | DirectError::Moved) => {}
                // The data is safe in the log either way; the next checkpoint retries.
                Err(e) => {
                    tracing::warn!(db = %this.db, error = %e, "background WAL checkpoint failed");
                }
            }
            this.checkpoints.finished();
        });
    }

    /// The hard limit of `crate::checkpoint`: holds the writer, so that no write of this
    /// storage grows the log meanwhile, and on a blocking thread waits for a running
    /// background checkpoint, then, if the log is still overdue, checkpoints on the writer
    /// connection with the busy timeout. A failure is logged, not returned: the write that
    /// called for it has committed.
    async fn checkpoint_now(&self) {
        let mut writer = Arc::clone(&self.writer).lock_owned().await;
        if writer.closed || !self.checkpoints.overdue() {
            return;
        }
        if writer.conn.is_none() && self.before_opening().is_err() {
            // No connection to the file can be had; nothing more will be written to it.
            return;
        }
        let options = self.options.clone();
        let checkpoints = Arc::clone(&self.checkpoints);
        let done = tokio::task::spawn_blocking(move || {
            Ok(writer.waiting(&options, |conn| checkpoints.run(conn, true))??)
        })
        .await
        .map_err(DirectError::from)
        .and_then(|done: Result<bool, DirectError>| done);
        // A checkpoint reads the log and the file's size: it can be what finds the file
        // damaged, like any call.
        if let Err(e) = &done {
            self.corrupt.note_direct(&self.db, e);
        }
        let problem = match done {
            Ok(true) => return,
            Ok(false) => "a reader or another process held it past the busy timeout".to_owned(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(db = %self.db, problem, "the WAL reached its hard limit and the writer's checkpoint did not complete");
        self.checkpoints.give_up();
    }

    /// Runs `write` (binding `bound_bytes`) on this thread with the `writer` its turn
    /// gave it, if it is small and bounded and no other connection holds the write lock.
    /// `None` when it did not run (or met a busy database, or an expired session to
    /// remove, and rolled back): it goes to a blocking thread then.
    fn write_inline(
        &self,
        writer: &mut Writer,
        write: &Write,
        bound_bytes: usize,
    ) -> Option<Result<Written, DirectError>> {
        let inline = write.sql.bounded
            && bound_bytes <= INLINE_MAX_BYTES
            && self.options.durability == Durability::Normal;
        if !inline {
            return None;
        }
        let conn = writer.conn.as_ref()?;
        // The writer's busy timeout is zero except while a blocking write runs.
        match run(conn, write, true) {
            // It must remove an expired session first: a blocking thread's job.
            Ok(Written::Deferred) => None,
            Ok(written) => Some(Ok(written)),
            Err(failure) => {
                // Another connection holds the lock the write needs.
                let busy = failure.error.is_busy();
                let error = writer.after(failure);
                (!busy).then_some(Err(error))
            }
        }
    }

    /// Runs `write` on a blocking thread with the `writer` its turn gave it, waiting up to
    /// the busy timeout for the lock.
    async fn write_blocking(
        &self,
        mut writer: OwnedMutexGuard<Writer>,
        write: Write,
    ) -> Result<Written, DirectError> {
        if writer.closed {
            return Err(DirectError::Closed);
        }
        if writer.conn.is_none() {
            self.before_opening()?;
        }
        let options = self.options.clone();
        tokio::task::spawn_blocking(move || {
            let result = writer.waiting(&options, |conn| run(conn, &write, false))?;
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
        // Counted before `closed` is read, and `close` sets `closed` before it reads the
        // count (both `SeqCst`): either this sees it closed, or `close` waits for it.
        let _out = ReaderOut::enter(self);
        if self.closed.load(Ordering::SeqCst) {
            return Err(DirectError::Closed);
        }
        if self.deleted.load(Ordering::Acquire) {
            return Err(DirectError::Deleted { written: false });
        }
        let idle = self.idle_readers().pop();
        let conn = match idle {
            Some(Reader(conn)) => conn,
            None => {
                self.before_opening()?;
                // Opening reads the schema, which may be what finds the file damaged.
                open(&self.options, false).inspect_err(|e| self.corrupt.note(&self.db, e))?
            }
        };
        let result = read(&conn);
        if let Err(e) = &result {
            self.corrupt.note(&self.db, e);
        }
        // A reader returned after close, or beyond the idle limit, is dropped, closing it;
        // so is one whose read transaction could not be ended, which would otherwise hold
        // its snapshot (and the WAL) for the next load.
        let mut idle = self.idle_readers();
        if !self.closed.load(Ordering::Acquire)
            && idle.len() < self.options.max_readers
            && conn.is_autocommit()
        {
            idle.push(Reader(conn));
        }
        drop(idle);
        Ok(result?)
    }

    /// Checks that a new connection, which SQLite opens by path, would open the file
    /// the others have open: not once it was deleted or replaced (every call fails from
    /// then on, as when a write finds it), nor while it is found elsewhere (moved).
    fn before_opening(&self) -> Result<(), DirectError> {
        if self.file.unlinked() {
            self.deleted.store(true, Ordering::Release);
            return Err(DirectError::Deleted { written: false });
        }
        if !self.file.named_by(&self.options.path) {
            return Err(DirectError::Moved);
        }
        Ok(())
    }

    fn idle_readers(&self) -> std::sync::MutexGuard<'_, Vec<Reader>> {
        // The list is only pushed to and popped from; a panic elsewhere cannot leave it
        // half-changed.
        self.readers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the writer after the write in progress, and every idle reader; later calls
    /// fail with [`DirectError::Closed`].
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.loads.close();
        let mut writer = self.writer.lock().await;
        writer.closed = true;
        let conn = writer.conn.take();
        drop(writer);
        // A reader still out (a background checkpoint started by the last writes, a load)
        // is closed when it comes back. Returning before that would leave the file
        // without the writes still in its log, for whoever copies it next. Waited for as
        // long as the busy timeout (at least 5 s, for a checkpoint still running), no
        // longer: a load the caller started and stopped polling (pinned in a `select!`)
        // holds its reader until it is polled or dropped, and a shutdown must not hang.
        let all_back = async {
            loop {
                let returned = self.returned.notified();
                if self.readers_out.load(Ordering::SeqCst) == 0 {
                    break;
                }
                returned.await;
            }
        };
        let patience = self.options.busy_timeout.max(Duration::from_secs(5));
        if tokio::time::timeout(patience, all_back).await.is_err() {
            tracing::warn!(
                db = %self.db,
                "closing while a connection is still out (a load not polled, a checkpoint): \
                 the last writes may stay in the -wal file until it closes"
            );
        }
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
    /// Runs `f` on the writer connection (opened if there is none) with the busy timeout,
    /// so that it waits for the lock; a blocking thread's way to use the writer.
    ///
    /// The timeout goes back to zero afterwards for the next inline write; a connection
    /// that cannot be set back is dropped (the next use opens one), not reported: `f` has
    /// done its work.
    fn waiting<T>(
        &mut self,
        options: &DirectOptions,
        f: impl FnOnce(&Connection) -> T,
    ) -> Result<T, DirectError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => open(options, true)?,
        };
        conn.busy_timeout(options.busy_timeout)?;
        let result = f(&conn);
        if conn.busy_timeout(Duration::ZERO).is_ok() {
            self.conn = Some(conn);
        }
        Ok(result)
    }

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use fusion_core::ChatMessage;

    use super::Direct;
    use crate::config::{DirectOptions, Durability};
    use crate::error::DirectError;
    use crate::sql::Write;

    /// Makes the database at `path` as the storage's migrations would, in WAL mode.
    fn migrated_database(path: &std::path::Path) {
        let setup = rusqlite::Connection::open(path).unwrap();
        setup
            .query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .unwrap();
        for migration in [
            include_str!("../../migrations/0001_create_sessions_and_messages.sql"),
            include_str!("../../migrations/0002_session_generation.sql"),
            include_str!("../../migrations/0003_session_metadata_and_listing.sql"),
            include_str!("../../migrations/0004_session_expiry.sql"),
            include_str!("../../migrations/0005_message_ids.sql"),
        ] {
            setup.execute_batch(migration).unwrap();
        }
    }

    /// The options of a storage on the file at `path`, creating it if missing (as a
    /// `sqlite://` URL does by default).
    fn options(path: &std::path::Path) -> DirectOptions {
        DirectOptions {
            path: path.to_path_buf(),
            read_only: false,
            create: true,
            vfs: None,
            immutable: false,
            busy_timeout: Duration::from_secs(5),
            durability: Durability::Normal,
            max_readers: 2,
        }
    }

    /// Opening waits for a busy file only until the deadline of the whole opening, inside
    /// SQLite's busy handler too, not for a busy timeout of its own: with the deadline
    /// passed, a file another connection holds fails the open at once, retryable, however
    /// long the busy timeout.
    #[tokio::test]
    async fn opening_waits_for_a_busy_file_only_until_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held.db");
        // Rollback-journal mode, where an exclusive lock keeps every reader out.
        let holder = rusqlite::Connection::open(&path).unwrap();
        holder
            .execute_batch("CREATE TABLE t (x); BEGIN EXCLUSIVE;")
            .unwrap();
        let options = DirectOptions {
            busy_timeout: Duration::from_secs(3600),
            ..options(&path)
        };
        let opening = Direct::open("held.db".into(), options, Arc::default(), Instant::now());
        // A guard against a hang, not a measure: the open either fails at once or waits
        // an hour.
        let err = tokio::time::timeout(Duration::from_secs(60), opening)
            .await
            .expect("opening waited past the deadline")
            .unwrap_err();
        assert!(crate::error::MaybeBusy::is_busy(&err), "{err}");
        holder.execute_batch("ROLLBACK").unwrap();
    }

    /// A call that needs a new connection (here a second load at once) after the file
    /// was moved away, or replaced, opens none by the path: SQLite would create an empty
    /// database there, or read another file, while the open connections use this one.
    #[tokio::test]
    async fn no_new_connection_opens_the_path_of_a_file_moved_or_replaced_while_open() {
        for replaced in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("sessions.db");
            migrated_database(&path);
            let direct = Arc::new(
                Direct::open(
                    "sessions.db".into(),
                    options(&path),
                    Arc::default(),
                    Instant::now(),
                )
                .await
                .unwrap(),
            );
            // The one idle reader is held inside a load until released.
            let (held, is_held) = std::sync::mpsc::channel();
            let (release, released) = std::sync::mpsc::channel::<()>();
            let holding = tokio::spawn({
                let direct = Arc::clone(&direct);
                async move {
                    direct
                        .read(move |_| {
                            held.send(()).unwrap();
                            released.recv().unwrap();
                            Ok(())
                        })
                        .await
                }
            });
            tokio::task::spawn_blocking(move || is_held.recv().unwrap())
                .await
                .unwrap();
            if replaced {
                migrated_database(&dir.path().join("other.db"));
                std::fs::rename(dir.path().join("other.db"), &path).unwrap();
            } else {
                std::fs::rename(&path, dir.path().join("moved.db")).unwrap();
            }

            let count = |conn: &rusqlite::Connection| {
                conn.query_row("SELECT count(*) FROM sessions", [], |row| {
                    row.get::<_, i64>(0)
                })
            };
            let err = direct.read(count).await.unwrap_err();
            match replaced {
                false => {
                    assert!(matches!(err, DirectError::Moved), "{err}");
                    assert!(
                        !path.exists(),
                        "an empty database was created at the old path"
                    );
                }
                true => assert!(
                    matches!(err, DirectError::Deleted { written: false }),
                    "{err}"
                ),
            }
            release.send(()).unwrap();
            holding.await.unwrap().unwrap();
            direct.close().await;
        }
    }

    /// The writer's own checkpoint, at the hard limit, is a call like any other: when it
    /// finds the file damaged (here cut short while open, so the log's pages no longer fit
    /// the size the file should have), every later write is refused, as when a load or a
    /// background checkpoint finds it.
    #[tokio::test]
    async fn the_writers_checkpoint_finding_the_file_damaged_refuses_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.db");
        migrated_database(&path);
        {
            // Some 16 MiB of history, checkpointed into the file when the connection
            // closes: more pages than the log will hold at the hard limit.
            let setup = rusqlite::Connection::open(&path).unwrap();
            setup
                .execute_batch(
                    "INSERT INTO sessions (id, created_at, updated_at, message_count) \
                     VALUES ('old', 0, 0, 4000); \
                     WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 3999) \
                     INSERT INTO messages SELECT 'old', i, printf('%4000d', i) FROM n;",
                )
                .unwrap();
        }
        let direct = Arc::new(
            Direct::open(
                "cut.db".into(),
                options(&path),
                Arc::default(),
                Instant::now(),
            )
            .await
            .unwrap(),
        );
        direct.checkpoints.stall_background();
        let append = |i: u64| Write::append("new", &[ChatMessage::user(format!("{i}"))]).unwrap();
        // Every page of the file in the writer's cache: what is cut off below is never
        // read by a write (one that splits a page reads its neighbours).
        {
            let writer = direct.writer.lock().await;
            let conn = writer.conn.as_ref().unwrap();
            conn.execute_batch("PRAGMA cache_size = -262144").unwrap();
            let check: String = conn
                .query_row("PRAGMA integrity_check", [], |row| row.get(0))
                .unwrap();
            assert_eq!(check, "ok");
        }
        direct.write(append(0)).await.unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        // Up to the hard limit, where the writer checkpoints and meets the damage.
        let mut i = 1;
        while !direct.corrupt.is_set() && i <= crate::checkpoint::HARD_LIMIT_UNITS {
            direct.write(append(i)).await.unwrap();
            i += 1;
        }
        assert!(
            direct.corrupt.is_set(),
            "the checkpoint did not note the damage"
        );
        let err = direct.write(append(i)).await.unwrap_err();
        assert!(matches!(err, DirectError::FoundCorrupt), "{err}");
        direct.close().await;
    }

    /// The hard limit alone, with no background checkpoint ever starting: the writer keeps
    /// the log bounded by itself, whatever the scheduler does with other threads.
    #[tokio::test]
    async fn the_writer_bounds_the_log_when_no_background_checkpoint_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stalled.db");
        migrated_database(&path);
        let options = options(&path);
        let direct = Arc::new(
            Direct::open("stalled.db".into(), options, Arc::default(), Instant::now())
                .await
                .unwrap(),
        );
        direct.checkpoints.stall_background();

        // ~3 frames an append: 9,000 frames without any checkpoint.
        for i in 0..3_000 {
            let message = ChatMessage::user(format!("{i} {}", "x".repeat(200)));
            let write = Write::append("stream", &[message]).unwrap();
            direct.write(write).await.unwrap();
        }
        // A 4 KiB page plus the frame header.
        let frames = std::fs::metadata(path.with_extension("db-wal"))
            .unwrap()
            .len()
            / 4120;
        // The writer checkpoints every 512 appends (~1,650 frames).
        assert!(frames < 2_500, "the log grew to {frames} frames");
        direct.close().await;
    }
}
