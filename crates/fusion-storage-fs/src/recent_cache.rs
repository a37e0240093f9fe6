//! The ids each session stored last, remembered between the appends of one storage
//! instance, so that an append whose ids are all new reads nothing to know it.
//!
//! An append with ids must find out whether any of them is among the ids of the session's
//! last [`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW) lines; [`crate::tail_ids`] does by
//! reading those lines backwards, under the session's lock. Nearly always none is (only a
//! retry repeats an id), so an instance keeps, per session, the [`RecentIds`] of those
//! lines and the [`FileState`] they describe. When the session file is in exactly that
//! state and [`RecentIds::may_hold`] says no for every id of a batch, the batch is
//! written without a read; otherwise the tail is read as before.
//!
//! Other instances and processes write the same files, so an entry counts only for the
//! exact state it was made for, compared under the session's lock:
//! - the generation, fresh and random on every creation and rewrite: a `truncate`,
//!   `save`, or `delete` and re-creation anywhere changes it;
//! - where the data ends: every append grows it, and within one generation the data up
//!   to a given end never changes (appends only add; only a torn tail, which is not
//!   data, is ever cut);
//! - the file's identity (device and inode, on Unix): a file put in place by other means
//!   (a person restoring a backup) is another file.
//!
//! A session whose lock file holds no generation (written by an earlier version) keeps
//! the same one through rewrites, so it is never cached. A person editing a file in place
//! while Fusion runs is excluded by nothing (see the crate docs), this included.
//!
//! An entry that does not match is dropped and the append reads the tail, which rebuilds
//! it. At most [`CAPACITY`] sessions are kept; a new one beyond that evicts an arbitrary
//! other, whose next append reads its tail once. Each entry takes about 350 bytes.

use std::collections::HashMap;
use std::fs::Metadata;
use std::sync::{Mutex, MutexGuard, PoisonError};

use fusion_core::{MessageId, RecentIds};

/// The most sessions an instance remembers: about 1.5 MB.
pub(crate) const CAPACITY: usize = 4096;

/// What identifies the exact contents of a session file's data (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileState {
    /// The session's generation, never the legacy one.
    pub(crate) generation: u64,
    /// Where its data ends.
    pub(crate) data_end: u64,
    /// Which file holds it.
    pub(crate) file: FileIdentity,
}

/// A file's device and inode on Unix; nothing elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FileIdentity {
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    /// The identity of the file `metadata` describes.
    #[cfg(unix)]
    pub(crate) fn of(metadata: &Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }

    /// Elsewhere the generation and the data end decide alone.
    #[cfg(not(unix))]
    pub(crate) fn of(_metadata: &Metadata) -> Self {
        Self::default()
    }
}

/// The sessions an instance remembers the ids of, shared by its clones.
#[derive(Debug)]
pub(crate) struct RecentCache {
    capacity: usize,
    /// Locked only to take, put or drop one entry: never during file work.
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    state: FileState,
    recent: RecentIds,
}

impl Default for RecentCache {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl RecentCache {
    /// A cache of at most `capacity` sessions.
    fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Removes the entry of `session` and returns its ids if it describes `state`. The
    /// caller holds the session's exclusive lock and [`put`](Self::put)s an entry back
    /// once its write is done; a write that fails leaves none, which is always safe.
    pub(crate) fn take(&self, session: &str, state: FileState) -> Option<RecentIds> {
        let mut entries = self.entries();
        if entries.is_empty() {
            // No id was ever appended through this instance: id-less appends stop here.
            return None;
        }
        entries
            .remove(session)
            .filter(|entry| entry.state == state)
            .map(|entry| entry.recent)
    }

    /// Whether the entry of `session` describes `state` and rules out every one of `ids`
    /// (see [`RecentIds::may_hold`]): then an append of them needs no read. Leaves the
    /// entry where it is.
    pub(crate) fn rules_out(
        &self,
        session: &str,
        state: FileState,
        ids: &[Option<MessageId>],
    ) -> bool {
        let entries = self.entries();
        entries.get(session).is_some_and(|entry| {
            entry.state == state && !ids.iter().flatten().any(|id| entry.recent.may_hold(id))
        })
    }

    /// Remembers that `session` in `state` has `recent` as its last ids, evicting an
    /// arbitrary other session when full.
    pub(crate) fn put(&self, session: &str, state: FileState, recent: RecentIds) {
        let mut entries = self.entries();
        if entries.len() >= self.capacity
            && !entries.contains_key(session)
            && let Some(victim) = entries.keys().next().cloned()
        {
            entries.remove(&victim);
        }
        entries.insert(session.to_string(), Entry { state, recent });
    }

    /// Forgets `session`, which this instance is rewriting or removing.
    pub(crate) fn forget(&self, session: &str) {
        let mut entries = self.entries();
        if !entries.is_empty() {
            entries.remove(session);
        }
    }

    /// The map; one left by a panicking holder is still consistent (each change is one
    /// map operation), so poisoning is ignored.
    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use fusion_core::MessageId;

    use super::*;

    fn state(generation: u64, data_end: u64) -> FileState {
        FileState {
            generation,
            data_end,
            file: FileIdentity::default(),
        }
    }

    fn ids(texts: &[&str]) -> Vec<MessageId> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn recent_of(texts: &[&str]) -> RecentIds {
        let mut recent = RecentIds::default();
        recent.record_ids(ids(texts).iter());
        recent
    }

    #[test]
    fn an_entry_serves_only_the_state_it_was_made_for_and_only_once() {
        let cache = RecentCache::default();
        cache.put("s", state(7, 100), recent_of(&["a"]));
        assert_eq!(cache.take("s", state(7, 101)), None, "data end moved");
        assert_eq!(
            cache.take("s", state(7, 100)),
            None,
            "a stale entry is dropped"
        );

        cache.put("s", state(7, 100), recent_of(&["a"]));
        assert_eq!(cache.take("s", state(8, 100)), None, "generation changed");
        cache.put("s", state(7, 100), recent_of(&["a"]));
        let other_file = FileState {
            file: FileIdentity { dev: 1, ino: 2 },
            ..state(7, 100)
        };
        assert_eq!(cache.take("s", other_file), None, "another file");

        cache.put("s", state(7, 100), recent_of(&["a"]));
        let recent = cache
            .take("s", state(7, 100))
            .expect("the state it describes");
        assert!(recent.may_hold(&ids(&["a"])[0]));
        assert_eq!(
            cache.take("s", state(7, 100)),
            None,
            "taken out until put back"
        );
    }

    #[test]
    fn forget_drops_the_entry() {
        let cache = RecentCache::default();
        cache.put("s", state(7, 100), recent_of(&["a"]));
        cache.put("t", state(7, 100), recent_of(&["a"]));
        cache.forget("s");
        assert_eq!(cache.take("s", state(7, 100)), None);
        assert!(cache.take("t", state(7, 100)).is_some(), "others are kept");
    }

    #[test]
    fn a_full_cache_evicts_one_entry_per_new_session() {
        let cache = RecentCache::with_capacity(3);
        for s in ["a", "b", "c"] {
            cache.put(s, state(7, 1), recent_of(&[s]));
        }
        // Putting back a remembered session evicts nothing.
        cache.put("b", state(7, 2), recent_of(&["b"]));
        assert_eq!(cache.entries().len(), 3);
        cache.put("d", state(7, 1), recent_of(&["d"]));
        let entries = cache.entries();
        assert_eq!(entries.len(), 3, "bounded");
        assert!(entries.contains_key("d"), "the newcomer is kept");
        drop(entries);
        for s in ["e", "f", "g", "h"] {
            cache.put(s, state(7, 1), recent_of(&[s]));
            assert_eq!(cache.entries().len(), 3);
        }
    }

    #[test]
    fn recording_keeps_the_order_of_the_written_ids() {
        let mut recent = RecentIds::default();
        let many: Vec<String> = (0..fusion_core::DEDUP_WINDOW + 1)
            .map(|i| format!("m{i}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        recent.record_ids(ids(&many).iter());
        assert!(
            !recent.may_hold(&ids(&["m0"])[0]),
            "the oldest left the window"
        );
        assert!(recent.may_hold(&ids(&["m1"])[0]));
        assert!(recent.may_hold(&ids(&[many[many.len() - 1]])[0]));
    }
}
