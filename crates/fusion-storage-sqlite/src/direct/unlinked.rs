//! Noticing that the database file was deleted, or replaced by another moved over its
//! name, while its connections are open: they would go on writing to a file no path leads
//! to, gone with every write when the storage closes.
//!
//! The file is watched through a handle of its own, opened with `O_PATH` (Linux): one
//! that can be `fstat`ed but neither read nor written. A plain handle would be unsafe
//! here. POSIX drops every lock a process holds on a file when it closes *any* handle to
//! it, so closing a plain one would silently release the locks of SQLite's connections to
//! the same file in this process (another storage on it), after which another process
//! could checkpoint the log and delete it under them. Linux keeps the locks when an
//! `O_PATH` handle closes; other systems have no such handle, and the file is not watched
//! there.

use std::path::Path;

/// A watch on one database file.
#[derive(Debug)]
pub(super) struct Watch {
    #[cfg(target_os = "linux")]
    file: Option<std::fs::File>,
}

impl Watch {
    /// Starts watching the file at `path`, which the connections have just opened. A file
    /// gone already (deleted in that instant) counts as deleted from the start; one that
    /// cannot be opened so (not a file the kernel knows: a custom VFS's name) is not
    /// watched.
    pub(super) fn open(path: &Path) -> (Self, bool) {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                .open(path)
            {
                Ok(file) => (Self { file: Some(file) }, false),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    (Self { file: None }, true)
                }
                Err(_) => (Self { file: None }, false),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = path;
            (Self {}, false)
        }
    }

    /// A watch on nothing: for a database that is never written.
    pub(super) fn none() -> Self {
        Self {
            #[cfg(target_os = "linux")]
            file: None,
        }
    }

    /// Whether `path` names the watched file (or nothing is watched, so there is no
    /// telling): what a new connection, which SQLite opens by path, needs. A file moved
    /// away, or replaced by another at that path, is not named by it: a connection opened
    /// there would read and write another database (or create an empty one).
    pub(super) fn named_by(&self, path: &Path) -> bool {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::MetadataExt;
            let Some(watched) = self.file.as_ref().and_then(|file| file.metadata().ok()) else {
                return true;
            };
            std::fs::metadata(path)
                .is_ok_and(|named| (named.dev(), named.ino()) == (watched.dev(), watched.ino()))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = path;
            true
        }
    }

    /// Whether the watched file has no name left: deleted, or replaced. One `fstat`, well
    /// under a microsecond, where a write costs tens.
    pub(super) fn unlinked(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::MetadataExt;
            self.file
                .as_ref()
                .and_then(|file| file.metadata().ok())
                .is_some_and(|metadata| metadata.nlink() == 0)
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }
}
