//! A session's lock file, held: the advisory lock and the generation it stores.
//!
//! The protocol (why a separate file, why its identity is checked after locking, when it
//! is removed) is described in [`crate::session_files`]; this module holds the handle.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use fusion_core::{LEGACY_GENERATION, Result};

use crate::error::{BACKEND, IoContext};

/// How many digits a stored generation takes. Generations are below 2^53 (16 digits), and
/// writing them zero-padded to one width makes every store a single in-place `write()` of
/// the same size, which a killed process cannot leave half done.
const WIDTH: usize = 16;

/// A session's lock, held until dropped.
#[derive(Debug)]
pub(crate) struct SessionLock {
    /// `None` when reading unlocked in a directory where the lock file cannot exist.
    file: Option<File>,
}

impl SessionLock {
    /// Takes the exclusive lock on `path`, creating it (and `dir`) if needed.
    pub(crate) fn exclusive(dir: &Path, path: &Path) -> Result<Self> {
        loop {
            let file = match open_lock_file(path) {
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir_all(dir).at(dir)?;
                    open_lock_file(path)
                }
                other => other,
            }
            .at(path)?;
            retry_interrupted(|| file.lock()).at(path)?;
            if still_linked(&file, path)? {
                return Ok(Self { file: Some(file) });
            }
        }
    }

    /// Takes the shared lock on `path`, so a reader never sees half of a write.
    ///
    /// In a directory this process may not write to (a read-only mount, another user's
    /// sessions) the lock file may be impossible to create; nobody can be writing through
    /// this backend there without having created it, so reading unlocked is safe.
    pub(crate) fn shared(path: &Path) -> Result<Self> {
        loop {
            let file = match open_lock_file(path) {
                Ok(file) => file,
                Err(err) if is_unwritable(&err) => match File::open(path) {
                    Ok(file) => file,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {
                        return Ok(Self { file: None });
                    }
                    Err(err) => return Err(err).at(path),
                },
                Err(err) => return Err(err).at(path),
            };
            retry_interrupted(|| file.lock_shared()).at(path)?;
            if still_linked(&file, path)? {
                return Ok(Self { file: Some(file) });
            }
        }
    }

    /// The generation stored in the lock file, for a session whose data file holds
    /// messages: [`LEGACY_GENERATION`] if none is stored (an empty lock file, written
    /// before generations existed) or if what is stored is not one.
    pub(crate) fn generation(&self, path: &Path) -> Result<u64> {
        let Some(mut file) = self.file.as_ref() else {
            return Ok(LEGACY_GENERATION);
        };
        let mut text = String::with_capacity(WIDTH);
        file.seek(SeekFrom::Start(0)).at(path)?;
        match file.take(64).read_to_string(&mut text) {
            Ok(_) => {}
            // Not UTF-8, so not a generation either: handled like other junk below.
            Err(err) if err.kind() == io::ErrorKind::InvalidData => text.push('?'),
            Err(err) => return Err(err).at(path),
        }
        let text = text.trim();
        match text.parse::<u64>() {
            // 0 is "absent", which a session with messages is not.
            Ok(generation) if generation > LEGACY_GENERATION => Ok(generation),
            Ok(_) => Ok(LEGACY_GENERATION),
            Err(_) if text.is_empty() => Ok(LEGACY_GENERATION),
            Err(_) => {
                tracing::warn!(
                    backend = BACKEND,
                    path = %path.display(),
                    "the lock file does not hold a generation; reporting the legacy one \
                     until the next rewrite of the session stores a fresh one"
                );
                Ok(LEGACY_GENERATION)
            }
        }
    }

    /// Stores `generation`, fsyncing it if `sync`. Only for an exclusive lock.
    pub(crate) fn set_generation(&self, path: &Path, generation: u64, sync: bool) -> Result<()> {
        let Some(mut file) = self.file.as_ref() else {
            return Ok(());
        };
        let text = format!("{generation:0WIDTH$}");
        file.seek(SeekFrom::Start(0)).at(path)?;
        file.write_all(text.as_bytes()).at(path)?;
        // Only a hand-edited file can be longer; cut what would follow the number.
        if file.metadata().at(path)?.len() > text.len() as u64 {
            file.set_len(text.len() as u64).at(path)?;
        }
        if sync {
            file.sync_data().at(path)?;
        }
        Ok(())
    }

    /// Removes the lock file, whose session is being deleted under this (exclusive) lock.
    /// Anyone waiting on it finds it unlinked once they hold it, and opens a new one.
    ///
    /// Where that check is not available (not Unix), the file stays, as it always did.
    pub(crate) fn unlink(&self, path: &Path) -> Result<()> {
        if cfg!(unix) {
            match fs::remove_file(path) {
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                other => other.at(path)?,
            }
        }
        Ok(())
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Whether `path` still names the file locked through `file`. A `delete` removes the lock
/// file while holding it; whoever opened that file before and locked it after holds a lock
/// nobody else will take, and must open the path again.
#[cfg(unix)]
fn still_linked(file: &File, path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;

    let held = file.metadata().at(path)?;
    match fs::metadata(path) {
        Ok(named) => Ok(named.dev() == held.dev() && named.ino() == held.ino()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err).at(path),
    }
}

/// Lock files are never removed where this cannot be checked (see [`SessionLock::unlink`]).
#[cfg(not(unix))]
fn still_linked(_file: &File, _path: &Path) -> Result<bool> {
    Ok(true)
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
