//! Messages already in the stored form of their session, handed back to the layer to
//! write: a rekey given the storage *through* the layer rather than the one under it, or
//! a session's stored messages copied back into it. Sealed again they would load back as
//! ciphertext in place of their text, so the layer refuses them and writes nothing.

#![cfg(feature = "encryption")]

use std::sync::Arc;

use fusion_core::{ChatMessage, ConversationStorage, Error, StorageExt};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion_storage_memory::InMemoryStorage;

fn layer() -> EncryptionLayer {
    EncryptionLayer::new(EncryptionKeys::new("k1", &[0x3D; 32]).unwrap())
}

/// A rekey handed the encrypting storage meets every message decrypted, takes each for
/// clear text and writes it back sealed, through the layer that seals it once more.
#[tokio::test]
async fn a_rekey_given_the_storage_through_the_layer_refuses_and_writes_nothing() {
    let layer = layer();
    let raw = Arc::new(InMemoryStorage::new());
    let storage = raw.clone().layer(layer.clone());
    let history = [
        ChatMessage::user("my card is 4111"),
        ChatMessage::assistant("noted"),
    ];
    storage.append("s1", &history).await.unwrap();
    let before = raw.load_revision("s1").await.unwrap();

    let err = layer.rekey_store(storage.as_ref()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::InvalidMessage { .. }), "{text}");
    assert!(text.contains("s1") && text.contains("already"), "{text}");
    assert_eq!(raw.load_revision("s1").await.unwrap(), before);
    assert_eq!(storage.load("s1").await.unwrap(), history);
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
