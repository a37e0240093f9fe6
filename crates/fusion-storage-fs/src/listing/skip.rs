//! What a listing leaves out, and why: a damaged session, or one whose file cannot be
//! read for a reason that lasts, is left out with a warning (one such session never
//! hides every other); one that could not be read for a reason that passes fails the
//! listing, retryable, rather than be missing from it.

use std::path::Path;

use fusion_core::{Error, Result};

use crate::error::{BACKEND, IoContext};
use crate::file_name;
use crate::session_files::SessionFiles;

/// A damaged session counts as absent in listings (and in an index build), with a
/// warning, and so does one whose metadata file cannot be read (an I/O error: its owner,
/// tags and expiry unknown), as a purge leaves both out: one such session never hides
/// every other. Its own calls report what is wrong with it.
///
/// A read failed for an error that passes by itself ([`passes`]: a limit of open files,
/// memory) fails the call instead, retryable: left out, the session would be missing from
/// the page (and from an index built meanwhile) with nothing but a warning to say so.
pub(super) fn skip_damaged<T>(
    files: &SessionFiles,
    result: Result<Option<T>>,
) -> Result<Option<T>> {
    match result {
        Err(err) if is_unread(files, &err) && is_passing(&err) => {
            Err(passing_error(files.id(), err))
        }
        Err(Error::Corrupt {
            session_id, detail, ..
        }) => {
            tracing::warn!(backend = BACKEND, %session_id, %detail, "leaving a damaged session out of a listing");
            Ok(None)
        }
        // The session file itself cannot be looked at (a symbolic link to itself, or into
        // a directory this process may not read): left out the same way.
        Err(Error::Io { path, source }) if path == files.data() => {
            tracing::warn!(backend = BACKEND, session_id = %files.id(), path = %path.display(), error = %source, "leaving a session whose file cannot be read out of a listing");
            Ok(None)
        }
        Err(err) if files.is_meta_error(&err) => {
            tracing::warn!(backend = BACKEND, session_id = %files.id(), error = %err, "leaving a session whose metadata file cannot be read out of a listing (an index built meanwhile is built again once it reads)");
            Ok(None)
        }
        other => other,
    }
}

/// Whether `err` is the failure of a read of the session's file or its metadata file (see
/// [`skip_damaged`]), which may pass, unlike damage.
pub(super) fn is_unread(files: &SessionFiles, err: &Error) -> bool {
    matches!(err, Error::Io { path, .. } if *path == files.data()) || files.is_meta_error(err)
}

/// Whether `err` is an [`Error::Io`] that [`passes`].
pub(super) fn is_passing(err: &Error) -> bool {
    matches!(err, Error::Io { source, .. } if passes(source))
}

/// EMFILE and ENFILE (the same numbers on every Unix), ERROR_TOO_MANY_OPEN_FILES.
#[cfg(unix)]
const OPEN_FILE_LIMITS: [i32; 2] = [24, 23];
#[cfg(windows)]
const OPEN_FILE_LIMITS: [i32; 1] = [4];
#[cfg(not(any(unix, windows)))]
const OPEN_FILE_LIMITS: [i32; 0] = [];

/// Whether the failure of a read, `err`, is one that passes by itself (a limit of open
/// files, memory, an interrupted, timed-out or busy call, a network file's stale handle),
/// so that the same read is likely to succeed when tried again; unlike a refused
/// permission or a symbolic-link loop, which last until someone fixes them.
fn passes(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    let err = crate::meta_file::cause(err);
    matches!(
        err.kind(),
        ErrorKind::OutOfMemory
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::TimedOut
            | ErrorKind::ResourceBusy
            | ErrorKind::StaleNetworkFileHandle
    ) || err
        .raw_os_error()
        .is_some_and(|code| OPEN_FILE_LIMITS.contains(&code))
}

/// The retryable error a listing fails with where a file of session `id` could not be
/// read for an error that [`passes`] (`err`, an [`Error::Io`]; any other is returned as
/// it is).
fn passing_error(id: &str, err: Error) -> Error {
    let Error::Io { path, source } = err else {
        return err;
    };
    Error::Backend {
        backend: BACKEND,
        message: format!(
            "{} of session \"{id}\" could not be read ({source}), an error that passes: no session was left out of the listing for it; try again",
            path.display()
        ),
        retryable: true,
        source: Some(Box::new(source)),
    }
}

/// The sessions stored in `dir`: every canonical `{stem}.jsonl` with some content (but
/// one whose file cannot be looked at, left out with a warning; a look that failed for
/// an error that [`passes`] fails the call, retryable).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<String>> {
    list_dir_noting(dir, &mut Vec::new())
}

/// [`list_dir`], adding to `unread` each session it left out.
pub(super) fn list_dir_noting(dir: &Path, unread: &mut Vec<String>) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.at(dir)?,
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.at(dir)?;
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(file_name::id_from_file_name)
        else {
            continue;
        };
        // An empty file is what a process killed between creating the file and writing
        // its first line leaves behind; it holds no messages, so it is no session. The
        // stat is one per session, in line with this method's cost.
        // Followed through symlinks, as `load` would.
        match std::fs::metadata(entry.path()) {
            Ok(metadata) if metadata.is_file() && metadata.len() > 0 => ids.push(id),
            Ok(_) => {}
            // Deleted since the directory was read.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            // Not looked at for now (a limit of open files): tried again, it would be.
            Err(err) if passes(&err) => {
                return Err(passing_error(&id, Error::io(entry.path(), err)));
            }
            // One that cannot be looked at (a symbolic link to itself, or into a directory
            // this process may not read) is left out with a warning, as a listing leaves
            // out a session whose file cannot be read: it never hides every other.
            Err(err) => {
                unread.push(id.clone());
                let path = entry.path();
                tracing::warn!(backend = BACKEND, session_id = %id, path = %path.display(), error = %err, "leaving a session whose file cannot be read out of a listing");
            }
        }
    }
    Ok(ids)
}
