//! Upkeep that fails nobody (a prune's look-again entries, the take-up's second look, in
//! `forget.rs` and `index.rs`; the repair of the indexes after a lost write reply, in
//! `write.rs`; the removal of an update's old expiry entry, in `meta.rs`): bounded in
//! time, and logged when left undone (at warn when no retry mends it).

use std::fmt;
use std::time::Duration;

use fusion_core::Result;

/// Why upkeep, which fails nobody, was left undone ([`within`]).
pub(super) enum Left {
    /// Its call failed.
    Failed(fusion_core::Error),
    /// It had no answer within this long.
    Late(Duration),
}

impl Left {
    /// Logs that the upkeep of `count` entries was left, as `what` says: at warn when no
    /// retry mends the failure (a refusal, such as a key of another type where the expiry
    /// index goes, written under the prefix by something other than Fusion, which every
    /// listing's prune would meet again, unseen at debug), at debug when it passes (a node
    /// busy, gone or failing over).
    pub(super) fn log(&self, what: &str, count: usize) {
        match self {
            Left::Failed(err) if !err.is_retryable() => {
                tracing::warn!(error = %err, count, "{what}");
            }
            left => tracing::debug!(error = %left, count, "{what}"),
        }
    }
}

impl Left {
    /// [`log`](Self::log) for the upkeep of session `session_id`, naming it.
    pub(super) fn log_of_session(&self, what: &str, session_id: &str) {
        match self {
            Left::Failed(err) if !err.is_retryable() => {
                tracing::warn!(error = %err, session_id, "{what}");
            }
            left => tracing::debug!(error = %left, session_id, "{what}"),
        }
    }
}

impl fmt::Display for Left {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Left::Failed(err) => err.fmt(f),
            Left::Late(limit) => write!(f, "no answer within {limit:?}"),
        }
    }
}

/// `call`, for at most `limit`: its error, or that it had no answer by then.
pub(super) async fn within<T>(
    limit: Duration,
    call: impl Future<Output = Result<T>>,
) -> std::result::Result<T, Left> {
    match tokio::time::timeout(limit, call).await {
        Ok(done) => done.map_err(Left::Failed),
        Err(_elapsed) => Err(Left::Late(limit)),
    }
}
