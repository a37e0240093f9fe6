//! The storage an [`ObservabilityLayer`](super::ObservabilityLayer) makes: every call of
//! [`ConversationStorage`] goes through [`Observed::observe`], which times it inside a
//! `storage` span and records its outcome and metrics. The layer adds no storage call.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, Intercept, MetaUpdate, Result,
    Revision, SessionId, SessionInfo, SessionMeta, SessionPage, SessionQuery, SessionTimes,
};
use metrics::{counter, histogram};
use tracing::field::{Empty, display};
use tracing::{Instrument, Span, debug, debug_span, warn};

use super::kind::error_kind;
use super::settings::Settings;

/// A storage whose every call is traced and measured.
pub(crate) struct Observed {
    pub(crate) inner: Arc<dyn ConversationStorage>,
    pub(crate) settings: Arc<Settings>,
}

/// What the layer knows of a call before it runs.
struct Call<'a> {
    operation: &'static str,
    session_id: Option<&'a str>,
    /// The messages the call writes; `None` for a call that writes none.
    written: Option<&'a [ChatMessage]>,
}

impl<'a> Call<'a> {
    fn new(operation: &'static str, session_id: &'a str) -> Self {
        Self {
            operation,
            session_id: Some(session_id),
            written: None,
        }
    }

    /// A call on no one session (listing, purging).
    fn global(operation: &'static str) -> Self {
        Self {
            operation,
            session_id: None,
            written: None,
        }
    }

    fn writing(self, messages: &'a [ChatMessage]) -> Self {
        Self {
            written: Some(messages),
            ..self
        }
    }
}

/// The messages a call's result carries back, counted as read.
trait Read {
    fn read(&self) -> Option<&[ChatMessage]> {
        None
    }
}

impl Read for Vec<ChatMessage> {
    fn read(&self) -> Option<&[ChatMessage]> {
        Some(self)
    }
}

impl Read for (Vec<ChatMessage>, Revision) {
    fn read(&self) -> Option<&[ChatMessage]> {
        Some(&self.0)
    }
}

impl Read for () {}
impl Read for u64 {}
impl Read for usize {}
impl Read for Vec<String> {}
impl Read for Option<SessionInfo> {}
impl Read for SessionPage {}

/// The size of `messages` as JSON, the form every bundled backend stores, without
/// keeping the text: one serialization into a counter, no allocation.
fn json_bytes(messages: &[ChatMessage]) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    for message in messages {
        // A `ChatMessage` always serializes (string keys, JSON values); were it ever to
        // fail, the bytes counted so far are still the best figure there is.
        let _ = serde_json::to_writer(&mut count, message);
    }
    count.0
}

/// `session_id` as a span shows it: as it is once valid, else the escaped and shortened
/// form its [`Error::InvalidSessionId`] shows. The call has not checked the id yet (the
/// backend does, inside the span), and an invalid one may hold control characters that
/// forge log lines, or be megabytes long.
fn shown_session_id(session_id: &str) -> Cow<'_, str> {
    match SessionId::validate(session_id) {
        Ok(()) => Cow::Borrowed(session_id),
        Err(Error::InvalidSessionId { id, .. }) => Cow::Owned(id),
        Err(_) => Cow::Borrowed("(invalid)"),
    }
}

/// A call that has started and not finished. Dropped unfinished (its caller stopped
/// waiting: a timeout, a `select!`, a client that went away), it records the call as
/// `cancelled`, with the time it ran, in its span and in the calls and latency metrics:
/// otherwise a backend so slow that every caller gives up on it would show no calls and
/// no latency at all. Dropped as a panic unwinds out of the inner storage's poll (the
/// backend's panic, or a layer's below), it records `panicked` instead, with a warning:
/// the call failed, nobody gave up on it.
///
/// Told apart by `polling`, set around each poll of the inner call, not by
/// `std::thread::panicking()`: that is also true when the call is dropped as a panic
/// elsewhere on the thread unwinds (another future of the caller's `join!`), while the
/// call waited on a backend that did nothing wrong; that call was cancelled.
struct InFlight<'a> {
    settings: &'a Settings,
    by_operation: [(&'static str, &'static str); 2],
    span: Span,
    started: Instant,
    finished: bool,
    /// Inside a poll of the inner call: still set at the drop only if that poll unwound.
    polling: bool,
}

impl InFlight<'_> {
    /// How long the call ran; it finished, so its drop records nothing.
    fn finish(mut self) -> std::time::Duration {
        self.finished = true;
        self.started.elapsed()
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let names = &self.settings.names;
        histogram!(names.seconds.clone(), &self.by_operation).record(self.started.elapsed());
        let panicked = self.polling;
        let outcome = if panicked { "panicked" } else { "cancelled" };
        self.span.record("outcome", outcome);
        let [backend, operation] = self.by_operation;
        let by_outcome = [backend, operation, ("outcome", outcome)];
        counter!(names.calls.clone(), &by_outcome).increment(1);
        self.span.in_scope(|| {
            if panicked {
                warn!("storage call panicked before it finished");
            } else {
                debug!("storage call cancelled before it finished");
            }
        });
    }
}

impl Observed {
    /// Runs `call` (the future `run`) inside its span, then records its outcome, size and
    /// latency on the span and in the metrics.
    async fn observe<T: Read>(
        &self,
        call: Call<'_>,
        run: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        let backend = self.inner.backend_name();
        let operation = call.operation;
        let session_id = call
            .session_id
            .filter(|_| self.settings.session_ids)
            .map(shown_session_id);
        let span = debug_span!(
            "storage",
            backend,
            operation,
            session_id = session_id.as_deref(),
            messages = Empty,
            bytes = Empty,
            outcome = Empty,
            error_kind = Empty,
        );
        let by_operation = [("backend", backend), ("operation", operation)];
        let mut in_flight = InFlight {
            settings: &self.settings,
            by_operation,
            span: span.clone(),
            started: Instant::now(),
            finished: false,
            polling: false,
        };
        let mut run = std::pin::pin!(run.instrument(span.clone()));
        let result = std::future::poll_fn(|cx| {
            in_flight.polling = true;
            let poll = run.as_mut().poll(cx);
            in_flight.polling = false;
            poll
        })
        .await;
        let elapsed = in_flight.finish();

        let names = &self.settings.names;
        let carried = call
            .written
            .or_else(|| result.as_ref().ok().and_then(Read::read));
        if let Some(messages) = carried {
            let bytes = json_bytes(messages);
            span.record("messages", messages.len());
            span.record("bytes", bytes);
            // Only what was actually written or read counts; a refused write is in the
            // span (what was asked) but not in the totals.
            if result.is_ok() {
                counter!(names.messages.clone(), &by_operation).increment(messages.len() as u64);
                counter!(names.bytes.clone(), &by_operation).increment(bytes);
            }
        }
        histogram!(names.seconds.clone(), &by_operation).record(elapsed);
        let outcome = if result.is_ok() { "ok" } else { "error" };
        span.record("outcome", outcome);
        let by_outcome = [by_operation[0], by_operation[1], ("outcome", outcome)];
        counter!(names.calls.clone(), &by_outcome).increment(1);
        if let Err(err) = &result {
            let kind = error_kind(err);
            span.record("error_kind", kind);
            let by_kind = [by_operation[0], by_operation[1], ("kind", kind)];
            counter!(names.errors.clone(), &by_kind).increment(1);
            self.report(&span, err, kind);
        }
        result
    }

    /// One event for a failed call, inside its span: `warn` for a failure, `debug` for a
    /// [`Error::Conflict`] or [`Error::TitleChanged`], the expected answer of a
    /// conditional write that lost a race. The error's text names the session, so it is
    /// left out when session ids are.
    fn report(&self, span: &Span, err: &Error, kind: &'static str) {
        let error = self.settings.session_ids.then(|| display(err));
        span.in_scope(|| {
            if matches!(err, Error::Conflict { .. } | Error::TitleChanged { .. }) {
                debug!(error_kind = kind, error, "storage call lost a race");
            } else {
                warn!(error_kind = kind, error, "storage call failed");
            }
        });
    }
}

#[async_trait]
impl Intercept for Observed {
    fn inner(&self) -> &dyn ConversationStorage {
        self.inner.as_ref()
    }

    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        let call = Call::new("save", session_id).writing(history);
        self.observe(call, self.inner.save(session_id, history))
            .await
    }

    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        let call = Call::new("load", session_id);
        self.observe(call, self.inner.load(session_id)).await
    }

    async fn delete(&self, session_id: &str) -> Result<()> {
        let call = Call::new("delete", session_id);
        self.observe(call, self.inner.delete(session_id)).await
    }

    async fn list_sessions(&self) -> Result<Vec<String>> {
        let call = Call::global("list_sessions");
        self.observe(call, self.inner.list_sessions()).await
    }

    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        let call = Call::new("append", session_id).writing(messages);
        self.observe(call, self.inner.append(session_id, messages))
            .await
    }

    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        let call = Call::new("truncate", session_id);
        self.observe(call, self.inner.truncate(session_id, len))
            .await
    }

    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        let call = Call::new("load_revision", session_id);
        self.observe(call, self.inner.load_revision(session_id))
            .await
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        let call = Call::new("write_if", session_id).writing(change.messages());
        self.observe(call, self.inner.write_if(session_id, expected, change))
            .await
    }

    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        let call = Call::new("session_info", session_id);
        self.observe(call, self.inner.session_info(session_id))
            .await
    }

    async fn create_session(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
    ) -> Result<u64> {
        let call = Call::new("create_session", session_id).writing(messages);
        let run = self.inner.create_session(session_id, meta, messages);
        self.observe(call, run).await
    }

    async fn create_session_with_times(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: SessionTimes,
    ) -> Result<u64> {
        let call = Call::new("create_session_with_times", session_id).writing(messages);
        let run = self
            .inner
            .create_session_with_times(session_id, meta, messages, times);
        self.observe(call, run).await
    }

    async fn update_session(
        &self,
        session_id: &str,
        update: &MetaUpdate,
    ) -> Result<Option<SessionInfo>> {
        let call = Call::new("update_session", session_id);
        self.observe(call, self.inner.update_session(session_id, update))
            .await
    }

    async fn list_page(&self, query: &SessionQuery) -> Result<SessionPage> {
        let call = Call::global("list_page");
        self.observe(call, self.inner.list_page(query)).await
    }

    async fn purge_expired(&self, batch: usize) -> Result<usize> {
        let call = Call::global("purge_expired");
        self.observe(call, self.inner.purge_expired(batch)).await
    }
}
