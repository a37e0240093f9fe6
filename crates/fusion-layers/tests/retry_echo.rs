//! The retry layer and an append whose first attempt stored its messages and then failed
//! (on a Redis Cluster, the index requests that follow the write): the retry finds the
//! batch stored and still sends the backend the batch's last message, which the backend's
//! window finds stored, so a backend with upkeep to redo (Redis's reindex) does it, and
//! nothing is stored twice. On memory, the file system and SQLite, that resend changes
//! nothing a reader sees, `updated_at` included (PostgreSQL's own tests check it there:
//! `message_ids.rs`).
#![cfg(feature = "retry")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, DEDUP_WINDOW, Error, Expect, Intercept, Intercepted,
    Result, SessionMeta, SessionTimes, StorageExt,
};
use fusion_layers::RetryLayer;
use fusion_storage_fs::FileSystemStorage;
use fusion_storage_memory::InMemoryStorage;
use fusion_storage_sqlite::SqliteStorage;

/// Applies the first write it sees and then fails it retryably (the write stored, its
/// upkeep not done), passes the others on; records the ids of every batch it is sent.
struct StoredThenFailed {
    inner: Arc<dyn ConversationStorage>,
    failed: AtomicBool,
    sent: Arc<Mutex<Vec<Vec<String>>>>,
    /// What another writer does between the retry's read and its resend, before the
    /// second write is passed on.
    before_retry: Meddling,
}

/// Another writer's change between the retry's read and its resend.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Meddling {
    None,
    /// Deletes the session.
    Delete,
    /// Appends [`DEDUP_WINDOW`] messages, pushing the stored batch out of the window.
    Flood,
}

impl StoredThenFailed {
    fn new(inner: Arc<dyn ConversationStorage>) -> Self {
        Self {
            inner,
            failed: AtomicBool::new(false),
            sent: Arc::default(),
            before_retry: Meddling::None,
        }
    }

    fn record(&self, batch: &[ChatMessage]) {
        let ids = batch.iter().map(|m| m.id.as_ref().unwrap().to_string());
        self.sent.lock().unwrap().push(ids.collect());
    }

    /// Another writer's change before a write after the first, if asked for.
    async fn meddle(&self, session_id: &str) -> Result<()> {
        if !self.failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        match self.before_retry {
            Meddling::None => Ok(()),
            Meddling::Delete => self.inner.delete(session_id).await,
            Meddling::Flood => {
                let others = vec![ChatMessage::user("other"); DEDUP_WINDOW];
                self.inner.append(session_id, &others).await
            }
        }
    }

    /// `result`, or, the first time, the error of a write stored but not indexed.
    fn reply<T>(&self, result: Result<T>) -> Result<T> {
        let value = result?;
        if self.failed.swap(true, Ordering::SeqCst) {
            return Ok(value);
        }
        Err(Error::Backend {
            backend: "stored-then-failed",
            message: "the session's write was stored; its index requests failed".into(),
            retryable: true,
            source: None,
        })
    }
}

#[async_trait]
impl Intercept for StoredThenFailed {
    fn inner(&self) -> &dyn ConversationStorage {
        self.inner.as_ref()
    }

    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        self.record(messages);
        self.meddle(session_id).await?;
        self.reply(self.inner.append(session_id, messages).await)
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        if let Change::Append(messages) = change {
            self.record(messages);
        }
        self.meddle(session_id).await?;
        self.reply(self.inner.write_if(session_id, expected, change).await)
    }
}

fn retry() -> RetryLayer {
    RetryLayer::new()
        .max_attempts(4)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
}

/// Stores "before" in `id` on `inner`, then appends "a" and "b" through the retry layer
/// over a [`StoredThenFailed`] (whose other writer does `before_retry` before the
/// resend): under the generation read first when `conditional`, whose
/// answer must be that generation, else plainly. Returns that generation and the batches
/// the wrapper was sent.
async fn append_stored_then_failed(
    inner: &Arc<dyn ConversationStorage>,
    id: &str,
    conditional: bool,
    before_retry: Meddling,
) -> (u64, Vec<Vec<String>>) {
    inner
        .append(id, &[ChatMessage::user("before")])
        .await
        .unwrap();
    let (_, at) = inner.load_revision(id).await.unwrap();
    let mut wrapper = StoredThenFailed::new(Arc::clone(inner));
    wrapper.before_retry = before_retry;
    let sent = Arc::clone(&wrapper.sent);
    let store = Arc::new(Intercepted(wrapper)).layer(retry());
    let batch = [ChatMessage::user("a"), ChatMessage::assistant("b")];
    if conditional {
        let expected = Expect::Generation(at.generation);
        let answer = store.write_if(id, expected, Change::Append(&batch));
        assert_eq!(answer.await.unwrap(), at.generation);
    } else {
        store.append(id, &batch).await.unwrap();
    }
    let sent = sent.lock().unwrap().clone();
    (at.generation, sent)
}

/// On `inner`: an append (and a conditional one) whose first attempt stored its batch and
/// failed is answered as applied, its retry reaches `inner` with the batch's last message
/// and its id, and the session holds each message once.
async fn the_retry_reaches_the_backend_with_the_stored_tail(inner: Arc<dyn ConversationStorage>) {
    for conditional in [false, true] {
        let id = format!("echo-{conditional}");
        let (generation, sent) =
            append_stored_then_failed(&inner, &id, conditional, Meddling::None).await;
        let (history, now) = inner.load_revision(&id).await.unwrap();
        let contents: Vec<&str> = history.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["before", "a", "b"], "conditional: {conditional}");
        assert_eq!(now.generation, generation, "an append keeps it");
        let stored: Vec<String> = history[1..]
            .iter()
            .map(|m| m.id.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(
            sent,
            [stored.clone(), stored[1..].to_vec()],
            "conditional: {conditional}: the retry resends the stored last message"
        );
    }
}

#[tokio::test]
async fn the_retry_of_a_stored_append_reaches_memory() {
    the_retry_reaches_the_backend_with_the_stored_tail(Arc::new(InMemoryStorage::new())).await;
}

#[tokio::test]
async fn the_retry_of_a_stored_append_reaches_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    let sqlite = SqliteStorage::connect(&url).await.unwrap();
    the_retry_reaches_the_backend_with_the_stored_tail(Arc::new(sqlite)).await;
}

/// A session deleted by another writer between the retry's read (which found the batch
/// stored) and its resend is left deleted: the resend is an append under the generation
/// read, refused, and the append answered as applied (it was, before the delete).
#[tokio::test]
async fn a_session_deleted_before_the_resend_is_not_created_again() {
    let inner: Arc<dyn ConversationStorage> = Arc::new(InMemoryStorage::new());
    for conditional in [false, true] {
        let id = format!("deleted-{conditional}");
        let (_, sent) = append_stored_then_failed(&inner, &id, conditional, Meddling::Delete).await;
        assert_eq!(sent.len(), 2, "the resend was made");
        let gone = inner.load(&id).await.unwrap();
        assert!(gone.is_empty(), "conditional: {conditional}: {gone:?}");
    }
}

/// Found by a review: the resend was an append under the generation read, which appends
/// by others keep, so a batch pushed out of the backend's window by other writers between
/// the retry's read and its resend had its last message stored a second time. The resend
/// now expects the exact revision read: those appends refuse it, and the append is
/// answered as applied (it was), each of its messages stored once.
#[tokio::test]
async fn a_batch_pushed_out_of_the_window_before_the_resend_is_not_stored_again() {
    let inner: Arc<dyn ConversationStorage> = Arc::new(InMemoryStorage::new());
    for conditional in [false, true] {
        let id = format!("flooded-{conditional}");
        let (_, sent) = append_stored_then_failed(&inner, &id, conditional, Meddling::Flood).await;
        assert_eq!(sent.len(), 2, "the resend was made");
        let history = inner.load(&id).await.unwrap();
        let contents: Vec<&str> = history.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents[..3], ["before", "a", "b"]);
        let others = vec!["other"; DEDUP_WINDOW];
        assert_eq!(contents[3..], others, "conditional: {conditional}: b once");
    }
}

/// What a reader sees after the resend of a stored last message, plain and conditional:
/// the same history, generation, count and times. The session is made with times a day
/// back, so that a write would visibly move `updated_at` whatever the clock does.
async fn a_stored_message_sent_again_changes_nothing(name: &str, store: &dyn ConversationStorage) {
    let batch = [
        ChatMessage::user("a").with_new_id(),
        ChatMessage::assistant("b").with_new_id(),
    ];
    let day_back = SystemTime::now() - Duration::from_secs(86_400);
    let times = SessionTimes::new(day_back, day_back);
    let meta = SessionMeta::new();
    store
        .create_session_with_times("seen", &meta, &batch, times)
        .await
        .unwrap();
    let before = store.load_revision("seen").await.unwrap();
    let info = store.session_info("seen").await.unwrap().unwrap();
    store.append("seen", &batch[1..]).await.unwrap();
    let expected = Expect::Generation(before.1.generation);
    let answer = store.write_if("seen", expected, Change::Append(&batch[1..]));
    assert_eq!(answer.await.unwrap(), before.1.generation, "{name}");
    assert_eq!(store.load_revision("seen").await.unwrap(), before, "{name}");
    let after = store.session_info("seen").await.unwrap().unwrap();
    assert_eq!(after, info, "{name}: updated_at included");
}

#[tokio::test]
async fn a_stored_message_sent_again_changes_nothing_a_reader_sees() {
    let memory = InMemoryStorage::new();
    let dir = tempfile::tempdir().unwrap();
    let fs = FileSystemStorage::connect(dir.path().join("fs"))
        .await
        .unwrap();
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    let sqlite = SqliteStorage::connect(&url).await.unwrap();
    let stores: [(&str, &dyn ConversationStorage); 3] =
        [("memory", &memory), ("fs", &fs), ("sqlite", &sqlite)];
    for (name, store) in stores {
        a_stored_message_sent_again_changes_nothing(name, store).await;
    }
}
