//! What a session is besides its messages, read and written under its lock: its facts for
//! `session_info` and listings, its creation with metadata, and metadata updates (its
//! expiry included).

use std::fs::Metadata;
use std::io;
use std::time::SystemTime;

use fusion_core::{
    Expect, MetaUpdate, Result, SessionInfo, SessionMeta, StoredExpiry, from_unix_micros,
    is_expired, unix_micros,
};

use super::inspect::Current;
use super::write::{Creation, set_keys};
use super::{SessionFiles, exists, modified_us, now_micros};
use crate::batch::Batch;
use crate::counters::{Counters, LockContents};
use crate::error::{BACKEND, IoContext};
use crate::index::marker_instant;
use crate::jsonl;
use crate::lock::{SessionLock, generation_of};
use crate::meta_file::{self, StoredMeta};
use crate::regular_file;

/// Whether a session's lock file holds counters, when its file last changed and when a
/// copy's creation was recorded: what a listing needs besides its facts to place it (see
/// `crate::listing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    /// Whether the lock file holds counters that describe the session file. If it holds
    /// none (lost with it, damaged, or written by a version before them), `updated_at` is
    /// the session file's modification time, which no journal line records but one the
    /// index placed the session at from it; if they describe another length (a power
    /// loss took the counters of appends it kept), it may be, when later than theirs.
    pub(crate) counters: bool,
    /// When the session file last changed in any way, in microseconds: its status change
    /// time (`ctime`), which no tool sets, unlike the modification time (`touch`,
    /// `cp -p`, `rsync -t`); [`i64::MAX`] where it is not known.
    pub(crate) changed_us: i64,
    /// For a session created as a copy with the times it had elsewhere, when the index
    /// recorded that creation (see [`Counters::copied`]).
    pub(crate) copied_us: Option<i64>,
}

#[cfg(unix)]
fn changed_us(metadata: &Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    metadata
        .ctime()
        .saturating_mul(1_000_000)
        .saturating_add(metadata.ctime_nsec() / 1_000)
}

#[cfg(not(unix))]
fn changed_us(_metadata: &Metadata) -> i64 {
    i64::MAX
}

/// The counters of a session file of `len` bytes modified at `modified_us`: the stored
/// ones if they describe it, else derived: the message count by `count_lines` (O(file)),
/// the timestamps kept from stored counters, `updated_at` no earlier than `modified_us`
/// (appends store their counters unsynced whatever the policy: after a power loss, the
/// file may hold fsynced appends that counters of an earlier length do not record, and
/// their last write must not read as older than it is, say to a purge of sessions not
/// written since a cutoff), or, for a session written before counters existed, from the
/// files:
/// `updated_at` is the session file's modification time and `created_at` the earliest
/// time the file system keeps for the session's files (the lock file's or the session
/// file's creation, or the session file's modification). Lost counters also lose the
/// expiry's numbers: they come from the expiry the metadata file records, from that
/// `updated_at`. Where the session has a metadata file (`recorded`), its creation time is
/// the one that file records, as [`SessionFiles::info`] reports it: counters
/// stored with another would tie the session to no metadata (a later read would take the
/// file for an earlier session's), and it would lose its owner, title and tags at its
/// next write. A copy's `copied` is the one that file records too: without it, a listing
/// would take the lines of an earlier session of its id for its own (moving it there),
/// and its next write could be stamped below them and the session left out. A metadata
/// file `recorded` cannot read (an I/O error; a damaged one reads as none) fails the call.
pub(super) fn derive_counters(
    contents: &LockContents,
    len: u64,
    modified_us: i64,
    files: impl FnOnce() -> Result<(Metadata, Option<SystemTime>)>,
    count_lines: impl FnOnce() -> Result<u64>,
    recorded: impl FnOnce() -> Result<Option<StoredMeta>>,
) -> Result<Counters> {
    if let Some(counters) = contents.counters.filter(|c| c.len == len) {
        return Ok(counters);
    }
    let count = count_lines()?;
    if let Some(counters) = contents.counters {
        // They describe an earlier length; all but the count, the last write and an idle
        // expiry (which that write moved) still hold.
        return Ok(Counters {
            updated_us: counters.updated_us.max(modified_us),
            count,
            len,
            expiry: stale_expiry(&counters, modified_us),
            ..counters
        });
    }
    let (metadata, lock_created) = files()?;
    let modified = metadata.modified().ok();
    let updated_us = modified.map_or(0, unix_micros);
    let recorded = recorded()?;
    let created_us = match &recorded {
        Some(stored) => stored.created_us,
        None => [lock_created, metadata.created().ok(), modified]
            .into_iter()
            .flatten()
            .map(unix_micros)
            .min()
            .unwrap_or(updated_us),
    };
    let copied = recorded.as_ref().and_then(|stored| stored.copied_us);
    let expiry = recorded.and_then(|stored| stored.meta.expiry);
    Ok(Counters {
        created_us,
        updated_us,
        count,
        len,
        // From the latest the lost write may have been, as `stale_expiry` counts.
        expiry: StoredExpiry::of(expiry.as_ref(), super::written_by(updated_us)),
        indexed: None,
        copied,
    })
}

/// The expiry of a session whose `counters` describe another length of its file,
/// modified at `modified_us`: an idle one moved to the latest the write they missed may
/// have been stamped at ([`super::written_by`]) if that is later than theirs, as that
/// write moved it.
pub(super) fn stale_expiry(counters: &Counters, modified_us: i64) -> StoredExpiry {
    let written = super::written_by(modified_us);
    if written > counters.updated_us {
        counters.expiry.at_write(written)
    } else {
        counters.expiry
    }
}

impl SessionFiles {
    /// The session's facts (count, timestamps, generation, metadata, expiry) under its
    /// shared lock, or `None` if it holds no message or has expired. Reads the lock file
    /// and the metadata file; the session file only when the stored counters do not
    /// describe it, and then parses it, so a damaged line is
    /// [`fusion_core::Error::Corrupt`] as in `load`.
    pub(crate) fn info(&self) -> Result<Option<SessionInfo>> {
        Ok(self.info_and_whether_stored()?.map(|(info, _)| info))
    }

    /// When the existing session was last written at the latest, in Unix microseconds,
    /// for a delete conditional on no write since a cutoff, from its lock file as
    /// `current` found it under `lock`: the counters' time if they describe the session
    /// file, the later of it and the latest the file's modification time allows
    /// ([`super::written_by`]) if they describe another length, else that latest time.
    /// [`Self::info`] reports the file's time itself (see [`derive_counters`]). Reads no
    /// file when `current` holds the lock file's contents, as it does after the expiry
    /// check.
    pub(super) fn updated_locked(&self, lock: &SessionLock, current: &Current) -> Result<i64> {
        let contents = match current.contents {
            Some(contents) => contents,
            None => lock.contents(&self.lock)?,
        };
        Ok(match (contents.counters, &current.file) {
            (Some(counters), Some(_)) if counters.len != current.len => counters
                .updated_us
                .max(super::written_by(current.modified_us)),
            (Some(counters), _) => counters.updated_us,
            (None, Some(_)) => super::written_by(current.modified_us),
            (None, None) => 0,
        })
    }

    /// Whether a rewrite may keep the last write `counters` give: not the file's
    /// modification time that counters of another length give (see
    /// `meta::derive_counters`), which no journal line records; stored as describing the
    /// new file, it would read as recorded and listings would look for the session at a
    /// line it has not. Such a rewrite records a write instead.
    pub(super) fn recorded_time(
        &self,
        lock: &SessionLock,
        current: &Current,
        counters: &Counters,
    ) -> Result<bool> {
        let contents = match current.contents {
            Some(contents) => contents,
            None => lock.contents(&self.lock)?,
        };
        Ok(contents
            .counters
            .is_none_or(|stored| stored.updated_us == counters.updated_us))
    }

    /// [`Self::info`], and whether its lock file holds counters (see [`Stored`]).
    pub(crate) fn info_and_whether_stored(&self) -> Result<Option<(SessionInfo, Stored)>> {
        let now = now_micros();
        Ok(self
            .stored_info_and_whether_stored()?
            .filter(|(info, _)| !is_expired(info.expires_at.map(unix_micros), now)))
    }

    /// [`Self::info_and_whether_stored`], whether or not the session has expired: what a
    /// rebuild of the index needs.
    pub(crate) fn stored_info_and_whether_stored(&self) -> Result<Option<(SessionInfo, Stored)>> {
        if !exists(&self.data)? {
            return Ok(None);
        }
        let lock = SessionLock::shared(&self.lock)?;
        let metadata = match std::fs::metadata(&self.data) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            other => other.at(&self.data)?,
        };
        // Checked here too, though the file is opened only below, if at all: what the
        // path names is no session whatever the counters say.
        regular_file::check(&metadata).at(&self.data)?;
        let contents = lock.contents(&self.lock)?;
        let counters = derive_counters(
            &contents,
            metadata.len(),
            modified_us(&metadata),
            || Ok((metadata.clone(), lock.created())),
            || {
                // Read whole anyway, so checked as `load` would: a damaged line is
                // reported here too.
                let bytes = regular_file::read(&self.data).at(&self.data)?;
                Ok(jsonl::decode(&self.id, &bytes)?.messages.len() as u64)
            },
            || self.recorded_meta(),
        )?;
        if counters.count == 0 {
            return Ok(None);
        }
        let (created_us, meta) = self.stored_meta(&contents, &counters)?;
        let info = self.facts(
            generation_of(&contents, &self.lock),
            &Counters {
                created_us,
                ..counters
            },
            meta,
        );
        let stored = Stored {
            counters: contents.counters.is_some_and(|c| c.len == metadata.len()),
            changed_us: changed_us(&metadata),
            copied_us: counters.copied,
        };
        Ok(Some((info, stored)))
    }

    /// The metadata that belongs to the session these counters describe, and its
    /// creation time. [`fusion_core::Error::Corrupt`] if the metadata file is damaged.
    fn stored_meta(
        &self,
        contents: &LockContents,
        counters: &Counters,
    ) -> Result<(i64, SessionMeta)> {
        let Some(stored) = meta_file::read(&self.meta(), &self.id)? else {
            return Ok((counters.created_us, SessionMeta::new()));
        };
        match contents.counters {
            // Written with counters: the metadata must be of this session, not of an
            // earlier one of the same id whose delete was cut short.
            Some(_) if stored.created_us != counters.created_us => {
                Ok((counters.created_us, SessionMeta::new()))
            }
            Some(_) => Ok((counters.created_us, stored.meta)),
            // Counters lost (an earlier version rewrote the lock file): the metadata file
            // is the better record of the creation.
            None => Ok((stored.created_us, stored.meta)),
        }
    }

    /// The facts `counters` and `meta` describe; the expiry is the counters' (where it
    /// stands now), whatever the metadata file recorded.
    fn facts(&self, generation: u64, counters: &Counters, mut meta: SessionMeta) -> SessionInfo {
        let mut info = SessionInfo::new(
            self.id.clone(),
            usize::try_from(counters.count).unwrap_or(usize::MAX),
        );
        info.created_at = Some(from_unix_micros(counters.created_us));
        info.updated_at = Some(from_unix_micros(counters.updated_us));
        info.generation = generation;
        info.expires_at = counters.expiry.expires_at_time();
        meta.expiry = counters.expiry.expiry();
        info.meta = meta;
        info
    }

    /// Creates the session with `batch` (at least one message, whose ids are distinct: a
    /// new session has no other to compare them with) and what `creation` gives it (its
    /// metadata, and the times it had elsewhere, if any), or fails with a conflict if it
    /// exists (and has not expired); returns the new generation.
    pub(crate) fn create(&self, creation: Creation<'_>, batch: &Batch) -> Result<u64> {
        let lock = self.lock_exclusive()?;
        let (current, expired) = self.expire_locked(&lock, self.inspect()?)?;
        if current.exists() {
            let generation = lock.generation(&self.lock)?;
            return Err(Expect::Generation(0).conflict(BACKEND, &self.id, generation, None));
        }
        let (outcome, recorded) = self.append_locked(&lock, current, batch, Some(creation))?;
        self.finish(lock, &[expired, recorded]);
        match outcome {
            super::Outcome::New(generation) => Ok(generation),
            other => unreachable!("a creation gives a new generation, not {other:?}"),
        }
    }

    /// Applies `update` to the metadata atomically and returns the facts after it, or
    /// `None` if the session does not exist (or has expired: it is removed, and nothing
    /// else is written). The result is validated before anything is written; a change
    /// moves `updated_at` (and the session in newest-first listings) and an idle expiry.
    pub(crate) fn update(&self, update: &MetaUpdate) -> Result<Option<SessionInfo>> {
        if !exists(&self.data)? {
            return Ok(None);
        }
        let lock = self.lock_exclusive()?;
        let (current, expired) = self.expire_locked(&lock, self.inspect()?)?;
        let Some((generation, counters)) = self.counters_locked(&lock, &current)? else {
            if current.file.is_none() {
                self.unlink_alone(&lock, &current)?;
            }
            self.finish(lock, &[expired]);
            return Ok(None);
        };
        let contents = match current.contents {
            Some(contents) => contents,
            None => lock.contents(&self.lock)?,
        };
        let (created_us, mut old) = self.stored_meta(&contents, &counters)?;
        old.expiry = counters.expiry.expiry();
        let mut new = old.clone();
        update.apply_to_stored(&self.id, &mut new)?;
        let sync = self.sync_appends();
        // The new sets' markers before the journal's line: a marker refused (a symbolic
        // link on its way or at its path) then fails the update with nothing recorded,
        // where a line without the write would have a listing take the write for one cut
        // short and move the session's `updated_at` to it.
        let old_keys: Vec<_> = set_keys(&old).collect();
        for key in set_keys(&new).filter(|k| !old_keys.contains(k)) {
            self.index.add_member(key, &self.id, sync)?;
        }
        let floor = counters.next_floor();
        // The expiry's marker depends on the write's timestamp, so it is placed once that
        // is handed out, but before the line, for the same reason as the sets' markers.
        // The marker stays while it is at or before the new instant; otherwise one is
        // added before the counters name it, and the old one removed after.
        let change = crate::index::Change::Write;
        let (recorded, (expiry, indexed)) =
            self.index
                .record_after(&self.id, change, floor, sync, |t| {
                    let expiry = match &update.expiry {
                        Some(expiry) => StoredExpiry::of(expiry.as_ref(), t),
                        None => counters.expiry.at_write(t),
                    };
                    let indexed = match expiry.expires_at.map(marker_instant) {
                        Some(at) if counters.indexed.is_none_or(|old| old > at) => {
                            self.index.add_expiry(at, &self.id, sync)?;
                            Some(at)
                        }
                        Some(_) => counters.indexed,
                        None => None,
                    };
                    Ok((expiry, indexed))
                })?;
        new.expiry = expiry.expiry();
        let meta_removed = new.is_empty() && counters.copied.is_none();
        let mut meta_unlinked = false;
        if meta_removed {
            meta_unlinked = meta_file::remove(&self.meta())?;
        } else {
            let stored = StoredMeta {
                created_us,
                meta: new.clone(),
                copied_us: counters.copied,
            };
            meta_file::write(
                &self.meta(),
                Some(&self.meta_temp()),
                &self.dir,
                &stored,
                sync,
            )?;
        }
        let new_counters = Counters {
            created_us,
            updated_us: recorded.t,
            expiry,
            indexed,
            ..counters
        };
        lock.store(&self.lock, generation, &new_counters, sync)?;
        if sync && meta_removed && (meta_unlinked || contents.counters.is_none()) {
            // The metadata file's removal is durable only once the directory is synced:
            // a power loss before would bring the owner, title and tags it cleared back.
            // And a lock file without counters was just made (by this write, or by a
            // reader, after a loss): its name may not be durable yet, and the counters
            // just fsynced (the update's time, the expiry) would be lost with it. The
            // metadata file's write synced the directory, the lock file's name with it,
            // but its removal does not. One sync, after the counters, covers both.
            super::sync_dir(&self.dir)?;
        }
        let new_keys: Vec<_> = set_keys(&new).collect();
        for key in set_keys(&old).filter(|k| !new_keys.contains(k)) {
            self.index.remove_member(key, &self.id)?;
        }
        if let Some(old) = counters.indexed.filter(|old| Some(*old) != indexed) {
            self.index.remove_expiry(old, &self.id)?;
        }
        let info = self.facts(generation, &new_counters, new);
        self.finish(lock, &[expired, Some(recorded)]);
        Ok(Some(info))
    }

    /// Repairs a session whose journal line at `t` is newer than its counters, which only
    /// a write that stopped between the two leaves (a crash, a full disk), or whose lock
    /// file holds no counters, or counters of another length, though the journal recorded
    /// its writes (the file was removed, or zeroed by a power loss, or lost the counters
    /// of the last appends to one): under the exclusive lock, so no write is
    /// under way, its `updated_at` becomes `t` (and an idle expiry moves with it, as that
    /// write would have moved it), and counters recomputed from its files are stored.
    /// Returns the facts after it, or `None` if the session is gone or has expired.
    pub(crate) fn repair_updated(&self, t: i64) -> Result<Option<SessionInfo>> {
        if !exists(&self.data)? {
            return Ok(None);
        }
        let lock = self.lock_exclusive()?;
        let current = self.inspect()?;
        let Some((generation, mut counters)) = self.counters_locked(&lock, &current)? else {
            if current.file.is_none() {
                self.unlink_alone(&lock, &current)?;
            }
            return Ok(None);
        };
        if counters.expiry.is_expired_at(now_micros()) {
            // Gone for readers; the next write or purge removes it.
            return Ok(None);
        }
        // Counters of another length count as lost: `updated_at` may be the file's
        // modification time, which matches no line.
        let lost = lock
            .contents(&self.lock)?
            .counters
            .is_none_or(|c| c.len != current.len);
        if counters.updated_us < t || (lost && counters.updated_us != t) {
            tracing::warn!(
                backend = BACKEND,
                session_id = %self.id,
                "a write was cut short after the index recorded it, or the session's \
                 counters were lost; moving its updated_at to the index's last write"
            );
            counters.updated_us = t;
            // Not expired now, so not at `t` either: the write was to this session.
            counters.expiry = counters.expiry.at_write(t);
            lock.store(&self.lock, generation, &counters, false)?;
        }
        let contents = lock.contents(&self.lock)?;
        let (created_us, meta) = self.stored_meta(&contents, &counters)?;
        Ok(Some(self.facts(
            generation,
            &Counters {
                created_us,
                ..counters
            },
            meta,
        )))
    }
}
