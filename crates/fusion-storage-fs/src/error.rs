//! The one place where file-system and runtime failures become [`fusion_core::Error`]s.

use std::io;
use std::path::Path;

use fusion_core::Error;
use tokio::task::JoinError;

/// The backend name in every error and log line.
pub(crate) const BACKEND: &str = "fs";

/// Attaches the path an I/O operation was working on, giving [`Error::Io`].
pub(crate) trait IoContext<T> {
    /// Maps the error to [`Error::Io`] naming `path`.
    fn at(self, path: &Path) -> Result<T, Error>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, Error> {
        self.map_err(|err| Error::io(path, err))
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
