//! WAL checkpoints: on a background thread in the common case, so that no write waits for
//! one, and by the writer itself when the background falls behind, so that the log stays
//! bounded whatever the scheduler does.
//!
//! By default SQLite checkpoints inside the commit that takes the write-ahead log past
//! 1,000 pages: that one write copies the pages back into the database file and fsyncs
//! twice, many times the cost of an ordinary append (see docs/performance.md). The
//! connections [`SqliteStorage::connect_with`](crate::SqliteStorage::connect_with) opens on
//! a writable file turn that off (`wal_autocheckpoint = 0`), and `crate::direct` calls
//! [`Checkpointer::wrote`] after every committed write instead:
//!
//! - **Background, the common case.** Every [`EVERY_UNITS`] units of writing (see
//!   [`units`]) a blocking thread runs [`checkpoint`] on a reader connection. A `PASSIVE`
//!   checkpoint neither takes the write lock nor waits for readers, so writes go on while
//!   it runs. The log can only start over from its beginning once a checkpoint has caught
//!   up with the last commit, which under a steady stream of writes a passive one never
//!   does; so once the log passes [`RESTART_ABOVE_FRAMES`] the thread runs a `RESTART`
//!   checkpoint, which waits for the writer of the moment and holds off the next one until
//!   the log has been copied: a rare pause, where SQLite's default pauses every ~140
//!   appends.
//! - **Inline, the hard limit.** A background thread can be late by any amount: a loaded
//!   machine may not schedule it, or its fsync may wait behind other I/O, while appends
//!   keep running on the async threads. So the code path that grows the log checks the
//!   bound itself: when [`HARD_LIMIT_UNITS`] units have been written since the start of
//!   the last checkpoint that completed, [`Checkpointer::wrote`] answers [`Due::Now`] and
//!   the write does not return until a checkpoint has completed. `crate::direct` then holds
//!   the writer (no write of this storage can grow the log meanwhile), waits for a running
//!   background checkpoint to finish, and, if that one did not bring the count back under
//!   the limit, runs [`checkpoint`] on the writer connection with the busy timeout.
//!
//! The bound follows: a completed checkpoint either found the log at most
//! [`RESTART_ABOVE_FRAMES`] long or made it start over, and at most [`HARD_LIMIT_UNITS`]
//! units are written after its start before the next one completes. So the log holds at
//! most [`RESTART_ABOVE_FRAMES`] frames plus what [`HARD_LIMIT_UNITS`] units of writing
//! add (a few frames per unit). Only a reader keeping one snapshot open for longer than
//! the busy timeout, which SQLite cannot checkpoint past, or another process writing the
//! same file, can take it further.
//!
//! The common path costs one atomic add and one atomic load per write: the counter needs
//! no system call, and the log's real length is read only by the checkpoints themselves
//! (`PRAGMA wal_checkpoint` returns it). A checkpoint that never gets to run (the runtime
//! is shutting down) costs nothing but log size: the next one, or closing the last
//! connection, checkpoints everything.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use rusqlite::Connection;

/// Units of writing between two background checkpoints: ~400 log pages for typical appends.
pub(crate) const EVERY_UNITS: u64 = 128;

/// Units of writing after the start of the last completed checkpoint at which the writer
/// stops and checkpoints itself: four background periods, so a background checkpoint that
/// is merely slow does not make writes wait.
pub(crate) const HARD_LIMIT_UNITS: u64 = 4 * EVERY_UNITS;

/// Log size, in pages (frames), above which a checkpoint makes the log start over.
pub(crate) const RESTART_ABOVE_FRAMES: i64 = 4_000;

/// How much a write counts towards the next checkpoint: one unit per write, one more per
/// 4 KiB bound to it, since the messages an append or a save binds take at least that many
/// pages of the log. A truncate or delete binds a few bytes and counts one, although
/// removing many rows dirties the pages that held them: such writes are rare (an undo, a
/// cleared session) and the next checkpoint copies whatever they wrote.
pub(crate) fn units(bound_bytes: usize) -> u64 {
    1 + u64::try_from(bound_bytes / 4096).unwrap_or(u64::MAX)
}

/// What the writer must do after a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing.
    No,
    /// Start a background checkpoint ([`Checkpointer::run`] on a blocking thread), then
    /// [`Checkpointer::finished`].
    Background,
    /// The log has reached the hard limit: checkpoint before returning (see the module doc).
    Now,
}

/// Counts a storage's writing and says when a checkpoint is due.
#[derive(Debug, Default)]
pub(crate) struct Checkpointer {
    /// Units written since the storage was opened.
    written: AtomicU64,
    /// `written` at the start of the last checkpoint that completed.
    checkpointed: AtomicU64,
    /// A background checkpoint was asked for and has not finished.
    background: AtomicBool,
    /// Held by the thread running a checkpoint, so that the writer can wait for the
    /// background one instead of failing on SQLite's checkpoint lock.
    running: Mutex<()>,
}

impl Checkpointer {
    /// Records a committed write of `units` units and says what is due.
    pub(crate) fn wrote(&self, units: u64) -> Due {
        let before = self.written.fetch_add(units, Ordering::Relaxed);
        let after = before.saturating_add(units);
        if after.saturating_sub(self.checkpointed.load(Ordering::Acquire)) >= HARD_LIMIT_UNITS {
            return Due::Now;
        }
        let new_period = before / EVERY_UNITS != after / EVERY_UNITS;
        if new_period && !self.background.swap(true, Ordering::Acquire) {
            Due::Background
        } else {
            Due::No
        }
    }

    /// Whether [`HARD_LIMIT_UNITS`] units have been written since the start of the last
    /// completed checkpoint.
    pub(crate) fn overdue(&self) -> bool {
        let written = self.written.load(Ordering::Relaxed);
        written.saturating_sub(self.checkpointed.load(Ordering::Acquire)) >= HARD_LIMIT_UNITS
    }

    /// Runs [`checkpoint`] on `conn` once no other checkpoint of this storage is running,
    /// and, if it completes, counts what was written before its start as checkpointed.
    /// `only_if_overdue` skips it when, once the others are done, the limit is no longer
    /// reached (the writer's case: the background checkpoint it waited for may have done
    /// the job).
    pub(crate) fn run(&self, conn: &Connection, only_if_overdue: bool) -> rusqlite::Result<bool> {
        let _running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if only_if_overdue && !self.overdue() {
            return Ok(true);
        }
        let start = self.written.load(Ordering::Relaxed);
        let completed = checkpoint(conn)?;
        if completed {
            self.checkpointed.fetch_max(start, Ordering::Release);
        }
        Ok(completed)
    }

    /// Counts what was written so far as checkpointed although the writer's checkpoint
    /// failed or did not complete: the failure is logged, and trying again on every write (each waiting up to
    /// the busy timeout) would stall the writer; the next try comes after another
    /// [`HARD_LIMIT_UNITS`] units.
    pub(crate) fn give_up(&self) {
        let written = self.written.load(Ordering::Relaxed);
        self.checkpointed.fetch_max(written, Ordering::Release);
    }

    /// Makes [`wrote`](Self::wrote) believe a background checkpoint is running for good,
    /// so that none starts: what a background thread that is never scheduled looks like.
    #[cfg(test)]
    pub(crate) fn stall_background(&self) {
        self.background.store(true, Ordering::Release);
    }

    /// The background checkpoint [`wrote`](Self::wrote) asked for is over.
    pub(crate) fn finished(&self) {
        self.background.store(false, Ordering::Release);
    }
}

/// Copies the log into the database file; when the log has grown long, waits (up to the
/// connection's busy timeout) for the writer and the readers so that the next write can
/// start the log over. True when it completed: it found the log at most
/// [`RESTART_ABOVE_FRAMES`] long and copied it, or made it start over.
pub(crate) fn checkpoint(conn: &Connection) -> rusqlite::Result<bool> {
    // Returns (busy, frames in the log, frames checkpointed); busy when another
    // connection held the checkpoint lock, or, for `RESTART`, when the writer or a reader
    // did not let go within the busy timeout.
    let status = |row: &rusqlite::Row<'_>| Ok((row.get::<_, i64>(0)? == 0, row.get::<_, i64>(1)?));
    let (done, frames) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], status)?;
    if done && frames <= RESTART_ABOVE_FRAMES {
        return Ok(true);
    }
    let (restarted, _) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], status)?;
    Ok(restarted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_checkpoints_come_once_per_period_and_the_limit_is_hard() {
        let checkpoints = Checkpointer::default();
        let mut background = 0;
        for _ in 0..EVERY_UNITS * 3 {
            match checkpoints.wrote(1) {
                Due::Background => background += 1,
                Due::No => {}
                Due::Now => panic!("overdue before the hard limit"),
            }
        }
        // None of them finished: only the first was started.
        assert_eq!(background, 1);
        assert!(!checkpoints.overdue());
        assert_eq!(checkpoints.wrote(EVERY_UNITS), Due::Now);
        assert!(checkpoints.overdue());
        checkpoints.give_up();
        assert!(!checkpoints.overdue());
        checkpoints.finished();
        assert_eq!(checkpoints.wrote(EVERY_UNITS), Due::Background);
    }

    #[test]
    fn a_write_counts_one_unit_plus_one_per_4_kib_it_binds() {
        assert_eq!(units(200), 1);
        assert_eq!(units(16 * 1024), 5);
        // A 10 MiB save reaches the hard limit on its own: it checkpoints before returning.
        assert!(units(10 << 20) >= HARD_LIMIT_UNITS);
    }
}
