//! Retries for any storage: a call that failed with an error that may pass on a second try
//! (a dropped connection, a failover, a timeout) is tried again after a short, growing,
//! jittered pause.
//!
//! Retrying a write is only safe if a write that *did* apply, but whose reply was lost,
//! is not applied twice. Every write here is safe to repeat:
//! - `append` (and a conditional append, `create_session` and
//!   `create_session_with_times`): each message carries an
//!   id ([`ChatMessage::id`]); the layer gives one to every message that has none before
//!   the first attempt, so every attempt sends the same ids, and the backend stores a
//!   message whose id it already holds at most once. The backend looks for ids among
//!   the session's last [`DEDUP_WINDOW`] messages only, so another attempt at an append
//!   (or a conditional append that keeps the generation) first reads the session and
//!   sends only the messages whose ids it does not hold: resent whole, messages the
//!   earlier attempt stored and that left the backend's sight since (a long batch's
//!   first ones, or any, once other writers appended that many messages during the
//!   pauses) would be stored twice. That read costs a load of the session, on a retry
//!   only. Should it fail in a way no retry fixes (a damaged message elsewhere in the
//!   session, one an encryption layer inside this one cannot open), the batch is sent
//!   again whole, and the backend's window alone keeps it from being stored twice. A
//!   batch the read finds stored whole still has its last message sent again, while it is
//!   among the session's last [`DEDUP_WINDOW`] messages (the backend finds it there and
//!   stores nothing), as an append on condition of the exact revision read (a session
//!   written since refuses it, and is left as it is: other writers' appends may have
//!   pushed the message out of that window): the attempt that stored the batch
//!   may have failed after it (on a Redis Cluster, the index requests that follow the
//!   write), and a backend redoes that only on a retry it sees. A resend that fails on
//!   every attempt returns its error;
//! - `save`, `truncate`, `delete` and `update_session` leave the same state however
//!   often they run in a row. They are not conditional, so another writer's change that
//!   lands between an attempt that applied (its reply lost) and the retry is overwritten
//!   by the retry, as by any unconditional write arriving after it: a `save` or
//!   `truncate` then drops messages another writer appended meanwhile, and a `delete`
//!   removes a session created again meanwhile. Where other writers share the session,
//!   make such a write conditional ([`ConversationStorage::write_if`], judged as below) so
//!   the retry meets a conflict instead (an update that moves the session to another owner on condition of
//!   the old one, refused as [`Error::NotOwner`] after an attempt that may have applied,
//!   or renames it on condition of the old title, refused as [`Error::TitleChanged`], is
//!   checked against the session as a conditional write is);
//! - a conditional write ([`ConversationStorage::write_if`]) whose earlier attempt may
//!   have applied can meet a session that no longer looks as expected, because of that
//!   very attempt: the layer then reads the session, and reports success if it holds
//!   what the write wrote (the appended messages, the created session, or, for a
//!   replace, rewrite or truncate, the history it leaves under a new generation, alone or
//!   followed by messages with ids, none of those it removes or writes: another writer
//!   may have appended after it), or the [`Error::Conflict`] otherwise, for the caller to
//!   re-read and decide. An append found applied, by that read or by the one before
//!   another attempt, answers the generation it was made under (an append keeps it), not
//!   one another writer's rewrite gave the session since; an empty conditional append,
//!   which writes nothing and only checks, is sent again as it is. That read is retried like any call; when it fails anyway,
//!   whether the write applied is unknown, and the answer is a retryable
//!   [`Error::Backend`] saying so, never the conflict (which says nothing was written:
//!   a caller would write its message again). A conditional replace, rewrite, or truncate to a length above 0
//!   (an undo) costs a read of the session before its first attempt, so that what it
//!   removes is known when a refusal has to be judged (a truncate leaves nothing that
//!   names it); when that read fails on every attempt, such a refusal after a lost reply
//!   is the same retryable error saying the outcome is unknown. Another writer's identical change in between reads as this one's, which
//!   leaves the session as this one would have.
//!
//! What is retried: errors whose [`is_retryable`] is true, except a
//! [`Conflict`], which is an answer (another writer changed the
//! session), not a fault. Anything else is returned at once, and the last error is
//! returned when the attempts run out, saying how many were made where it has a message
//! of its own ([`Error::Backend`], [`Error::Llm`]: `... (after 4 attempts)`, with its
//! variant, retryability and source unchanged), logged at `WARN` with the count otherwise.
//!
//! `purge_expired` is retried too, though a purge whose reply was lost cannot be counted:
//! see [`RetryLayer`].
//!
//! Each retry logs a `DEBUG` line (backend, operation, attempt, pause, error); the error's
//! text names the session, so [`RetryLayer::session_ids`] can keep it out.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use fusion_core::{ChatMessage, ConversationStorage, StorageExt};
//! use fusion_layers::RetryLayer;
//! # async fn demo(storage: Arc<dyn ConversationStorage>) -> fusion_core::Result<()> {
//! let storage = storage.layer(
//!     RetryLayer::new()
//!         .max_attempts(5)
//!         .backoff(Duration::from_millis(20), Duration::from_secs(1)),
//! );
//! storage.append("user-1", &[ChatMessage::user("hello")]).await?;
//! # Ok(()) }
//! ```
//!
//! [`ChatMessage::id`]: fusion_core::ChatMessage::id
//! [`DEDUP_WINDOW`]: fusion_core::DEDUP_WINDOW
//! [`Error::NotOwner`]: fusion_core::Error::NotOwner
//! [`Error::TitleChanged`]: fusion_core::Error::TitleChanged
//! [`Error::Conflict`]: fusion_core::Error::Conflict
//! [`Error::Backend`]: fusion_core::Error::Backend
//! [`Error::Llm`]: fusion_core::Error::Llm
//! [`is_retryable`]: fusion_core::Error::is_retryable
//! [`Conflict`]: fusion_core::Error::Conflict

mod errors;
mod policy;
mod resend;
mod retrying;
mod settle;
mod timer;

use std::sync::Arc;
use std::time::Duration;

use fusion_core::{ConversationStorage, Intercepted, Layer};

use policy::Policy;
use retrying::Retrying;

/// Retries failed storage calls with exponential backoff: see the [module docs](self).
///
/// # Pauses need no async runtime's timer
///
/// The pauses between attempts are timed by one thread the layer starts on the first pause
/// and shares across the process, not by `tokio::time`, which panics in a tokio runtime
/// built without `enable_time()` and outside tokio, with no way to ask beforehand. So the
/// layer works under any executor, or none; tokio's paused test clock does not shorten
/// its pauses. A process that may start no more threads gets no pause: the next attempt
/// follows at once.
///
/// # A purge whose reply was lost
///
/// `purge_expired` is retried, and its count is then the answering attempt's alone: the
/// sessions an earlier attempt deleted before its reply was lost are gone but not counted
/// (no one can tell how many there were), so the count is a lower bound. What callers rely
/// on holds: a purge is idempotent, and an answer below `batch` still means no expired
/// session is left. Not retrying would not count them either (the caller's own retry would
/// meet the same loss) and would end the caller's purge loop at the first dropped
/// connection.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: Policy,
    session_ids: bool,
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryLayer {
    /// Up to 4 attempts, waiting about 25 ms, then 50 ms, then 100 ms (each pause drawn
    /// between half and all of that, so clients that failed together do not retry in
    /// step), at most 1 s.
    pub fn new() -> Self {
        Self {
            policy: Policy {
                max_attempts: 4,
                first: Duration::from_millis(25),
                max: Duration::from_secs(1),
            },
            session_ids: true,
        }
    }

    /// How many times a call is tried in all (at least 1: no retry).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.policy.max_attempts = attempts.max(1);
        self
    }

    /// The pause before the first retry, doubled before each later one up to `max`.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.policy.first = first;
        self.policy.max = max.max(first);
        self
    }

    /// Whether log lines may name the session (default `true`), as
    /// `ObservabilityLayer::session_ids` (feature `observability`) decides for spans: with
    /// `false` they leave out the error's text, which names it, for logs where session ids
    /// are personal data. Attempts, pauses, backend and operation are logged either way.
    pub fn session_ids(mut self, record: bool) -> Self {
        self.session_ids = record;
        self
    }
}

impl Layer for RetryLayer {
    fn layer(&self, inner: Arc<dyn ConversationStorage>) -> Arc<dyn ConversationStorage> {
        Arc::new(Intercepted(Retrying {
            inner,
            policy: self.policy,
            session_ids: self.session_ids,
        }))
    }
}
