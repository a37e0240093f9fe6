//! What the retry tests share: a storage that fails its first writes with an error of the
//! test's choosing.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, Intercept, Result, Revision,
    SessionInfo,
};
use fusion_storage_memory::InMemoryStorage;

/// Fails the first `failures` writes it sees with `error()` before they reach the inner
/// storage (after, with `applies`: the write applied and its reply was lost), appending
/// `meddle` (another writer's message) to the session then if set, `meddles` times, or
/// replacing its history with `rewrite` (another writer's rewrite). Counts the calls.
pub struct Flaky {
    pub inner: Arc<dyn ConversationStorage>,
    failures: AtomicUsize,
    error: fn() -> Error,
    pub meddle: Option<ChatMessage>,
    pub meddles: usize,
    pub rewrite: Option<Vec<ChatMessage>>,
    pub applies: bool,
    /// Once a write failed, every `load_revision` and `session_info` fails with `error()`
    /// too (the read that would settle it is cut as well), or with `read_error()` if set.
    pub cut_reads_after: bool,
    pub read_error: Option<fn() -> Error>,
    reads_cut: AtomicBool,
    /// How many `load_revision`s fail with `error()` before any write does.
    pub first_reads_cut: AtomicUsize,
    pub calls: Arc<AtomicUsize>,
}

impl Flaky {
    pub fn new(failures: usize, error: fn() -> Error) -> Self {
        Self {
            inner: Arc::new(InMemoryStorage::new()),
            failures: AtomicUsize::new(failures),
            error,
            meddle: None,
            meddles: 1,
            rewrite: None,
            applies: false,
            cut_reads_after: false,
            read_error: None,
            reads_cut: AtomicBool::new(false),
            first_reads_cut: AtomicUsize::new(0),
            calls: Arc::default(),
        }
    }

    /// Whether this call fails (before reaching the inner storage, or after it with
    /// `applies`: `apply` runs first).
    async fn fails<F: Future<Output = Result<()>>>(
        &self,
        session_id: &str,
        apply: impl FnOnce() -> F,
    ) -> Option<Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let left = self.failures.load(Ordering::SeqCst);
        if left == 0 {
            return None;
        }
        self.failures.store(left - 1, Ordering::SeqCst);
        if self.applies {
            apply().await.unwrap();
        }
        if let Some(other) = &self.meddle {
            for _ in 0..self.meddles {
                self.inner
                    .append(session_id, std::slice::from_ref(other))
                    .await
                    .unwrap();
            }
        }
        if let Some(history) = &self.rewrite {
            let (_, at) = self.inner.load_revision(session_id).await.unwrap();
            let change = Change::Rewrite(history);
            let expected = Expect::Generation(at.generation);
            self.inner
                .write_if(session_id, expected, change)
                .await
                .unwrap();
        }
        if self.cut_reads_after {
            self.reads_cut.store(true, Ordering::SeqCst);
        }
        Some((self.error)())
    }

    /// The error a read gets once reads are cut.
    fn read_cut(&self) -> Option<Error> {
        let error = self.read_error.unwrap_or(self.error);
        self.reads_cut.load(Ordering::SeqCst).then(error)
    }
}

#[async_trait]
impl Intercept for Flaky {
    fn inner(&self) -> &dyn ConversationStorage {
        self.inner.as_ref()
    }

    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        let first = self.first_reads_cut.load(Ordering::SeqCst);
        if first > 0 {
            self.first_reads_cut.store(first - 1, Ordering::SeqCst);
            return Err((self.error)());
        }
        match self.read_cut() {
            Some(err) => Err(err),
            None => self.inner.load_revision(session_id).await,
        }
    }

    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        match self.read_cut() {
            Some(err) => Err(err),
            None => self.inner.session_info(session_id).await,
        }
    }

    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        let apply = || self.inner.append(session_id, messages);
        match self.fails(session_id, apply).await {
            Some(err) => Err(err),
            None => self.inner.append(session_id, messages).await,
        }
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        let apply = || async {
            self.inner
                .write_if(session_id, expected, change)
                .await
                .map(drop)
        };
        match self.fails(session_id, apply).await {
            Some(err) => Err(err),
            None => self.inner.write_if(session_id, expected, change).await,
        }
    }
}

/// A dropped connection: a retryable backend error.
pub fn dropped() -> Error {
    Error::Backend {
        backend: "flaky",
        message: "connection reset".into(),
        retryable: true,
        source: None,
    }
}
