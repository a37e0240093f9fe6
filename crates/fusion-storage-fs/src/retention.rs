//! Retention across a session directory: purging expired sessions through the expiry
//! index, and leaving expired sessions out of `list_sessions`. What an expiry does to one
//! session is in [`crate::session_files`]; the markers are in [`crate::index`].

use std::collections::HashSet;
use std::ops::ControlFlow;

use fusion_core::{Error, Result};

use crate::error::BACKEND;
use crate::session_files::{Directory, now_micros};

/// A session directory, its index and the write policy its removals follow.
pub(crate) struct Retention<'a> {
    /// The directory, its index, write policy and remembered ids (which a removal drops).
    pub(crate) at: Directory<'a>,
}

impl Retention<'_> {
    /// Deletes up to `batch` (1 or more) expired sessions, earliest expiry first, and
    /// returns how many it deleted. Reads the expiry markers due by now, each once (and,
    /// when a bucket of them is a symbolic link, every session's lock file): a
    /// marker of a session written since it was placed is moved to the session's current
    /// expiry, and one of a session that is gone is removed, without counting. A damaged
    /// session (a FIFO where its file belongs) is left as it is, with its marker and a
    /// warning (one per purge, however many ways the purge met it), so that it holds up
    /// no other; so is one whose metadata file cannot be read (an I/O error), which the
    /// removal needs for the owner's and tags' markers it removes (and, with its counters
    /// lost, for its expiry): it is purged whole by the first purge after the file reads
    /// again or is moved aside.
    pub(crate) fn purge(&self, batch: usize) -> Result<usize> {
        let mut purged = 0;
        // The damaged sessions met, each warned about once: the walk may meet one by two
        // markers, and the read of every lock file after a skipped bucket meets it again.
        let mut damaged = HashSet::new();
        let mut unreadable = HashSet::new();
        let mut purge = |id: &str, marker| {
            let files = self.at.files(id);
            match files.purge_if_expired(marker) {
                Ok(true) => purged += 1,
                Ok(false) => {}
                Err(Error::Corrupt {
                    session_id, detail, ..
                }) => {
                    if damaged.insert(session_id.clone()) {
                        tracing::warn!(backend = BACKEND, %session_id, %detail, "leaving a damaged session out of a purge");
                    }
                }
                Err(err) if files.is_meta_error(&err) => {
                    if unreadable.insert(id.to_string()) {
                        tracing::warn!(backend = BACKEND, session_id = %id, error = %err, "leaving a session whose metadata file cannot be read out of a purge; it is purged once the file reads again or is moved aside");
                    }
                }
                Err(err) => return Err(err),
            }
            Ok(if purged >= batch {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        };
        let mut batch_full = false;
        let every_bucket = self.at.index.for_each_due(now_micros(), |at, id| {
            let flow = purge(&id, Some(at))?;
            batch_full = flow.is_break();
            Ok(flow)
        })?;
        // A walk stopped by a full batch is done too: the lock files would add one more.
        if every_bucket || batch_full {
            return Ok(purged);
        }
        // A bucket due by now was skipped (a link, never followed): the sessions whose
        // markers it holds are found as `without_expired` finds them, by every session's
        // lock file, until it is moved aside and the index rebuilt. Their markers there
        // stay (a removal leaves a linked bucket's, one too many, as a crash may).
        for id in crate::listing::list_dir(self.at.dir)? {
            // A damaged lock file, or a metadata file that cannot be read (the expiry of
            // lost counters), is left to the purge's own warning.
            let files = self.at.files(&id);
            let suspect = match files.has_expired() {
                Ok(expired) => expired,
                Err(Error::Corrupt { .. }) => true,
                Err(err) if files.is_meta_error(&err) => true,
                Err(err) => return Err(err),
            };
            if suspect && purge(&id, None)?.is_break() {
                break;
            }
        }
        Ok(purged)
    }

    /// `ids` (every session file in the directory) without the sessions that have
    /// expired. With an index that covers the directory, only the sessions whose expiry
    /// markers are due are checked; without one (a directory an earlier version wrote
    /// and nothing has listed yet), or with a bucket of markers due that is a symbolic
    /// link (skipped), every session's lock file is read. A session whose
    /// lock file is damaged is kept: its own calls report the damage; so is one whose
    /// expiry is unknown (its counters lost, its metadata file cannot be read), with a
    /// warning.
    pub(crate) fn without_expired(&self, ids: Vec<String>) -> Result<Vec<String>> {
        let mut suspects = None;
        if self.at.index.is_built() {
            let mut due = HashSet::new();
            let every_bucket = self.at.index.for_each_due(now_micros(), |_, id| {
                due.insert(id);
                Ok(ControlFlow::Continue(()))
            })?;
            // A bucket skipped (a link) may hold the markers of expired sessions: then
            // every session is a suspect.
            suspects = every_bucket.then_some(due);
        }
        let mut alive = Vec::with_capacity(ids.len());
        for id in ids {
            let suspect = suspects.as_ref().is_none_or(|due| due.contains(&id));
            let files = self.at.files(&id);
            let expired = match suspect {
                true => files.has_expired(),
                false => Ok(false),
            };
            match expired {
                Ok(false) | Err(Error::Corrupt { .. }) => alive.push(id),
                Ok(true) => {}
                // Its counters lost, and the metadata file that records its expiry cannot
                // be read: kept, as a damaged one is, its own calls reporting the error.
                Err(err) if files.is_meta_error(&err) => {
                    tracing::warn!(backend = BACKEND, session_id = %id, error = %err, "listing a session whose metadata file cannot be read, its expiry unknown");
                    alive.push(id);
                }
                Err(err) => return Err(err),
            }
        }
        Ok(alive)
    }
}
