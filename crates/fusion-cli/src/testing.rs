//! What the unit tests of `migrate`, `sessions import` and [`copies`](crate::copies) share:
//! a target opened as those commands open it, over an in-process storage that misbehaves
//! on purpose (a clock ahead, a write that never reached it or reached it late, another
//! writer in between).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use fusion::ChatMessage;
use fusion::layers::encryption::EncryptionLayer;
use fusion::storage::{
    Change, ConversationStorage, Expect, Intercept, MetaUpdate, Revision, SessionInfo, SessionMeta,
    SessionTimes,
};

use crate::store::{Layers, Views};

mod clock;
pub use clock::ClockAhead;

/// `raw` seen as `migrate` and `import` see their target: without a key, with retries.
pub fn views(raw: Arc<dyn ConversationStorage>) -> Views {
    Layers::new(EncryptionLayer::without_keys(), true).views(raw)
}

/// The retryable error of `storage`'s connection dropped `when` (injected fault).
fn dropped(storage: &dyn ConversationStorage, when: &str) -> fusion::Error {
    fusion::Error::Backend {
        backend: storage.backend_name(),
        message: format!("the connection dropped{when} (injected fault)"),
        retryable: true,
        source: None,
    }
}

/// A short conversation whose messages carry no id, as histories written before ids.
pub fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::user("What is the capital of France?"),
        ChatMessage::assistant("Paris."),
    ]
}

/// A storage (inside [`Intercepted`](fusion::storage::Intercepted)) whose next
/// conditional write fails with a retryable error without reaching it, as a connection
/// dropped before the request went out: the write did not apply, and the caller cannot
/// tell that from a lost reply.
pub struct DropsNextWrite<S> {
    inner: S,
    /// How many more writes fail.
    armed: AtomicUsize,
    /// What another writer does to the session right after the first dropped write.
    meanwhile: Mutex<Option<Meddling>>,
}

impl<S> DropsNextWrite<S> {
    /// `inner`, whose next `write_if` fails without applying.
    pub fn new(inner: S) -> Self {
        Self::times(inner, 1)
    }

    /// `inner`, whose next `count` calls of `write_if` fail without applying.
    pub fn times(inner: S, count: usize) -> Self {
        Self {
            inner,
            armed: AtomicUsize::new(count),
            meanwhile: Mutex::new(None),
        }
    }

    /// This storage, where another writer does `meddling` to the session right after the
    /// first dropped write, before the caller reads it back.
    pub fn meanwhile(self, meddling: Meddling) -> Self {
        *self
            .meanwhile
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(meddling);
        self
    }
}

#[async_trait]
impl<S: ConversationStorage> Intercept for DropsNextWrite<S> {
    fn inner(&self) -> &dyn ConversationStorage {
        &self.inner
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> fusion::Result<u64> {
        let armed = self
            .armed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            });
        if armed.is_ok() {
            let meddling = self
                .meanwhile
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(meddling) = meddling {
                meddling.apply(&self.inner, session_id).await;
            }
            return Err(dropped(&self.inner, " before the write went out"));
        }
        self.inner.write_if(session_id, expected, change).await
    }
}

/// A creation whose reply was lost before it applied ([`AppliesLate`]).
struct Late {
    id: String,
    meta: SessionMeta,
    messages: Vec<ChatMessage>,
    times: SessionTimes,
}

/// A storage (inside [`Intercepted`](fusion::storage::Intercepted)) whose next creation
/// with times fails with a retryable error and applies only once the next read of the
/// session has answered: a write still on its way when the connection dropped (a server
/// still running it when the client gave up on it). The read back finds the session as it
/// was, and a creation made again meets the late one's session.
pub struct AppliesLate<S> {
    inner: S,
    armed: AtomicBool,
    late: Mutex<Option<Late>>,
}

impl<S> AppliesLate<S> {
    /// `inner`, whose next `create_session_with_times` applies late.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            armed: AtomicBool::new(true),
            late: Mutex::new(None),
        }
    }
}

#[async_trait]
impl<S: ConversationStorage> Intercept for AppliesLate<S> {
    fn inner(&self) -> &dyn ConversationStorage {
        &self.inner
    }

    async fn create_session_with_times(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: SessionTimes,
    ) -> fusion::Result<u64> {
        if self.armed.swap(false, Ordering::SeqCst) {
            let late = Late {
                id: session_id.to_string(),
                meta: meta.clone(),
                messages: messages.to_vec(),
                times,
            };
            *self.late.lock().unwrap_or_else(PoisonError::into_inner) = Some(late);
            return Err(fusion::Error::Backend {
                backend: self.inner.backend_name(),
                message: "the connection dropped while the write was on its way (injected \
                          fault)"
                    .into(),
                retryable: true,
                source: None,
            });
        }
        self.inner
            .create_session_with_times(session_id, meta, messages, times)
            .await
    }

    async fn load_revision(
        &self,
        session_id: &str,
    ) -> fusion::Result<(Vec<ChatMessage>, Revision)> {
        let read = self.inner.load_revision(session_id).await;
        let late = self
            .late
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(late) = late {
            let Late {
                id,
                meta,
                messages,
                times,
            } = late;
            self.inner
                .create_session_with_times(&id, &meta, &messages, times)
                .await
                .unwrap();
        }
        read
    }
}

/// What another writer does to a session between a command's first read of it and the
/// next.
pub enum Meddling {
    /// Appends this message.
    Append(ChatMessage),
    /// Replaces the history with this one (a new generation).
    Rewrite(Vec<ChatMessage>),
    /// Deletes the session.
    Delete,
    /// Rekeys the session with this layer's current key, as `sessions rekey` does: the
    /// same conversation, stored another way, under a fresh generation.
    Rekey(EncryptionLayer),
}

impl Meddling {
    /// Does this to session `id` of `storage`.
    async fn apply(&self, storage: &dyn ConversationStorage, id: &str) {
        match self {
            Meddling::Append(message) => {
                let batch = [message.clone()];
                storage.append(id, &batch).await.unwrap();
            }
            Meddling::Rewrite(history) => storage.save(id, history).await.unwrap(),
            Meddling::Delete => storage.delete(id).await.unwrap(),
            Meddling::Rekey(layer) => {
                assert_eq!(layer.rekey_session(storage, id).await.unwrap().rewritten, 1);
            }
        }
    }
}

/// A storage (inside [`Intercepted`](fusion::storage::Intercepted)) where another writer
/// changes a session right after the first read of it (`load`, `load_revision` or
/// `session_info`) answered, before any other call: the interleaving a race gives now and
/// then, given every time.
pub struct MeddlesAfterFirstRead<S> {
    inner: S,
    meddling: Meddling,
    done: AtomicBool,
}

impl<S: ConversationStorage> MeddlesAfterFirstRead<S> {
    /// `inner`, where `meddling` happens to a session right after its first read.
    pub fn new(inner: S, meddling: Meddling) -> Self {
        Self {
            inner,
            meddling,
            done: AtomicBool::new(false),
        }
    }

    /// Does the meddling to `session_id`, the first time only.
    async fn meddle(&self, session_id: &str) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        self.meddling.apply(&self.inner, session_id).await;
    }
}

#[async_trait]
impl<S: ConversationStorage> Intercept for MeddlesAfterFirstRead<S> {
    fn inner(&self) -> &dyn ConversationStorage {
        &self.inner
    }

    async fn load(&self, session_id: &str) -> fusion::Result<Vec<ChatMessage>> {
        let read = self.inner.load(session_id).await;
        self.meddle(session_id).await;
        read
    }

    async fn load_revision(
        &self,
        session_id: &str,
    ) -> fusion::Result<(Vec<ChatMessage>, Revision)> {
        let read = self.inner.load_revision(session_id).await;
        self.meddle(session_id).await;
        read
    }

    async fn session_info(&self, session_id: &str) -> fusion::Result<Option<SessionInfo>> {
        let read = self.inner.session_info(session_id).await;
        self.meddle(session_id).await;
        read
    }
}

/// A storage (inside [`Intercepted`](fusion::storage::Intercepted)) whose reads of a
/// session's history (`load_revision`, `load`) fail with a retryable error after the first
/// `answered` of them, every try of the retry layer included: a storage that went away
/// right after a write, before the write could be read back.
pub struct ReadsFailAfter<S> {
    inner: S,
    /// How many more reads answer.
    answered: AtomicUsize,
}

impl<S> ReadsFailAfter<S> {
    /// `inner`, whose reads of a history answer `answered` times and then fail.
    pub fn new(inner: S, answered: usize) -> Self {
        Self {
            inner,
            answered: AtomicUsize::new(answered),
        }
    }
}

impl<S: ConversationStorage> ReadsFailAfter<S> {
    /// Counts one read, failing it once none are left to answer.
    fn answer(&self) -> fusion::Result<()> {
        let answers = self
            .answered
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            });
        answers.map(drop).map_err(|_| dropped(&self.inner, ""))
    }
}

#[async_trait]
impl<S: ConversationStorage> Intercept for ReadsFailAfter<S> {
    fn inner(&self) -> &dyn ConversationStorage {
        &self.inner
    }

    async fn load_revision(
        &self,
        session_id: &str,
    ) -> fusion::Result<(Vec<ChatMessage>, Revision)> {
        self.answer()?;
        self.inner.load_revision(session_id).await
    }

    async fn load(&self, session_id: &str) -> fusion::Result<Vec<ChatMessage>> {
        self.answer()?;
        self.inner.load(session_id).await
    }
}

/// A storage (inside [`Intercepted`](fusion::storage::Intercepted)) whose next conditional
/// write applies and loses its reply, another writer doing `meddling` to the session in
/// between: the reply to a write that applied lost, and the session changed since when
/// the caller reads it back.
pub struct LosesNextReply<S> {
    inner: S,
    meanwhile: Mutex<Option<Meddling>>,
}

impl<S> LosesNextReply<S> {
    /// `inner`, whose next `write_if` applies, is followed by `meddling`, and fails.
    pub fn meanwhile(inner: S, meddling: Meddling) -> Self {
        Self {
            inner,
            meanwhile: Mutex::new(Some(meddling)),
        }
    }
}

#[async_trait]
impl<S: ConversationStorage> Intercept for LosesNextReply<S> {
    fn inner(&self) -> &dyn ConversationStorage {
        &self.inner
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> fusion::Result<u64> {
        let written = self.inner.write_if(session_id, expected, change).await;
        let meddling = self
            .meanwhile
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let (Some(meddling), Ok(_)) = (meddling, &written) else {
            return written;
        };
        meddling.apply(&self.inner, session_id).await;
        Err(dropped(&self.inner, " before the reply came"))
    }
}

/// A storage written as a user might write one: the four required methods over a map,
/// every other call the trait's default. It keeps no generations: `load_revision` reports
/// [`LEGACY_GENERATION`](fusion::storage::LEGACY_GENERATION) for every session, before a
/// replace and after it.
#[derive(Default)]
pub struct Generationless(Mutex<HashMap<String, Vec<ChatMessage>>>);

impl Generationless {
    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Vec<ChatMessage>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl ConversationStorage for Generationless {
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> fusion::Result<()> {
        if history.is_empty() {
            self.sessions().remove(session_id);
        } else {
            self.sessions()
                .insert(session_id.to_string(), history.to_vec());
        }
        Ok(())
    }

    async fn load(&self, session_id: &str) -> fusion::Result<Vec<ChatMessage>> {
        Ok(self.sessions().get(session_id).cloned().unwrap_or_default())
    }

    async fn delete(&self, session_id: &str) -> fusion::Result<()> {
        self.sessions().remove(session_id);
        Ok(())
    }

    async fn list_sessions(&self) -> fusion::Result<Vec<String>> {
        Ok(self.sessions().keys().cloned().collect())
    }
}

/// A storage (inside [`Intercepted`](fusion::storage::Intercepted)) whose first metadata
/// update fails with a retryable error without applying: a command interrupted between
/// its write of a session's messages and its write of the session's metadata.
pub struct MetadataFailsOnce<S> {
    inner: S,
    failed: AtomicBool,
}

impl<S> MetadataFailsOnce<S> {
    /// `inner`, whose next `update_session` fails without applying.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            failed: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl<S: ConversationStorage> Intercept for MetadataFailsOnce<S> {
    fn inner(&self) -> &dyn ConversationStorage {
        &self.inner
    }

    async fn update_session(
        &self,
        session_id: &str,
        update: &MetaUpdate,
    ) -> fusion::Result<Option<SessionInfo>> {
        if !self.failed.swap(true, Ordering::SeqCst) {
            return Err(dropped(&self.inner, " before the update went out"));
        }
        self.inner.update_session(session_id, update).await
    }
}
