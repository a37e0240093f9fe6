//! The storage a [`RetryLayer`](super::RetryLayer) makes: every call runs through
//! [`Retrying::attempts`]; the writes whose earlier attempt may have applied are settled
//! as the [module docs](super) describe.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, Intercept, MetaUpdate, Result,
    Revision, SessionInfo, SessionMeta, SessionPage, SessionQuery, SessionTimes,
};

use super::policy::Policy;
use super::resend::{Unstored, send_echo};
use super::settle::{Rewritten, already_applied, appended_at, applied};
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

    /// Creates `session_id` opening with `messages` (each with an id) by `create`,
    /// retried. A conflict after an attempt whose reply was lost is that attempt's
    /// creation if the session opens with these very messages: their ids are fresh, so
    /// no one else wrote them.
    async fn create<'a, F, Fut>(
        &self,
        operation: &str,
        session_id: &str,
        messages: &[ChatMessage],
        create: F,
    ) -> Result<u64>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<u64>> + 'a,
    {
        let Attempts { result, uncertain } = self.attempts(operation, create).await;
        match result {
            Err(conflict @ Error::Conflict { .. }) if uncertain => {
                let read = || self.inner.load_revision(session_id);
                let judge = |(history, revision): (Vec<ChatMessage>, Revision)| {
                    history.starts_with(messages).then_some(revision.generation)
                };
                self.settle(operation, session_id, conflict, read, judge)
                    .await
            }
            result => result,
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
            Err(read_error) => Err(self.unknown(
                operation,
                session_id,
                "the session has changed since, and reading it to tell whether that attempt \
                 applied failed too",
                read_error,
            )),
        }
    }

    /// What a conditional truncate to `len` keeps and removes, read before it runs:
    /// `None` when the session does not meet `expected` (the write will be refused
    /// whatever happens, and rightly), the read's error when it cannot be read (then a
    /// refusal after a lost reply cannot be judged). A truncate to 0 (a delete) keeps
    /// nothing, known without a read. The instant of an [`Expect::UnwrittenSince`] is not
    /// read here but taken as met: at worst this reads what a refused write would remove.
    async fn truncation(
        &self,
        session_id: &str,
        expected: Expect,
        len: usize,
    ) -> Result<Option<Rewritten>> {
        if len == 0 {
            return Ok(Some(Rewritten::default()));
        }
        let read = self.attempts("load_revision", || self.inner.load_revision(session_id));
        let (history, revision) = read.await.result?;
        let met = expected.is_met_by(revision.generation, || revision.len, || None);
        Ok(met.then(|| Rewritten::truncating(history, len)))
    }

    /// What a conditional replace or rewrite with `messages` leaves, read before it runs
    /// as in [`truncation`](Self::truncation): it removes the messages the session held
    /// (and no append after it carries the ids of those it writes).
    async fn rewriting(
        &self,
        session_id: &str,
        expected: Expect,
        messages: &[ChatMessage],
    ) -> Result<Option<Rewritten>> {
        let read = self.attempts("load_revision", || self.inner.load_revision(session_id));
        let (history, revision) = read.await.result?;
        let met = expected.is_met_by(revision.generation, || revision.len, || None);
        Ok(met.then(|| Rewritten::replacing(history, messages)))
    }

    /// For another attempt at appending `batch`: the messages of `batch` the session does
    /// not hold yet, looked for in its whole history, and its generation. An earlier
    /// attempt that applied, its reply lost, may have left them where the backend no
    /// longer looks for ids (it looks through the session's last
    /// [`DEDUP_WINDOW`](fusion_core::DEDUP_WINDOW) messages): the first `batch.len() - DEDUP_WINDOW` of a long batch, or all of a short
    /// one after other writers appended that many messages during the pauses between
    /// attempts (six writers on SQLite did, in the 175 ms of four lost replies). Resent as
    /// it is, the batch would store those twice. Costs a read of the session, on a retry
    /// only. An earlier attempt still on its way when this read is made (a server running
    /// it when the connection dropped) lands moments before or after the resent batch,
    /// within the backend's window, which stores the two once.
    ///
    /// When that read fails retryably, whether the earlier attempt applied is unknown,
    /// and the error says so (`operation`'s, should it be the last attempt's). When it
    /// fails in a way no retry fixes (a damaged message elsewhere in the session, one the
    /// encryption layer inside this one cannot open), the append itself may still pass:
    /// the batch is sent again whole, with no generation known (`None`), and the
    /// backend's window is what keeps it from being stored twice, as before this read.
    ///
    /// A batch found stored whole is not done with: the attempt that stored it may have
    /// failed after (a Redis Cluster's index requests), and a backend redoes that upkeep
    /// only on a retry it sees. Its last message is sent again while within the window
    /// ([`Unstored::echo`], sent by [`send_echo`]), to be found stored there, on condition
    /// that nothing was written since the read.
    async fn unstored_part<'b>(
        &self,
        operation: &str,
        session_id: &str,
        batch: &'b [ChatMessage],
    ) -> Result<Unstored<'b>> {
        let (history, revision) = match self.inner.load_revision(session_id).await {
            Ok(read) => read,
            Err(err) if err.is_retryable() => {
                let why = "reading the session to tell what it stored failed";
                return Err(self.unknown(operation, session_id, why, err));
            }
            Err(err) => {
                tracing::debug!(
                    backend = self.inner.backend_name(),
                    operation,
                    error = self.text(&err),
                    "sending the batch again whole: reading the session to tell what it stored failed"
                );
                return Ok(Unstored::unread(batch));
            }
        };
        Ok(Unstored::of(&history, revision, batch))
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
        // Another attempt sends only what the session lacks (`unstored_part`).
        let mut tried = false;
        let attempt = || {
            let again = std::mem::replace(&mut tried, true);
            let messages = &messages;
            async move {
                if !again {
                    return self.inner.append(session_id, messages).await;
                }
                let part = self.unstored_part("append", session_id, messages).await?;
                match part.revision.filter(|_| part.fresh.is_empty()) {
                    Some(read) => send_echo(self.inner.as_ref(), session_id, read, part.echo).await,
                    None => self.inner.append(session_id, &part.fresh).await,
                }
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
        let prior = match change {
            Change::Truncate(len) => self.truncation(session_id, expected, len).await,
            Change::Replace(messages) | Change::Rewrite(messages) => {
                self.rewriting(session_id, expected, messages).await
            }
            Change::Append(_) => Ok(None),
        };
        let rewritten = prior.as_ref().ok().and_then(Option::as_ref);
        // Another attempt at an append sends only what the session lacks, as `append`. An
        // empty one is sent again as it is: it stores nothing whatever it finds, and its
        // answer is the backend's check of `expected` (a conflict or the generation).
        let mut tried = false;
        let attempt = || {
            let again = std::mem::replace(&mut tried, true);
            async move {
                let batch = match change {
                    Change::Append(batch) if again && !batch.is_empty() => batch,
                    _ => return self.inner.write_if(session_id, expected, change).await,
                };
                let part = self.unstored_part("write_if", session_id, batch).await?;
                let Some(read) = part.revision.filter(|_| part.fresh.is_empty()) else {
                    let change = Change::Append(&part.fresh);
                    return self.inner.write_if(session_id, expected, change).await;
                };
                send_echo(self.inner.as_ref(), session_id, read, part.echo).await?;
                Ok(appended_at(expected, read.generation))
            }
        };
        let Attempts { result, uncertain } = self.attempts("write_if", attempt).await;
        match result {
            Err(conflict @ Error::Conflict { .. }) if uncertain => {
                let read = || self.inner.load_revision(session_id);
                let judge = |(history, revision): (Vec<ChatMessage>, Revision)| {
                    applied(&history, &revision, expected, change, rewritten)
                };
                let settled = self.settle("write_if", session_id, conflict, read, judge);
                match (settled.await, prior) {
                    // Without the read before it, what the write removes is unknown, and
                    // so whether the session holds what it leaves: not a refusal.
                    (Err(conflict @ Error::Conflict { .. }), Err(_)) => Err(self.unknown(
                        "write_if",
                        session_id,
                        "the session has changed since, and the read before its first attempt, \
                         which tells what it removes, failed",
                        conflict,
                    )),
                    (settled, _) => settled,
                }
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
        let create = || self.inner.create_session(session_id, meta, &messages);
        self.create("create_session", session_id, &messages, create)
            .await
    }

    async fn create_session_with_times(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: SessionTimes,
    ) -> Result<u64> {
        let messages = identified(messages);
        let create = || {
            self.inner
                .create_session_with_times(session_id, meta, &messages, times)
        };
        self.create("create_session_with_times", session_id, &messages, create)
            .await
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
        let own_condition = |refused: &Error| match refused {
            Error::NotOwner { .. } => update.owner.is_some(),
            Error::TitleChanged { .. } => update.title.is_some(),
            _ => false,
        };
        match result {
            Err(refused) if uncertain && own_condition(&refused) => {
                // A change of owner under `if_owner` (or of title under `if_title`) that
                // applied, its reply lost, makes its own condition false for the next
                // attempt. It applied if the session now holds what it writes (the change
                // is atomic, owner, title and all).
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

#[cfg(test)]
mod tests {
    use super::*;

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
