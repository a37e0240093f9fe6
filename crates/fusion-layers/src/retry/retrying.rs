//! The storage a [`RetryLayer`](super::RetryLayer) makes: every call runs through
//! [`Retrying::attempts`]; the writes whose earlier attempt may have applied are settled
//! as the [module docs](super) describe.

use std::borrow::Cow;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, DEDUP_WINDOW, Error, Expect, Expiry, Intercept,
    MessageId, MetaUpdate, Result, Revision, SessionInfo, SessionMeta, SessionPage, SessionQuery,
    unstored,
};

use super::policy::Policy;
use super::timer;

/// Whether `err` may pass on another attempt of the same call.
fn transient(err: &Error) -> bool {
    err.is_retryable() && !matches!(err, Error::Conflict { .. })
}

/// `messages`, each with an id: borrowed when they all have one.
fn identified(messages: &[ChatMessage]) -> Cow<'_, [ChatMessage]> {
    if messages.iter().all(|m| m.id.is_some()) {
        return Cow::Borrowed(messages);
    }
    let mut owned = messages.to_vec();
    for message in &mut owned {
        message.ensure_id();
    }
    Cow::Owned(owned)
}

/// The storage a [`RetryLayer`](super::RetryLayer) makes.
pub(crate) struct Retrying {
    pub(crate) inner: Arc<dyn ConversationStorage>,
    pub(crate) policy: Policy,
    /// Whether log lines may carry the error's text, which names the session.
    pub(crate) session_ids: bool,
}

/// A call's result, and whether an earlier attempt failed in a way that may have
/// applied it.
struct Attempts<T> {
    result: Result<T>,
    uncertain: bool,
}

impl Retrying {
    /// Runs `call` until it succeeds, fails with an error not worth retrying, or the
    /// attempts run out.
    async fn attempts<'a, T, F, Fut>(&self, operation: &str, mut call: F) -> Attempts<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>> + 'a,
    {
        let mut uncertain = false;
        let mut attempt = 1;
        loop {
            match call().await {
                Err(err) if transient(&err) && attempt < self.policy.max_attempts => {
                    let pause = self.policy.pause(attempt);
                    tracing::debug!(
                        backend = self.inner.backend_name(),
                        operation,
                        attempt,
                        pause_ms = pause.as_millis() as u64,
                        error = self.text(&err),
                        "storage call failed; retrying"
                    );
                    timer::sleep(pause).await;
                    uncertain = true;
                    attempt += 1;
                }
                Err(err) if transient(&err) && attempt > 1 => {
                    let result = Err(self.gave_up(operation, attempt, err));
                    return Attempts { result, uncertain };
                }
                result => return Attempts { result, uncertain },
            }
        }
    }

    /// The text of `err` for a log line, unless session ids are kept out of logs: an
    /// error's text names its session (and an I/O error's path, the session's file).
    fn text<'e>(&self, err: &'e Error) -> Option<tracing::field::DisplayValue<&'e Error>> {
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
    fn gave_up(&self, operation: &str, attempts: u32, err: Error) -> Error {
        let note = format!(" (after {attempts} attempts)");
        match err {
            Error::Backend {
                backend,
                mut message,
                retryable,
                source,
            } => {
                message.push_str(&note);
                Error::Backend {
                    backend,
                    message,
                    retryable,
                    source,
                }
            }
            Error::Llm {
                mut message,
                status,
                retryable,
                source,
            } => {
                message.push_str(&note);
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

    /// Settles a refusal (`refused`) that followed an attempt that may have applied the
    /// write: reads the session with `read` (retried like any call) and returns what
    /// `judge` makes of it, the write's result when the session shows it applied, else
    /// `refused`. When even the read fails, whether the write applied is unknown, and
    /// `refused` (a conflict says nothing was written) would be false: a caller that
    /// believed it wrote its message again (found by `fusion-stress --faults` on
    /// PostgreSQL, where the settling read was cut too). That is a retryable error saying
    /// so instead.
    async fn settle<R, T, F, Fut>(
        &self,
        operation: &str,
        session_id: &str,
        refused: Error,
        read: F,
        judge: impl FnOnce(R) -> Option<T>,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        match self.attempts("settling read", read).await.result {
            Ok(found) => judge(found).ok_or(refused),
            Err(read_error) => Err(Error::Backend {
                backend: self.inner.backend_name(),
                message: format!(
                    "{operation} of session \"{session_id}\": an earlier attempt's reply was \
                     lost and the session has changed since, and reading it to tell whether \
                     that attempt applied failed too, so whether this write applied is \
                     unknown; read the session before writing again"
                ),
                retryable: true,
                source: Some(Box::new(read_error)),
            }),
        }
    }

    /// For another attempt at appending `batch`, longer than [`DEDUP_WINDOW`]: the
    /// messages of `batch` the session does not hold yet, looked for in its whole history,
    /// and its generation. An earlier attempt that applied, its reply lost, left the first
    /// `batch.len() - DEDUP_WINDOW` of them where the backend no longer looks for ids, so
    /// resending the batch as it is would store those twice. Costs a read of the session,
    /// on a retry of a long batch only.
    async fn unstored_part<'b>(
        &self,
        session_id: &str,
        batch: &'b [ChatMessage],
    ) -> Result<(Cow<'b, [ChatMessage]>, u64)> {
        let (history, revision) = self.inner.load_revision(session_id).await?;
        let stored: HashSet<&MessageId> = history.iter().filter_map(|m| m.id.as_ref()).collect();
        let fresh = unstored(batch, |id| stored.contains(id));
        Ok((fresh, revision.generation))
    }

    /// What a conditional truncate to `len` keeps and removes, read before it runs:
    /// `None` when the session cannot be read or does not meet `expected` (the write will
    /// be refused whatever happens, and rightly). A truncate to 0 (a delete) keeps
    /// nothing, known without a read.
    async fn truncation(
        &self,
        session_id: &str,
        expected: Expect,
        len: usize,
    ) -> Option<Rewritten> {
        if len == 0 {
            return Some(Rewritten::default());
        }
        let read = self.attempts("load_revision", || self.inner.load_revision(session_id));
        let (mut history, revision) = read.await.result.ok()?;
        if !expected.is_met_by(revision.generation, || revision.len) {
            return None;
        }
        let removed = history.split_off(len.min(history.len()));
        let removed_ids = removed.iter().map(|m| m.id.clone()).collect();
        Some(Rewritten {
            kept: history,
            removed_ids,
        })
    }

    /// What a conditional replace or rewrite with `messages` leaves, read before it runs
    /// as in [`truncation`](Self::truncation): it removes the messages the session held
    /// (and no append after it carries the ids of those it writes).
    async fn rewriting(
        &self,
        session_id: &str,
        expected: Expect,
        messages: &[ChatMessage],
    ) -> Option<Rewritten> {
        let read = self.attempts("load_revision", || self.inner.load_revision(session_id));
        let (history, revision) = read.await.result.ok()?;
        if !expected.is_met_by(revision.generation, || revision.len) {
            return None;
        }
        let written = messages.iter().filter_map(|m| m.id.clone());
        let removed_ids = history
            .into_iter()
            .map(|m| m.id)
            .collect::<Option<HashSet<_>>>();
        Some(Rewritten {
            kept: messages.to_vec(),
            removed_ids: removed_ids.map(|ids| ids.into_iter().chain(written).collect()),
        })
    }
}

/// The generation of a session that meets `expected`.
fn expected_generation(expected: Expect) -> u64 {
    match expected {
        Expect::Generation(generation) => generation,
        Expect::Exactly(revision) => revision.generation,
    }
}

/// After a conditional write was refused following an attempt that may have applied it:
/// the session's generation if it (`history` at `revision`) holds what `change` wrote (so
/// the refusal was caused by that attempt), `None` if not. A truncate, replace or rewrite
/// counts as applied when, under a generation other than the one expected (which only a
/// rewrite gives it), the session holds what it keeps, alone or followed by other
/// writers' messages, none of those it removed ([`Rewritten::done_in`]): an undo whose
/// reply was lost, then another writer's append, is done, not a conflict.
fn applied(
    history: &[ChatMessage],
    revision: &Revision,
    expected: Expect,
    change: Change<'_>,
    rewritten: Option<&Rewritten>,
) -> Option<u64> {
    let holds = match change {
        Change::Append(messages) => {
            !messages.is_empty()
                && messages
                    .iter()
                    .all(|m| history.iter().rev().any(|h| h.id == m.id))
        }
        Change::Replace(messages) | Change::Rewrite(messages) if history == messages => true,
        Change::Replace(_) | Change::Rewrite(_) | Change::Truncate(_) => {
            rewritten.is_some_and(|rewritten| rewritten.done_in(history))
                && revision.generation != expected_generation(expected)
        }
    };
    holds.then_some(revision.generation)
}

/// What a conditional truncate, replace or rewrite leaves (`kept`, the start of the
/// history) and removes, read before its first attempt.
#[derive(Debug, Default)]
struct Rewritten {
    kept: Vec<ChatMessage>,
    /// The ids of the messages it removes; `None` when one of them has none.
    removed_ids: Option<HashSet<MessageId>>,
}

impl Rewritten {
    /// Whether `history` is what the write leaves: exactly what it keeps, or that
    /// followed by messages another writer appended since, none of those it removes.
    /// Had the write not applied, the session would hold what it held before, followed
    /// by those appends, under the generation expected; another writer's rewrite to the
    /// same start (under a new generation) leaves the session as the write meant.
    /// Messages without ids cannot be told apart: removed ones without ids from new ones,
    /// and new ones without ids from removed ones another writer rewrote without their
    /// ids (the write not applied). Then only the exact match counts, as does a truncate
    /// that removes nothing.
    fn done_in(&self, history: &[ChatMessage]) -> bool {
        let Some(after) = history.strip_prefix(self.kept.as_slice()) else {
            return false;
        };
        match &self.removed_ids {
            _ if after.is_empty() => true,
            Some(removed) if !removed.is_empty() => after
                .iter()
                .all(|m| m.id.as_ref().is_some_and(|id| !removed.contains(id))),
            _ => false,
        }
    }
}

#[async_trait]
impl Intercept for Retrying {
    fn inner(&self) -> &dyn ConversationStorage {
        self.inner.as_ref()
    }

    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        self.attempts("save", || self.inner.save(session_id, history))
            .await
            .result
    }

    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        self.attempts("load", || self.inner.load(session_id))
            .await
            .result
    }

    async fn delete(&self, session_id: &str) -> Result<()> {
        self.attempts("delete", || self.inner.delete(session_id))
            .await
            .result
    }

    async fn list_sessions(&self) -> Result<Vec<String>> {
        self.attempts("list_sessions", || self.inner.list_sessions())
            .await
            .result
    }

    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        let messages = identified(messages);
        // Another attempt at a long batch sends only what the session lacks (`unstored_part`).
        let mut tried = false;
        let attempt = || {
            let again = std::mem::replace(&mut tried, true) && messages.len() > DEDUP_WINDOW;
            let messages = &messages;
            async move {
                if !again {
                    return self.inner.append(session_id, messages).await;
                }
                let (fresh, _) = self.unstored_part(session_id, messages).await?;
                if fresh.is_empty() {
                    return Ok(());
                }
                self.inner.append(session_id, &fresh).await
            }
        };
        self.attempts("append", attempt).await.result
    }

    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        self.attempts("truncate", || self.inner.truncate(session_id, len))
            .await
            .result
    }

    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        self.attempts("load_revision", || self.inner.load_revision(session_id))
            .await
            .result
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        let appended;
        let change = match change {
            Change::Append(messages) => {
                appended = identified(messages);
                Change::Append(&appended)
            }
            other => other,
        };
        let rewritten = match change {
            Change::Truncate(len) => self.truncation(session_id, expected, len).await,
            Change::Replace(messages) | Change::Rewrite(messages) => {
                self.rewriting(session_id, expected, messages).await
            }
            Change::Append(_) => None,
        };
        // Another attempt at a long append sends only what the session lacks, as `append`.
        let mut tried = false;
        let attempt = || {
            let again = std::mem::replace(&mut tried, true);
            async move {
                let batch = match change {
                    Change::Append(batch) if again && batch.len() > DEDUP_WINDOW => batch,
                    _ => return self.inner.write_if(session_id, expected, change).await,
                };
                let (fresh, generation) = self.unstored_part(session_id, batch).await?;
                if fresh.is_empty() {
                    return Ok(generation);
                }
                let change = Change::Append(&fresh);
                self.inner.write_if(session_id, expected, change).await
            }
        };
        let Attempts { result, uncertain } = self.attempts("write_if", attempt).await;
        match result {
            Err(conflict @ Error::Conflict { .. }) if uncertain => {
                let read = || self.inner.load_revision(session_id);
                let judge = |(history, revision): (Vec<ChatMessage>, Revision)| {
                    applied(&history, &revision, expected, change, rewritten.as_ref())
                };
                self.settle("write_if", session_id, conflict, read, judge)
                    .await
            }
            result => result,
        }
    }

    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        self.attempts("session_info", || self.inner.session_info(session_id))
            .await
            .result
    }

    async fn create_session(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
    ) -> Result<u64> {
        let messages = identified(messages);
        let Attempts { result, uncertain } = self
            .attempts("create_session", || {
                self.inner.create_session(session_id, meta, &messages)
            })
            .await;
        match result {
            Err(conflict @ Error::Conflict { .. }) if uncertain => {
                // Created by the attempt whose reply was lost if the session opens with
                // these very messages (their ids are fresh, so no one else wrote them).
                let read = || self.inner.load_revision(session_id);
                let judge = |(history, revision): (Vec<ChatMessage>, Revision)| {
                    history
                        .starts_with(&messages)
                        .then_some(revision.generation)
                };
                self.settle("create_session", session_id, conflict, read, judge)
                    .await
            }
            result => result,
        }
    }

    async fn update_session(
        &self,
        session_id: &str,
        update: &MetaUpdate,
    ) -> Result<Option<SessionInfo>> {
        let Attempts { result, uncertain } = self
            .attempts("update_session", || {
                self.inner.update_session(session_id, update)
            })
            .await;
        match result {
            Err(refused @ Error::NotOwner { .. }) if uncertain && update.owner.is_some() => {
                // A change of owner under `if_owner` that applied, its reply lost, makes
                // its own condition false for the next attempt. It applied if the session
                // now holds what it writes (the change is atomic, owner and all).
                let read = || self.inner.session_info(session_id);
                let judge = |info: Option<SessionInfo>| {
                    info.filter(|info| already_applied(update, &info.meta))
                        .map(Some)
                };
                self.settle("update_session", session_id, refused, read, judge)
                    .await
            }
            result => result,
        }
    }

    async fn list_page(&self, query: &SessionQuery) -> Result<SessionPage> {
        self.attempts("list_page", || self.inner.list_page(query))
            .await
            .result
    }

    /// Retried like any call; after a lost reply the count is the answering attempt's
    /// alone, a lower bound (see [`RetryLayer`](super::RetryLayer) for why that is kept).
    async fn purge_expired(&self, batch: usize) -> Result<usize> {
        self.attempts("purge_expired", || self.inner.purge_expired(batch))
            .await
            .result
    }
}

/// Whether `meta` already holds everything `update` sets, so applying it changes nothing.
/// Expiries are compared to the millisecond, the coarsest a backend keeps (an instant set
/// to the nanosecond never reads back equal).
fn already_applied(update: &MetaUpdate, meta: &SessionMeta) -> bool {
    let mut applied = meta.clone();
    update.apply_to(&mut applied);
    let expiry_kept = same_expiry(applied.expiry, meta.expiry);
    applied.expiry = meta.expiry;
    expiry_kept && applied == *meta
}

/// Whether two expiries are the same to the millisecond.
fn same_expiry(a: Option<Expiry>, b: Option<Expiry>) -> bool {
    let close = |a: Duration, b: Duration| a.abs_diff(b) < Duration::from_millis(1);
    let since_epoch =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    match (a, b) {
        (None, None) => true,
        (Some(Expiry::At(a)), Some(Expiry::At(b))) => close(since_epoch(a), since_epoch(b)),
        (Some(Expiry::Idle(a)), Some(Expiry::Idle(b))) => close(a, b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_is_already_applied_only_with_its_expiry_to_the_millisecond() {
        let at = std::time::UNIX_EPOCH + Duration::new(4_000_000_000, 123_456_789);
        let update = MetaUpdate::new()
            .owner(Some("bob"))
            .expiry(Some(Expiry::At(at)))
            .if_owner("alice");
        let stored = |expiry| {
            let mut meta = SessionMeta::new().owner("bob");
            meta.expiry = expiry;
            meta
        };
        // Kept to the microsecond by the backend: the same.
        let micros = std::time::UNIX_EPOCH + Duration::new(4_000_000_000, 123_456_000);
        assert!(already_applied(&update, &stored(Some(Expiry::At(micros)))));
        // Another writer's hand-over, with another expiry or none: not this update's.
        let later = at + Duration::from_secs(1);
        assert!(!already_applied(&update, &stored(Some(Expiry::At(later)))));
        assert!(!already_applied(&update, &stored(None)));
        let idle = Some(Expiry::Idle(Duration::from_secs(60)));
        assert!(!already_applied(&update, &stored(idle)));
    }

    #[test]
    fn conflicts_are_answers_not_faults() {
        let conflict = Expect::Generation(3).conflict("memory", "s", 4, None);
        assert!(conflict.is_retryable() && !transient(&conflict));
        let dropped = Error::Backend {
            backend: "redis",
            message: "connection reset".into(),
            retryable: true,
            source: None,
        };
        assert!(transient(&dropped));
        assert!(!transient(&Error::Config("bad".into())));
    }

    #[test]
    fn only_messages_without_ids_get_one() {
        let kept = ChatMessage::user("a").with_new_id();
        let batch = [kept.clone(), ChatMessage::user("b")];
        let given = identified(&batch);
        assert_eq!(given[0], kept);
        assert!(given[1].id.is_some());
        assert!(matches!(identified(&given), Cow::Borrowed(_)));
    }
}
