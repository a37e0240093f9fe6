//! The encryption layer without keys, as a program wraps its storage when its user gave no
//! key: clear text passes both ways, an encrypted session is refused naming its key id
//! (never shown as ciphertext), a write it could not read back is refused, and a rekey
//! needs a key. Also the rekey dry run, which counts what a rekey would do and writes
//! nothing.

#![cfg(feature = "encryption")]

use std::sync::Arc;

use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, SessionMeta, StorageExt,
};
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

/// A message whose text starts like an encrypted one would be stored as given and then
/// taken for an encrypted message on every read, making its whole session unreadable
/// ("session is encrypted ... pass --encryption-key-file" for a session that is not). A
/// layer without keys refuses it, by every write path, and stores nothing.
#[tokio::test]
async fn without_keys_a_message_that_would_read_back_as_encrypted_is_refused() {
    let raw = Arc::new(InMemoryStorage::new());
    let plain = raw.clone().layer(EncryptionLayer::without_keys());
    let kept = [ChatMessage::user("before")];
    plain.append("s", &kept).await.unwrap();
    for text in [
        "fusion:enc:v1:k1:AAAA",
        "fusion:enc:what the envelope looks like",
    ] {
        let batch = [ChatMessage::user("fine"), ChatMessage::user(text)];
        let refusals = [
            plain.append("s", &batch).await.unwrap_err(),
            plain.save("s", &batch).await.unwrap_err(),
            plain
                .write_if("s", Expect::Generation(0), Change::Append(&batch))
                .await
                .unwrap_err(),
            plain
                .create_session("t", &SessionMeta::new(), &batch)
                .await
                .unwrap_err(),
        ];
        for err in refusals {
            assert!(
                matches!(err, Error::InvalidMessage { index: 1, .. }),
                "{text}: {err:?}"
            );
            assert!(err.to_string().contains("fusion:enc:"), "{err}");
            assert!(!err.is_retryable());
        }
    }
    assert_eq!(raw.load("s").await.unwrap(), kept, "nothing stored");
    assert_eq!(plain.load("s").await.unwrap(), kept, "still readable");
    assert!(raw.load("t").await.unwrap().is_empty());

    // With a key the same text is sealed like any other, and reads back as written.
    let sealed = raw.clone().layer(layer("k1", &OLD));
    let said = [ChatMessage::user("fusion:enc:v1:k1:AAAA")];
    sealed.append("u", &said).await.unwrap();
    assert_eq!(sealed.load("u").await.unwrap(), said);
}

/// A layer without keys that refuses clear text could read back nothing it wrote: it
/// refuses to write rather than store messages that fail every read.
#[tokio::test]
async fn without_keys_and_refusing_clear_text_nothing_is_written() {
    let raw = Arc::new(InMemoryStorage::new());
    let strict = raw
        .clone()
        .layer(EncryptionLayer::without_keys().accept_clear_text(false));
    let err = strict
        .append("s", &[ChatMessage::user("hello")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("session \"s\""), "{text}");
    assert!(text.contains("no key"), "{text}");
    assert!(text.contains("FUSION_ENCRYPTION_KEY"), "{text}");
    assert!(raw.list_sessions().await.unwrap().is_empty());
}
