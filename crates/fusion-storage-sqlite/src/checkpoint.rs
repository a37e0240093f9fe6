//! WAL checkpoints from a background task, so that no write waits for one.
//!
//! By default SQLite checkpoints inside the commit that takes the write-ahead log past
//! 1,000 pages: that one write copies the pages back into the database file and fsyncs
//! twice, 3–7 ms instead of the usual 0.1 ms (see docs/performance.md). The connections
//! [`SqliteStorage::connect_with`](crate::SqliteStorage::connect_with) opens on a writable
//! file turn that off (`wal_autocheckpoint = 0`), and this runs the checkpoint from a
//! spawned task every [`EVERY_WRITES`] writes of the storage's writer instead. A `PASSIVE` checkpoint neither takes the
//! write lock nor waits for readers, so writes go on while it runs.
//!
//! The log can only start over from its beginning once a checkpoint has caught up with the
//! last commit. Under a steady stream of writes a passive one never does, so once the log
//! passes [`RESTART_ABOVE_FRAMES`] the task runs a `RESTART` checkpoint, which waits for
//! the writer of the moment and holds off the next one until it is done: the log stays
//! bounded at the price of a rare pause, where SQLite's default pauses every ~140 appends.
//! A checkpoint that never gets to run (the runtime is shutting down) costs nothing but log
//! size: the next one, or closing the last connection, checkpoints everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sqlx::sqlite::SqlitePool;

/// Writes between two checkpoints: ~400 log pages for a typical append.
pub(crate) const EVERY_WRITES: u64 = 128;

/// Log size, in pages (frames), above which the checkpoint makes the log start over.
pub(crate) const RESTART_ABOVE_FRAMES: i64 = 4_000;

/// Counts a storage's writes and checkpoints its database in the background.
#[derive(Debug, Default)]
pub(crate) struct Checkpointer {
    writes: AtomicU64,
    running: AtomicBool,
}

impl Checkpointer {
    /// Records one committed write; every [`EVERY_WRITES`] writes, starts a checkpoint on
    /// `pool` unless one is still running.
    pub(crate) fn wrote(self: &Arc<Self>, pool: &SqlitePool, db: &Arc<str>) {
        let writes = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        if !writes.is_multiple_of(EVERY_WRITES) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.running.swap(true, Ordering::Acquire) {
            return;
        }
        let (this, pool, db) = (Arc::clone(self), pool.clone(), Arc::clone(db));
        runtime.spawn(async move {
            if let Err(e) = checkpoint(&pool).await {
                // The data is safe in the log either way; the next checkpoint retries.
                tracing::warn!(%db, error = %e, "background WAL checkpoint failed");
            }
            this.running.store(false, Ordering::Release);
        });
    }
}

/// Copies the log into the database file; when the log has grown long, waits for the
/// writer so that the next write can start the log over.
async fn checkpoint(pool: &SqlitePool) -> sqlx::Result<()> {
    // Returns (busy, frames in the log, frames checkpointed).
    let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await?;
    if frames > RESTART_ABOVE_FRAMES {
        sqlx::query("PRAGMA wal_checkpoint(RESTART)")
            .execute(pool)
            .await?;
    }
    Ok(())
}
