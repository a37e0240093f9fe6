//! The corrupt flag: once any call finds the database file damaged, the storage writes
//! nothing more to it, since writing into a damaged file can spread the damage (a page a
//! damaged free list hands out twice, say). Reads go on; opening the storage again (after
//! a repair) writes again.
//!
//! Every path that meets SQLite's errors reports them here, whichever driver it runs on:
//! the direct path's loads, writes and checkpoints (the background one and the writer's
//! own at the hard limit), and the pool's loads, writes, listings and `session_info`.
//! One flag is shared by every clone of a storage.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{DirectError, is_corruption, is_sqlx_corruption};

/// Set once a call found the database file damaged (`SQLITE_CORRUPT` or `SQLITE_NOTADB`).
#[derive(Debug, Default)]
pub(crate) struct CorruptFlag(AtomicBool);

impl CorruptFlag {
    /// Whether a call has found the file damaged: writes are refused.
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Sets the flag if `err` says the file `db` is damaged, logging it the first time.
    pub(crate) fn note(&self, db: &str, err: &rusqlite::Error) {
        if is_corruption(err) {
            self.set(db, err);
        }
    }

    /// [`note`](Self::note) for an error of the direct path.
    pub(crate) fn note_direct(&self, db: &str, err: &DirectError) {
        if let DirectError::Sqlite(e) = err {
            self.note(db, e);
        }
    }

    /// [`note`](Self::note) for a Fusion error made from a sqlx or direct-path error (its
    /// source), so that a call can be checked after its error was mapped.
    pub(crate) fn note_error(&self, db: &str, err: &fusion_core::Error) {
        let fusion_core::Error::Backend {
            source: Some(source),
            ..
        } = err
        else {
            return;
        };
        let damaged = match source.downcast_ref::<sqlx::Error>() {
            Some(e) => is_sqlx_corruption(e),
            None => source
                .downcast_ref::<DirectError>()
                .is_some_and(|e| matches!(e, DirectError::Sqlite(e) if is_corruption(e))),
        };
        if damaged {
            self.set(db, err);
        }
    }

    fn set(&self, db: &str, err: &dyn std::fmt::Display) {
        if !self.0.swap(true, Ordering::AcqRel) {
            tracing::error!(db, error = %err, "the SQLite database file is corrupt; refusing further writes");
        }
    }
}
