//! The one place where file-system and runtime failures become [`fusion_core::Error`]s.

use std::io;
use std::path::Path;

use fusion_core::Error;
use tokio::task::JoinError;

use crate::file_name;
use fusion_core::regular_file::NotRegular;

/// The backend name in every error and log line.
pub(crate) const BACKEND: &str = "fs";

/// Attaches the path an I/O operation was working on, giving [`Error::Io`].
pub(crate) trait IoContext<T> {
    /// Maps the error to [`Error::Io`] naming `path`, or, for a file refused as not
    /// regular (a symbolic link where a file of the backend's own belongs included), to
    /// the error [`refused`] gives.
    fn at(self, path: &Path) -> Result<T, Error>;

    /// [`at`](Self::at) for an index marker of session `id` (owner, tag, expiry), which
    /// its path does not name: one refused is [`Error::Corrupt`] for that session, as a
    /// refused file of the session's own is, so that a purge moving the marker leaves the
    /// session out with a warning rather than failing before every session after it.
    fn at_marker(self, path: &Path, id: &str) -> Result<T, Error>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, Error> {
        self.map_err(|err| {
            if let Some(refusal) = NotRegular::of(&err) {
                refused(path, refusal, file_name::id_from_path(path))
            } else {
                Error::io(path, err)
            }
        })
    }

    fn at_marker(self, path: &Path, id: &str) -> Result<T, Error> {
        self.map_err(|err| match NotRegular::of(&err) {
            Some(refusal) => refused(path, refusal, Some(id.to_string())),
            None => Error::io(path, err),
        })
    }
}

/// A FIFO, directory, socket or device at `path`, where a regular file belongs, or a
/// symbolic link where the backend keeps a file of its own ([`crate::own_file`]; see
/// [`fusion_core::regular_file`]): [`Error::Corrupt`] for the session whose file it is (`id`:
/// read back from the file's name, or a marker's), like any damaged file of one session,
/// or a non-retryable [`Error::Backend`] for an index file. Either names the path and says
/// how to get past it; nothing was read or written through it.
fn refused(path: &Path, refusal: &NotRegular, id: Option<String>) -> Error {
    let what = format!("{} {refusal}, and was left as it is", path.display());
    match id {
        Some(id) => Error::corrupt(
            BACKEND,
            id,
            format!("{what}: move it aside to use the session again"),
        ),
        None => Error::Backend {
            backend: BACKEND,
            message: format!("{what}: move it aside, then rebuild the index"),
            retryable: false,
            source: None,
        },
    }
}

/// Maps a failed blocking task. A panic inside the task is a bug, so it is resumed on the
/// caller rather than turned into an error value; the only other cause is the runtime
/// shutting down, after which no retry can succeed.
pub(crate) fn from_join(err: JoinError) -> Error {
    match err.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(err) => Error::Backend {
            backend: BACKEND,
            message: "the blocking file task was cancelled because the runtime is shutting down"
                .to_string(),
            retryable: false,
            source: Some(Box::new(err)),
        },
    }
}
