//! The blocking file work for one session: locking, reading, appending, atomic replacement,
//! generations and conditional writes.
//!
//! # Locking
//!
//! Every operation on a session first locks that session's own lock file
//! (`.{stem}.lock`, next to `{stem}.jsonl`): exclusively for `append`, `save`, `truncate`,
//! `delete` and `write_if`, shared for `load`, `load_revision` and `session_info`. The
//! locks are the operating system's advisory file locks (`flock` on Unix, `LockFileEx` on
//! Windows, through [`File::lock`]), which work between processes and between separately
//! opened handles in one process, so storage instances never need to know about each other.
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
//! removed, as before. A reader that races a delete may leave an empty lock file behind;
//! the next `delete` of that id removes it.
//!
//! # Generations
//!
//! The lock file also stores the session's generation (see [`fusion_core::Revision`]), as
//! 16 zero-padded decimal digits. The generation of a session is 0 (absent) if its file
//! holds no data, whatever the lock file says; otherwise it is the stored number, or
//! [`LEGACY_GENERATION`](fusion_core::LEGACY_GENERATION) for an empty lock file (a session
//! written before generations existed). A rewrite stores a fresh generation, fsynced,
//! *before* it replaces the session file, and an append that creates the session stores
//! one before writing its lines, so a crash in between leaves a new generation with the
//! old content: a spurious conflict later, never a missed one. Other appends neither read
//! nor write it. The generation is fsynced when the data is (always for a rewrite, which
//! also fsyncs the new file and the directory; for a creating append only under
//! [`SyncPolicy::EveryWrite`]).
//!
//! Advisory locks bind only programs that take them; a person appending with `echo >>`
//! while Fusion runs is not excluded. On network file systems `flock` may be local to
//! one machine (older NFS), so share a directory between hosts only on a file system with
//! working locks.

use std::borrow::Cow;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fusion_core::{Expect, Result, new_generation};

use crate::error::{BACKEND, IoContext};
use crate::file_name;
use crate::jsonl;
use crate::lock::SessionLock;
use crate::options::SyncPolicy;

/// How much of the end of the file an append reads first to check it ends on a complete
/// batch: enough for any batch marker, so a clean file needs this one read.
const TAIL_PEEK: u64 = 128;
/// How far back to read at a time when looking for the start of a torn tail.
const TAIL_CHUNK: u64 = 64 * 1024;

/// A session file as read under the shared lock.
#[derive(Debug)]
pub(crate) struct Stored {
    /// The whole file.
    pub(crate) bytes: Vec<u8>,
    /// Its metadata.
    pub(crate) metadata: Metadata,
    /// The generation, if the file holds any message (see the module docs).
    pub(crate) generation: u64,
}

/// The write of a conditional write, serialised.
#[derive(Debug)]
pub(crate) enum FileChange {
    /// Lines to append (with batch markers).
    Append(Vec<u8>),
    /// How many lines to keep.
    Truncate(usize),
    /// The new file contents; empty deletes the session.
    Replace(Vec<u8>),
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

/// The session file as the holder of the exclusive lock finds it.
#[derive(Debug)]
struct Current {
    /// Open for reading and appending, if it exists.
    file: Option<File>,
    /// Its length.
    len: u64,
    /// The length of its data (all but a torn tail).
    data_end: u64,
    /// Whether the data ends with a complete message missing its `\n`.
    needs_newline: bool,
}

impl Current {
    fn exists(&self) -> bool {
        self.data_end > 0
    }
}

/// The paths of one session's files.
#[derive(Debug)]
pub(crate) struct SessionFiles {
    id: String,
    dir: PathBuf,
    data: PathBuf,
    lock: PathBuf,
    temp: PathBuf,
}

impl SessionFiles {
    /// The files of the already validated session `id` in `dir`.
    pub(crate) fn new(dir: &Path, id: &str) -> Self {
        Self {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            data: dir.join(file_name::session_file_name(id)),
            lock: dir.join(file_name::lock_file_name(id)),
            temp: dir.join(file_name::temp_file_name(id)),
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

    /// The session file and its generation, read at one instant, or `None` if the session
    /// was never written.
    pub(crate) fn read(&self) -> Result<Option<Stored>> {
        // Checked before locking so reading an unknown session creates neither the
        // directory nor a lock file.
        if !exists(&self.data)? {
            return Ok(None);
        }
        let lock = SessionLock::shared(&self.lock)?;
        let mut file = match File::open(&self.data) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            other => other.at(&self.data)?,
        };
        let metadata = file.metadata().at(&self.data)?;
        let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
        file.read_to_end(&mut bytes).at(&self.data)?;
        let generation = lock.generation(&self.lock)?;
        Ok(Some(Stored {
            bytes,
            metadata,
            generation,
        }))
    }

    /// Appends complete lines with one `write()`, first cutting off a torn tail.
    pub(crate) fn append(&self, lines: &[u8], sync: SyncPolicy) -> Result<()> {
        let lock = self.lock_exclusive()?;
        let current = self.inspect()?;
        self.append_locked(&lock, current, lines, sync)?;
        Ok(())
    }

    /// Replaces the whole session file with `contents`, atomically and durably.
    pub(crate) fn replace(&self, contents: &[u8]) -> Result<()> {
        let lock = self.lock_exclusive()?;
        self.rewrite_locked(&lock, contents)?;
        Ok(())
    }

    /// Removes the session file and its lock file. An unknown session is not an error.
    pub(crate) fn remove(&self) -> Result<()> {
        // A lock file alone is what a crash mid-delete, or a read racing one, leaves.
        if !exists(&self.data)? && !exists(&self.lock)? {
            return Ok(());
        }
        let lock = self.lock_exclusive()?;
        self.remove_locked(&lock)
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
        let current = self.inspect()?;
        self.truncate_locked(&lock, current, len)?;
        Ok(())
    }

    /// Applies `change` if the session meets `expected`, all under the exclusive lock;
    /// returns the generation after it. See the module docs for what is read.
    pub(crate) fn write_if(
        &self,
        expected: Expect,
        change: FileChange,
        sync: SyncPolicy,
    ) -> Result<u64> {
        let lock = self.lock_exclusive()?;
        let current = self.inspect()?;
        let generation = if current.exists() {
            lock.generation(&self.lock)?
        } else {
            0
        };
        // Messages are counted only where the answer depends on them.
        let len = match expected {
            Expect::Exactly(read) if generation != 0 && read.generation == generation => {
                Some(jsonl::line_count(&self.read_locked(&current)?))
            }
            _ => None,
        };
        if !expected.is_met_by(generation, || len.unwrap_or(0)) {
            if current.file.is_none() {
                // No session: leave no lock file behind for it (say, after a delete).
                lock.unlink(&self.lock)?;
            }
            return Err(expected.conflict(BACKEND, &self.id, generation, len));
        }
        let outcome = match change {
            FileChange::Append(lines) => self.append_locked(&lock, current, &lines, sync)?,
            FileChange::Truncate(len) => self.truncate_locked(&lock, current, len)?,
            FileChange::Replace(contents) if contents.is_empty() => {
                self.remove_locked(&lock)?;
                Outcome::Removed
            }
            FileChange::Replace(contents) => self.rewrite_locked(&lock, &contents)?,
        };
        Ok(match outcome {
            Outcome::Kept => generation,
            Outcome::New(generation) => generation,
            Outcome::Removed => 0,
        })
    }

    /// Opens the session file, if any, and finds where its data ends.
    fn inspect(&self) -> Result<Current> {
        let file = match OpenOptions::new().read(true).append(true).open(&self.data) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Ok(Current {
                    file: None,
                    len: 0,
                    data_end: 0,
                    needs_newline: false,
                });
            }
            other => other.at(&self.data)?,
        };
        let len = file.metadata().at(&self.data)?.len();
        let (data_end, needs_newline) = self.find_data_end(&file, len)?;
        Ok(Current {
            file: Some(file),
            len,
            data_end,
            needs_newline,
        })
    }

    /// Appends `lines` after cutting off a torn tail; an append that creates the session
    /// stores a fresh generation first.
    fn append_locked(
        &self,
        lock: &SessionLock,
        current: Current,
        lines: &[u8],
        sync: SyncPolicy,
    ) -> Result<Outcome> {
        if lines.is_empty() {
            return Ok(Outcome::Kept);
        }
        let file = match current.file {
            Some(file) => file,
            None => OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&self.data)
                .at(&self.data)?,
        };
        let kept = current.data_end;
        if kept < current.len {
            tracing::warn!(
                backend = BACKEND,
                session_id = %self.id,
                path = %self.data.display(),
                bytes = current.len - kept,
                "removing a torn tail left by an interrupted append"
            );
            file.set_len(kept).at(&self.data)?;
        }
        let outcome = if kept == 0 {
            let generation = new_generation();
            lock.set_generation(&self.lock, generation, sync == SyncPolicy::EveryWrite)?;
            Outcome::New(generation)
        } else {
            Outcome::Kept
        };
        let buf = if current.needs_newline {
            Cow::Owned([b"\n", lines].concat())
        } else {
            Cow::Borrowed(lines)
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
        if sync == SyncPolicy::EveryWrite {
            file.sync_data().at(&self.data)?;
            if kept == 0 {
                // The files may be new: make their directory entries durable too.
                sync_dir(&self.dir)?;
            }
        }
        Ok(outcome)
    }

    /// Keeps the first `len` lines of the data; a shorter history gets a new generation.
    fn truncate_locked(&self, lock: &SessionLock, current: Current, len: usize) -> Result<Outcome> {
        if !current.exists() {
            return Ok(Outcome::Kept);
        }
        let bytes = self.read_locked(&current)?;
        let keep = jsonl::prefix_len(&bytes, len);
        if keep >= jsonl::data_len(&bytes) {
            // No message removed; a torn tail is left for the next append to cut.
            Ok(Outcome::Kept)
        } else if keep == 0 {
            self.remove_locked(lock)?;
            Ok(Outcome::Removed)
        } else {
            let mut kept = bytes;
            kept.truncate(keep);
            // A cut inside a batch must leave a complete one, not a torn tail.
            jsonl::unmark_last_line(&mut kept);
            self.rewrite_locked(lock, &kept)
        }
    }

    /// Stores a fresh generation, then replaces the session file with `contents`.
    fn rewrite_locked(&self, lock: &SessionLock, contents: &[u8]) -> Result<Outcome> {
        let generation = new_generation();
        // Fsynced because the rewrite is: the new content must never be durable with the
        // old generation.
        lock.set_generation(&self.lock, generation, true)?;
        self.replace_locked(contents)?;
        Ok(Outcome::New(generation))
    }

    /// Writes a temporary file, fsyncs it, renames it over the session file and fsyncs
    /// the directory, so a crash at any point leaves the old history or the new one.
    fn replace_locked(&self, contents: &[u8]) -> Result<()> {
        let result = (|| {
            let mut temp = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.temp)
                .at(&self.temp)?;
            // Keep permissions a person set on the session file (say, `chmod 600`), which
            // the rename would otherwise silently reset. Best effort: a new file has none.
            if let Ok(existing) = fs::metadata(&self.data) {
                let _ = temp.set_permissions(existing.permissions());
            }
            temp.write_all(contents).at(&self.temp)?;
            temp.sync_all().at(&self.temp)?;
            drop(temp);
            fs::rename(&self.temp, &self.data).at(&self.data)?;
            sync_dir(&self.dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&self.temp);
        }
        result
    }

    /// Removes the session file, then the lock file (see the module docs), durably.
    fn remove_locked(&self, lock: &SessionLock) -> Result<()> {
        match fs::remove_file(&self.data) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            other => other.at(&self.data)?,
        }
        // A temp file can only outlive its `save` if that process crashed; tidy it up
        // while the lock still excludes every other writer.
        let _ = fs::remove_file(&self.temp);
        // Last: once it is gone, a newcomer can lock a new lock file at once.
        lock.unlink(&self.lock)?;
        sync_dir(&self.dir)
    }

    /// The whole session file, read through the handle `inspect` opened.
    fn read_locked(&self, current: &Current) -> Result<Vec<u8>> {
        let Some(mut file) = current.file.as_ref() else {
            return Ok(Vec::new());
        };
        let mut bytes = Vec::with_capacity(usize::try_from(current.len).unwrap_or(0));
        file.seek(SeekFrom::Start(0)).at(&self.data)?;
        file.read_to_end(&mut bytes).at(&self.data)?;
        Ok(bytes)
    }

    /// Where the data of a file of `len` bytes ends (before its torn tail), and whether it
    /// ends with a complete message missing its `\n`.
    ///
    /// Reads [`TAIL_PEEK`] bytes when the file ends with a complete batch, which is always
    /// the case unless an earlier append was interrupted; otherwise reads back as far as
    /// the torn tail reaches.
    fn find_data_end(&self, file: &File, len: u64) -> Result<(u64, bool)> {
        let mut size = TAIL_PEEK;
        loop {
            let start = len.saturating_sub(size);
            let mut chunk = vec![0; usize::try_from(len - start).unwrap_or(0)];
            read_exact_at(file, &mut chunk, start).at(&self.data)?;
            if let Some(end) = jsonl::data_end(&chunk, start == 0) {
                let needs_newline = end > 0 && chunk[end - 1] != b'\n';
                return Ok((start + end as u64, needs_newline));
            }
            size = size.max(TAIL_CHUNK / 2) * 2;
        }
    }

    /// Takes the session's exclusive lock, creating the directory on first use.
    fn lock_exclusive(&self) -> Result<SessionLock> {
        SessionLock::exclusive(&self.dir, &self.lock)
    }
}

/// Fills `buf` from `offset` of `file`: one `pread` on Unix (every append peeks at the
/// tail, so the seek a plain read needs is a system call saved per append), a seek and a
/// read elsewhere.
#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(mut file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

fn exists(path: &Path) -> Result<bool> {
    match fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err).at(path),
    }
}

/// Makes renames, creations and removals in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    match File::open(dir).and_then(|dir| dir.sync_all()) {
        // Some file systems cannot fsync a directory; their entries are as durable as
        // they get.
        Err(err) if err.kind() == io::ErrorKind::InvalidInput => Ok(()),
        other => other.at(dir),
    }
}

/// Windows cannot open a directory through `std::fs::File`; NTFS journals renames itself.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}
