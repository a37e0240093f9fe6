//! A consistent view of the index for one listing: the state and the files it names,
//! opened together under the index lock and then read without it (the valid prefixes
//! never change, a replaced file stays readable through its open handle, and a live
//! journal is read only up to its last complete line as of the snapshot).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
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
    pub(super) ids: Option<File>,
    pub(super) ids_log: Option<File>,
}

impl Snapshot {
    /// Whether a file is shorter than the state says: the index was damaged (or files
    /// were removed by hand) and must be rebuilt.
    pub(crate) fn is_damaged(&self) -> bool {
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
        let mut files: Vec<(PathBuf, &File, u64)> = Vec::new();
        if let Some(journal) = &self.journal {
            files.push((self.root.join(JOURNAL), journal, self.state.journal_len));
        }
        for live in &self.live {
            files.push((live.path.clone(), &live.file, live.end));
        }
        let mut merged = NewestFirst {
            sources: Vec::with_capacity(files.len()),
            heads: BinaryHeap::new(),
            damaged: false,
        };
        for (index, (path, file, len)) in files.into_iter().enumerate() {
            let end = match before {
                None => len,
                Some(target) => journal::lower_bound(file, len, target).at(&path)?,
            };
            // Junk in the compacted journal means damage (writes never leave any there);
            // a live journal's owner may still be writing it, so it cannot be rebuilt
            // under it, and its junk is skipped with a warning.
            let shared = index == 0 && self.journal.is_some();
            merged
                .sources
                .push((path, lines::Backward::new(file, end), shared));
            merged.refill(merged.sources.len() - 1)?;
        }
        Ok(merged)
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
    /// Each journal, and whether it is the compacted one.
    sources: Vec<(PathBuf, lines::Backward<'f>, bool)>,
    /// The next entry of each source that has one.
    heads: BinaryHeap<Head>,
    damaged: bool,
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
    fn refill(&mut self, source: usize) -> Result<()> {
        let (path, lines, shared) = &mut self.sources[source];
        while let Some(line) = lines.next_line().at(path)? {
            match journal::parse(&line) {
                Some(entry) => {
                    self.heads.push(Head(entry, source));
                    return Ok(());
                }
                None if *shared => self.damaged = true,
                None => tracing::warn!(
                    backend = crate::error::BACKEND,
                    path = %path.display(),
                    "skipping a damaged line of a live index journal; \
                     `rebuild_index` lists its session again if it was the only one"
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
