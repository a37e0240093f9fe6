//! Which lines of a batch an append writes: those whose ids are not among the ids of the
//! session's last [`DEDUP_WINDOW`] lines. Told by the ids this instance remembers when
//! they describe the file as it is ([`crate::recent_cache`]), read from the file's end
//! otherwise ([`crate::tail_ids`]); and what is remembered after the append.

use std::borrow::Cow;
use std::fs::File;

use fusion_core::{DEDUP_WINDOW, LEGACY_GENERATION, MessageId, RecentIds, Result};

use super::{Current, SessionFiles, TAIL_CHUNK, read_exact_at};
use crate::batch::Batch;
use crate::error::{BACKEND, IoContext};
use crate::recent_cache::FileState;
use crate::tail_ids::{self, Chunks, Found, Source};

/// The reads of the id check: a first one that holds the last lines of most sessions
/// (64 messages of 128 bytes), then larger ones for longer messages.
const ID_CHUNKS: Chunks = Chunks {
    first: 8 * 1024,
    max: TAIL_CHUNK as usize,
};

/// What an append learnt of the session's ids while choosing its lines, for
/// [`SessionFiles::remember`] once it has written them.
#[derive(Debug)]
pub(super) struct Known {
    /// The session file's state before the append, if an entry may describe it.
    state: Option<FileState>,
    /// The ids of the session's last lines before the append, if known and cacheable.
    recent: Option<RecentIds>,
    /// For each message of the batch, whether the session holds it; empty for none.
    stored: Vec<bool>,
}

impl SessionFiles {
    /// The lines of `batch` to write: those of its messages whose ids are not among the
    /// ids of the session's last [`DEDUP_WINDOW`] messages, marked as a batch of their
    /// own. Under the exclusive lock, so that a retry racing its first attempt finds what
    /// that attempt wrote.
    ///
    /// A batch without ids, or a session without data, costs nothing here. Otherwise, if
    /// this instance remembers the ids of the file as it is and none of the batch's may
    /// be among them, nothing is read either. Else the file is read backwards from its
    /// data end, through the last `DEDUP_WINDOW` lines at most, stopping early once every
    /// id that may be stored is found (see [`tail_ids`]): the bytes of those lines, in
    /// reads of [`ID_CHUNKS`] growing sizes.
    pub(super) fn unstored_lines<'b>(
        &self,
        current: &Current,
        batch: &'b Batch,
    ) -> Result<(Cow<'b, [u8]>, Known)> {
        let ids = batch.ids();
        let Some(file) = current.file.as_ref().filter(|_| current.exists()) else {
            // A new session: after the append its ids are exactly the batch's.
            let recent = (!ids.is_empty()).then(RecentIds::default);
            let known = Known {
                state: None,
                recent,
                stored: Vec::new(),
            };
            return Ok((Cow::Borrowed(batch.lines()), known));
        };
        let state = self.file_state(current);
        // Taken even for a batch without ids, to move an entry on past its lines (which
        // bring no id): with none remembered, that is one lock of an empty map.
        let cached = state.and_then(|state| self.recent.take(&self.id, state));
        let (stored, recent) = match cached {
            _ if ids.is_empty() => (Vec::new(), cached),
            Some(recent) if !ids.iter().flatten().any(|id| recent.may_hold(id)) => {
                (Vec::new(), Some(recent))
            }
            Some(recent) => {
                // Only the ids that may be stored are looked for, so a retry stops
                // reading once it has found them.
                let maybe: Vec<Option<MessageId>> = ids
                    .iter()
                    .map(|id| id.as_ref().filter(|id| recent.may_hold(id)).cloned())
                    .collect();
                (
                    self.find_stored(file, current, &maybe)?.stored,
                    Some(recent),
                )
            }
            None => {
                let found = self.find_stored(file, current, ids)?;
                (found.stored, found.window.filter(|_| state.is_some()))
            }
        };
        let lines = batch.unstored_lines(&stored);
        Ok((
            lines,
            Known {
                state,
                recent,
                stored,
            },
        ))
    }

    /// Whether [`unstored_lines`](Self::unstored_lines) would choose the lines of `batch`
    /// without reading the file: the batch has no ids, the session has no data, or this
    /// instance remembers the session's last ids as the file is and none of the batch's
    /// may be among them.
    pub(super) fn knows_unstored(&self, current: &Current, batch: &Batch) -> bool {
        let ids = batch.ids();
        ids.is_empty()
            || !current.exists()
            || self
                .file_state(current)
                .is_some_and(|state| self.recent.rules_out(&self.id, state, ids))
    }

    /// Remembers the ids of the session now that the append that learnt `known` wrote
    /// the lines of `batch` it chose, leaving the file in state `after`; or, with `after`
    /// `None`, now that it wrote nothing (every message was stored).
    pub(super) fn remember(&self, known: Known, batch: &Batch, after: Option<FileState>) {
        let Some(mut recent) = known.recent else {
            return;
        };
        let Some(after) = after else {
            if let Some(state) = known.state {
                self.recent.put(&self.id, state, recent);
            }
            return;
        };
        let written = batch
            .ids()
            .iter()
            .enumerate()
            .filter(|&(index, _)| !known.stored.get(index).copied().unwrap_or(false))
            .filter_map(|(_, id)| id.as_ref());
        recent.record_ids(written);
        self.recent.put(&self.id, after, recent);
    }

    /// The state of the session file an entry would describe, or `None` if none may:
    /// the session's generation is legacy (it survives rewrites), or the lock file was
    /// not read under this lock.
    fn file_state(&self, current: &Current) -> Option<FileState> {
        let generation = current.contents.as_ref()?.generation?;
        (generation > LEGACY_GENERATION).then_some(FileState {
            generation,
            data_end: current.data_end,
            file: current.identity,
        })
    }

    /// Which of `ids` the last lines of the session file hold, read from its end.
    fn find_stored(
        &self,
        file: &File,
        current: &Current,
        ids: &[Option<MessageId>],
    ) -> Result<Found> {
        let source = Source {
            data_end: current.data_end,
            terminated: !current.needs_newline,
            read_at: |buf: &mut [u8], offset| read_exact_at(file, buf, offset),
        };
        let found = tail_ids::find_stored(ids, DEDUP_WINDOW, ID_CHUNKS, source).at(&self.data)?;
        tracing::trace!(
            backend = BACKEND,
            session_id = %self.id,
            bytes_read = found.bytes_read,
            stored = found.stored.iter().filter(|&&stored| stored).count(),
            "checked the batch's ids against the session's last lines"
        );
        Ok(found)
    }
}
