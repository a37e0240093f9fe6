//! The writes of one session under its exclusive lock: append (which leaves out the
//! messages whose ids the session's last lines hold), truncate, rewrite and remove, each
//! keeping the counters (and the expiry in them) in the lock file and recording itself in
//! the index.

use std::borrow::Cow;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};

use fusion_core::{
    LEGACY_GENERATION, Result, SessionMeta, SessionTimes, StoredExpiry, new_generation,
};

use super::{Current, Outcome, SessionFiles, now_micros, sync_dir};
use crate::batch::Batch;
use crate::counters::{Counters, UNKNOWN_LEN};
use crate::error::{BACKEND, IoContext};
use crate::index::{Change, Recorded, SetKey, marker_instant};
use crate::jsonl;
use crate::lock::SessionLock;
use crate::meta_file::{self, StoredMeta};
use crate::own_file;
use crate::recent_cache::{FileIdentity, FileState};
use crate::regular_file;

/// Whether a rewrite of a session's file is its latest write or keeps its times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Times {
    /// It moves `updated_at` (and an idle expiry) and re-files the session in the index.
    Write,
    /// An existing session keeps its times: the same conversation stored another way.
    Keep,
}

/// What a creation gives the session besides its messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Creation<'a> {
    /// Its owner, title, tags, data and expiry.
    pub(crate) meta: &'a SessionMeta,
    /// The times it had elsewhere (a copy), or `None` for a session created now.
    pub(crate) times: Option<SessionTimes>,
}

impl SessionFiles {
    /// The generation and counters of the session as the lock holder finds it (counting
    /// its lines when the stored counters do not describe the file), or `None` if it
    /// holds no message.
    pub(super) fn counters_locked(
        &self,
        lock: &SessionLock,
        current: &Current,
    ) -> Result<Option<(u64, Counters)>> {
        let Some(file) = current.file.as_ref().filter(|_| current.exists()) else {
            return Ok(None);
        };
        let contents = match current.contents {
            Some(contents) => contents,
            None => lock.contents(&self.lock)?,
        };
        let generation = crate::lock::generation_of(&contents, &self.lock);
        let counters = super::meta::derive_counters(
            &contents,
            current.len,
            current.modified_us,
            || Ok((file.metadata().at(&self.data)?, lock.created())),
            || Ok(jsonl::line_count(&self.read_locked(current)?) as u64),
            || self.recorded_meta(),
        )?;
        Ok(Some((generation, counters)))
    }

    /// Appends the messages of `batch` the session does not hold yet (see
    /// [`unstored_lines`](Self::unstored_lines)) after cutting off a torn tail; when it
    /// holds them all, writes nothing and keeps the generation. An append that creates the
    /// session gives it a fresh generation and, if its `creation` holds any, its metadata,
    /// markers and expiry, all before its lines are written: nobody sees it without them;
    /// with the times it had elsewhere, it was created and last written then (none later
    /// than now), is placed in the index at that last write, and an idle expiry counts
    /// from it. An append to an existing session moves an idle expiry to its own time plus the span,
    /// in the counters it stores anyway (its expiry marker stays: an earlier one still
    /// finds it). Once all of it succeeded, the instance remembers the session's last ids
    /// (see [`remember`](Self::remember)).
    pub(super) fn append_locked(
        &self,
        lock: &SessionLock,
        current: Current,
        batch: &Batch,
        creation: Option<Creation<'_>>,
    ) -> Result<(Outcome, Option<Recorded>)> {
        let (lines, known) = self.unstored_lines(&current, batch)?;
        if lines.is_empty() {
            self.remember(known, batch, None);
            return Ok((Outcome::Kept, None));
        }
        let sync = self.sync_appends();
        let before = self.counters_locked(lock, &current)?;
        let change = if before.is_some() {
            Change::Write
        } else {
            Change::Create
        };
        // A copy's times, none later than the clock (and at the precision of its own).
        let given = match (&before, creation.and_then(|c| c.times)) {
            (None, Some(times)) => Some(times.stored_at(now_micros())),
            _ => None,
        };
        let floor = self.write_floor(lock, &current, before.as_ref())?;
        let none = SessionMeta::new();
        let meta = creation.map_or(&none, |c| c.meta);
        // A creation's markers and metadata go once its timestamp is handed out, before
        // its line: refused (a link on a marker's way), the creation records no line.
        let (recorded, copied, prepared) = match given {
            Some((created_us, updated_us)) => {
                let (recorded, copied, prepared) =
                    self.index
                        .record_created_at(&self.id, updated_us, floor, sync, |copied| {
                            self.prepare_creation(
                                (created_us, updated_us),
                                meta,
                                Some(copied),
                                sync,
                            )
                        })?;
                (recorded, Some(copied), Some(prepared))
            }
            None => {
                let (recorded, prepared) =
                    self.index
                        .record_after(&self.id, change, floor, sync, |t| match change {
                            Change::Create => {
                                self.prepare_creation((t, t), meta, None, sync).map(Some)
                            }
                            Change::Write | Change::Delete => Ok(None),
                        })?;
                (recorded, None, prepared)
            }
        };
        let t = recorded.t;
        let current = self.unshare(current)?;
        let kept = current.data_end;
        if let Some(file) = current.file.as_ref().filter(|_| kept < current.len) {
            tracing::warn!(
                backend = BACKEND,
                session_id = %self.id,
                path = %self.data.display(),
                bytes = current.len - kept,
                "removing a torn tail left by an interrupted append"
            );
            file.set_len(kept).at(&self.data)?;
        }
        // What is written, not what was asked for: the counters count stored messages.
        let added = lines.iter().filter(|&&b| b == b'\n').count() as u64;
        let buf = if current.needs_newline {
            Cow::Owned([b"\n", &lines[..]].concat())
        } else {
            lines
        };
        let len = kept + buf.len() as u64;
        let generation = match before {
            Some((generation, _)) => generation,
            None => new_generation(),
        };
        let outcome = match before {
            Some(_) => Outcome::Kept,
            None => {
                let (created_us, updated_us) = given.unwrap_or((t, t));
                let (expiry, indexed) = prepared.expect("a creation is prepared");
                let counters = Counters {
                    created_us,
                    updated_us,
                    count: added,
                    len,
                    expiry,
                    indexed,
                    copied,
                };
                lock.store(&self.lock, generation, &counters, sync)?;
                Outcome::New(generation)
            }
        };
        // Created only now: a creation that failed before (its metadata refused, a full
        // disk) leaves no empty session file behind.
        let (file, identity) = match current.file {
            Some(file) => (file, current.identity),
            None => {
                let (file, metadata) = regular_file::open(
                    OpenOptions::new().read(true).append(true).create(true),
                    &self.data,
                )
                .at(&self.data)?;
                (file, FileIdentity::of(&metadata))
            }
        };
        if let Err(err) = (&file).write_all(&buf) {
            // A failed write (disk full, quota) may have stored part of the batch; cut it
            // off so the append is all or nothing, and leave no empty session behind.
            // Should this cleanup fail too, the partial batch is a torn tail that the next
            // append removes.
            let _ = file.set_len(kept);
            if kept == 0 {
                let _ = fs::remove_file(&self.data);
            }
            return Err(err).at(&self.data);
        }
        if let Some((generation, counters)) = before {
            let counters = Counters {
                updated_us: t,
                count: counters.count + added,
                len,
                expiry: counters.expiry.at_write(t),
                ..counters
            };
            lock.store(&self.lock, generation, &counters, false)?;
        }
        if sync {
            file.sync_data().at(&self.data)?;
            if kept == 0 {
                // The files may be new: make their directory entries durable too.
                sync_dir(&self.dir)?;
            }
        }
        let after = FileState {
            generation,
            data_end: len,
            file: identity,
        };
        self.remember(known, batch, Some(after));
        Ok((outcome, Some(recorded)))
    }

    /// What a creation does before the session has data: removes what a crashed delete
    /// may have left of an earlier session of this id, then adds the markers and writes
    /// the metadata of the new one, created and last written at the given times; returns
    /// its expiry (from `meta`) and the instant of its expiry marker, if it expires.
    fn prepare_creation(
        &self,
        (created_us, updated_us): (i64, i64),
        meta: &SessionMeta,
        copied: Option<i64>,
        sync: bool,
    ) -> Result<(StoredExpiry, Option<i64>)> {
        let expiry = StoredExpiry::of(meta.expiry.as_ref(), updated_us);
        // A copy's file also keeps when it was recorded, in case its counters are lost.
        if meta.is_empty() && copied.is_none() {
            meta_file::remove(&self.meta())?;
            return Ok((expiry, None));
        }
        for key in set_keys(meta) {
            self.index.add_member(key, &self.id, sync)?;
        }
        let indexed = expiry.expires_at.map(marker_instant);
        if let Some(at) = indexed {
            self.index.add_expiry(at, &self.id, sync)?;
        }
        let stored = StoredMeta {
            created_us,
            meta: meta.clone(),
            copied_us: copied,
        };
        // Written in place: the session has no data yet, so nobody reads this file before
        // it is whole, and a crash before the data leaves no session to read it for.
        meta_file::write(&self.meta(), None, &self.dir, &stored, sync)?;
        Ok((expiry, indexed))
    }

    /// Keeps the first `len` lines of the data; a shorter history gets a new generation.
    pub(super) fn truncate_locked(
        &self,
        lock: &SessionLock,
        current: Current,
        len: usize,
    ) -> Result<(Outcome, Option<Recorded>)> {
        if !current.exists() {
            return Ok((Outcome::Kept, None));
        }
        let bytes = self.read_locked(&current)?;
        let keep = jsonl::prefix_len(&bytes, len);
        if keep >= jsonl::data_len(&bytes) {
            // No message removed; a torn tail is left for the next append to cut.
            Ok((Outcome::Kept, None))
        } else if keep == 0 {
            let recorded = self.remove_locked(lock, true, true)?;
            Ok((Outcome::Removed, recorded))
        } else {
            let mut kept = bytes;
            kept.truncate(keep);
            // A cut inside a batch must leave a complete one, not a torn tail.
            jsonl::unmark_last_line(&mut kept);
            self.rewrite_locked(lock, &current, &kept, len as u64, Times::Write)
        }
    }

    /// Stores a fresh generation, then replaces the session file with `contents`
    /// (`count` messages). With [`Times::Write`] that is the session's latest write, as
    /// the index records; with [`Times::Keep`] an existing session keeps its times and
    /// its place in the index.
    pub(super) fn rewrite_locked(
        &self,
        lock: &SessionLock,
        current: &Current,
        contents: &[u8],
        count: u64,
        times: Times,
    ) -> Result<(Outcome, Option<Recorded>)> {
        // Its ids are those of `contents` from now on, whatever happens next.
        self.recent.forget(&self.id);
        let before = self.counters_locked(lock, current)?;
        let (mut counters, recorded) = match before {
            Some((_, kept))
                if times == Times::Keep && self.recorded_time(lock, current, &kept)? =>
            {
                (kept, None)
            }
            _ => {
                let change = if before.is_some() {
                    Change::Write
                } else {
                    Change::Create
                };
                let floor = self.write_floor(lock, current, before.as_ref())?;
                // A creation's files go before its line, as an append's: refused, no line.
                let (recorded, counters) =
                    self.index
                        .record_after(&self.id, change, floor, self.sync_appends(), |t| {
                            self.written_counters(before.as_ref(), t)
                        })?;
                (counters, Some(recorded))
            }
        };
        counters.count = count;
        counters.len = UNKNOWN_LEN;
        let generation = new_generation();
        // Fsynced because the rewrite is: the new content must never be durable with the
        // old generation. The length is unknown until the new file is in place.
        lock.store(&self.lock, generation, &counters, true)?;
        let named = if before.is_some_and(|(generation, _)| generation == LEGACY_GENERATION) {
            // The lock file holds no generation of its own: made by this write (or by a
            // reader, after a loss) or an earlier version's, its name may not be durable
            // yet. Lost with it on a power loss that kept the rename, the session would
            // read at the legacy generation again with the new content in place, and a
            // conditional write made against the old content would be taken. Synced before
            // the rename, on this path only: a generation of its own tells the two apart.
            sync_dir(&self.dir)
        } else {
            Ok(())
        };
        if let Err(err) = named.and_then(|()| self.put_in_place(contents)) {
            // The old content is still in place (a full disk, say, or a directory that
            // could not be synced): its generation and counters go back, so a write that
            // failed changes nothing a reader or a conditional writer sees. Best effort:
            // if this fails too, the fresh generation stays, a spurious conflict later, as
            // after a crash here.
            if let Some((generation, counters)) = before {
                let _ = lock.store(&self.lock, generation, &counters, true);
            }
            return Err(err);
        }
        // Past the rename the new content is in place: whatever fails now, it keeps the
        // fresh generation.
        sync_dir(&self.dir)?;
        counters.len = contents.len() as u64;
        lock.store(&self.lock, generation, &counters, false)?;
        Ok((Outcome::New(generation), recorded))
    }

    /// The counters of a session written at `t` (their count and length still to be
    /// set): `before`'s with the new time, an idle expiry moved with it, or those of a
    /// session created then, whose files this prepares.
    fn written_counters(&self, before: Option<&(u64, Counters)>, t: i64) -> Result<Counters> {
        let (created_us, expiry, indexed, copied) = match before {
            Some((_, counters)) => (
                counters.created_us,
                counters.expiry.at_write(t),
                counters.indexed,
                counters.copied,
            ),
            None => {
                let (none, _) = self.prepare_creation((t, t), &SessionMeta::new(), None, false)?;
                (t, none, None, None)
            }
        };
        Ok(Counters {
            created_us,
            updated_us: t,
            count: 0,
            len: UNKNOWN_LEN,
            expiry,
            indexed,
            copied,
        })
    }

    /// Writes a temporary file, fsyncs it and renames it over the session file, so a crash
    /// at any point leaves the old history or the new one (the caller fsyncs the
    /// directory). An error leaves the old file in place and the temporary file removed.
    fn put_in_place(&self, contents: &[u8]) -> Result<()> {
        let temp_path = self.temp();
        // A temporary file this call could not open is not its own to remove.
        let (mut temp, _) = own_file::create_anew(&temp_path).at(&temp_path)?;
        let result = (|| {
            // Keep permissions a person set on the session file (say, `chmod 600`), which
            // the rename would otherwise silently reset. Best effort: a new file has none.
            if let Ok(existing) = fs::metadata(&self.data) {
                let _ = temp.set_permissions(existing.permissions());
            }
            temp.write_all(contents).at(&temp_path)?;
            temp.sync_all().at(&temp_path)?;
            drop(temp);
            fs::rename(&temp_path, &self.data).at(&self.data)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp_path);
        }
        result
    }

    /// Removes the session file, its metadata, its index entries and then, if `unlink`,
    /// the lock file (see the module docs), durably. `existed` says whether the session
    /// held messages. A write that removes an expired session before it goes on keeps the
    /// lock file: it stores new counters in it before the new session has data.
    pub(super) fn remove_locked(
        &self,
        lock: &SessionLock,
        existed: bool,
        unlink: bool,
    ) -> Result<Option<Recorded>> {
        self.recent.forget(&self.id);
        // Read first: its owner and tags name the markers to remove. A damaged file names
        // none; its markers stay behind, and listings skip them. One that cannot be read
        // (an I/O error) fails the call before anything is removed, rather than leave them.
        let meta_path = self.meta();
        let meta = self.recorded_meta()?;
        let contents = lock.contents(&self.lock)?;
        let counters = contents.counters;
        // The deletion's line must be the session's newest, after its last write's.
        let floor = counters.map_or(i64::MIN, |c| c.next_floor());
        match fs::remove_file(&self.data) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            other => other.at(&self.data)?,
        }
        // A temp file can only outlive its `save` if that process crashed; tidy it up
        // while the lock still excludes every other writer. So can the copy of a
        // hard-linked lock file outlive its rename.
        let _ = fs::remove_file(self.temp());
        let lock_temp = crate::file_name::lock_temp_file_name(&self.id);
        let _ = fs::remove_file(self.dir.join(lock_temp));
        meta_file::remove(&meta_path)?;
        if existed {
            // Before the line, and durable: should the delete stop after it (a crash, a
            // power loss), the lock file it leaves holds something, as it does for any
            // session with counters, and sends the next creation to the live journals'
            // delete lines (see `creation_floor`); and the session file's unlink holds, so
            // no session comes back below a line that passes it over. Under `OnReplace`
            // an append fsyncs neither the lock file's counters nor its name.
            if contents.holds_anything() {
                lock.sync(&self.lock)?;
            } else {
                lock.mark(&self.lock)?;
            }
            sync_dir(&self.dir)?;
        }
        let recorded = if existed {
            // Fsynced whatever the policy, as a rewrite's generation is: the latest delete
            // the index state keeps is the floor of the next creation once the lock file,
            // whose unlink is made durable below, is gone, and a power loss that kept the
            // line but not the state would stamp that creation below it.
            Some(self.index.record(&self.id, Change::Delete, floor, true)?)
        } else {
            None
        };
        if let Some(stored) = meta {
            for key in set_keys(&stored.meta) {
                self.index.remove_member(key, &self.id)?;
            }
        }
        // A marker the counters do not name (they were lost) stays until a purge meets it.
        if let Some(at) = counters.and_then(|c| c.indexed) {
            self.index.remove_expiry(at, &self.id)?;
        }
        if unlink && !existed {
            // Perhaps left by a delete that stopped: its trace goes to the index first.
            self.keep_stopped_delete(&contents)?;
        }
        if unlink {
            // Last: once it is gone, a newcomer can lock a new lock file at once.
            lock.unlink(&self.lock)?;
        }
        sync_dir(&self.dir)?;
        Ok(recorded)
    }
}

/// The sets a session with `meta` belongs to: its owner's and its tags'.
pub(super) fn set_keys(meta: &SessionMeta) -> impl Iterator<Item = SetKey<'_>> {
    meta.owner
        .as_deref()
        .map(SetKey::Owner)
        .into_iter()
        .chain(meta.tags.iter().map(|tag| SetKey::Tag(tag)))
}
