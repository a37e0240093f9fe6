//! The backend's own files, opened where they are and never through a symbolic link: a
//! session's lock, metadata and temporary files, and the index's files.
//!
//! A session's data file is followed through a symlink ([`regular_file`]): it is the
//! conversation a person may keep elsewhere. The hidden files are the backend's alone,
//! and they are written in place (the counters in a lock file, the index's state and id
//! log) or truncated and rewritten (temporary files, the metadata of a new session).
//! Followed through a link, such a write lands on whatever file the link names, maybe
//! outside the directory: a `.s.tmp` linked to a person's document was truncated and
//! overwritten with the session by the next `save`, a `.s.lock` linked to one had its
//! first bytes replaced by counters. So these files are opened with `O_NOFOLLOW`, which
//! refuses a link in the open itself (no extra system call, nothing truncated first), and
//! a link there is refused as a FIFO is, by [`Symlink`], and left as it is.

use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::path::Path;

use crate::regular_file;

/// Why one of the backend's own files was refused: a symbolic link stands where it
/// belongs. Carried inside an [`io::Error`] ([`Symlink::of`] finds it).
#[derive(Debug)]
pub(crate) struct Symlink;

impl Symlink {
    /// The refusal `err` carries, if it is one.
    pub(crate) fn of(err: &io::Error) -> Option<&Symlink> {
        err.get_ref()?.downcast_ref()
    }
}

impl fmt::Display for Symlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "is a symbolic link where the backend keeps a file of its own, which it never \
             writes through",
        )
    }
}

impl std::error::Error for Symlink {}

/// Opens `path` with `options` as [`regular_file::open`] does (a FIFO, directory, socket
/// or device is refused), and refuses a symbolic link at `path` with [`Symlink`] whatever
/// it names (see the module docs).
#[cfg(unix)]
pub(crate) fn open(options: &mut OpenOptions, path: &Path) -> io::Result<(File, Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;

    options.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
    let file = match options.open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(err),
        Err(err) => {
            // `ELOOP` for a link; else say what stands there rather than what the open
            // ran into, as `regular_file::open` does.
            return Err(match std::fs::symlink_metadata(path) {
                Ok(found) if found.file_type().is_symlink() => io::Error::other(Symlink),
                Ok(found) => regular_file::check(&found).err().unwrap_or(err),
                Err(_) => err,
            });
        }
    };
    let metadata = file.metadata()?;
    regular_file::check(&metadata)?;
    Ok((file, metadata))
}

/// Symbolic links are rare where `O_NOFOLLOW` is missing, and need privileges on Windows.
#[cfg(not(unix))]
pub(crate) fn open(options: &mut OpenOptions, path: &Path) -> io::Result<(File, Metadata)> {
    regular_file::open(options, path)
}

/// [`open`] for reading and writing, the file created if missing and never truncated: a
/// lock or state file.
pub(crate) fn open_or_create(path: &Path) -> io::Result<(File, Metadata)> {
    open(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
        path,
    )
}

/// [`open`] for reading and writing, as a new, empty file: a temporary file, or the metadata of a
/// session that has no data yet.
///
/// A regular file already there (what a crash left) is removed first rather than
/// truncated: it may be hard-linked into a snapshot of the directory (`cp -al`,
/// rsnapshot), whose copy a truncation would empty too; a new inode leaves it alone. Where
/// nothing is in the way, the usual case, this is the one `open` it always was. A symbolic
/// link or any other kind of file there is refused as [`open`] refuses it, and left.
pub(crate) fn create_or_truncate(path: &Path) -> io::Result<(File, Metadata)> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(true);
    loop {
        match open(&mut options, path) {
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                // `open` turned what is not a regular file into its own error, so this is
                // a regular file: remove it (gone already is as good) and create anew.
                match std::fs::remove_file(path) {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                    _ => {}
                }
            }
            other => return other,
        }
    }
}

/// Whether the open file described by `metadata` has other names than the one it was
/// opened by (hard links, say into a snapshot made with `cp -al`): writing it in place
/// would change them all, so it is copied to a new file first (see [`crate::lock`] and
/// [`crate::session_files`]). Never on systems without link counts in `std`.
#[cfg(unix)]
pub(crate) fn is_shared(metadata: &Metadata) -> bool {
    std::os::unix::fs::MetadataExt::nlink(metadata) > 1
}

#[cfg(not(unix))]
pub(crate) fn is_shared(_metadata: &Metadata) -> bool {
    false
}
