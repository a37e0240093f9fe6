//! Every layer hands each call of `ConversationStorage` to the inner storage's own
//! implementation of that same call, once: none falls back to the trait's default (which
//! would rebuild an append from a load and a save, and lose the backend's atomicity and
//! exactly-once check) or adds a call of its own on a call that succeeds.
#![cfg(all(feature = "encryption", feature = "retry", feature = "observability"))]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Expect, Layer, MetaUpdate, Result, Revision,
    SessionInfo, SessionMeta, SessionPage, SessionQuery, SessionTimes,
};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion_layers::{ObservabilityLayer, RetryLayer};
use fusion_storage_memory::InMemoryStorage;

/// The memory backend, noting the name of each of its methods that is called.
#[derive(Default)]
struct Recording {
    inner: InMemoryStorage,
    calls: Mutex<Vec<&'static str>>,
}

impl Recording {
    fn note(&self, method: &'static str) -> &InMemoryStorage {
        self.calls.lock().unwrap().push(method);
        &self.inner
    }
}

#[async_trait]
impl ConversationStorage for Recording {
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        self.note("save").save(session_id, history).await
    }
    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        self.note("load").load(session_id).await
    }
    async fn delete(&self, session_id: &str) -> Result<()> {
        self.note("delete").delete(session_id).await
    }
    async fn list_sessions(&self) -> Result<Vec<String>> {
        self.note("list_sessions").list_sessions().await
    }
    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        self.note("append").append(session_id, messages).await
    }
    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        self.note("truncate").truncate(session_id, len).await
    }
    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        self.note("load_revision").load_revision(session_id).await
    }
    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        let inner = self.note("write_if");
        inner.write_if(session_id, expected, change).await
    }
    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        self.note("session_info").session_info(session_id).await
    }
    async fn create_session(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
    ) -> Result<u64> {
        let inner = self.note("create_session");
        inner.create_session(session_id, meta, messages).await
    }
    async fn create_session_with_times(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: SessionTimes,
    ) -> Result<u64> {
        let inner = self.note("create_session_with_times");
        inner
            .create_session_with_times(session_id, meta, messages, times)
            .await
    }
    async fn update_session(
        &self,
        session_id: &str,
        update: &MetaUpdate,
    ) -> Result<Option<SessionInfo>> {
        let inner = self.note("update_session");
        inner.update_session(session_id, update).await
    }
    async fn list_page(&self, query: &SessionQuery) -> Result<SessionPage> {
        self.note("list_page").list_page(query).await
    }
    async fn purge_expired(&self, batch: usize) -> Result<usize> {
        self.note("purge_expired").purge_expired(batch).await
    }
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}

/// Every method of the trait, once each, in this order.
const EVERY_METHOD: [&str; 14] = [
    "create_session",
    "create_session_with_times",
    "append",
    "save",
    "load",
    "load_revision",
    "write_if",
    "truncate",
    "session_info",
    "update_session",
    "list_page",
    "list_sessions",
    "purge_expired",
    "delete",
];

/// Calls every method of `storage` once, in the order of [`EVERY_METHOD`].
async fn call_every_method(storage: &dyn ConversationStorage) {
    let said = |text: &str| ChatMessage::user(text).with_new_id();
    let first = [said("first")];
    let meta = SessionMeta::new().owner("ann");
    storage.create_session("s", &meta, &first).await.unwrap();
    let now = std::time::SystemTime::now();
    let times = SessionTimes::new(now - std::time::Duration::from_secs(60), now);
    let copied = [said("copied")];
    storage
        .create_session_with_times("copy", &meta, &copied, times)
        .await
        .unwrap();
    storage.append("s", &[said("second")]).await.unwrap();
    let history = [said("a"), said("b"), said("c")];
    storage.save("s", &history).await.unwrap();
    assert_eq!(storage.load("s").await.unwrap(), history);
    let (_, revision) = storage.load_revision("s").await.unwrap();
    let more = [said("d")];
    let expected = Expect::Exactly(revision);
    storage
        .write_if("s", expected, Change::Append(&more))
        .await
        .unwrap();
    storage.truncate("s", 2).await.unwrap();
    let info = storage.session_info("s").await.unwrap().unwrap();
    assert_eq!(info.message_count, 2);
    let titled = MetaUpdate::new().title(Some("notes"));
    storage.update_session("s", &titled).await.unwrap();
    let page = storage.list_page(&SessionQuery::new()).await.unwrap();
    assert_eq!(page.sessions.len(), 2);
    let mut ids = storage.list_sessions().await.unwrap();
    ids.sort();
    assert_eq!(ids, ["copy", "s"]);
    assert_eq!(storage.purge_expired(10).await.unwrap(), 0);
    storage.delete("s").await.unwrap();
}

async fn reaches_the_inner_storage_once_per_call(layer: impl Layer) {
    let recording = Arc::new(Recording::default());
    let storage = layer.layer(recording.clone());
    call_every_method(storage.as_ref()).await;
    assert_eq!(*recording.calls.lock().unwrap(), EVERY_METHOD);
}

#[tokio::test]
async fn the_encryption_layer_calls_the_inner_storages_own_methods() {
    let keys = EncryptionKeys::new("k1", &[3; 32]).unwrap();
    reaches_the_inner_storage_once_per_call(EncryptionLayer::new(keys)).await;
    reaches_the_inner_storage_once_per_call(EncryptionLayer::without_keys()).await;
}

#[tokio::test]
async fn the_retry_layer_calls_the_inner_storages_own_methods() {
    reaches_the_inner_storage_once_per_call(RetryLayer::new()).await;
}

#[tokio::test]
async fn the_observability_layer_calls_the_inner_storages_own_methods() {
    reaches_the_inner_storage_once_per_call(ObservabilityLayer::new()).await;
}
