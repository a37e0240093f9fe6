//! The encryption layer without keys, as a program wraps its storage when its user gave no
//! key: clear text passes both ways, an encrypted session is refused naming its key id
//! (never shown as ciphertext), and a rekey needs a key. Also the rekey dry run, which
//! counts what a rekey would do and writes nothing.

#![cfg(feature = "encryption")]

use std::sync::Arc;

use fusion_core::{ChatMessage, ConversationStorage, Error, StorageExt};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion_storage_memory::InMemoryStorage;

const OLD: [u8; 32] = [0xA7; 32];
const NEW: [u8; 32] = [0x5C; 32];

fn layer(id: &str, key: &[u8; 32]) -> EncryptionLayer {
    EncryptionLayer::new(EncryptionKeys::new(id, key).unwrap())
}

#[tokio::test]
async fn without_keys_clear_text_is_written_and_read_as_given() {
    let raw = Arc::new(InMemoryStorage::new());
    let plain = raw.clone().layer(EncryptionLayer::without_keys());
    let history = vec![ChatMessage::system("be brief"), ChatMessage::user("hello")];
    plain.save("s", &history).await.unwrap();
    plain
        .append("s", &[ChatMessage::assistant("hi")])
        .await
        .unwrap();

    let mut expected = history;
    expected.push(ChatMessage::assistant("hi"));
    assert_eq!(raw.load("s").await.unwrap(), expected, "stored as given");
    assert_eq!(plain.load("s").await.unwrap(), expected);
    assert!(EncryptionLayer::without_keys().keys().is_none());
}

#[tokio::test]
async fn without_keys_an_encrypted_session_is_refused_naming_session_key_and_remedy() {
    let raw = Arc::new(InMemoryStorage::new());
    // A clear message from before encryption, then one encrypted under "k1".
    raw.append("s", &[ChatMessage::user("legacy words")])
        .await
        .unwrap();
    raw.clone()
        .layer(layer("k1", &OLD))
        .append("s", &[ChatMessage::user("secret words")])
        .await
        .unwrap();
    let ciphertext = raw.load("s").await.unwrap()[1].content.clone();

    let plain = raw.clone().layer(EncryptionLayer::without_keys());
    let by_load = plain.load("s").await.unwrap_err();
    let by_revision = plain.load_revision("s").await.unwrap_err();
    for err in [by_load, by_revision] {
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("session \"s\" is encrypted"), "{text}");
        assert!(text.contains("key \"k1\""), "{text}");
        assert!(text.contains("--encryption-key-file"), "{text}");
        assert!(text.contains("FUSION_ENCRYPTION_KEY"), "{text}");
        assert!(!text.contains(&ciphertext), "{text}");
        assert!(!text.contains("secret words"), "{text}");
    }
    // Listing and metadata do not read messages, so they still work without the key.
    assert_eq!(plain.list_sessions().await.unwrap(), ["s"]);
}

#[tokio::test]
async fn a_rekey_without_keys_is_refused_before_touching_the_store() {
    let raw = Arc::new(InMemoryStorage::new());
    raw.append("s", &[ChatMessage::user("clear")])
        .await
        .unwrap();
    let keyless = EncryptionLayer::without_keys();
    for err in [
        keyless.rekey_store(raw.as_ref()).await.unwrap_err(),
        keyless.rekey_store_dry_run(raw.as_ref()).await.unwrap_err(),
        keyless.rekey_session(raw.as_ref(), "s").await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(err.to_string().contains("no keys"), "{err}");
    }
    // An empty store too: the missing key is reported, not "nothing to do".
    let empty = InMemoryStorage::new();
    assert!(keyless.rekey_store(&empty).await.is_err());
    assert_eq!(
        raw.load("s").await.unwrap(),
        [ChatMessage::user("clear")],
        "nothing written"
    );
}

#[tokio::test]
async fn a_dry_run_counts_what_a_rekey_does_and_writes_nothing() {
    let raw = Arc::new(InMemoryStorage::new());
    raw.append("clear", &[ChatMessage::user("a"), ChatMessage::user("b")])
        .await
        .unwrap();
    raw.clone()
        .layer(layer("old", &OLD))
        .append("old", &[ChatMessage::user("c")])
        .await
        .unwrap();
    let rotated = EncryptionLayer::new(
        EncryptionKeys::new("new", &NEW)
            .unwrap()
            .with_previous("old", &OLD)
            .unwrap(),
    );
    raw.clone()
        .layer(rotated.clone())
        .append("new", &[ChatMessage::user("d")])
        .await
        .unwrap();
    let before: Vec<Vec<ChatMessage>> = snapshot(raw.as_ref()).await;

    let planned = rotated.rekey_store_dry_run(raw.as_ref()).await.unwrap();
    assert_eq!(
        snapshot(raw.as_ref()).await,
        before,
        "a dry run writes nothing"
    );
    assert_eq!(
        (
            planned.sessions,
            planned.rewritten,
            planned.reencrypted,
            planned.encrypted
        ),
        (3, 2, 1, 2)
    );
    assert_eq!(rotated.rekey_store(raw.as_ref()).await.unwrap(), planned);

    // A dry run decrypts what it would re-encrypt: a key no longer loaded fails it.
    let only_new = layer("new", &NEW);
    raw.clone()
        .layer(layer("old", &OLD))
        .append("old", &[ChatMessage::user("e")])
        .await
        .unwrap();
    let err = only_new
        .rekey_store_dry_run(raw.as_ref())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("key \"old\""), "{err}");
}

/// Every session's stored messages, in id order.
async fn snapshot(raw: &dyn ConversationStorage) -> Vec<Vec<ChatMessage>> {
    let mut ids = raw.list_sessions().await.unwrap();
    ids.sort();
    let mut sessions = Vec::new();
    for id in ids {
        sessions.push(raw.load(&id).await.unwrap());
    }
    sessions
}
