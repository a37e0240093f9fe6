//! The backend's own files (a session's lock, metadata and temporary files, and the
//! index's files): made anew rather than truncated, and told apart when they have other
//! names, so that a snapshot of the directory made with hard links keeps its bytes.
//!
//! They are opened with [`regular_file::open_not_following`] (or
//! [`regular_file::open_or_create`], which does not follow either): they are written in
//! place or truncated, and followed through a symbolic link such a write would land on
//! whatever file the link names, maybe outside the directory (a `.s.tmp` linked to a
//! person's document was truncated and overwritten with the session by the next `save`).
//! A session's data file is followed through a symlink ([`regular_file::open`]): it is
//! the conversation a person may keep elsewhere.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::path::Path;

use fusion_core::Result;

use crate::error::IoContext;
use crate::regular_file;

/// Opens `path` for reading and writing as a new, empty file: a temporary file, or the
/// metadata of a session that has no data yet.
///
/// A regular file already there (what a crash left) is removed first rather than
/// truncated: it may be hard-linked into a snapshot of the directory (`cp -al`,
/// rsnapshot), whose copy a truncation would empty too; a new inode leaves it alone. Where
/// nothing is in the way, the usual case, this is the one `open` it always was. A symbolic
/// link or any other kind of file there is refused as
/// [`regular_file::open_not_following`] refuses it, and left.
pub(crate) fn create_anew(path: &Path) -> io::Result<(File, Metadata)> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(true);
    loop {
        match regular_file::open_not_following(&mut options, path) {
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                // `open_not_following` turned what is not a regular file into its own
                // error, so this is a regular file: remove it (gone already is as good)
                // and create anew.
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

/// Whether `metadata`, of an open file, says it has no name left in any directory (it was
/// removed while open: what is written to it is lost once it is closed). Never on systems
/// without link counts in `std` (Windows refuses to remove a file that is open).
#[cfg(unix)]
pub(crate) fn is_unlinked(metadata: &Metadata) -> bool {
    std::os::unix::fs::MetadataExt::nlink(metadata) == 0
}

#[cfg(not(unix))]
pub(crate) fn is_unlinked(_metadata: &Metadata) -> bool {
    false
}

/// Whether the open `file` no longer has a name in any directory.
pub(crate) fn is_removed(file: &File) -> bool {
    file.metadata().is_ok_and(|metadata| is_unlinked(&metadata))
}

/// Replaces the file at `path` by a new one that `fill` writes, made at `temp` beside it
/// ([`create_anew`]): fsynced, renamed over `path`, and the directory synced, so that a
/// crash leaves the old file or the new one, whole, and the old file's other names (hard
/// links into a snapshot, see [`is_shared`]) keep it as it was. Returns the new file, open;
/// `temp` is removed if this fails once it made it.
pub(crate) fn replace_by_copy(
    temp: &Path,
    path: &Path,
    fill: impl FnOnce(&mut File) -> Result<()>,
) -> Result<File> {
    // A temporary file this call could not open is not its own to remove.
    let (mut copy, _) = create_anew(temp).at(temp)?;
    let result = fill(&mut copy)
        .and_then(|()| copy.sync_all().at(temp))
        .and_then(|()| std::fs::rename(temp, path).at(path));
    if let Err(err) = result {
        let _ = std::fs::remove_file(temp);
        return Err(err);
    }
    if let Some(dir) = path.parent() {
        crate::session_files::sync_dir(dir)?;
    }
    Ok(copy)
}
