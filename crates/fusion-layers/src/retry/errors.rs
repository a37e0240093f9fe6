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
    /// The count goes into the error's own message, where it has one ([`Error::Backend`]
    /// and [`Error::Llm`]): same variant, same [`is_retryable`](Error::is_retryable), same
    /// source to downcast, so callers that match on any of them are unaffected, and a
    /// program that shows the error (the `fusion` command) shows it once. Wrapping the
    /// error would change its variant. Any other error (an [`Error::Io`], whose text is
    /// its path and the OS error's) is returned as it is, and the count logged at `WARN`
    /// beside it: rebuilding its `io::Error` to reword it would lose the OS error code.
    ///
    /// `attempts` counts the calls made of the storage under every retry layer (see
    /// [`attempts_in`](Self::attempts_in)), and the note of a retry layer inside this one
    /// is replaced: stacked layers say one count, once.
    pub(super) fn gave_up(&self, operation: &str, attempts: u32, err: Error) -> Error {
        let note = format!(" (after {attempts} attempts)");
        let noted = |mut message: String| {
            if let Some((kept, _)) = split_note(&message) {
                message.truncate(kept);
            }
            message + &note
        };
        match err {
            Error::Backend {
                backend,
                message,
                retryable,
                source,
            } => {
                let message = noted(message);
                Error::Backend {
                    backend,
                    message,
                    retryable,
                    source,
                }
            }
            Error::Llm {
                message,
                status,
                retryable,
                source,
            } => {
                let message = noted(message);
                Error::Llm {
                    message,
                    status,
                    retryable,
                    source,
                }
            }
            other => {
                tracing::warn!(
                    backend = self.inner.backend_name(),
                    operation,
                    attempts,
                    error = self.text(&other),
                    "storage call failed on every attempt; giving up"
                );
                other
            }
        }
    }

    /// How many calls of the storage an attempt that failed with `err` made: the count of
    /// a retry layer inside this one, which its note gives, else 1.
    pub(super) fn attempts_in(err: &Error) -> u32 {
        match err {
            Error::Backend { message, .. } | Error::Llm { message, .. } => {
                split_note(message).map_or(1, |(_, attempts)| attempts)
            }
            _ => 1,
        }
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

/// Where the note `gave_up` ends a message with (` (after 4 attempts)`) starts, and its
/// count, if `message` ends with one.
fn split_note(message: &str) -> Option<(usize, u32)> {
    let body = message.strip_suffix(" attempts)")?;
    let start = body.rfind(" (after ")?;
    let attempts = body[start + " (after ".len()..].parse().ok()?;
    Some((start, attempts))
}
