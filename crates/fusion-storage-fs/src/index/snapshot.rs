//! A consistent view of the index for one listing: the state and the files it names,
//! opened together under the index lock and then read without it (the valid prefixes
//! never change, a replaced file stays readable through its open handle, and a live
//! journal is read only up to its last complete line as of the snapshot).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::path::PathBuf;

use fusion_core::Result;

use super::ids::IdsAfter;
use super::journal::{self, Entry};
use super::lines;
use super::live::Found;
use super::state::State;
use super::{IDS, JOURNAL};
use crate::error::IoContext;

/// What a listing reads: the state and the files it describes, opened together.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(super) root: PathBuf,
    pub(super) state: State,
    pub(super) journal: Option<File>,
    pub(super) live: Vec<Found>,
    /// Whether the live journals' directory is missing (see [`Snapshot::is_damaged`]).
    pub(super) live_lost: bool,
    pub(super) ids: Option<File>,
    pub(super) ids_log: Option<File>,
}

impl Snapshot {
    /// Whether a file is shorter than the state says, or the live journals' directory,
    /// which every built index has, is missing: the index was damaged (or files were
    /// removed by hand; `live/` with the lines no fold took yet, whose sessions a listing
    /// newest first would leave out) and must be rebuilt.
    pub(crate) fn is_damaged(&self) -> bool {
        if self.live_lost {
            return true;
        }
        let short = |file: &Option<File>, len: u64| match file {
            None => len > 0,
            Some(file) => file.metadata().map_or(true, |m| m.len() < len),
        };
        short(&self.journal, self.state.journal_len)
            || short(&self.ids, self.state.ids_len)
            || short(&self.ids_log, self.state.ids_log_len)
    }

    /// Roughly how many sessions the index holds (from the size of the id files, at
    /// about 12 bytes an id): enough to choose how to read a filtered page.
    pub(crate) fn approx_sessions(&self) -> u64 {
        (self.state.ids_len + self.state.ids_log_len) / 12
    }

    /// The journal lines before `before` (a `(t, id)` position, or the end), newest
    /// first: the compacted journal and every live one, merged.
    pub(crate) fn newest_first(&self, before: Option<(i64, &str)>) -> Result<NewestFirst<'_>> {
        // The compacted journal, and each live one with its file.
        let mut files: Vec<(PathBuf, &File, u64, bool)> = Vec::new();
        if let Some(journal) = &self.journal {
            let path = self.root.join(JOURNAL);
            files.push((path, journal, self.state.journal_len, false));
        }
        for live in &self.live {
            files.push((live.path.clone(), &live.file, live.end, true));
        }
        let mut merged = NewestFirst {
            sources: Vec::with_capacity(files.len()),
            heads: BinaryHeap::new(),
            // Lost lines may have been the only ones placing their sessions (see
            // `refill`). Checked for every page, whatever its cursor.
            damaged: self
                .live
                .iter()
                .any(|live| live.lost_lines && is_finished(&live.file)),
        };
        for (path, file, len, live) in files {
            let end = match before {
                None => len,
                Some(target) => journal::lower_bound(file, len, target).at(&path)?,
            };
            merged.sources.push(Source {
                path,
                lines: lines::Backward::new(file, end),
                live: live.then_some(file),
            });
            merged.refill(merged.sources.len() - 1)?;
        }
        Ok(merged)
    }

    /// The timestamp of the newest line of each session at or above `cursor` (a
    /// newest-first page's start): reads every line above it, O(lines above the cursor),
    /// so once a page at most, and only for a session whose own facts cannot tell (its
    /// counters were lost).
    pub(crate) fn newest_above(&self, cursor: (i64, &str)) -> Result<HashMap<String, i64>> {
        #[cfg(test)]
        READS_ABOVE.with(|reads| reads.set(reads.get() + 1));
        let mut newest = HashMap::new();
        let mut entries = self.newest_first(None)?;
        while let Some(entry) = entries.next_entry()? {
            if (entry.t, entry.id.as_str()) < cursor {
                break;
            }
            newest.entry(entry.id).or_insert(entry.t);
        }
        Ok(newest)
    }

    /// The ids after `after` (all for `None`), in order.
    pub(crate) fn ids_after(&self, after: Option<&str>) -> Result<Option<IdsAfter<'_>>> {
        let Some(log) = &self.ids_log else {
            return Ok(None);
        };
        IdsAfter::new(
            self.ids.as_ref(),
            self.state.ids_len,
            log,
            self.state.ids_log_len,
            after,
        )
        .map(Some)
        .at(&self.root.join(IDS))
    }
}

/// Journal entries, newest first, merged from several sorted journals.
pub(crate) struct NewestFirst<'f> {
    sources: Vec<Source<'f>>,
    /// The next entry of each source that has one.
    heads: BinaryHeap<Head>,
    damaged: bool,
}

/// One journal, read backwards.
struct Source<'f> {
    path: PathBuf,
    lines: lines::Backward<'f>,
    /// A live journal's file; `None` for the compacted journal.
    live: Option<&'f File>,
}

/// A source's next entry, ordered by `(t, id)`.
struct Head(Entry, usize);

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.0.t, &self.0.id, self.1).cmp(&(other.0.t, &other.0.id, other.1))
    }
}

impl NewestFirst<'_> {
    /// The next entry. A line that does not parse is skipped and marks the index as
    /// damaged: writes never leave one inside a valid length.
    pub(crate) fn next_entry(&mut self) -> Result<Option<Entry>> {
        let Some(Head(entry, source)) = self.heads.pop() else {
            return Ok(None);
        };
        self.refill(source)?;
        Ok(Some(entry))
    }

    /// Reads the next entry of `source` into the heads.
    ///
    /// Junk in the compacted journal means damage: writes never leave any there. So does
    /// junk in a live journal nobody holds any more, which only its writer's death can
    /// have left (zeros where a power loss lost its last lines, say): the sessions those
    /// lines placed would be missing or shown at an older place, and the rebuild folds
    /// that journal away. One whose owner still holds it cannot be rebuilt under it, and
    /// its junk is skipped with a warning.
    fn refill(&mut self, source: usize) -> Result<()> {
        let Source { path, lines, live } = &mut self.sources[source];
        while let Some(line) = lines.next_line().at(path)? {
            match journal::parse(&line) {
                Some(entry) => {
                    self.heads.push(Head(entry, source));
                    return Ok(());
                }
                None if live.is_none_or(is_finished) => self.damaged = true,
                None => tracing::warn!(
                    backend = crate::error::BACKEND,
                    path = %path.display(),
                    "skipping a damaged line of a live index journal its writer still \
                     holds; `rebuild_index` lists its session again if it was the only one"
                ),
            }
        }
        Ok(())
    }

    /// Whether a damaged line was met.
    pub(crate) fn damaged(&self) -> bool {
        self.damaged
    }
}

/// Whether no instance holds the live journal `file` any more: its writer stopped.
fn is_finished(file: &File) -> bool {
    let finished = file.try_lock_shared().is_ok();
    if finished {
        let _ = file.unlock();
    }
    finished
}

#[cfg(test)]
thread_local! {
    static READS_ABOVE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many times this thread's listings read the lines above a cursor.
#[cfg(test)]
pub(crate) fn reads_above_cursor() -> usize {
    READS_ABOVE.with(std::cell::Cell::get)
}
