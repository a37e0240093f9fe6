//! Messages already in the stored form of their session, handed back to the layer to
//! write: a rekey given the storage *through* the layer rather than the one under it, or
//! a session's stored messages copied back into it. Sealed again they would load back as
//! ciphertext in place of their text, so the layer refuses them and writes nothing.

#![cfg(feature = "encryption")]

use std::sync::Arc;

use fusion_core::{ChatMessage, ConversationStorage, Error, Intercept, Intercepted, StorageExt};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion_storage_memory::InMemoryStorage;

fn layer() -> EncryptionLayer {
    EncryptionLayer::new(EncryptionKeys::new("k1", &[0x3D; 32]).unwrap())
}

/// Another layer over the encrypting storage, forwarding every call.
struct Forwarding(Arc<dyn ConversationStorage>);

impl Intercept for Forwarding {
    fn inner(&self) -> &dyn ConversationStorage {
        self.0.as_ref()
    }
}

/// A rekey handed the encrypting storage would meet every message decrypted and take each
/// for clear text: a dry run counted them all as messages to encrypt, and only the real
/// run's write was refused. Both are refused at the read, naming the session and the
/// storage to give, nothing written; so is a rekey handed the storage through the layer
/// from before a rotation, which holds only its older key and would not have refused the
/// write (every message sealed a second time, under the old key around the new).
#[tokio::test]
async fn a_rekey_given_the_storage_through_the_layer_refuses_dry_run_or_not() {
    let old = EncryptionLayer::new(EncryptionKeys::new("k0", &[0x11; 32]).unwrap());
    let rotated = EncryptionLayer::new(
        EncryptionKeys::new("k1", &[0x3D; 32])
            .unwrap()
            .with_previous("k0", &[0x11; 32])
            .unwrap(),
    );
    let history = [
        ChatMessage::user("my card is 4111"),
        ChatMessage::assistant("noted"),
    ];
    for through in [rotated.clone(), old] {
        let raw = Arc::new(InMemoryStorage::new());
        let storage = raw.clone().layer(through);
        storage.append("s1", &history).await.unwrap();
        let before = raw.load_revision("s1").await.unwrap();
        let forwarded = Intercepted(Forwarding(storage.clone()));

        for run in 0..3 {
            let err = match run {
                0 => rotated.rekey_store_dry_run(storage.as_ref()).await,
                1 => rotated.rekey_store(storage.as_ref()).await,
                _ => rotated.rekey_session(&forwarded, "s1").await,
            }
            .unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::Config(_)), "run {run}: {text}");
            assert!(
                text.contains("session \"s1\"") && text.contains("under the encryption layer"),
                "run {run}: {text}"
            );
        }
        assert_eq!(raw.load_revision("s1").await.unwrap(), before);
        assert_eq!(storage.load("s1").await.unwrap(), history);
        // The storage under the layer is rekeyed as ever.
        assert_eq!(rotated.rekey_store(raw.as_ref()).await.unwrap().sessions, 1);
        let reader = raw.clone().layer(rotated.clone());
        assert_eq!(reader.load("s1").await.unwrap(), history);
    }
}

/// A layer with another key between the rekey and the store is a stack, whose outer layer
/// a rekey is given the storage under: that is the storage through the inner layer, and it
/// is rekeyed, every message under both keys after it.
#[tokio::test]
async fn a_rekey_given_the_storage_under_it_in_a_stack_with_other_keys_rekeys() {
    let raw = Arc::new(InMemoryStorage::new());
    let inner = raw.clone().layer(layer());
    inner
        .append(
            "s1",
            &[ChatMessage::user("written under the inner layer only")],
        )
        .await
        .unwrap();
    let outer = EncryptionLayer::new(EncryptionKeys::new("k2", &[0x7E; 32]).unwrap());
    let done = outer.rekey_store_dry_run(inner.as_ref()).await.unwrap();
    assert_eq!((done.rewritten, done.encrypted), (1, 1));
    assert_eq!(outer.rekey_store(inner.as_ref()).await.unwrap(), done);
    let stacked = inner.layer(outer);
    assert_eq!(
        stacked.load("s1").await.unwrap(),
        [ChatMessage::user("written under the inner layer only")]
    );
}

/// Stored messages appended back into their own session through the layer: refused, the
/// session as it was. The same text in another session is only text (it does not open
/// as one of that session's messages), and is sealed like any.
#[tokio::test]
async fn a_sessions_stored_messages_written_back_through_the_layer_are_refused() {
    let (raw, storage) = {
        let raw = Arc::new(InMemoryStorage::new());
        (raw.clone(), raw.layer(layer()))
    };
    storage
        .append("s1", &[ChatMessage::user("secret")])
        .await
        .unwrap();
    let stored = raw.load("s1").await.unwrap();

    let err = storage.append("s1", &stored).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidMessage { index: 0, .. }),
        "{err}"
    );
    let err = storage.save("s1", &stored).await.unwrap_err();
    assert!(matches!(err, Error::InvalidMessage { .. }), "{err}");
    assert_eq!(
        storage.load("s1").await.unwrap(),
        [ChatMessage::user("secret")]
    );

    storage.append("s2", &stored).await.unwrap();
    let loaded = storage.load("s2").await.unwrap();
    assert_eq!(loaded[0].content, stored[0].content);
}

/// A layer stacked over another holding its current key (the same layer twice, or two
/// built from one key) hands the inner one messages it cannot tell from stored ones: it
/// refuses them, writing nothing, and says that stacking is a cause, rather than sending
/// whoever reads the error after stored messages nobody copied. Layers with other keys
/// stack (each message sealed twice, opened twice).
#[tokio::test]
async fn a_layer_stacked_over_one_with_the_same_key_is_named_in_the_refusal() {
    let raw = Arc::new(InMemoryStorage::new());
    let twice = raw.clone().layer(layer()).layer(layer());
    let err = twice
        .append("s1", &[ChatMessage::user("hello")])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::InvalidMessage { index: 0, .. }),
        "{text}"
    );
    assert!(text.contains("stacked"), "{text}");
    assert!(raw.load("s1").await.unwrap().is_empty());

    let other = EncryptionLayer::new(EncryptionKeys::new("k2", &[0x7E; 32]).unwrap());
    let stacked = raw.clone().layer(layer()).layer(other);
    let history = [ChatMessage::user("hello")];
    stacked.append("s1", &history).await.unwrap();
    assert_eq!(stacked.load("s1").await.unwrap(), history);
}
