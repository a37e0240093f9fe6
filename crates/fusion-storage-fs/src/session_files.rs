//! The blocking file work for one session: locking, reading, appending, atomic replacement.
//!
//! # Locking
//!
//! Every operation on a session first locks that session's own lock file
//! (`.{stem}.lock`, next to `{stem}.jsonl`): exclusively for `append`, `save`, `truncate`
//! and `delete`, shared for `load` and `session_info`. The locks are the operating
//! system's advisory file locks (`flock` on Unix, `LockFileEx` on Windows, through
//! [`File::lock`]), which work between processes and between separately opened handles in
//! one process, so storage instances never need to know about each other.
//!
//! The lock lives in a separate file, not on the session file itself, because `save`
//! replaces the session file by renaming a new one over it. A writer that had opened (and
//! was waiting to lock) the old file would, once the lock was released, append into an
//! unlinked inode and its messages would vanish. The lock file is never replaced or
//! removed, so everyone who opens it locks the same inode, and the session file is only
//! opened *after* the lock is held, so it is always the current one. The price is one empty
//! hidden file per session ever written, left behind by `delete` on purpose: removing it
//! would reintroduce the same race one level up.
//!
//! Advisory locks bind only programs that take them; a person appending with `echo >>`
//! while Fusion runs is not excluded. On network file systems `flock` may be local to
//! one machine (older NFS), so share a directory between hosts only on a file system with
//! working locks.

use std::borrow::Cow;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fusion_core::Result;

use crate::error::{BACKEND, IoContext};
use crate::file_name;
use crate::jsonl::{self, Tail};
use crate::options::SyncPolicy;

/// How far back to read at a time when looking for the start of a torn tail.
const TAIL_CHUNK: u64 = 64 * 1024;

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

    /// The session file's bytes and metadata, or `None` if the session was never written.
    pub(crate) fn read(&self) -> Result<Option<(Vec<u8>, Metadata)>> {
        // Checked before locking so reading an unknown session creates neither the
        // directory nor a lock file.
        if !self.data_exists()? {
            return Ok(None);
        }
        let _lock = self.lock_shared()?;
        let mut file = match File::open(&self.data) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            other => other.at(&self.data)?,
        };
        let metadata = file.metadata().at(&self.data)?;
        let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
        file.read_to_end(&mut bytes).at(&self.data)?;
        Ok(Some((bytes, metadata)))
    }

    /// Appends complete lines with one `write()`, first cutting off a torn tail.
    pub(crate) fn append(&self, lines: &[u8], sync: SyncPolicy) -> Result<()> {
        let _lock = self.lock_exclusive()?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.data)
            .at(&self.data)?;
        let (kept, needs_newline) = self.repair_tail(&file)?;
        let buf = if needs_newline {
            Cow::Owned([b"\n", lines].concat())
        } else {
            Cow::Borrowed(lines)
        };
        if let Err(err) = file.write_all(&buf) {
            // A failed write (disk full, quota) may have stored part of the batch; cut it
            // off so the append is all or nothing, and leave no empty session behind.
            // Should this cleanup fail too, the partial line is a torn tail that the next
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
                // The file may be new: make its directory entry durable too.
                sync_dir(&self.dir)?;
            }
        }
        Ok(())
    }

    /// Replaces the whole session file with `contents`, atomically and durably.
    pub(crate) fn replace(&self, contents: &[u8]) -> Result<()> {
        let _lock = self.lock_exclusive()?;
        self.replace_locked(contents)
    }

    /// Removes the session file. An unknown session is not an error.
    pub(crate) fn remove(&self) -> Result<()> {
        if !self.data_exists()? {
            return Ok(());
        }
        let _lock = self.lock_exclusive()?;
        self.remove_locked()
    }

    /// Keeps the first `len` lines, atomically and durably.
    ///
    /// Lines are counted, not parsed, so this also recovers a session whose later lines
    /// are damaged: truncating to just before the bad line makes it loadable again.
    pub(crate) fn truncate(&self, len: usize) -> Result<()> {
        if !self.data_exists()? {
            return Ok(());
        }
        let _lock = self.lock_exclusive()?;
        let bytes = match fs::read(&self.data) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => other.at(&self.data)?,
        };
        let keep = jsonl::prefix_len(&bytes, len);
        if keep == bytes.len() {
            Ok(())
        } else if keep == 0 {
            self.remove_locked()
        } else {
            self.replace_locked(&bytes[..keep])
        }
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

    fn remove_locked(&self) -> Result<()> {
        match fs::remove_file(&self.data) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            other => other.at(&self.data)?,
        }
        // A temp file can only outlive its `save` if that process crashed; tidy it up.
        let _ = fs::remove_file(&self.temp);
        sync_dir(&self.dir)
    }

    /// Makes the file end at a line boundary before an append. Returns the length to
    /// roll back to if the append fails, and whether a `\n` must be written first.
    ///
    /// Costs one `fstat` and a one-byte read when the file is clean, which is always the
    /// case unless an earlier append was interrupted.
    fn repair_tail(&self, mut file: &File) -> Result<(u64, bool)> {
        let len = file.metadata().at(&self.data)?.len();
        if len == 0 {
            return Ok((0, false));
        }
        let mut last = [0u8];
        file.seek(SeekFrom::Start(len - 1)).at(&self.data)?;
        file.read_exact(&mut last).at(&self.data)?;
        if last[0] == b'\n' {
            return Ok((len, false));
        }
        let (start, tail) = self.read_tail(file, len)?;
        if let Tail::Torn { len: torn } = jsonl::classify_tail(&tail) {
            tracing::warn!(
                backend = BACKEND,
                session_id = %self.id,
                path = %self.data.display(),
                bytes = torn,
                "removing a torn final line left by an interrupted append"
            );
            file.set_len(start).at(&self.data)?;
            return Ok((start, false));
        }
        // A complete message missing only its `\n` is data: terminate it, keep it.
        Ok((len, true))
    }

    /// The bytes after the last `\n` of a file of `len` bytes, and where they start.
    fn read_tail(&self, mut file: &File, len: u64) -> Result<(u64, Vec<u8>)> {
        let mut tail = Vec::new();
        let mut end = len;
        while end > 0 {
            let start = end.saturating_sub(TAIL_CHUNK);
            let mut chunk = vec![0; usize::try_from(end - start).unwrap_or(0)];
            file.seek(SeekFrom::Start(start)).at(&self.data)?;
            file.read_exact(&mut chunk).at(&self.data)?;
            let newline = chunk.iter().rposition(|&b| b == b'\n');
            let from = newline.map_or(0, |i| i + 1);
            chunk.drain(..from);
            chunk.extend_from_slice(&tail);
            tail = chunk;
            if newline.is_some() {
                return Ok((start + from as u64, tail));
            }
            end = start;
        }
        Ok((0, tail))
    }

    fn data_exists(&self) -> Result<bool> {
        match fs::metadata(&self.data) {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err).at(&self.data),
        }
    }

    /// Takes the session's exclusive lock, creating the directory on first use.
    fn lock_exclusive(&self) -> Result<File> {
        let file = match open_lock_file(&self.lock) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.dir).at(&self.dir)?;
                open_lock_file(&self.lock)
            }
            other => other,
        }
        .at(&self.lock)?;
        retry_interrupted(|| file.lock()).at(&self.lock)?;
        Ok(file)
    }

    /// Takes the session's shared lock, so a reader never sees half of an append.
    ///
    /// In a directory this process may not write to (a read-only mount, another user's
    /// sessions) the lock file may be impossible to create; nobody can be writing through
    /// this backend there without having created it, so reading unlocked is safe.
    fn lock_shared(&self) -> Result<Option<File>> {
        let file = match open_lock_file(&self.lock) {
            Ok(file) => file,
            Err(err) if is_unwritable(&err) => match File::open(&self.lock) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(err) => return Err(err).at(&self.lock),
            },
            Err(err) => return Err(err).at(&self.lock),
        };
        retry_interrupted(|| file.lock_shared()).at(&self.lock)?;
        Ok(Some(file))
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    // Opened for writing only so it can be created; it is never written.
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn is_unwritable(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
    )
}

/// Waiting for a lock can be interrupted by a signal; that is not a failure.
fn retry_interrupted(mut op: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    loop {
        match op() {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
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
