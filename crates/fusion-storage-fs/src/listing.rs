//! One page of a listing, read from the index and checked against the sessions' own
//! facts: the blocking half of [`FileSystemStorage::list_page`](crate::FileSystemStorage).
//!
//! Three ways to find the candidates, whichever reads least:
//! - an owner or tag with few sessions: its markers, each session's facts read and
//!   sorted, O(that set);
//! - otherwise, newest first: the journals backwards from the cursor (a binary search in
//!   each, merged), O(page + the lines between its rows), each line's session first
//!   checked against the filters' markers (one `stat`, far cheaper than reading its facts);
//! - otherwise, by id: the sorted ids from the cursor, merged with the id log.
//!
//! "Few" weighs the two: reading a set of `m` costs `m` reads of facts; scanning for a
//! page costs about `limit × n / m` marker checks among `n` sessions. The set is read
//! when `m² ≤ limit × n / 8` (a fact read costs about eight `stat`s), capped at
//! [`MAX_SET`]: an owner among 10,000 owners of a million sessions (100 each) is read
//! whole, a tag on a tenth of them is found by scanning.
//!
//! Every candidate shown has had its facts read under its lock (which is also what the
//! page shows): a journal line counts only if the session's `updated_at` is that line's
//! timestamp, and filters are checked on its metadata. A candidate whose metadata file is
//! damaged is left out with a warning (its `session_info` reports
//! `Error::Corrupt`); it never hides another session. So is one that has expired, like a
//! stale line: until a purge removes it, it costs its page one more read of facts.
//!
//! A session counts at the first line of its id the scan meets, with one exception: a
//! session created as a copy with the times it had elsewhere has its line at its given
//! `updated_at`, which may sort below lines of an earlier session of its id (written, and
//! deleted or expired, after that time). Its counters say when its creation was recorded,
//! and the lines of the id recorded before it are passed over (see
//! `crate::index::journal`). Below a delete line, so are the lines of its id recorded
//! before it, unread: only a copy's line, recorded since, can still place a session. A
//! session created after the delete is recorded after it, whichever instance deleted on
//! whichever clock: every creation is stamped after the latest delete (see
//! `crate::index`).

use std::collections::{HashMap, HashSet};

use fusion_core::{
    Error, Position, Result, SessionInfo, SessionOrder, SessionPage, SessionQuery,
    from_unix_micros, unix_micros,
};

use crate::error::{BACKEND, IoContext};
use crate::index::{CheckedDirs, Kind, Members, Scanned, SetKey, Snapshot, marker_instant};
use crate::session_files::Directory;

mod skip;

pub(crate) use self::skip::list_dir;
use self::skip::{is_passing, is_unread, list_dir_noting, skip_damaged};

/// The most members an owner or tag may have for its markers to be read whole.
const MAX_SET: usize = 5000;
/// The fewest: below this a set is read whole whatever the total.
const MIN_SET: usize = 200;

/// How far a file's status time may fall before the time of the write that changed it.
const TIME_SLACK_US: i64 = crate::session_files::FILE_TIME_SLACK_US;

/// Where a listing runs: the directory, its index and the write policy (for repairs).
pub(crate) struct Lister<'a> {
    /// The directory, its index, write policy and remembered ids (which a removal drops).
    pub(crate) at: Directory<'a>,
}

impl Lister<'_> {
    /// A session's facts; a damaged session, or one whose metadata file cannot be read,
    /// is reported and counts as absent here.
    fn info(&self, id: &str) -> Result<Option<SessionInfo>> {
        let files = self.at.files(id);
        skip_damaged(&files, files.info())
    }

    /// One page of `query` (already validated). An index found damaged on the way is
    /// rebuilt from the session files and the page read again.
    pub(crate) fn page(&self, query: &SessionQuery) -> Result<SessionPage> {
        match std::fs::metadata(self.at.dir) {
            // No directory, no sessions; and a listing creates nothing.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return query.page_of(Vec::new());
            }
            other => {
                other.at(self.at.dir)?;
            }
        }
        match self.try_page(query)? {
            Some(page) => Ok(page),
            None => {
                tracing::warn!(
                    backend = BACKEND,
                    dir = %self.at.dir.display(),
                    "the session index is damaged; rebuilding it from the session files"
                );
                match self.at.index.invalidate() {
                    // No index can be rebuilt here (a read-only directory): read every
                    // session, as `try_page` does where none can be opened.
                    Err(Error::Io { source, .. }) if is_unwritable(&source) => {
                        return query.page_of(self.scan_infos()?);
                    }
                    other => other?,
                }
                self.try_page(query)?.ok_or_else(|| Error::Backend {
                    backend: BACKEND,
                    message: "the session index is still damaged after a rebuild".into(),
                    retryable: true,
                    source: None,
                })
            }
        }
    }

    /// One page, or `None` if the index turned out to be damaged.
    fn try_page(&self, query: &SessionQuery) -> Result<Option<SessionPage>> {
        let snapshot = match self.snapshot() {
            Ok(snapshot) => snapshot,
            Err(Error::Io { source, .. }) if is_unwritable(&source) => {
                // No index can be kept here (a read-only directory): read every session.
                return query.page_of(self.scan_infos()?).map(Some);
            }
            Err(err) => return Err(err),
        };
        let Some(snapshot) = snapshot else {
            return Ok(None);
        };
        let scan_cost = (query.limit as u64 + 1) * snapshot.approx_sessions() / 8;
        let small = (scan_cost as f64).sqrt() as usize;
        let small = small.clamp(MIN_SET, MAX_SET);
        // The sets whose markers tell membership, their directories checked once for the
        // page rather than once per session it passes.
        let mut marked = Vec::new();
        for key in set_keys(query) {
            match self.at.index.members_up_to(key, small)? {
                Members::Few(members) => return self.page_of_members(query, members).map(Some),
                Members::Many => marked.push(key),
                Members::Unknown => {}
            }
        }
        match query.order {
            SessionOrder::UpdatedDesc => self.newest_first(query, &marked, &snapshot),
            SessionOrder::Id => self.by_id(query, &marked, &snapshot),
        }
    }

    /// The index, built first if it does not cover every session yet; `None` if it is
    /// damaged. An index whose build left out a session for a file that could not be read
    /// is built again once that file reads (an error that lasts until fixed: a permission,
    /// a symbolic-link loop), as it would otherwise miss the session for good (its id, and
    /// where built afresh its line and markers); until then it serves as it is.
    fn snapshot(&self) -> Result<Option<Snapshot>> {
        if let Some(snapshot) = self.at.index.snapshot()? {
            if snapshot.is_damaged() {
                return Ok(None);
            }
            if !self.any_reads_again()? {
                return Ok(Some(snapshot));
            }
            self.at.index.invalidate()?;
        }
        self.at.index.build(|| {
            let mut unread = Vec::new();
            let scanned = self.scan(&mut unread)?;
            self.at.index.note_unread(&unread)?;
            Ok(scanned)
        })?;
        Ok(self.at.index.snapshot()?.filter(|s| !s.is_damaged()))
    }

    /// Whether a session the index's build left out for a file that could not be read
    /// reads now (or is gone, or damaged instead): one look at each, no warning.
    fn any_reads_again(&self) -> Result<bool> {
        for id in self.at.index.unread()? {
            let files = self.at.files(&id);
            match files.stored_info_and_whether_stored() {
                Err(err) if is_unread(&files, &err) && !is_passing(&err) => {}
                _ => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Every session's place in the journal, restoring its markers (an expired session's
    /// expiry marker included, so that a purge finds it): what a build needs. A copy not
    /// written since its creation is placed as recorded then, so that it supersedes the
    /// lines of an earlier session of its id even where its own line was lost. Adds to
    /// `unread` each session it left out for a file that could not be read.
    fn scan(&self, unread: &mut Vec<String>) -> Result<Vec<Scanned>> {
        let mut records = Vec::new();
        let mut checked = CheckedDirs::default();
        for id in list_dir_noting(self.at.dir, unread)? {
            let files = self.at.files(&id);
            let found = files.stored_info_and_whether_stored();
            if found.as_ref().is_err_and(|err| is_unread(&files, err)) {
                unread.push(id.clone());
            }
            let Some((info, stored)) = skip_damaged(&files, found)? else {
                continue;
            };
            // A build refuses no marker (a link at its path or on the way is left as it is,
            // or the marker left out), but a damaged one still damages its session alone.
            let restored = self.restore_markers(&id, &info, &mut checked);
            if skip_damaged(&files, restored.map(Some))?.is_none() {
                continue;
            }
            let t = info.updated_at.map_or(0, unix_micros);
            let recorded = stored.copied_us.map_or(t, |copied| copied.max(t));
            records.push(Scanned { t, id, recorded });
        }
        Ok(records)
    }

    /// The expiry, owner and tag markers of session `id`, as `info` gives them, restored
    /// for a build. Left to the page cache whatever the policy: a build restores one per
    /// session and expiry, owner and tag, and a flush each would make it as slow as a
    /// write of every session.
    /// Each directory on the way is checked once per build (`checked`).
    fn restore_markers(
        &self,
        id: &str,
        info: &SessionInfo,
        checked: &mut CheckedDirs,
    ) -> Result<()> {
        if let Some(expires_at) = info.expires_at {
            let at = marker_instant(unix_micros(expires_at));
            self.at.index.restore_expiry(at, id, checked)?;
        }
        if let Some(owner) = &info.meta.owner {
            self.at
                .index
                .restore_member(SetKey::Owner(owner), id, checked)?;
        }
        for tag in &info.meta.tags {
            self.at
                .index
                .restore_member(SetKey::Tag(tag), id, checked)?;
        }
        Ok(())
    }

    fn scan_infos(&self) -> Result<Vec<SessionInfo>> {
        let mut infos = Vec::new();
        for id in list_dir(self.at.dir)? {
            infos.extend(self.info(&id)?);
        }
        Ok(infos)
    }

    fn page_of_members(
        &self,
        query: &SessionQuery,
        mut members: Vec<String>,
    ) -> Result<SessionPage> {
        let mut infos = Vec::new();
        if query.order == SessionOrder::Id {
            // Only the ids after the cursor, in order, until the page is full.
            let after = match query.start()? {
                Some(Position::Id(id)) => Some(id),
                _ => None,
            };
            members.retain(|id| after.as_ref().is_none_or(|a| id > a));
            members.sort_unstable();
            for id in members {
                if infos.len() > query.limit {
                    break;
                }
                infos.extend(self.info(&id)?.filter(|info| query.admits(info)));
            }
        } else {
            for id in members {
                infos.extend(self.info(&id)?);
            }
        }
        query.page_of(infos)
    }

    /// Whether `id` may pass the query's filters, judged by the markers of the sets in
    /// `marked` alone (no marker: certainly not; a marker: its metadata decides).
    fn may_pass(&self, marked: &[SetKey<'_>], id: &str) -> Result<bool> {
        for &key in marked {
            if !self.at.index.is_member(key, id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn newest_first(
        &self,
        query: &SessionQuery,
        marked: &[SetKey<'_>],
        snapshot: &Snapshot,
    ) -> Result<Option<SessionPage>> {
        let before = match query.start()? {
            Some(Position::Updated { micros, id }) => Some((micros, id)),
            _ => None,
        };
        let mut entries =
            snapshot.newest_first(before.as_ref().map(|(t, id)| (*t, id.as_str())))?;
        // Sessions already judged: each counts at its newest line this scan meets.
        let mut done = HashSet::new();
        // Ids not judged yet whose lines recorded before an instant are an earlier
        // session's: below a delete line, or a copy's creation. Passed over unread: only
        // a copy's line, recorded since, can still place a session of the id.
        let mut earlier: HashMap<String, i64> = HashMap::new();
        // The newest line of each session above the cursor, once a session needs them.
        let mut above = None;
        let mut rows = Vec::new();
        while rows.len() <= query.limit {
            let Some(entry) = entries.next_entry()? else {
                break;
            };
            let superseded = earlier
                .get(&entry.id)
                .is_some_and(|&before| entry.recorded < before);
            if done.contains(&entry.id) || superseded {
                continue;
            }
            if entry.kind == Kind::Delete {
                // Lines recorded before a delete belong to an earlier session of that id.
                earlier.insert(entry.id, entry.recorded.saturating_add(1));
                continue;
            }
            if !self.may_pass(marked, &entry.id)? {
                done.insert(entry.id);
                continue;
            }
            #[cfg(test)]
            FACTS_READ.with(|reads| reads.set(reads.get() + 1));
            let files = self.at.files(&entry.id);
            let Some((mut info, stored)) = skip_damaged(&files, files.info_and_whether_stored())?
            else {
                done.insert(entry.id);
                continue;
            };
            if let Some(copied) = stored.copied_us.filter(|&c| entry.recorded < c) {
                // A line of an earlier session of this id, written later than the times
                // this one was copied with, but recorded before its creation (see
                // `crate::index::journal`): its place is its own line, further down.
                earlier.insert(entry.id, copied);
                continue;
            }
            done.insert(entry.id.clone());
            let updated = info.updated_at.map_or(0, unix_micros);
            // Without stored counters that describe the file, `updated_at` may be its
            // modification time, which matches no line: the session's newest line is its place. That is the newest
            // line met only from the top: below a cursor, a line above it (which an
            // earlier page showed the session at, before its counters were lost) places
            // it there, and this page leaves it out. The lines above the cursor are read
            // once a page, when a session needs them: not for one whose file's time is
            // this very line's and whose file has not changed since well before the
            // cursor's time. Such a session was placed here by a scan of its file (one an
            // earlier version wrote): a line above the cursor is of a write at or after
            // the cursor's time, and its counters were lost since (an earlier version's
            // rewrite, a restore from a backup, damage), all of which change the file's
            // status time, which no tool sets; its modification time may still be this
            // line's (a restore with `cp -p`, `touch`, file times in whole seconds).
            let mut place = entry.t;
            if !stored.counters
                && let Some((t, id)) = &before
                && !(updated == entry.t && stored.changed_us < t.saturating_sub(TIME_SLACK_US))
            {
                let above = match &mut above {
                    Some(above) => above,
                    None => above.insert(snapshot.newest_above((*t, id))?),
                };
                place = above.get(&entry.id).copied().unwrap_or(entry.t);
            }
            if updated < place || (!stored.counters && updated != place) {
                // The line is newer than the session: its write was cut short.
                match files.repair_updated(place) {
                    // A directory or session file this process cannot write (a read-only
                    // copy or mount, a file made read-only) keeps its files as they are:
                    // the session is listed at its line all the same, as every listing
                    // here will find it. Before `skip_damaged`, which would take the
                    // refused open of a file that reads for one that cannot be read.
                    Err(Error::Io { source, .. }) if is_unwritable(&source) => {
                        info.updated_at = Some(from_unix_micros(place));
                    }
                    repaired => match skip_damaged(&files, repaired)? {
                        Some(repaired) => info = repaired,
                        None => continue,
                    },
                }
            }
            // Otherwise a newer line places the session (before the cursor, or written
            // since this listing began): this one is stale.
            if info.updated_at.map_or(0, unix_micros) == entry.t && query.admits(&info) {
                rows.push(info);
            }
        }
        if entries.damaged() {
            return Ok(None);
        }
        query.page_of(rows).map(Some)
    }

    fn by_id(
        &self,
        query: &SessionQuery,
        marked: &[SetKey<'_>],
        snapshot: &Snapshot,
    ) -> Result<Option<SessionPage>> {
        let after = match query.start()? {
            Some(Position::Id(id)) => Some(id),
            _ => None,
        };
        let mut rows = Vec::new();
        let Some(mut ids) = snapshot.ids_after(after.as_deref())? else {
            return query.page_of(rows).map(Some);
        };
        while rows.len() <= query.limit {
            let Some(id) = ids.next_id().at(self.at.index.root())? else {
                break;
            };
            if self.may_pass(marked, &id)? {
                rows.extend(self.info(&id)?.filter(|info| query.admits(info)));
            }
        }
        if ids.damaged() {
            return Ok(None);
        }
        query.page_of(rows).map(Some)
    }
}

/// The sets whose markers narrow `query`: its owner's, then its tag's.
fn set_keys(query: &SessionQuery) -> impl Iterator<Item = SetKey<'_>> {
    query
        .owner
        .as_deref()
        .map(SetKey::Owner)
        .into_iter()
        .chain(query.tag.as_deref().map(SetKey::Tag))
}

fn is_unwritable(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
    )
}

#[cfg(test)]
thread_local! {
    /// How many times this thread's newest-first pages read a session's facts.
    static FACTS_READ: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use fusion_core::{ChatMessage, Expect, SessionQuery};

    use super::*;
    use crate::batch::Batch;
    use crate::file_name;
    use crate::index::{Index, dir_lstats, reads_above_cursor};
    use crate::options::SyncPolicy;
    use crate::recent_cache::RecentCache;
    use crate::session_files::{Creation, FileChange};

    /// A sessions directory of its own, with its index and cache of recent ids.
    struct Scratch {
        dir: tempfile::TempDir,
        index: Arc<Index>,
        recent: Arc<RecentCache>,
    }

    impl Scratch {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let index = Arc::new(Index::new(dir.path()));
            Self {
                dir,
                index,
                recent: Arc::default(),
            }
        }

        fn at(&self) -> Directory<'_> {
            Directory {
                dir: self.dir.path(),
                index: &self.index,
                sync: SyncPolicy::OnReplace,
                recent: &self.recent,
            }
        }

        /// The directory as `index`, another instance's, sees it.
        fn at_with<'a>(&'a self, index: &'a Arc<Index>) -> Directory<'a> {
            Directory { index, ..self.at() }
        }

        /// The index state's file (the index's lock file).
        fn state(&self) -> std::path::PathBuf {
            self.dir.path().join(file_name::INDEX_DIR).join("lock")
        }

        /// Another instance on this directory, on a host whose clock runs an hour ahead.
        fn instance_an_hour_ahead(&self) -> Arc<Index> {
            let ahead = Arc::new(Index::new(self.dir.path()));
            ahead.run_clock_ahead(Duration::from_secs(3600));
            ahead
        }

        /// A delete of `id` through `at` that stops (as a full disk stops it) once its
        /// journal line is written: the id log cannot be written, a directory in its
        /// place, nor the index state after it. The id log is put back after.
        fn stopped_delete(&self, at: &Directory<'_>, id: &str) {
            let ids_log = self.dir.path().join(file_name::INDEX_DIR).join("ids-log");
            let logged = std::fs::read(&ids_log).unwrap();
            std::fs::remove_file(&ids_log).unwrap();
            std::fs::create_dir(&ids_log).unwrap();
            at.files(id).remove().unwrap_err();
            std::fs::remove_dir(&ids_log).unwrap();
            std::fs::write(&ids_log, logged).unwrap();
        }
    }

    /// One line of a session's file: a user's "hi".
    fn hi() -> Batch {
        Batch::encode(&[ChatMessage::user("hi")]).unwrap()
    }

    /// The creation of a copy with `meta`, created and last written at `at` elsewhere.
    fn copy_written_at(meta: &fusion_core::SessionMeta, at: SystemTime) -> Creation<'_> {
        Creation {
            meta,
            times: Some(fusion_core::SessionTimes::new(at, at)),
        }
    }

    /// The ids of the first page of newest-first sessions `at` lists, in its order.
    fn first_page(at: Directory<'_>) -> Vec<String> {
        let page = Lister { at }.page(&SessionQuery::new()).unwrap();
        page.sessions.into_iter().map(|s| s.id).collect()
    }

    /// Pages of 2 through six sessions an earlier version wrote (no counters, no index),
    /// their files' modification times `apart` from `ahead` of now (their status times,
    /// now, are older, as a file's are when nothing touched it since its last write):
    /// how many sessions were listed, and how many pages read above their cursor.
    fn page_through_sessions_an_earlier_version_wrote(
        ahead: Duration,
        apart: Duration,
    ) -> (usize, usize) {
        let scratch = Scratch::new();
        let at = scratch.at();
        let line = hi();
        let start = SystemTime::now() + ahead;
        for (i, id) in ["a", "b", "c", "d", "e", "f"].into_iter().enumerate() {
            at.files(id).append(&line).unwrap();
            // As an earlier version left it: no counters.
            std::fs::remove_file(scratch.dir.path().join(file_name::lock_file_name(id))).unwrap();
            let data = std::fs::File::options()
                .write(true)
                .open(scratch.dir.path().join(file_name::session_file_name(id)))
                .unwrap();
            data.set_modified(start + apart * i as u32).unwrap();
        }
        // Nor an index: the first listing builds it from the files' times.
        std::fs::remove_dir_all(scratch.dir.path().join(file_name::INDEX_DIR)).unwrap();
        let index = Arc::new(Index::new(scratch.dir.path()));
        let at = Directory {
            index: &index,
            ..at
        };
        let lister = Lister { at };
        let query = SessionQuery::new().limit(2);
        let mut page = lister.page(&query).unwrap();
        let mut listed = page.sessions.len();
        let before = reads_above_cursor();
        while page.next.is_some() {
            page = lister.page(&query.clone().after(page.next)).unwrap();
            listed += page.sessions.len();
        }
        (listed, reads_above_cursor() - before)
    }

    #[test]
    fn a_page_reads_no_facts_for_the_lines_of_deleted_sessions() {
        let scratch = Scratch::new();
        let at = scratch.at();
        let line = hi();
        for id in ["a", "b", "c", "d"] {
            at.files(id).append(&line).unwrap();
            at.files(id).append(&line).unwrap();
        }
        for id in ["a", "b", "c"] {
            at.files(id).remove().unwrap();
        }
        // Copied under a deleted id, at a time before the lines of its deleted session.
        let meta = fusion_core::SessionMeta::new();
        let creation = copy_written_at(&meta, SystemTime::now() - Duration::from_secs(3600));
        at.files("b").create(creation, &line).unwrap();
        let lister = Lister { at };
        let before = FACTS_READ.with(std::cell::Cell::get);
        let page = lister.page(&SessionQuery::new()).unwrap();
        let ids: Vec<_> = page.sessions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["d", "b"]);
        // The two sessions', at their lines: none for the deleted ones' lines.
        assert_eq!(FACTS_READ.with(std::cell::Cell::get) - before, 2);
    }

    #[test]
    fn sessions_created_after_a_delete_by_an_instance_whose_clock_runs_ahead_are_listed() {
        let scratch = Scratch::new();
        let at = scratch.at();
        // Another instance on the same directory, on a host whose clock runs an hour ahead.
        let ahead = scratch.instance_an_hour_ahead();
        let ahead_at = scratch.at_with(&ahead);
        let line = hi();
        // Written here, deleted there: the delete's line an hour ahead of this clock.
        at.files("plain").append(&line).unwrap();
        ahead_at.files("plain").remove().unwrap();
        // Copied there (its creation recorded an hour ahead), deleted here: the delete is
        // stamped after that recording.
        let meta = fusion_core::SessionMeta::new();
        let creation = copy_written_at(&meta, SystemTime::now() - Duration::from_secs(3600));
        ahead_at.files("copied").create(creation, &line).unwrap();
        at.files("copied").remove().unwrap();
        // Written here, deleted there.
        at.files("recopied").append(&line).unwrap();
        ahead_at.files("recopied").remove().unwrap();
        // Then created again by a third instance, on this clock; the last one as a copy.
        let again = Arc::new(Index::new(scratch.dir.path()));
        let again_at = scratch.at_with(&again);
        again_at.files("plain").append(&line).unwrap();
        again_at.files("copied").append(&line).unwrap();
        again_at.files("recopied").create(creation, &line).unwrap();
        assert_eq!(first_page(again_at), ["copied", "plain", "recopied"]);
    }

    #[test]
    fn a_copy_that_lost_its_counters_is_not_moved_to_an_earlier_sessions_line() {
        let scratch = Scratch::new();
        let line = hi();
        // Written by an instance that goes on running: its journal, which holds the line,
        // is not folded while it does.
        scratch.at().files("x").append(&line).unwrap();
        // Deleted by another, whose journal is then finished and folded: the delete line
        // is gone, the earlier line still stands.
        let deleting = Arc::new(Index::new(scratch.dir.path()));
        let at = scratch.at_with(&deleting);
        at.files("x").remove().unwrap();
        drop(deleting);
        scratch.index.fold_now().unwrap();
        let index = scratch.dir.path().join(file_name::INDEX_DIR);
        let live = std::fs::read_dir(index.join("live")).unwrap();
        let journals = live.map(|entry| entry.unwrap().path());
        let lines: String = journals
            .map(|path| std::fs::read_to_string(path).unwrap())
            .collect();
        assert!(
            lines.contains(" w x\n") && !lines.contains(" d x\n"),
            "{lines}"
        );
        // Copied under the id, last written an hour ago, by a third; its counters lost.
        let an_hour_ago = unix_micros(SystemTime::now()) - 3_600_000_000;
        let meta = fusion_core::SessionMeta::new();
        let creation = copy_written_at(&meta, from_unix_micros(an_hour_ago));
        let copying = Arc::new(Index::new(scratch.dir.path()));
        let at = scratch.at_with(&copying);
        at.files("x").create(creation, &line).unwrap();
        let lock = scratch.dir.path().join(file_name::lock_file_name("x"));
        std::fs::remove_file(lock).unwrap();
        // Listed once, at the time it was copied with, not at the earlier session's line.
        let page = Lister { at }.page(&SessionQuery::new()).unwrap();
        let listed: Vec<_> = (page.sessions.iter())
            .map(|s| (s.id.as_str(), s.updated_at.map(unix_micros)))
            .collect();
        assert_eq!(listed, [("x", Some(an_hour_ago))]);
    }

    #[test]
    fn a_creation_after_a_delete_that_stopped_past_its_journal_line_is_listed() {
        let scratch = Scratch::new();
        let at = scratch.at();
        let ahead = scratch.instance_an_hour_ahead();
        let ahead_at = scratch.at_with(&ahead);
        let line = hi();
        at.files("x").append(&line).unwrap();
        // Deleted by an instance whose clock runs an hour ahead, which stops (a crash, a
        // full disk) once the session's files and its journal line are written, before
        // the id log and the index state take the delete: the session's lock file stays
        // with its counters, the state as it was.
        let state = scratch.state();
        let lock = scratch.dir.path().join(file_name::lock_file_name("x"));
        let (state_before, lock_before) = (
            std::fs::read(&state).unwrap(),
            std::fs::read(&lock).unwrap(),
        );
        ahead_at.files("x").remove().unwrap();
        std::fs::write(&state, state_before).unwrap();
        std::fs::write(&lock, lock_before).unwrap();
        // Created again on this clock: stamped after that delete line all the same.
        at.files("x").append(&line).unwrap();
        assert_eq!(first_page(at), ["x"]);
    }

    #[test]
    fn a_creation_after_a_stopped_delete_of_a_session_without_counters_is_listed() {
        let scratch = Scratch::new();
        let at = scratch.at();
        let ahead = scratch.instance_an_hour_ahead();
        let ahead_at = scratch.at_with(&ahead);
        let line = hi();
        // Sessions whose counters are lost: the lock file empty (lost with its file), or
        // holding the generation alone (as earlier versions wrote it).
        for (id, kept) in [("empty", 0), ("bare", crate::counters::GENERATION_FIELD)] {
            at.files(id).append(&line).unwrap();
            let lock = scratch.dir.path().join(file_name::lock_file_name(id));
            let stored = std::fs::read(&lock).unwrap();
            std::fs::write(&lock, &stored[..kept]).unwrap();
            // Deleted by an instance whose clock runs an hour ahead, which stops once its
            // journal line is written.
            scratch.stopped_delete(&ahead_at, id);
            // Created again on this clock: stamped after that delete line all the same.
            at.files(id).append(&line).unwrap();
        }
        let mut ids = first_page(at);
        ids.sort_unstable();
        assert_eq!(ids, ["bare", "empty"]);
    }

    #[test]
    fn a_creation_after_a_stopped_delete_whose_lock_file_went_since_is_listed() {
        let scratch = Scratch::new();
        let at = scratch.at();
        let ahead = scratch.instance_an_hour_ahead();
        let ahead_at = scratch.at_with(&ahead);
        let line = hi();
        let ids = ["deleted-again", "purged", "refused", "cut"];
        for id in ids {
            at.files(id).append(&line).unwrap();
            // Deleted by an instance whose clock runs an hour ahead, which stops once its
            // journal line is written, leaving the lock file.
            scratch.stopped_delete(&ahead_at, id);
            // Each way of removing a lock file without a session: the delete made again
            // (as a retry does), a purge of the expiry marker the delete left, a
            // conditional write refused, a conditional truncation of nothing.
            let files = at.files(id);
            match id {
                "deleted-again" => files.remove().unwrap(),
                "purged" => assert!(!files.purge_if_expired(Some(0)).unwrap()),
                "refused" => {
                    let change =
                        FileChange::Append(Batch::encode(&[ChatMessage::user("x")]).unwrap());
                    files.write_if(Expect::Generation(7), change).unwrap_err();
                }
                _ => {
                    let change = FileChange::Truncate(0);
                    files.write_if(Expect::Generation(0), change).unwrap();
                }
            }
            let lock = scratch.dir.path().join(file_name::lock_file_name(id));
            assert!(!lock.exists(), "{id}: the lock file stayed");
            // Created again on this clock: stamped after that delete line all the same.
            at.files(id).append(&line).unwrap();
        }
        let mut listed = first_page(at);
        listed.sort_unstable();
        assert_eq!(listed, ["cut", "deleted-again", "purged", "refused"]);
    }

    #[test]
    fn a_creation_after_the_index_state_is_damaged_still_follows_the_deletes_before() {
        let scratch = Scratch::new();
        let at = scratch.at();
        let ahead = scratch.instance_an_hour_ahead();
        let ahead_at = scratch.at_with(&ahead);
        let line = hi();
        at.files("x").append(&line).unwrap();
        ahead_at.files("x").remove().unwrap();
        // The state, which held that delete's time, zeroed (as a power loss may leave it).
        let state = scratch.state();
        let len = std::fs::metadata(&state).unwrap().len();
        std::fs::write(&state, vec![0; len as usize]).unwrap();
        // Recovered from the live journals by the creation that finds it damaged.
        at.files("x").append(&line).unwrap();
        assert_eq!(first_page(at), ["x"]);
    }

    #[test]
    fn a_creation_after_the_index_state_is_lost_with_no_session_left_follows_the_deletes() {
        let scratch = Scratch::new();
        let at = scratch.at();
        let ahead = scratch.instance_an_hour_ahead();
        let ahead_at = scratch.at_with(&ahead);
        let line = hi();
        at.files("x").append(&line).unwrap();
        ahead_at.files("x").remove().unwrap();
        // The state lost (an empty lock file) where no session is left: a new index, but
        // the live journals still hold that delete's line.
        let state = scratch.state();
        std::fs::write(&state, b"").unwrap();
        at.files("x").append(&line).unwrap();
        assert_eq!(first_page(at), ["x"]);
    }

    #[test]
    fn copies_that_lost_their_counters_keep_their_place_and_their_writes_are_listed() {
        let scratch = Scratch::new();
        let at = scratch.at();
        let ahead = scratch.instance_an_hour_ahead();
        let ahead_at = scratch.at_with(&ahead);
        let line = hi();
        let an_hour_ago = unix_micros(SystemTime::now()) - 3_600_000_000;
        let meta = fusion_core::SessionMeta::new();
        let creation = copy_written_at(&meta, from_unix_micros(an_hour_ago));
        // Sessions written here, deleted by an instance whose clock runs an hour ahead,
        // which then copies sessions under their ids (without metadata): their creations
        // recorded after those deletes, an hour ahead of this clock. Then the counters of
        // one are lost (its lock file removed as stale), the other's after a listing.
        for id in ["listed", "written"] {
            at.files(id).append(&line).unwrap();
        }
        for id in ["listed", "written"] {
            ahead_at.files(id).remove().unwrap();
            ahead_at.files(id).create(creation, &line).unwrap();
        }
        let lose_counters = |id| {
            let lock = scratch.dir.path().join(file_name::lock_file_name(id));
            std::fs::remove_file(lock).unwrap();
        };
        lose_counters("listed");
        let lister = Lister { at };
        let page = lister.page(&SessionQuery::new()).unwrap();
        let listed: Vec<_> = (page.sessions.iter())
            .map(|s| {
                (
                    s.id.as_str(),
                    s.created_at.map(unix_micros),
                    s.updated_at.map(unix_micros),
                )
            })
            .collect();
        let copied = (Some(an_hour_ago), Some(an_hour_ago));
        // At their given times (ties newest id first).
        assert_eq!(
            listed,
            [
                ("written", copied.0, copied.1),
                ("listed", copied.0, copied.1)
            ]
        );
        lose_counters("written");
        // Written here, after a listing repaired its counters and without one: stamped
        // after the copy's recording all the same, so listed (not passed over as a line
        // of the deleted session's).
        for id in ["listed", "written"] {
            lister.at.files(id).append(&line).unwrap();
        }
        let page = lister.page(&SessionQuery::new()).unwrap();
        let ids: Vec<_> = page.sessions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["written", "listed"]);
    }

    #[test]
    fn pages_of_sessions_an_earlier_version_wrote_read_no_lines_above_their_cursor() {
        let (listed, reads) = page_through_sessions_an_earlier_version_wrote(
            Duration::from_secs(3600),
            Duration::from_micros(TIME_SLACK_US as u64) * 2,
        );
        assert_eq!(listed, 6);
        assert_eq!(reads, 0, "a page read above its cursor");
    }

    #[test]
    fn pages_of_sessions_written_close_to_their_cursor_read_above_it_once_each() {
        // Changed within the slack of file times before the cursor's: the lines above it
        // are read, once a page (two pages after the first), not once a session.
        let (listed, reads) = page_through_sessions_an_earlier_version_wrote(
            Duration::ZERO,
            Duration::from_millis(1),
        );
        assert_eq!(listed, 6);
        assert_eq!(reads, 2);
    }

    /// Found by a review: a listing filtered by a set too large to read whole checked the
    /// set's directories (three `lstat`s) again for every session it passed, a third more
    /// system calls per page; they are checked once per page.
    #[test]
    fn a_filtered_page_checks_the_set_s_directories_once_not_per_session() {
        let scratch = Scratch::new();
        let at = scratch.at();
        let meta = fusion_core::SessionMeta::new().owner("u").tags(["t"]);
        // More members than a page reads whole ([`MIN_SET`]), so each is asked for.
        for i in 0..=MIN_SET {
            let creation = Creation {
                meta: &meta,
                times: None,
            };
            at.files(&format!("s{i:04}"))
                .create(creation, &hi())
                .unwrap();
        }
        let lister = Lister { at };
        for query in [
            SessionQuery::new().owner("u").tag("t"),
            SessionQuery::new()
                .owner("u")
                .tag("t")
                .order(SessionOrder::Id),
        ] {
            let query = query.limit(50);
            let before = dir_lstats();
            let page = lister.page(&query).unwrap();
            let lstats = dir_lstats() - before;
            assert_eq!(page.sessions.len(), 50, "{query:?}");
            // Two sets' (index, owner|tag, its set) and the journals' (index, live).
            assert!(lstats <= 8, "{lstats} lstats for a page of 50, {query:?}");
        }
    }

    /// Found by a review: a build checked every directory on the way to each marker it
    /// restored (five `lstat`s for an expiry marker, three for an owner's or a tag's),
    /// eleven system calls per session more, 43% more in all; each is checked once.
    #[test]
    fn a_build_checks_each_directory_of_the_markers_once() {
        let scratch = Scratch::new();
        let at = scratch.at();
        let expiry = fusion_core::Expiry::At(SystemTime::now() + Duration::from_secs(3600));
        let meta = fusion_core::SessionMeta::new()
            .owner("u")
            .tags(["t"])
            .expiry(expiry);
        for i in 0..50 {
            let creation = Creation {
                meta: &meta,
                times: None,
            };
            at.files(&format!("s{i:02}"))
                .create(creation, &hi())
                .unwrap();
        }
        std::fs::remove_dir_all(scratch.dir.path().join(file_name::INDEX_DIR)).unwrap();
        let index = Arc::new(Index::new(scratch.dir.path()));
        let lister = Lister {
            at: scratch.at_with(&index),
        };
        let before = dir_lstats();
        let page = lister.page(&SessionQuery::new().limit(50)).unwrap();
        let lstats = dir_lstats() - before;
        assert_eq!(page.sessions.len(), 50);
        let markers = std::fs::read_dir(scratch.dir.path().join(".fusion-index/owner/u"));
        assert_eq!(markers.unwrap().count(), 50, "restored");
        // Made by the build: the expiry buckets (at most two leaves), the owner's and the
        // tag's directories, and the journals' checks after it; never one per session.
        assert!(lstats < 50, "{lstats} lstats for a build of 50 sessions");
    }

    /// Found by a review: a session whose file or metadata file could not be read for an
    /// error that passes (a limit of open files, memory) was left out of the page with a
    /// warning alone, and out of an index built meanwhile, though the next try would have
    /// listed it. The listing fails, retryable, instead; an error that lasts (a refused
    /// permission, a symbolic-link loop) still leaves the session out with a warning.
    #[test]
    fn a_file_unread_for_an_error_that_passes_fails_the_listing_as_retryable() {
        use std::io::{Error as OsError, ErrorKind};
        let scratch = Scratch::new();
        let at = scratch.at();
        let files = at.files("a");
        let meta = scratch.dir.path().join(file_name::meta_file_name("a"));
        // EMFILE, the same on every Unix.
        #[cfg(unix)]
        let open_file_limit = || OsError::from_raw_os_error(24);
        #[cfg(not(unix))]
        let open_file_limit = || OsError::from(ErrorKind::OutOfMemory);
        let passing = [
            Error::io(files.data(), open_file_limit()),
            Error::io(files.data(), OsError::from(ErrorKind::OutOfMemory)),
            crate::meta_file::unreadable(&meta, open_file_limit()),
        ];
        for err in passing {
            let path = match &err {
                Error::Io { path, .. } => path.clone(),
                _ => unreachable!(),
            };
            let failed = skip_damaged::<()>(&files, Err(err)).unwrap_err();
            assert!(failed.is_retryable(), "{failed}");
            let message = failed.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains("\"a\""), "{message}");
        }
        let lasting = [
            Error::io(files.data(), OsError::from(ErrorKind::PermissionDenied)),
            Error::io(files.data(), OsError::from(ErrorKind::NotADirectory)),
            crate::meta_file::unreadable(&meta, OsError::from(ErrorKind::PermissionDenied)),
        ];
        for err in lasting {
            assert!(skip_damaged::<()>(&files, Err(err)).unwrap().is_none());
        }
        // Any other failure is the listing's, as it was.
        let elsewhere = Error::io(scratch.dir.path(), open_file_limit());
        let failed = skip_damaged::<()>(&files, Err(elsewhere)).unwrap_err();
        assert!(matches!(failed, Error::Io { .. }), "{failed}");
    }
}
