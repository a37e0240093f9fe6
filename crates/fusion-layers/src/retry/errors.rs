//! The errors the retry layer answers with when it cannot answer the call's own result:
//! the last attempt's error saying how many were made ([`Retrying::gave_up`]), and a write
//! whose outcome cannot be told ([`Retrying::unknown`]); and how log lines show an error
//! ([`Retrying::text`]).

use fusion_core::Error;

use super::retrying::Retrying;

impl Retrying {
    /// The text of `err` for a log line, unless session ids are kept out of logs: an
    /// error's text names its session (and an I/O error's path, the session's file).
    pub(super) fn text<'e>(
        &self,
        err: &'e Error,
    ) -> Option<tracing::field::DisplayValue<&'e Error>> {
        self.session_ids.then(|| tracing::field::display(err))
    }

    /// `err`, the error of the last of `attempts` attempts, saying how many were made.
    ///
    /// The count goes into the error's own message where it has one
    /// ([`Error::push_note`]), so a program that shows the error (the `fusion` command)
    /// shows it once; any other error (an [`Error::Io`]) is returned as it is, and the
    /// count logged at `WARN` beside it.
    pub(super) fn gave_up(&self, operation: &str, attempts: u32, mut err: Error) -> Error {
        if !err.push_note(&format!(" (after {attempts} attempts)")) {
            tracing::warn!(
                backend = self.inner.backend_name(),
                operation,
                attempts,
                error = self.text(&err),
                "storage call failed on every attempt; giving up"
            );
        }
        err
    }

    /// The retryable error saying whether a write (`operation` of `session_id`) applied
    /// is unknown: an earlier attempt's reply was lost, and `why` it cannot be told
    /// (`source`).
    pub(super) fn unknown(
        &self,
        operation: &str,
        session_id: &str,
        why: &str,
        source: Error,
    ) -> Error {
        Error::Backend {
            backend: self.inner.backend_name(),
            message: format!(
                "{operation} of session \"{session_id}\": an earlier attempt's reply was lost, \
                 and {why}, so whether this write applied is unknown; read the session before \
                 writing again"
            ),
            retryable: true,
            source: Some(Box::new(source)),
        }
    }
}
