//! The blocking file work for one session: locking, reading, appending, atomic replacement,
//! generations and conditional writes.
//!
//! # Locking
//!
//! Every operation on a session first locks that session's own lock file
//! (`.{stem}.lock`, next to `{stem}.jsonl`): exclusively for `append`, `save`, `truncate`,
//! `delete` and `write_if`, shared for `load`, `load_revision` and `session_info`. The
//! locks are the operating system's advisory file locks (`flock` on Unix, `LockFileEx` on
//! Windows, through [`File::lock`](std::fs::File::lock)), which work between processes
//! and between separately opened handles in one process, so storage instances never need
//! to know about each other.
//!
//! The lock lives in a separate file, not on the session file itself, because `save`
//! replaces the session file by renaming a new one over it. A writer that had opened (and
//! was waiting to lock) the old file would, once the lock was released, append into an
//! unlinked inode and its messages would vanish. The session file is only opened *after*
//! the lock is held, so it is always the current one.
//!
//! The lock file itself lives as long as its session: `delete` (and a `truncate` to 0 or a
//! replacement with nothing) removes the session file and then the lock file, while holding
//! the exclusive lock. Whoever had opened the lock file before and was waiting for it then
//! holds a lock on an unlinked file that nobody else will ever take; so after every lock,
//! shared or exclusive, the holder checks that the path still names the file it locked
//! (the device and inode of its handle against those of the path) and, if not, opens the
//! path again and retries. A file created meanwhile by a newer writer is the one everybody
//! locks from then on. Where that check is unavailable (not Unix) lock files are never
//! removed, only emptied. A reader that races a delete may leave an empty lock file behind;
//! the next `delete` of that id removes it.
//!
//! # Generations and counters
//!
//! The lock file also stores the session's generation (see [`fusion_core::Revision`]) and
//! its counters: creation and update times, message count and the file length they
//! describe (see [`crate::counters`]). The generation of a session is 0 (absent) if its
//! file holds no data, whatever the lock file says; otherwise it is the stored number, or
//! [`LEGACY_GENERATION`](fusion_core::LEGACY_GENERATION) for a lock file without one (a
//! session written before generations existed). A rewrite stores a fresh generation,
//! fsynced, *before* it replaces the session file, and an append that creates the
//! session stores one before writing its lines, so a crash in between leaves a new
//! generation with the old content: a spurious conflict later, never a missed one. A
//! rewrite that fails without a crash before its new file is in place (a full disk) puts
//! the old generation and counters back; once the rename is done the new generation
//! stays, whatever fails after it. Other
//! appends keep the generation and store their counters after their lines: counters
//! whose length is not the file's (a crash in between) are recomputed by counting lines.
//! A write conditional on the last write ([`Expect::UnwrittenSince`]) compares the
//! counters' update time, read with the generation under the exclusive lock, which a
//! metadata update takes too: none lands between the check and the write.
//!
//! # Metadata and the index
//!
//! Every write first asks the [`Index`] for its timestamp, which appends the journal
//! line that places the session in listings, and only then changes the session (see
//! [`crate::index`] for why that order keeps the index a superset). Owner, title, tags
//! and data live in the metadata file ([`crate::meta_file`]), written only by
//! `create_session` and `update_session`; the membership markers of the owner and tags
//! are added before the metadata names them and removed after it stops.
//!
//! # Expiry
//!
//! A session's expiry lives in its counters ([`crate::counters`]), so every reader checks
//! it with the lock file it reads anyway, and every write moves an idle one with the
//! counters it stores anyway. From its instant on, the session is absent: readers report
//! nothing, and every write, under its exclusive lock, first removes it as `delete` does
//! but keeps the lock file it holds ([`retention`]), then goes on as for a new session.
//!
//! Advisory locks bind only programs that take them; a person appending with `echo >>`
//! while Fusion runs is not excluded. On network file systems `flock` may be local to
//! one machine (older NFS), so share a directory between hosts only on a file system with
//! working locks.

mod dedup;
mod inspect;
mod meta;
mod read;
mod retention;
mod stopped;
mod write;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::SystemTime;

use fusion_core::{Error, Expect, Result, from_unix_micros, unix_micros};

use crate::batch::Batch;
use crate::error::{BACKEND, IoContext};
use crate::file_name;
use crate::index::{Index, Recorded};
use crate::jsonl;
use crate::lock::SessionLock;
use crate::options::SyncPolicy;
use crate::recent_cache::RecentCache;

use inspect::{Current, TAIL_CHUNK, read_exact_at};
pub(crate) use write::{Creation, Times};

pub(crate) use crate::dirs::sync_dir;

/// The write of a conditional write, serialised.
#[derive(Debug)]
pub(crate) enum FileChange {
    /// Messages to append, those the session holds already left out.
    Append(Batch),
    /// How many lines to keep.
    Truncate(usize),
    /// The new file contents (empty deletes the session), and whether that is the
    /// session's latest write or a rewrite that keeps its times.
    Replace(Vec<u8>, Times),
}

/// What a write did to the generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Kept it (an append to an existing session, or nothing to do).
    Kept,
    /// Gave the session this fresh one.
    New(u64),
    /// Removed the session.
    Removed,
}

/// A session directory and what writing any of its sessions needs: what single-session
/// calls, listings and purges open a session's files from.
#[derive(Clone, Copy)]
pub(crate) struct Directory<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) index: &'a Arc<Index>,
    pub(crate) sync: SyncPolicy,
    /// The instance's remembered ids of its sessions (`crate::recent_cache`).
    pub(crate) recent: &'a Arc<RecentCache>,
}

impl Directory<'_> {
    /// The files of the already validated session `id`.
    pub(crate) fn files(&self, id: &str) -> SessionFiles {
        SessionFiles::new(
            self.dir,
            id,
            self.index.clone(),
            self.sync,
            self.recent.clone(),
        )
    }
}

/// The paths of one session's files, and what every write of it needs.
#[derive(Debug)]
pub(crate) struct SessionFiles {
    id: String,
    dir: PathBuf,
    data: PathBuf,
    lock: PathBuf,
    index: Arc<Index>,
    sync: SyncPolicy,
    /// The last ids of the sessions this instance appended to.
    recent: Arc<RecentCache>,
}

impl SessionFiles {
    /// The files of the already validated session `id` in `dir`, written with `sync`, with
    /// the instance's `recent` ids of its sessions.
    pub(crate) fn new(
        dir: &Path,
        id: &str,
        index: Arc<Index>,
        sync: SyncPolicy,
        recent: Arc<RecentCache>,
    ) -> Self {
        Self {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            data: dir.join(file_name::session_file_name(id)),
            lock: dir.join(file_name::lock_file_name(id)),
            index,
            sync,
            recent,
        }
    }

    /// The session id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The session file.
    pub(crate) fn data(&self) -> &Path {
        &self.data
    }

    /// The temporary file a `save` writes. This and the two below are built when needed
    /// rather than with the others: an append, the usual call, touches none of them.
    fn temp(&self) -> PathBuf {
        self.dir.join(file_name::temp_file_name(&self.id))
    }

    /// The metadata file.
    fn meta(&self) -> PathBuf {
        self.dir.join(file_name::meta_file_name(&self.id))
    }

    /// The temporary file a metadata write renames over the metadata file.
    fn meta_temp(&self) -> PathBuf {
        self.dir.join(file_name::meta_temp_file_name(&self.id))
    }

    /// Whether appends are fsynced.
    fn sync_appends(&self) -> bool {
        self.sync == SyncPolicy::EveryWrite
    }

    /// Appends the messages of `batch` the session does not hold yet with one `write()`,
    /// first cutting off a torn tail.
    pub(crate) fn append(&self, batch: &Batch) -> Result<()> {
        let lock = self.lock_exclusive()?;
        let (current, expired) = self.expire_locked(&lock, self.inspect()?)?;
        let (_, recorded) = self.append_locked(&lock, current, batch, None)?;
        self.finish(lock, &[expired, recorded]);
        Ok(())
    }

    /// The common append, made only if it can be made without waiting, for a caller that
    /// must not block: `None`, having changed nothing, unless the session exists, nobody
    /// holds its lock, its file ends in a complete batch (checked with the one read of its
    /// end every append makes, no torn tail) that its counters describe, it has not
    /// expired, the batch's ids (if any) need no read of the session's last lines to
    /// check, and appends are not fsynced. Then it is [`append`](Self::append), or with
    /// `expected` the append of [`write_if`](Self::write_if) (the counters give the
    /// length [`Expect::Exactly`] compares, and the last write [`Expect::UnwrittenSince`]
    /// compares besides), and returns the generation after it and the index upkeep it
    /// made due, if any, for the caller to run where a long call may block.
    ///
    /// Every error but the expectation's conflict also reads as `None` until the write
    /// starts: the caller then makes the append the usual way, which reports it.
    ///
    /// Should this instance's memory of the session's last ids lose the session's entry
    /// between the check here and the append (another session's entry evicting it from a
    /// full cache, at that instant), the append reads the last lines as the usual one
    /// does: rare, and still correct.
    pub(crate) fn try_append_now(
        &self,
        expected: Option<Expect>,
        batch: &Batch,
    ) -> Option<Result<(u64, Option<Recorded>)>> {
        if self.sync_appends() {
            return None;
        }
        let lock = SessionLock::try_exclusive(&self.lock).ok()??;
        let mut current = self.inspect_peeking().ok()??;
        let contents = lock.contents(&self.lock).ok()?;
        let counters = contents.counters.filter(|c| c.len == current.len)?;
        // A hard-linked file is copied first (`unshare`), which fsyncs: not inline.
        let clean = current.exists() && current.data_end == current.len && !current.shared;
        if !clean || counters.expiry.is_expired_at(now_micros()) {
            return None;
        }
        let generation = crate::lock::generation_of(&contents, &self.lock);
        current.contents = Some(contents);
        if !self.knows_unstored(&current, batch) {
            return None;
        }
        if let Some(expected) = expected {
            let count = usize::try_from(counters.count).ok()?;
            let updated = || Ok(counters.updated_us);
            if let Some(conflict) = self
                .unmet(expected, generation, || Ok(count), updated)
                .ok()?
            {
                return Some(Err(conflict));
            }
        }
        let appended = self.append_locked(&lock, current, batch, None);
        drop(lock);
        Some(appended.map(|(_, recorded)| (generation, recorded.filter(Recorded::is_due))))
    }

    /// Replaces the whole session file with `contents` (`count` messages), atomically and
    /// durably.
    pub(crate) fn replace(&self, contents: &[u8], count: u64) -> Result<()> {
        let lock = self.lock_exclusive()?;
        let (current, expired) = self.expire_locked(&lock, self.inspect()?)?;
        let (_, recorded) = self.rewrite_locked(&lock, &current, contents, count, Times::Write)?;
        self.finish(lock, &[expired, recorded]);
        Ok(())
    }

    /// Removes the session file, its metadata and its lock file. An unknown session is not
    /// an error.
    pub(crate) fn remove(&self) -> Result<()> {
        // A lock file alone is what a crash mid-delete, or a read racing one, leaves.
        if !exists(&self.data)? && !exists(&self.lock)? {
            return Ok(());
        }
        let lock = self.lock_exclusive()?;
        let current = self.inspect()?;
        let recorded = self.remove_locked(&lock, current.exists(), true)?;
        self.finish(lock, &[recorded]);
        Ok(())
    }

    /// Keeps the first `len` lines, atomically and durably.
    ///
    /// Lines are counted, not parsed, so this also recovers a session whose later lines
    /// are damaged: truncating to just before the bad line makes it loadable again.
    pub(crate) fn truncate(&self, len: usize) -> Result<()> {
        if !exists(&self.data)? {
            return Ok(());
        }
        let lock = self.lock_exclusive()?;
        let (current, expired) = self.expire_locked(&lock, self.inspect()?)?;
        if expired.is_some() {
            // Nothing is left to keep; nor is the lock file, as after a `delete`.
            self.unlink_alone(&lock, &current)?;
        }
        let (_, recorded) = self.truncate_locked(&lock, current, len)?;
        self.finish(lock, &[expired, recorded]);
        Ok(())
    }

    /// Applies `change` if the session meets `expected`, all under the exclusive lock;
    /// returns the generation after it. See the module docs for what is read.
    pub(crate) fn write_if(&self, expected: Expect, change: FileChange) -> Result<u64> {
        let lock = self.lock_exclusive()?;
        let (current, expired) = self.expire_locked(&lock, self.inspect()?)?;
        let generation = match &current.contents {
            Some(contents) if current.exists() => crate::lock::generation_of(contents, &self.lock),
            _ if current.exists() => lock.generation(&self.lock)?,
            _ => 0,
        };
        let count = || Ok(jsonl::line_count(&self.read_locked(&current)?));
        // Read under this lock, which `update_session` takes too: no write of the
        // metadata lands between this check and the change.
        let updated = || self.updated_locked(&lock, &current);
        if let Some(conflict) = self.unmet(expected, generation, count, updated)? {
            if current.file.is_none() {
                // No session: leave no lock file behind for it (say, after a delete).
                self.unlink_alone(&lock, &current)?;
            }
            self.finish(lock, &[expired]);
            return Err(conflict);
        }
        let (outcome, recorded) = match change {
            FileChange::Append(batch) => self.append_locked(&lock, current, &batch, None)?,
            FileChange::Truncate(_) if current.file.is_none() => {
                // Nothing to truncate: leave no lock file behind (nor the counters of an
                // expired session just removed).
                self.unlink_alone(&lock, &current)?;
                (Outcome::Kept, None)
            }
            FileChange::Truncate(len) => self.truncate_locked(&lock, current, len)?,
            FileChange::Replace(contents, _) if contents.is_empty() => {
                let recorded = self.remove_locked(&lock, current.exists(), true)?;
                (Outcome::Removed, recorded)
            }
            FileChange::Replace(contents, times) => {
                let count = jsonl::line_count(&contents) as u64;
                self.rewrite_locked(&lock, &current, &contents, count, times)?
            }
        };
        self.finish(lock, &[expired, recorded]);
        Ok(match outcome {
            Outcome::Kept => generation,
            Outcome::New(generation) => generation,
            Outcome::Removed => 0,
        })
    }

    /// The conflict if the session, at `generation` (0: it does not exist), does not meet
    /// `expected`; its messages are counted by `count`, and the latest it may have been
    /// last written read by `updated` (Unix microseconds: [`SessionFiles::updated_locked`],
    /// up to 2 s after what [`SessionFiles::info`] reports where counters were lost), only
    /// where the answer depends on them: `updated` only for [`Expect::UnwrittenSince`] of
    /// the session's exact revision, so no other expectation pays for it.
    fn unmet(
        &self,
        expected: Expect,
        generation: u64,
        count: impl FnOnce() -> Result<usize>,
        updated: impl FnOnce() -> Result<i64>,
    ) -> Result<Option<Error>> {
        let len = match expected.revision() {
            Some(read) if generation != 0 && read.generation == generation => Some(count()?),
            _ => None,
        };
        let updated_at = match expected {
            Expect::UnwrittenSince { revision, .. } if len == Some(revision.len) => {
                Some(from_unix_micros(updated()?))
            }
            _ => None,
        };
        Ok(
            (!expected.is_met_by(generation, || len.unwrap_or(0), || updated_at))
                .then(|| expected.conflict(BACKEND, &self.id, generation, len)),
        )
    }

    /// Releases the session's lock, then runs the index upkeep the write (and the removal
    /// of an expired session before it) made due, so that no other writer of this session
    /// waits for it.
    fn finish(&self, lock: SessionLock, recorded: &[Option<Recorded>]) {
        drop(lock);
        for recorded in recorded.iter().flatten() {
            self.index.upkeep(*recorded);
        }
    }

    /// Takes the session's exclusive lock, creating the directory on first use. The
    /// instance's first such lock also makes the directory's entry durable in its parent
    /// (see [`crate::synced_dirs`]): another writer may have made it without syncing it,
    /// and every write a policy makes durable takes this lock. Before the lock, so that no
    /// other writer of the session waits for that fsync.
    fn lock_exclusive(&self) -> Result<SessionLock> {
        let dirs = self.index.synced_dirs();
        if !dirs.known(&self.dir) {
            dirs.create(&self.dir)?;
        }
        SessionLock::exclusive(&self.dir, &self.lock)
    }
}

/// The clock, as expiries are compared with it.
pub(crate) fn now_micros() -> i64 {
    unix_micros(SystemTime::now())
}

/// A file's modification time: the `updated_at` of a session written before counters.
fn modified_us(metadata: &fs::Metadata) -> i64 {
    metadata.modified().map_or(0, unix_micros)
}

/// How far a file's times may fall before the time of the write that set them, in
/// microseconds: file systems keep times as coarse as 2 s (FAT), and the kernel's clock for
/// them lags the one a write's time is read from by up to a tick.
pub(crate) const FILE_TIME_SLACK_US: i64 = 2_000_000;

/// The latest time the last write to a file modified at `modified_us` may have been
/// stamped at: where the file's time stands in for that write's lost counters, what
/// decides against the session (a delete conditional on no write since a cutoff, an idle
/// expiry) takes this, so that a write stamped a tick after the time its file got is not
/// taken for one before a cutoff inside that tick. `session_info` still reports the
/// file's time itself, a listing the time its journal line recorded.
fn written_by(modified_us: i64) -> i64 {
    modified_us.saturating_add(FILE_TIME_SLACK_US)
}

fn exists(path: &Path) -> Result<bool> {
    match fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err).at(path),
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use fusion_core::ChatMessage;

    use super::inspect::TAIL_PEEK;
    use super::*;

    pub(super) fn session(dir: &Path, id: &str, sync: SyncPolicy) -> SessionFiles {
        SessionFiles::new(dir, id, Arc::new(Index::new(dir)), sync, Arc::default())
    }

    pub(super) fn batch(text: &str) -> Batch {
        Batch::encode(&[ChatMessage::user(text)]).unwrap()
    }

    pub(super) fn stored(files: &SessionFiles) -> Vec<u8> {
        fs::read(files.data()).unwrap()
    }

    /// The generation stored for the session of `files`.
    fn generation(files: &SessionFiles) -> u64 {
        let lock = SessionLock::shared(&files.lock).unwrap();
        lock.generation(&files.lock).unwrap()
    }

    /// Asserts that `files` declines to append `batch` at once, and leaves the file as it
    /// was.
    fn assert_declined(files: &SessionFiles, batch: &Batch) {
        let before = stored(files);
        assert!(files.try_append_now(None, batch).is_none());
        assert_eq!(stored(files), before);
    }

    #[test]
    fn only_the_common_append_is_made_at_once_and_the_others_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = session(dir.path(), "s", SyncPolicy::OnReplace);
        // A creation is not the common append.
        assert!(files.try_append_now(None, &batch("a")).is_none());
        assert!(!files.data().exists());
        files.append(&batch("a")).unwrap();
        assert!(matches!(
            files.try_append_now(None, &batch("b")),
            Some(Ok((_, None)))
        ));
        assert_eq!(jsonl::line_count(&stored(&files)), 2);

        // The lock is held by another handle (another task or process).
        let held = SessionLock::exclusive(dir.path(), &files.lock).unwrap();
        assert_declined(&files, &batch("c"));
        drop(held);

        // A line the counters do not describe (written by hand).
        let mut file = OpenOptions::new().append(true).open(files.data()).unwrap();
        file.write_all(b"{\"role\":\"user\",\"content\":\"by hand\"}\n")
            .unwrap();
        assert_declined(&files, &batch("c"));
        // The usual append counts the lines again; then the common one is back.
        files.append(&batch("c")).unwrap();
        assert!(matches!(
            files.try_append_now(None, &batch("d")),
            Some(Ok((_, None)))
        ));

        // A torn tail longer than the one read of the end.
        file.write_all(&[b'x'; 2 * TAIL_PEEK as usize]).unwrap();
        assert_declined(&files, &batch("e"));
        files.append(&batch("e")).unwrap();
        let text = String::from_utf8(stored(&files)).unwrap();
        assert_eq!(jsonl::line_count(text.as_bytes()), 6, "{text}");
        assert!(!text.contains("xxx"), "the torn tail is cut: {text}");

        // Appends that are fsynced wait for the disk.
        let synced = session(dir.path(), "s", SyncPolicy::EveryWrite);
        assert!(synced.try_append_now(None, &batch("f")).is_none());
        assert_eq!(jsonl::line_count(&stored(&files)), 6);
    }

    #[test]
    fn a_delete_fsyncs_the_index_state_that_keeps_it_whatever_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        let files = session(dir.path(), "s", SyncPolicy::OnReplace);
        files.append(&batch("a")).unwrap();
        let before = files.index.state_syncs();
        files.remove().unwrap();
        assert_eq!(files.index.state_syncs(), before + 1, "the delete's state");
        // A delete that stopped past its line leaves the lock file holding counters;
        // whoever removes that file raises the state's latest delete first, durably.
        files.append(&batch("b")).unwrap();
        fs::remove_file(files.data()).unwrap();
        let before = files.index.state_syncs();
        files.remove().unwrap();
        assert!(!files.lock.exists());
        assert_eq!(files.index.state_syncs(), before + 1, "the raised state");
    }

    #[test]
    fn a_rewrite_that_fails_keeps_the_generation_and_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let files = session(dir.path(), "s", SyncPolicy::OnReplace);
        files.append(&batch("a")).unwrap();
        files.append(&batch("b")).unwrap();
        let (before, content) = (generation(&files), stored(&files));
        // The temporary file cannot be written (as on a full disk).
        fs::create_dir(files.temp()).unwrap();
        let two_lines = stored(&files);
        assert!(files.replace(&two_lines[..two_lines.len() / 2], 1).is_err());
        assert!(files.truncate(1).is_err());
        assert_eq!(generation(&files), before);
        assert_eq!(stored(&files), content);
        // With room again, a rewrite stores a fresh generation.
        fs::remove_dir(files.temp()).unwrap();
        files.truncate(1).unwrap();
        assert_ne!(generation(&files), before);
        assert_eq!(jsonl::line_count(&stored(&files)), 1);
    }

    #[test]
    fn a_conditional_append_is_checked_against_the_counters_it_reads() {
        use fusion_core::Revision;

        let dir = tempfile::tempdir().unwrap();
        let files = session(dir.path(), "s", SyncPolicy::OnReplace);
        files.append(&batch("a")).unwrap();
        let generation = generation(&files);
        let exactly = |len| Expect::Exactly(Revision { generation, len });
        let refused = [
            Expect::Generation(generation + 1),
            exactly(2),
            Expect::Exactly(Revision {
                generation: generation + 1,
                len: 1,
            }),
        ];
        for expected in refused {
            let before = stored(&files);
            let outcome = files.try_append_now(Some(expected), &batch("b"));
            assert!(
                matches!(outcome, Some(Err(Error::Conflict { .. }))),
                "{expected:?}: {outcome:?}"
            );
            assert_eq!(stored(&files), before);
        }
        // Each accepted append moves the count `Exactly` compares with.
        for (expected, lines) in [
            (exactly(1), 2),
            (Expect::Generation(generation), 3),
            (exactly(3), 4),
        ] {
            let outcome = files.try_append_now(Some(expected), &batch("b"));
            assert!(
                matches!(outcome, Some(Ok((g, None))) if g == generation),
                "{expected:?}: {outcome:?}"
            );
            assert_eq!(jsonl::line_count(&stored(&files)), lines);
        }
    }

    /// The conformance suite's writes conditional on the last write are never made at
    /// once (a delete, a creation): the append made at once compares the `updated_at` of
    /// the counters it reads, which a metadata write moves, to the microsecond.
    #[test]
    fn an_append_at_once_compares_the_last_write_its_counters_record() {
        use std::time::Duration;

        use fusion_core::{MetaUpdate, Revision};

        let dir = tempfile::tempdir().unwrap();
        let files = session(dir.path(), "s", SyncPolicy::OnReplace);
        files.append(&batch("a")).unwrap();
        let revision = Revision {
            generation: generation(&files),
            len: 1,
        };
        let updated_at = |files: &SessionFiles| files.info().unwrap().unwrap().updated_at.unwrap();
        let unwritten = |since| Some(Expect::UnwrittenSince { revision, since });
        let written = updated_at(&files);
        let outcome = files.try_append_now(unwritten(written), &batch("b"));
        assert!(
            matches!(outcome, Some(Err(Error::Conflict { .. }))),
            "written at the instant itself: {outcome:?}"
        );
        // Only the title: the revision stays, the last write moves.
        files.update(&MetaUpdate::new().title(Some("t"))).unwrap();
        let since = written + Duration::from_micros(1);
        let outcome = files.try_append_now(unwritten(since), &batch("b"));
        assert!(
            matches!(outcome, Some(Err(Error::Conflict { .. }))),
            "retitled since: {outcome:?}"
        );
        assert_eq!(jsonl::line_count(&stored(&files)), 1);
        // Any part of a microsecond later is later.
        let since = updated_at(&files) + Duration::from_nanos(1);
        let outcome = files.try_append_now(unwritten(since), &batch("b"));
        assert!(
            matches!(outcome, Some(Ok((g, None))) if g == revision.generation),
            "{outcome:?}"
        );
        assert_eq!(jsonl::line_count(&stored(&files)), 2);
    }

    #[test]
    fn an_expired_session_and_one_without_counters_are_left_to_the_usual_append() {
        let dir = tempfile::tempdir().unwrap();
        let files = session(dir.path(), "s", SyncPolicy::OnReplace);
        files.append(&batch("a")).unwrap();
        let lock = SessionLock::exclusive(dir.path(), &files.lock).unwrap();
        let contents = lock.contents(&files.lock).unwrap();
        let counters = contents.counters.unwrap();
        let expired = crate::counters::Counters {
            expiry: fusion_core::StoredExpiry {
                expires_at: Some(now_micros() - 1),
                idle: None,
            },
            ..counters
        };
        lock.store(&files.lock, contents.generation.unwrap(), &expired, false)
            .unwrap();
        drop(lock);
        assert_declined(&files, &batch("b"));
        // The usual append removes the expired session and starts a new one.
        files.append(&batch("b")).unwrap();
        assert_eq!(jsonl::line_count(&stored(&files)), 1);

        // A lock file as earlier versions wrote it: a generation, no counters.
        fs::write(&files.lock, b"0000000000000042").unwrap();
        assert_declined(&files, &batch("c"));
        files.append(&batch("c")).unwrap();
        assert!(matches!(
            files.try_append_now(None, &batch("d")),
            Some(Ok((_, None)))
        ));
        assert_eq!(jsonl::line_count(&stored(&files)), 3);
    }

    #[test]
    fn an_append_with_ids_is_made_at_once_only_when_its_ids_need_no_read() {
        let dir = tempfile::tempdir().unwrap();
        let with_ids =
            |text: &str| Batch::encode(&[ChatMessage::user(text).with_new_id()]).unwrap();
        let files = session(dir.path(), "s", SyncPolicy::OnReplace);
        files.append(&with_ids("a")).unwrap();
        // This instance wrote the last lines: it knows their ids.
        assert!(matches!(
            files.try_append_now(None, &with_ids("b")),
            Some(Ok((_, None)))
        ));
        // Another instance (another process) does not, and would read them.
        let other = session(dir.path(), "s", SyncPolicy::OnReplace);
        assert_declined(&other, &with_ids("c"));
        other.append(&with_ids("c")).unwrap();
        assert!(matches!(
            other.try_append_now(None, &with_ids("d")),
            Some(Ok((_, None)))
        ));
        // Now the first instance's memory no longer describes the file.
        assert!(files.try_append_now(None, &with_ids("e")).is_none());
        // A retry of ids it may hold is checked by reading, conditional or not.
        let retry = Batch::encode(&[ChatMessage::user("f").with_new_id()]).unwrap();
        other.append(&retry).unwrap();
        assert!(other.try_append_now(None, &retry).is_none());
        let generation = generation(&files);
        let expected = Expect::Generation(generation);
        assert!(other.try_append_now(Some(expected), &retry).is_none());
        other.append(&retry).unwrap();
        let change = FileChange::Append(retry);
        assert_eq!(other.write_if(expected, change).unwrap(), generation);
        assert_eq!(
            jsonl::line_count(&stored(&files)),
            5,
            "the retries stored nothing"
        );
    }
}
