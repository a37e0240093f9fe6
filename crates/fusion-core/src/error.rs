//! The one error type of Fusion, shared by storage backends, the agent and the facade.
//!
//! Variants name the session and the backend involved so a log line is enough to act on.
//! No driver type (sqlx, redis, reqwest) appears here: each backend maps its driver's
//! errors in one place into [`Error::Backend`] and friends, keeping the source for
//! `Error::source()` chains.

use std::path::PathBuf;

/// A boxed error source from a driver or library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with Fusion's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Fusion.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The session id breaks the rule in [`crate::SessionId`]. Nothing was read or written.
    #[error("invalid session id \"{id}\": {reason}")]
    InvalidSessionId {
        /// The rejected id, escaped and shortened for display.
        id: String,
        /// Why it was rejected.
        reason: String,
    },

    /// Stored data for one session could not be read back. Other sessions are unaffected.
    #[error("{backend}: session \"{session_id}\" is corrupt: {detail}")]
    Corrupt {
        /// The backend that holds the data (`fs`, `sqlite`, ...).
        backend: &'static str,
        /// The affected session.
        session_id: String,
        /// What is wrong and where (line, sequence number, ...).
        detail: String,
    },

    /// A message was refused before anything was written: the backend could not store it
    /// in a form it can read back (see [`crate::check_storable`]). Not retryable; the
    /// message must change.
    ///
    /// Shown counted from 1, as a person counts (and as `fusion sessions import` names a
    /// file's messages), with the index beside it for a reader of code: `message 2 (index 1)
    /// of the write`.
    #[error(
        "{backend}: refused to store message {} (index {index}) of the write to session \"{session_id}\" (nothing was stored): {detail}",
        index + 1
    )]
    InvalidMessage {
        /// The backend that refused the write.
        backend: &'static str,
        /// The session written to.
        session_id: String,
        /// The position of the refused message in the slice passed to `save` or `append`,
        /// counted from 0 (`1` is the second message; the error's text shows it as
        /// `message 2 (index 1)`).
        index: usize,
        /// What is wrong with it, naming the limit it exceeds.
        detail: String,
    },

    /// The storage server or library failed.
    #[error("{backend}: {message}")]
    Backend {
        /// The backend that failed.
        backend: &'static str,
        /// What failed, with the operation and session where known. Never contains passwords.
        message: String,
        /// Whether the same call may succeed if retried (dropped connection, busy database).
        retryable: bool,
        /// The driver's error.
        #[source]
        source: Option<BoxError>,
    },

    /// A concurrent writer changed the session in a way this operation cannot reconcile.
    #[error("{backend}: conflicting write to session \"{session_id}\": {detail}")]
    Conflict {
        /// The backend that detected the conflict.
        backend: &'static str,
        /// The affected session.
        session_id: String,
        /// What collided.
        detail: String,
    },

    /// A message id that breaks the rules of [`MessageId::parse`](crate::MessageId::parse).
    #[error("invalid message id {id:?}: {reason}")]
    InvalidMessageId {
        /// The id as given.
        id: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// Session metadata (owner, title, tags, data, expiry) breaks a rule of
    /// [`SessionMeta`](crate::SessionMeta), or another argument of a call is out of range
    /// (a session created without messages or with times out of order, a purge
    /// batch). Nothing was read or written.
    #[error("invalid session metadata: {0}")]
    InvalidMeta(String),

    /// A listing query ([`SessionQuery`](crate::SessionQuery)) cannot be run: a page limit
    /// out of range, a cursor that is not one (or was handed out for the other order), a
    /// search text, owner or tag that breaks a rule. Nothing was read.
    #[error("invalid session query: {0}")]
    InvalidQuery(String),

    /// A caller scoped to one owner ([`OwnerScope`](crate::OwnerScope)) tried to write a
    /// session that belongs to another owner, or to none. Nothing was written.
    #[error("session \"{session_id}\" does not belong to owner \"{owner}\"; nothing was written")]
    NotOwner {
        /// The session written to.
        session_id: String,
        /// The owner the caller is scoped to.
        owner: String,
    },

    /// A rename conditional on the title its caller read ([`MetaUpdate::if_title`]) found
    /// another title: someone renamed the session since. Nothing was written.
    ///
    /// [`MetaUpdate::if_title`]: crate::MetaUpdate::if_title
    #[error(
        "session \"{session_id}\" was renamed since it was read: its title is {}, not {}; \
         nothing was written",
        shown_title(.found),
        shown_title(.expected)
    )]
    TitleChanged {
        /// The session written to.
        session_id: String,
        /// The title the change required (`None`: no title).
        expected: Option<String>,
        /// The title the session has (`None`: no title).
        found: Option<String>,
    },

    /// The backend cannot do this operation: a user-written backend that keeps only the
    /// four methods of the product description has nowhere to store session metadata.
    #[error("{backend}: {operation} is not supported by this backend")]
    Unsupported {
        /// The backend asked.
        backend: &'static str,
        /// What was asked for.
        operation: &'static str,
    },

    /// A file-system operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A value could not be converted to or from JSON.
    #[error("serialization error: {0}")]
    Serialization(#[from] serde_json::Error),

    /// A configuration value (URL, option, environment variable) is unusable.
    #[error("configuration error: {0}")]
    Config(String),

    /// The requested backend or capability was not compiled in.
    #[error(
        "{what} needs the `{feature}` feature of the `fusion` crate; enable it in Cargo.toml: fusion = {{ features = [\"{feature}\"] }}"
    )]
    FeatureDisabled {
        /// What was asked for (for example `StorageType::Redis`).
        what: String,
        /// The cargo feature that provides it.
        feature: &'static str,
    },

    /// The LLM endpoint failed or answered with something unusable.
    #[error("LLM error{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Llm {
        /// What went wrong and what to fix. Never contains the API key.
        message: String,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
        /// Whether retrying the request may help (429, 5xx, connection errors).
        retryable: bool,
        /// The client's error.
        #[source]
        source: Option<BoxError>,
    },

    /// A tool failed. The agent turns this into an observation for the model.
    #[error("tool `{tool}` failed: {message}")]
    Tool {
        /// The tool's name.
        tool: String,
        /// What went wrong.
        message: String,
    },
}

/// A title as an error message shows it: quoted, or "none".
fn shown_title(title: &Option<String>) -> String {
    title
        .as_ref()
        .map_or_else(|| "none".to_string(), |title| format!("{title:?}"))
}

impl Error {
    /// Whether the same call may succeed if retried unchanged.
    ///
    /// True for dropped connections, busy databases, rate limits and server errors;
    /// false for invalid input (session ids, messages), corrupt data and configuration
    /// mistakes.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Backend { retryable, .. } | Error::Llm { retryable, .. } => *retryable,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
            ),
            Error::Conflict { .. } => true,
            _ => false,
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// `self`, saying which call on which session met it if it is an [`Error::Io`], whose
    /// path may be one of a backend's own files (an index, a lock) rather than the
    /// session's: `I/O error on PATH: append of session "s1": No space left on device`.
    /// The error's kind, and so [`is_retryable`](Self::is_retryable), stay as they were;
    /// any other error is returned as it is.
    pub fn during(self, operation: &str, session_id: &str) -> Self {
        match self {
            Error::Io { path, source } => {
                let kind = source.kind();
                let message = format!("{operation} of session \"{session_id}\": {source}");
                Error::Io {
                    path,
                    source: std::io::Error::new(kind, message),
                }
            }
            other => other,
        }
    }

    /// Ends the message of `self` with `note` where it has a message of its own
    /// ([`Error::Backend`], [`Error::Llm`]), and says whether it did: the variant,
    /// [`is_retryable`](Self::is_retryable) and the source to downcast stay as they were,
    /// so callers matching on any of them are unaffected, where wrapping the error would
    /// change its variant. Any other error is left as it is (an [`Error::Io`]'s text is
    /// its path and the OS error's, and rebuilding its `io::Error` would lose the OS error
    /// code), for the caller to say the note another way.
    pub fn push_note(&mut self, note: &str) -> bool {
        match self {
            Error::Backend { message, .. } | Error::Llm { message, .. } => {
                message.push_str(note);
                true
            }
            _ => false,
        }
    }

    /// An [`Error::Corrupt`] for one session of one backend.
    pub fn corrupt(
        backend: &'static str,
        session_id: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            backend,
            session_id: session_id.into(),
            detail: detail.into(),
        }
    }

    /// An [`Error::Backend`] with a driver error as its source.
    pub fn backend(
        backend: &'static str,
        message: impl Into<String>,
        retryable: bool,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            backend,
            message: message.into(),
            retryable,
            source: Some(source.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_goes_into_an_error_with_a_message_of_its_own_and_keeps_its_kind() {
        let mut backend = Error::backend("redis", "connection reset", true, "reset");
        assert!(backend.push_note(" (after 3 attempts)"));
        assert_eq!(
            backend.to_string(),
            "redis: connection reset (after 3 attempts)"
        );
        assert!(backend.is_retryable());
        assert!(std::error::Error::source(&backend).is_some());

        let mut io = Error::io("/x", std::io::Error::other("disk on fire"));
        let before = io.to_string();
        assert!(!io.push_note(" (after 3 attempts)"));
        assert_eq!(io.to_string(), before);
    }

    #[test]
    fn messages_name_backend_and_session() {
        let err = Error::corrupt("fs", "user-1", "line 3 is not JSON");
        assert_eq!(
            err.to_string(),
            "fs: session \"user-1\" is corrupt: line 3 is not JSON"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn a_title_changed_says_both_titles() {
        let err = Error::TitleChanged {
            session_id: "s1".into(),
            expected: None,
            found: Some("Trip \"A\"".into()),
        };
        assert_eq!(
            err.to_string(),
            "session \"s1\" was renamed since it was read: its title is \"Trip \\\"A\\\"\", \
             not none; nothing was written"
        );
        assert!(!err.is_retryable());
    }

    /// The text counted the write's messages from 0, so a chat or a migration whose
    /// second message was refused said "message 1", which a person reads as the first.
    #[test]
    fn an_invalid_message_is_shown_counted_from_one_beside_its_index() {
        let err = Error::InvalidMessage {
            backend: "fs",
            session_id: "s1".into(),
            index: 1,
            detail: "too deep".into(),
        };
        assert_eq!(
            err.to_string(),
            "fs: refused to store message 2 (index 1) of the write to session \"s1\" \
             (nothing was stored): too deep"
        );
    }

    #[test]
    fn feature_disabled_names_the_feature() {
        let err = Error::FeatureDisabled {
            what: "StorageType::Redis".into(),
            feature: "redis",
        };
        assert!(err.to_string().contains("features = [\"redis\"]"), "{err}");
    }
}
