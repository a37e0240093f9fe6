//! What an expiry does to a session under its lock: where it is read from, the removal of
//! an expired session before a write (which then finds it absent), and the purge of the
//! session an expiry marker names.

use fusion_core::{Error, Result, StoredExpiry};

use super::{Current, SessionFiles, exists, modified_us, now_micros};
use crate::counters::{Counters, LockContents};
use crate::error::IoContext;
use crate::index::{Recorded, marker_instant};
use crate::lock::SessionLock;
use crate::meta_file;

impl SessionFiles {
    /// The expiry of the session whose lock file holds `contents` and whose file is `len`
    /// bytes long: the counters' numbers (an idle expiry moved to the file's modification
    /// time if they describe another length: see `meta::stale_expiry`), or, if the
    /// counters are lost, the one its metadata file was set to, from the latest the
    /// session's last write may have been (`super::written_by`); `modified_us` gives the
    /// file's modification time, read only in those two cases. A damaged metadata file
    /// counts as no expiry here: its session is reported corrupt where the metadata is
    /// read. Any other failure to read it is the call's error (see
    /// [`recorded_meta`](Self::recorded_meta)).
    pub(super) fn expiry_of(
        &self,
        contents: &LockContents,
        len: u64,
        modified_us: impl FnOnce() -> i64,
    ) -> Result<StoredExpiry> {
        Ok(match contents.counters {
            Some(counters) if counters.len == len => counters.expiry,
            Some(counters) => super::meta::stale_expiry(&counters, modified_us()),
            None => match self.meta_expiry()? {
                Some(expiry) => StoredExpiry::of(Some(&expiry), super::written_by(modified_us())),
                None => StoredExpiry::NEVER,
            },
        })
    }

    /// Whether the session has expired, read under its shared lock: its lock file (and its
    /// metadata file only if the counters are lost). A session that does not exist has
    /// not.
    pub(crate) fn has_expired(&self) -> Result<bool> {
        if !exists(&self.data)? {
            return Ok(false);
        }
        let lock = SessionLock::shared(&self.lock)?;
        let contents = lock.contents(&self.lock)?;
        let now = now_micros();
        // Counters of another length only move an idle expiry later (see
        // `meta::stale_expiry`): whatever length they describe, counters that have not
        // expired leave the session alive, and the file is looked at (one `stat`, on
        // every listing's due sessions, or all of them without an index) only for those
        // that have, or for lost ones with an expiry.
        if contents
            .counters
            .is_some_and(|counters| !counters.expiry.is_expired_at(now))
        {
            return Ok(false);
        }
        let expiry = match contents.counters {
            Some(_) => {
                let Some(metadata) = self.stat_data()? else {
                    return Ok(false);
                };
                self.expiry_of(&contents, metadata.len(), || modified_us(&metadata))?
            }
            None => {
                // Looked at only if the metadata file has an expiry.
                let mut stat = None;
                let expiry = self.expiry_of(&contents, 0, || {
                    let found = self.stat_data();
                    let modified = match &found {
                        Ok(Some(metadata)) => modified_us(metadata),
                        _ => 0,
                    };
                    stat = Some(found);
                    modified
                })?;
                if let Some(None) = stat.transpose()? {
                    return Ok(false);
                }
                expiry
            }
        };
        Ok(expiry.is_expired_at(now))
    }

    /// The session file's metadata for [`has_expired`](Self::has_expired), read after
    /// its lock: `None` when the file is gone (a delete between the check that it exists
    /// and the lock, or a hand removal), so the session does not exist; any other failure
    /// is the call's error. (Taken for a file of length 0 modified in 1970, a failure made
    /// an idle session look expired, and a listing leave out a session that was there.)
    fn stat_data(&self) -> Result<Option<std::fs::Metadata>> {
        #[cfg(test)]
        {
            STATS.with(|stats| stats.set(stats.get() + 1));
            BEFORE_STAT.with(|hook| hook.take().map(|hook| hook(&self.data)));
        }
        match std::fs::metadata(&self.data) {
            Ok(metadata) => Ok(Some(metadata)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).at(&self.data),
        }
    }

    /// The expiry the metadata file records, if any (see [`Self::expiry_of`]).
    pub(super) fn meta_expiry(&self) -> Result<Option<fusion_core::Expiry>> {
        Ok(self.recorded_meta()?.and_then(|stored| stored.meta.expiry))
    }

    /// What the session's metadata file records, or `None` without one; a damaged one
    /// ([`Error::Corrupt`]) counts as none here too, its session reported corrupt where
    /// the metadata is read. Any other failure to read it (an I/O error) is the call's
    /// error: taken for no metadata, it would make a session whose counters are lost
    /// never expire, a write store counters that tie it to no metadata, and a delete
    /// leave its owner's and tags' markers behind.
    pub(super) fn recorded_meta(&self) -> Result<Option<meta_file::StoredMeta>> {
        match meta_file::read(&self.meta(), &self.id) {
            Err(Error::Corrupt { .. }) => Ok(None),
            read => read,
        }
    }

    /// Whether `err`, from a call on this session, is the failed read of its metadata
    /// file (an I/O error: not a damaged one, which reads as none, nor one gone, which is
    /// none), which a purge needs for the markers a removal names and for the expiry of a
    /// session whose counters are lost, and a listing for the session's facts. A purge or
    /// a listing leaves such a session out with a warning, its files and markers as they
    /// are, as it does a damaged one, rather than fail before every session after it. A
    /// failed removal or write of the file is not one: no damage of the session's own (a
    /// directory that cannot be written), it is the call's error.
    pub(crate) fn is_meta_error(&self, err: &Error) -> bool {
        meta_file::is_unreadable(err, &self.meta())
    }

    /// Under the exclusive lock, before a write: removes the session if it has expired,
    /// as `delete` does but keeping the lock file, which the write goes on holding. Returns
    /// the session file as the write must find it (absent after a removal, with the lock
    /// file's contents read for what follows otherwise) and the removal's index record.
    pub(super) fn expire_locked(
        &self,
        lock: &SessionLock,
        mut current: Current,
    ) -> Result<(Current, Option<Recorded>)> {
        if !current.exists() {
            return Ok((current, None));
        }
        let contents = lock.contents(&self.lock)?;
        let expiry = self.expiry_of(&contents, current.len, || current.modified_us)?;
        if !expiry.is_expired_at(now_micros()) {
            current.contents = Some(contents);
            return Ok((current, None));
        }
        drop(current);
        let recorded = self.remove_locked(lock, true, false)?;
        let current = Current {
            removed_here: true,
            ..Current::absent()
        };
        Ok((current, recorded))
    }

    /// Purges this session for its expiry marker at `marker`, if it has expired: under
    /// its exclusive lock, checked against the clock then, so a session written since it
    /// expired is kept (a write removed the expired one and began a new one). Returns
    /// whether it deleted the session. Whatever it finds, the marker at `marker` is gone
    /// afterwards: with the session, as stale, or moved to the session's current expiry.
    /// Without a marker (a purge that could not read the session's: its bucket is a
    /// link), an alive session is left as it is, its markers too.
    pub(crate) fn purge_if_expired(&self, marker: Option<i64>) -> Result<bool> {
        if !exists(&self.data)? && !exists(&self.lock)? {
            self.remove_marker(marker)?;
            return Ok(false);
        }
        let lock = self.lock_exclusive()?;
        let mut current = self.inspect()?;
        if current.exists() {
            // Read once, for the counters and for whether they describe the file.
            current.contents = Some(lock.contents(&self.lock)?);
        }
        let Some((generation, counters)) = self.counters_locked(&lock, &current)? else {
            // No session (a lock file alone, from a crash or a racing reader).
            if current.file.is_none() {
                self.unlink_alone(&lock, &current)?;
            }
            self.remove_marker(marker)?;
            return Ok(false);
        };
        if counters.expiry.is_expired_at(now_micros()) {
            let recorded = self.remove_locked(&lock, true, true)?;
            if counters.indexed != marker {
                self.remove_marker(marker)?;
            }
            self.finish(lock, &[recorded]);
            return Ok(true);
        }
        let Some(at) = marker else {
            return Ok(false);
        };
        // Alive: an idle session written since its marker was placed, an expiry moved
        // later, or none any more. One marker at its current instant replaces the others,
        // added before the counters name it.
        let indexed = counters.expiry.expires_at.map(marker_instant);
        if let Some(new) = indexed
            && counters.indexed != indexed
        {
            self.index.add_expiry(new, &self.id, self.sync_appends())?;
        }
        if counters.indexed != indexed {
            // Counters of another length stay so, but for the marker and the expiry it
            // is at: stored as describing the file, their last write (the file's
            // modification time, which no journal line records) would read as recorded,
            // and listings would look for the session at a line it has not.
            let stale = current
                .contents
                .and_then(|contents| contents.counters)
                .filter(|stored| stored.len != counters.len);
            let counters = match stale {
                Some(stored) => Counters {
                    indexed,
                    expiry: counters.expiry,
                    ..stored
                },
                None => Counters {
                    indexed,
                    ..counters
                },
            };
            lock.store(&self.lock, generation, &counters, false)?;
        }
        for old in [Some(at), counters.indexed] {
            if let Some(old) = old.filter(|old| Some(*old) != indexed) {
                self.index.remove_expiry(old, &self.id)?;
            }
        }
        Ok(false)
    }

    /// Removes the session's expiry marker at `marker`, if there is one to remove.
    fn remove_marker(&self, marker: Option<i64>) -> Result<()> {
        match marker {
            Some(at) => self.index.remove_expiry(at, &self.id),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
thread_local! {
    static STATS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Run on the session file's path just before [`SessionFiles::stat_data`] reads it:
    /// what a test does in the window between the lock and the `stat`.
    #[allow(clippy::type_complexity)]
    static BEFORE_STAT: std::cell::Cell<Option<Box<dyn FnOnce(&std::path::Path)>>> =
        const { std::cell::Cell::new(None) };
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::{Duration, SystemTime};

    use fusion_core::{Expiry, SessionMeta};

    use super::super::tests::{batch, session};
    use super::super::write::Creation;
    use super::*;
    use crate::SyncPolicy;
    use crate::counters;
    use crate::index::SetKey;

    /// The idle span of [`idle_session`].
    const IDLE: Duration = Duration::from_secs(1800);

    /// Session `s` in `dir`, under `EveryWrite`, created with one message and an idle
    /// expiry of [`IDLE`].
    fn idle_session(dir: &std::path::Path) -> SessionFiles {
        let files = session(dir, "s", SyncPolicy::EveryWrite);
        let meta = SessionMeta::new().expiry(Expiry::Idle(IDLE));
        let creation = Creation {
            meta: &meta,
            times: None,
        };
        files.create(creation, &batch("a")).unwrap();
        files
    }

    /// `has_expired` of a session whose counters say its idle expiry has passed, so that
    /// the check reads the session file's time, with counters kept or lost: a file gone
    /// between the lock and the `stat` (a delete in the window after the check that it
    /// exists) is a session that does not exist, not expired; any other failure of the
    /// `stat` (a file replaced by a symbolic link to itself) is the call's error. Both used
    /// to read as a file of length 0 modified in 1970: expired, so a listing left out a
    /// session it could not look at.
    #[test]
    fn an_expiry_check_whose_stat_fails_reports_it_and_a_file_gone_has_not_expired() {
        let dir = tempfile::tempdir().unwrap();
        let files = idle_session(dir.path());
        let mut stored = counters::parse(&fs::read(&files.lock).unwrap());
        let counters = stored.counters.as_mut().unwrap();
        counters.updated_us -= 3_600_000_000;
        counters.expiry.expires_at = Some(counters.updated_us + 1_800_000_000);
        let expired_counters = counters::format(stored.generation.unwrap(), counters);
        // The same session with its counters lost: the metadata file's expiry counts from
        // the file's time.
        let lost = counters::format_generation(stored.generation.unwrap()).into_bytes();
        let data = files.data.clone();
        let original = fs::read(&data).unwrap();
        let looped = |path: &std::path::Path| {
            fs::remove_file(path).unwrap();
            std::os::unix::fs::symlink(path, path).unwrap();
        };
        for lock_file in [expired_counters, lost] {
            fs::write(&files.lock, &lock_file).unwrap();
            BEFORE_STAT.with(|hook| hook.set(Some(Box::new(looped))));
            let err = files.has_expired().unwrap_err();
            assert!(matches!(err, fusion_core::Error::Io { .. }), "{err:?}");
            fs::remove_file(&data).unwrap();
            fs::write(&data, &original).unwrap();
            let gone = |path: &std::path::Path| fs::remove_file(path).unwrap();
            BEFORE_STAT.with(|hook| hook.set(Some(Box::new(gone))));
            assert!(!files.has_expired().unwrap());
            fs::write(&data, &original).unwrap();
        }
    }

    /// A purge that moves the marker of a session whose counters describe an earlier
    /// length (a power loss kept an append's line, not its counters) stores the marker's
    /// instant and the expiry the file's time moved (from the latest the lost write may
    /// have been), and leaves the counters stale: stored as describing the file, their
    /// last write (that time, which no journal line records) would read as recorded, and
    /// listings would look for the session there.
    #[test]
    fn a_purge_moving_the_marker_of_a_session_with_stale_counters_leaves_them_stale() {
        let dir = tempfile::tempdir().unwrap();
        let files = idle_session(dir.path());
        let stored = |files: &SessionFiles| {
            counters::parse(&fs::read(&files.lock).unwrap())
                .counters
                .unwrap()
        };
        let first = stored(&files);
        let lock_file = fs::read(&files.lock).unwrap();
        files.append(&batch("b")).unwrap();
        fs::write(&files.lock, &lock_file).unwrap();
        let modified_us = first.updated_us + 3_600_000_000;
        let modified =
            SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(modified_us).unwrap());
        let file = fs::File::options().write(true).open(&files.data).unwrap();
        file.set_modified(modified).unwrap();
        drop(file);

        assert!(
            !files
                .purge_if_expired(Some(first.indexed.unwrap()))
                .unwrap()
        );
        // From the latest the lost write may have been.
        let written = modified_us + super::super::FILE_TIME_SLACK_US;
        let expires_at = written + i64::try_from(IDLE.as_micros()).unwrap();
        let after = stored(&files);
        assert_eq!(after.indexed, Some(expires_at));
        assert_eq!(after.expiry.expires_at, Some(expires_at));
        assert_eq!((after.len, after.updated_us), (first.len, first.updated_us));
        let info = files.info().unwrap().unwrap();
        assert_eq!(info.updated_at, Some(modified));
        assert_eq!(info.message_count, 2);
    }

    /// A listing's check of a session with counters whose expiry is ahead (the common
    /// case: an idle session written since its marker was placed) costs no `stat` of its
    /// file, as before counters of another length moved an expiry; one that stale
    /// counters' expiry says has expired still looks at the file, which may move it.
    #[test]
    fn an_expiry_check_of_counters_not_expired_stats_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = idle_session(dir.path());
        let stats = || STATS.with(std::cell::Cell::get);
        let before = stats();
        assert!(!files.has_expired().unwrap());
        assert_eq!(stats() - before, 0);

        // Counters of an earlier length whose idle expiry has passed, of a file written
        // since: the file's time keeps the session.
        let mut stale = counters::parse(&fs::read(&files.lock).unwrap());
        files.append(&batch("b")).unwrap();
        let counters = stale.counters.as_mut().unwrap();
        counters.updated_us -= 3_600_000_000;
        counters.expiry.expires_at = Some(counters.updated_us + 1_800_000_000);
        fs::write(
            &files.lock,
            counters::format(stale.generation.unwrap(), counters),
        )
        .unwrap();
        assert!(!files.has_expired().unwrap());
        assert_eq!(stats() - before, 1);
    }

    /// A purge that moves the marker of a session whose counters describe its file (the
    /// common case: an idle session written since its marker was placed) reads its lock
    /// file once, as before counters of another length were kept so.
    #[test]
    fn a_purge_moving_a_marker_reads_the_lock_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let files = idle_session(dir.path());
        // Its marker as an earlier write left it, before this one moved the expiry.
        let mut stored = counters::parse(&fs::read(&files.lock).unwrap());
        let counters = stored.counters.as_mut().unwrap();
        let current = counters.indexed.unwrap();
        let earlier = current - 60_000_000;
        counters.indexed = Some(earlier);
        let formatted = counters::format(stored.generation.unwrap(), counters);
        fs::write(&files.lock, formatted).unwrap();
        let before = crate::lock::contents_read();
        assert!(!files.purge_if_expired(Some(earlier)).unwrap());
        assert_eq!(crate::lock::contents_read() - before, 1);
        let after = counters::parse(&fs::read(&files.lock).unwrap());
        assert_eq!(after.counters.unwrap().indexed, Some(current));
    }

    /// A metadata file that cannot be read (an I/O error: here a symbolic link to itself)
    /// fails every call that needs it, those of a session whose counters are lost: an
    /// expiry check, a read, a write. Taken for no metadata, as a damaged one is, it made
    /// such a session never expire, and a write store counters with a creation time of
    /// the files', tying the session to no metadata: its owner, tags and expiry lost. A
    /// damaged metadata file still counts as none for its expiry.
    #[test]
    fn a_metadata_file_that_cannot_be_read_fails_what_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let files = session(dir.path(), "s", SyncPolicy::EveryWrite);
        let meta = SessionMeta::new().owner("o").expiry(Expiry::Idle(IDLE));
        let creation = Creation {
            meta: &meta,
            times: None,
        };
        files.create(creation, &batch("a")).unwrap();
        let stored = counters::parse(&fs::read(&files.lock).unwrap());
        let lost = counters::format_generation(stored.generation.unwrap());
        fs::write(&files.lock, lost).unwrap();
        let data = fs::read(&files.data).unwrap();
        let meta_path = files.meta();
        let recorded = fs::read(&meta_path).unwrap();
        fs::remove_file(&meta_path).unwrap();
        std::os::unix::fs::symlink(&meta_path, &meta_path).unwrap();
        let io = |what: &str, err: Option<Error>| match err {
            Some(Error::Io { .. }) => {}
            other => panic!("{what}: {other:?}"),
        };
        io("has_expired", files.has_expired().err());
        io("read", files.read().err());
        io("append", files.append(&batch("b")).err());
        assert_eq!(fs::read(&files.data).unwrap(), data, "nothing appended");

        fs::remove_file(&meta_path).unwrap();
        fs::write(&meta_path, b"{").unwrap();
        assert!(!files.has_expired().unwrap(), "damaged: no expiry");
        fs::write(&meta_path, &recorded).unwrap();
        let info = files.info().unwrap().unwrap();
        assert_eq!((info.message_count, info.meta.owner), (1, Some("o".into())));
        assert_eq!(info.meta.expiry, Some(Expiry::Idle(IDLE)));
    }

    /// A delete whose metadata file cannot be read (an I/O error: a symbolic link to
    /// itself) fails before it removes anything, the session and its owner's and tags'
    /// markers left as they were, and succeeds whole once the file can be read. It used to
    /// take the file for none, as a damaged one is, and leave those markers behind.
    #[test]
    fn a_delete_whose_metadata_file_cannot_be_read_fails_and_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = session(dir.path(), "s", SyncPolicy::EveryWrite);
        let meta = SessionMeta::new().owner("o").tags(["t"]);
        let creation = Creation {
            meta: &meta,
            times: None,
        };
        files.create(creation, &batch("a")).unwrap();
        let member = |key| files.index.is_member(key, "s").unwrap();
        let markers = || [SetKey::Owner("o"), SetKey::Tag("t")].map(member);
        assert_eq!(markers(), [true, true]);
        let meta_path = files.meta();
        let recorded = fs::read(&meta_path).unwrap();
        fs::remove_file(&meta_path).unwrap();
        std::os::unix::fs::symlink(&meta_path, &meta_path).unwrap();
        let err = files.remove().unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(files.data.exists(), "the session is still there");
        assert_eq!(markers(), [true, true]);

        fs::remove_file(&meta_path).unwrap();
        fs::write(&meta_path, &recorded).unwrap();
        assert_eq!(
            files.info().unwrap().unwrap().meta.owner.as_deref(),
            Some("o")
        );
        files.remove().unwrap();
        assert_eq!(markers(), [false, false]);
        assert!(!files.data.exists() && !meta_path.exists());
    }
}
