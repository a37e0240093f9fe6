//! WAL checkpoints on a background thread, so that no write waits for one.
//!
//! By default SQLite checkpoints inside the commit that takes the write-ahead log past
//! 1,000 pages: that one write copies the pages back into the database file and fsyncs
//! twice, 3–7 ms instead of the usual 0.1 ms (see docs/performance.md). The connections
//! [`SqliteStorage::connect_with`](crate::SqliteStorage::connect_with) opens on a writable
//! file turn that off (`wal_autocheckpoint = 0`), and `crate::direct` runs [`checkpoint`]
//! on a blocking thread every [`EVERY_WRITES`] writes instead. A `PASSIVE` checkpoint
//! neither takes the write lock nor waits for readers, so writes go on while it runs.
//!
//! The log can only start over from its beginning once a checkpoint has caught up with the
//! last commit. Under a steady stream of writes a passive one never does, so once the log
//! passes [`RESTART_ABOVE_FRAMES`] the thread runs a `RESTART` checkpoint, which waits for
//! the writer of the moment and holds off the next one until it is done: the log stays
//! bounded at the price of a rare pause, where SQLite's default pauses every ~140 appends.
//! A checkpoint that never gets to run (the runtime is shutting down) costs nothing but log
//! size: the next one, or closing the last connection, checkpoints everything.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rusqlite::Connection;

/// Writes between two checkpoints: ~400 log pages for a typical append.
pub(crate) const EVERY_WRITES: u64 = 128;

/// Log size, in pages (frames), above which the checkpoint makes the log start over.
pub(crate) const RESTART_ABOVE_FRAMES: i64 = 4_000;

/// Counts a storage's writes and says when a checkpoint is due.
#[derive(Debug, Default)]
pub(crate) struct Checkpointer {
    writes: AtomicU64,
    running: AtomicBool,
}

impl Checkpointer {
    /// Records one committed write. True every [`EVERY_WRITES`] writes unless a
    /// checkpoint is still running: the caller then runs [`checkpoint`] and calls
    /// [`finished`](Self::finished).
    pub(crate) fn wrote(&self) -> bool {
        let writes = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        writes.is_multiple_of(EVERY_WRITES) && !self.running.swap(true, Ordering::Acquire)
    }

    /// The checkpoint [`wrote`](Self::wrote) asked for is over.
    pub(crate) fn finished(&self) {
        self.running.store(false, Ordering::Release);
    }
}

/// Copies the log into the database file; when the log has grown long, waits (up to the
/// connection's busy timeout) for the writer so that the next write can start the log over.
pub(crate) fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    // Returns (busy, frames in the log, frames checkpointed).
    let frames: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))?;
    if frames > RESTART_ABOVE_FRAMES {
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    }
    Ok(())
}
