//! How far a rekey's mark on its reads reaches: every read of messages through an
//! encrypting storage that shares one of the rekey's keys, made while the rekey's read is
//! polled, is refused (whichever method reaches it); an ordinary read beside the rekey in
//! the same task, or after a rekey read that panicked or was dropped, is not.

#![cfg(feature = "encryption")]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use async_trait::async_trait;
use fusion_core::{
    ChatMessage, ConversationStorage, Error, Intercept, Intercepted, Result, Revision, StorageExt,
};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion_storage_memory::InMemoryStorage;
use tokio::sync::oneshot;

fn layer() -> EncryptionLayer {
    EncryptionLayer::new(EncryptionKeys::new("k1", &[0x3D; 32]).unwrap())
}

fn history() -> [ChatMessage; 2] {
    [
        ChatMessage::user("my card is 4111"),
        ChatMessage::assistant("noted"),
    ]
}

/// A user-written wrapper with only the four methods a storage must have: every other
/// call, `load_revision` included, is the trait's default, built on `load`.
struct Minimal(Arc<dyn ConversationStorage>);

#[async_trait]
impl ConversationStorage for Minimal {
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        self.0.save(session_id, history).await
    }

    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        self.0.load(session_id).await
    }

    async fn delete(&self, session_id: &str) -> Result<()> {
        self.0.delete(session_id).await
    }

    async fn list_sessions(&self) -> Result<Vec<String>> {
        self.0.list_sessions().await
    }
}

/// A rekey given the storage through the layer inside a wrapper whose `load_revision`
/// reads with `load` (the trait's default) is refused as one given it directly: the
/// mark is on every read of messages, not on `load_revision` alone. Without that, the dry
/// run counted every message as clear text, and given the layer from before a rotation
/// the real run sealed every message a second time.
#[tokio::test]
async fn a_rekey_given_a_wrapper_that_reads_through_load_refuses() {
    let old = EncryptionLayer::new(EncryptionKeys::new("k0", &[0x11; 32]).unwrap());
    let rotated = EncryptionLayer::new(
        EncryptionKeys::new("k1", &[0x3D; 32])
            .unwrap()
            .with_previous("k0", &[0x11; 32])
            .unwrap(),
    );
    let raw = Arc::new(InMemoryStorage::new());
    let through = raw.clone().layer(old);
    through.append("s1", &history()).await.unwrap();
    let before = raw.load_revision("s1").await.unwrap();
    let wrapped = Minimal(through.clone());

    for dry_run in [true, false] {
        let outcome = if dry_run {
            rotated.rekey_store_dry_run(&wrapped).await
        } else {
            rotated.rekey_store(&wrapped).await
        };
        let err = outcome.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Config(_)), "dry run {dry_run}: {text}");
        assert!(
            text.contains("session \"s1\"") && text.contains("under the encryption layer"),
            "dry run {dry_run}: {text}"
        );
    }
    assert_eq!(raw.load_revision("s1").await.unwrap(), before);
    assert_eq!(through.load("s1").await.unwrap(), history());
}

/// The raw storage, whose `load_revision` waits for `gate` (once) before reading.
struct Gated {
    raw: Arc<InMemoryStorage>,
    gate: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Gated {
    fn new(raw: &Arc<InMemoryStorage>) -> (Intercepted<Self>, oneshot::Sender<()>) {
        let (open, gate) = oneshot::channel();
        let gated = Self {
            raw: raw.clone(),
            gate: Mutex::new(Some(gate)),
        };
        (Intercepted(gated), open)
    }
}

#[async_trait]
impl Intercept for Gated {
    fn inner(&self) -> &dyn ConversationStorage {
        self.raw.as_ref()
    }

    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        let gate = self.gate.lock().unwrap().take();
        if let Some(gate) = gate {
            // A sender dropped opens the gate too.
            let _ = gate.await;
        }
        self.raw.load_revision(session_id).await
    }
}

/// A rekey's read waiting in one task beside an ordinary read through the layer (a
/// `join!`, a `select!`): the ordinary read, polled while the rekey's read is pending, is
/// not taken for the rekey's, and the rekey goes on once it is done.
#[tokio::test]
async fn an_ordinary_read_beside_a_waiting_rekey_in_one_task_is_not_refused() {
    let layer = layer();
    let raw = Arc::new(InMemoryStorage::new());
    let through = raw.clone().layer(layer.clone());
    through.append("s1", &history()).await.unwrap();
    raw.save("clear", &[ChatMessage::user("written in clear")])
        .await
        .unwrap();
    let (gated, open) = Gated::new(&raw);

    let (rekeyed, read) = tokio::join!(layer.rekey_session(&gated, "clear"), async {
        let read = through.load_revision("s1").await;
        let loaded = through.load("s1").await;
        open.send(()).unwrap();
        (read, loaded)
    });
    let (read, loaded) = read;
    assert_eq!(read.unwrap().0, history());
    assert_eq!(loaded.unwrap(), history());
    assert_eq!(rekeyed.unwrap().encrypted, 1);
}

/// A raw storage whose `load_revision` panics.
struct Panicking(Arc<InMemoryStorage>);

#[async_trait]
impl Intercept for Panicking {
    fn inner(&self) -> &dyn ConversationStorage {
        self.0.as_ref()
    }

    async fn load_revision(&self, _: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        panic!("the backend panicked in its read");
    }
}

/// The mark lasts one poll of the rekey's read: a read that panicked (caught by the task
/// it ran in, on this thread) or a rekey dropped while its read waited (a timeout) leaves
/// no mark behind, and later reads through the layer on this thread are served.
#[tokio::test]
async fn no_mark_is_left_by_a_rekey_read_that_panicked_or_was_dropped() {
    let layer = layer();
    let raw = Arc::new(InMemoryStorage::new());
    let through = raw.clone().layer(layer.clone());
    through.append("s1", &history()).await.unwrap();

    // A current-thread runtime: the task runs, and panics, on this thread.
    let panicking = Intercepted(Panicking(raw.clone()));
    let rekey = layer.clone();
    let panicked = tokio::spawn(async move { rekey.rekey_session(&panicking, "s1").await });
    assert!(panicked.await.unwrap_err().is_panic());
    assert_eq!(through.load("s1").await.unwrap(), history());

    let (gated, _open) = Gated::new(&raw);
    {
        let mut rekey = std::pin::pin!(layer.rekey_session(&gated, "s1"));
        let polled = std::future::poll_fn(|cx| Poll::Ready(rekey.as_mut().poll(cx).is_ready()));
        assert!(!polled.await, "the rekey's read waits at the gate");
    }
    assert_eq!(through.load_revision("s1").await.unwrap().0, history());
    assert_eq!(through.load("s1").await.unwrap(), history());
}

/// The refusal comes before the backend under the layer checks the session id: an
/// invalid id given to a rekey so refused is refused as invalid, shown escaped as every
/// such error shows it, never written into the refusal as given (a line break forging a
/// log line).
#[tokio::test]
async fn an_invalid_session_id_in_a_refused_rekey_is_refused_as_invalid() {
    let layer = layer();
    let through = Arc::new(InMemoryStorage::new()).layer(layer.clone());
    let forged = "s1\nERROR forged line";
    let err = layer
        .rekey_session(through.as_ref(), forged)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::InvalidSessionId { .. }), "{text}");
    assert!(!text.contains('\n') && text.contains("s1\\n"), "{text}");
}

/// The bundled layers over the storage through the encryption layer (a retry, which reads
/// again inside the same call, and observability) keep the refusal: each runs its reads
/// inline, in the rekey's poll, so none hides them from the mark. A guard: no fix.
#[cfg(all(feature = "retry", feature = "observability"))]
#[tokio::test]
async fn a_rekey_given_the_bundled_layers_over_the_layer_refuses() {
    use fusion_layers::{ObservabilityLayer, RetryLayer};
    let raw = Arc::new(InMemoryStorage::new());
    let through = raw.clone().layer(layer());
    through.append("s1", &history()).await.unwrap();
    let before = raw.load_revision("s1").await.unwrap();
    let stacks = [
        through
            .clone()
            .layer(RetryLayer::new())
            .layer(ObservabilityLayer::new()),
        through
            .clone()
            .layer(ObservabilityLayer::new())
            .layer(RetryLayer::new()),
    ];
    for stack in stacks {
        for dry_run in [true, false] {
            let outcome = if dry_run {
                layer().rekey_store_dry_run(stack.as_ref()).await
            } else {
                layer().rekey_session(stack.as_ref(), "s1").await
            };
            let err = outcome.unwrap_err();
            assert!(matches!(err, Error::Config(_)), "dry run {dry_run}: {err}");
        }
    }
    assert_eq!(raw.load_revision("s1").await.unwrap(), before);
}
