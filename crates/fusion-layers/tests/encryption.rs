//! What the encryption layer promises beyond the conformance suite, on the in-memory
//! backend: messages are bound to their session and role, a wrong or missing key is a
//! clear error, keys rotate and `rekey` re-encrypts in place, clear-text sessions from
//! before encryption stay readable, and no key ever shows in `Debug` or an error.

#![cfg(feature = "encryption")]

use std::sync::Arc;

use async_trait::async_trait;
use fusion_core::{
    ChatMessage, ConversationStorage, Error, Intercept, Intercepted, Revision, Role, StorageExt,
    ToolCall,
};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer, Rekeyed};
use fusion_storage_memory::InMemoryStorage;

const OLD: [u8; 32] = [0xA7; 32];
const NEW: [u8; 32] = [0x5C; 32];

fn layer(id: &str, key: &[u8; 32]) -> EncryptionLayer {
    EncryptionLayer::new(EncryptionKeys::new(id, key).unwrap())
}

/// A raw store and the same store seen through `layer`.
fn stores(layer: &EncryptionLayer) -> (Arc<InMemoryStorage>, Arc<dyn ConversationStorage>) {
    let raw = Arc::new(InMemoryStorage::new());
    let encrypted = raw.clone().layer(layer.clone());
    (raw, encrypted)
}

/// A message using every field, so each has to survive the trip through the ciphertext.
fn full_message() -> ChatMessage {
    let mut message = ChatMessage::assistant_with_tool_calls(
        "calling the weather tool",
        vec![ToolCall::new("call_1", "weather", r#"{"city":"Oslo"}"#)],
    );
    message.name = Some("forecaster".into());
    message.with_metadata("summary", serde_json::json!({"covers": [1, 2, 3]}))
}

/// The key id of a stored (raw) message: `fusion:enc:v1:<id>:...`.
fn stored_key_id(message: &ChatMessage) -> &str {
    let rest = message
        .content
        .strip_prefix("fusion:enc:v1:")
        .unwrap_or_else(|| panic!("not encrypted: {message:?}"));
    rest.split(':').next().unwrap()
}

#[tokio::test]
async fn every_field_round_trips_and_only_the_role_and_id_are_stored_in_clear() {
    let layer = layer("k1", &OLD);
    let (raw, encrypted) = stores(&layer);
    let history = vec![
        ChatMessage::system("be brief"),
        full_message(),
        ChatMessage::tool_result("call_1", "rain").with_new_id(),
    ];
    encrypted.save("s", &history).await.unwrap();
    assert_eq!(encrypted.load("s").await.unwrap(), history);
    let stored = raw.load("s").await.unwrap();
    for (stored, plain) in stored.iter().zip(&history) {
        assert_eq!(stored.role, plain.role);
        match &plain.id {
            Some(id) => assert_eq!(stored.id.as_ref(), Some(id)),
            None => assert!(stored.id.is_some(), "every envelope carries an id"),
        }
        assert_eq!(stored_key_id(stored), "k1");
        assert!(stored.tool_calls.is_empty() && stored.tool_call_id.is_none());
        assert!(stored.name.is_none() && stored.metadata.is_empty());
    }
    // A fresh nonce per message: the same message twice is stored two different ways.
    encrypted
        .append("t", &[ChatMessage::user("same"), ChatMessage::user("same")])
        .await
        .unwrap();
    let twice = raw.load("t").await.unwrap();
    assert_ne!(twice[0].content, twice[1].content);
}

#[tokio::test]
async fn a_message_copied_into_another_session_fails_naming_that_session() {
    let layer = layer("k1", &OLD);
    let (raw, encrypted) = stores(&layer);
    encrypted
        .append("alice", &[ChatMessage::user("alice's secret")])
        .await
        .unwrap();
    encrypted
        .append("mallory", &[ChatMessage::user("hello")])
        .await
        .unwrap();
    let stolen = raw.load("alice").await.unwrap();
    raw.append("mallory", &stolen).await.unwrap();

    let err = encrypted.load("mallory").await.unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { session_id, .. } if session_id == "mallory"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("message 2 (index 1, key \"k1\")"), "{text}");
    assert!(!text.contains("alice's secret"), "{text}");
}

#[tokio::test]
async fn stored_messages_met_outside_a_storage_open_as_their_own_session_only() {
    let layer = layer("k1", &OLD);
    let (raw, encrypted) = stores(&layer);
    let said = [ChatMessage::user("plain before"), full_message()];
    raw.append("alice", &said[..1]).await.unwrap();
    encrypted.append("alice", &said[1..]).await.unwrap();
    let stored = raw.load("alice").await.unwrap();

    let opened = layer.open_stored("file", "alice", stored.clone()).unwrap();
    assert_eq!(opened, said, "clear text as it is, the rest decrypted");
    let err = layer
        .open_stored("file", "mallory", stored.clone())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { session_id, .. } if session_id == "mallory"),
        "{err:?}"
    );
    let err = EncryptionLayer::without_keys()
        .open_stored("file", "alice", stored)
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

#[tokio::test]
async fn a_message_whose_role_was_changed_fails_to_decrypt() {
    let layer = layer("k1", &OLD);
    let (raw, encrypted) = stores(&layer);
    encrypted
        .append("s", &[ChatMessage::user("transfer 10 EUR")])
        .await
        .unwrap();
    let mut stored = raw.load("s").await.unwrap();
    stored[0].role = Role::System;
    raw.save("s", &stored).await.unwrap();

    let err = encrypted.load("s").await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("session \"s\""), "{err}");
}

#[tokio::test]
async fn the_id_stays_in_clear_for_deduplication_and_changing_it_fails_to_decrypt() {
    let layer = layer("k1", &OLD);
    let (raw, encrypted) = stores(&layer);
    let message = ChatMessage::user("pay invoice 7").with_new_id();
    let batch = std::slice::from_ref(&message);
    encrypted.append("s", batch).await.unwrap();
    // A retried append of the same message is recognised by the backend below the layer.
    encrypted.append("s", batch).await.unwrap();
    assert_eq!(encrypted.load("s").await.unwrap(), batch);
    let mut stored = raw.load("s").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, message.id, "the id is in clear");
    assert!(!stored[0].content.contains("invoice"));

    stored[0].id = Some(fusion_core::MessageId::new());
    raw.save("s", &stored).await.unwrap();
    let err = encrypted.load("s").await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("role or id"), "{err}");
}

/// A message given without an id is sealed under a fresh id, bound like any other: so a
/// layer below that gives id-less messages ids (a `RetryLayer`) finds one already there,
/// and the message still opens. It loads back as it was given, without an id.
#[tokio::test]
async fn a_message_without_an_id_is_sealed_under_a_fresh_one_and_loads_without_it() {
    let layer = layer("k1", &OLD);
    let (raw, encrypted) = stores(&layer);
    let given = [
        ChatMessage::user("no id"),
        ChatMessage::assistant("none here"),
    ];
    encrypted.append("s", &given).await.unwrap();
    assert_eq!(encrypted.load("s").await.unwrap(), given);
    let mut stored = raw.load("s").await.unwrap();
    assert!(stored.iter().all(|m| m.id.is_some()));
    assert_ne!(stored[0].id, stored[1].id);

    stored[0].id = None;
    raw.save("s", &stored).await.unwrap();
    let err = encrypted.load("s").await.unwrap_err();
    assert!(err.to_string().contains("role or id"), "{err}");
}

#[tokio::test]
async fn a_wrong_key_and_a_missing_key_id_fail_clearly() {
    let (raw, encrypted) = stores(&layer("k1", &OLD));
    encrypted
        .append("s", &[ChatMessage::user("hi")])
        .await
        .unwrap();

    // Same id, other bytes: authentication fails; never garbage.
    let wrong = raw.clone().layer(layer("k1", &NEW));
    let err = wrong.load("s").await.unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { backend: "memory", session_id, .. } if session_id == "s"),
        "{err:?}"
    );
    assert!(err.to_string().contains("key \"k1\""), "{err}");

    // A key id that is not loaded: a configuration error naming session and id.
    let missing = raw.clone().layer(layer("k2", &NEW));
    let err = missing.load("s").await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("session \"s\""), "{text}");
    assert!(text.contains("key \"k1\""), "{text}");
    assert!(text.contains("\"k2\""), "the loaded ids are listed: {text}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn rotation_reads_old_and_new_messages_and_rekey_leaves_only_the_new_key() {
    let (raw, before) = stores(&layer("old", &OLD));
    before
        .save("s", &[ChatMessage::user("one"), full_message()])
        .await
        .unwrap();
    before
        .append("other", &[ChatMessage::user("x")])
        .await
        .unwrap();

    let rotated = EncryptionLayer::new(
        EncryptionKeys::new("new", &NEW)
            .unwrap()
            .with_previous("old", &OLD)
            .unwrap(),
    );
    let after = raw.clone().layer(rotated.clone());
    after
        .append("s", &[ChatMessage::user("three")])
        .await
        .unwrap();
    let expected = vec![
        ChatMessage::user("one"),
        full_message(),
        ChatMessage::user("three"),
    ];
    assert_eq!(after.load("s").await.unwrap(), expected);
    let ids: Vec<String> = raw
        .load("s")
        .await
        .unwrap()
        .iter()
        .map(|m| stored_key_id(m).to_string())
        .collect();
    assert_eq!(ids, ["old", "old", "new"]);

    let times = |info: fusion_core::SessionInfo| (info.created_at, info.updated_at);
    let mut before = Vec::new();
    for id in ["s", "other"] {
        before.push(raw.session_info(id).await.unwrap().unwrap());
    }
    // Past the last write at any backend's precision: a rekey that counted as a write
    // would show.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let done = rotated.rekey_store(raw.as_ref()).await.unwrap();
    assert_eq!(
        (
            done.sessions,
            done.rewritten,
            done.reencrypted,
            done.encrypted
        ),
        (2, 2, 3, 0)
    );
    for (id, before) in ["s", "other"].into_iter().zip(before) {
        for message in raw.load(id).await.unwrap() {
            assert_eq!(stored_key_id(&message), "new");
        }
        let after = raw.session_info(id).await.unwrap().unwrap();
        assert_ne!(after.generation, before.generation, "{id}: rewritten");
        assert_eq!(times(after), times(before), "{id}: a rekey keeps the times");
    }
    // The old key is no longer needed, and a second run has nothing to do.
    let new_only = raw.clone().layer(layer("new", &NEW));
    assert_eq!(new_only.load("s").await.unwrap(), expected);
    assert_eq!(
        rotated.rekey_store(raw.as_ref()).await.unwrap().rewritten,
        0
    );
}

/// A rekey interrupted after some sessions, run again with other bytes under the current
/// id (the wrong key file), is refused at the first session the first run finished, before
/// it seals any session the first run left under the old key with those bytes.
#[tokio::test]
async fn a_rerun_of_an_interrupted_rekey_with_other_bytes_under_the_current_id_rewrites_nothing() {
    let (raw, old) = stores(&layer("old", &OLD));
    for id in ["a", "b"] {
        old.append(id, &[ChatMessage::user(id)]).await.unwrap();
    }
    let rotated = |new: &[u8; 32]| {
        EncryptionLayer::new(
            EncryptionKeys::new("new", new)
                .unwrap()
                .with_previous("old", &OLD)
                .unwrap(),
        )
    };
    // The first run rekeyed the first session listed, and was stopped there.
    let listed = raw.list_sessions().await.unwrap();
    let (done, left) = (listed[0].as_str(), listed[1].as_str());
    rotated(&NEW)
        .rekey_session(raw.as_ref(), done)
        .await
        .unwrap();
    assert_eq!(
        raw.list_sessions().await.unwrap(),
        listed,
        "as listed before"
    );
    let before = raw.load(left).await.unwrap();

    let typo = rotated(&[0x5D; 32]);
    for dry_run in [true, false] {
        let err = if dry_run {
            typo.rekey_store_dry_run(raw.as_ref()).await.unwrap_err()
        } else {
            typo.rekey_store(raw.as_ref()).await.unwrap_err()
        };
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("session \"{done}\""))
                && text.contains("the key loaded as \"new\""),
            "{text}"
        );
    }
    assert_eq!(
        raw.load(left).await.unwrap(),
        before,
        "still under the old key"
    );
    // The right key finishes the job.
    let done = rotated(&NEW).rekey_store(raw.as_ref()).await.unwrap();
    assert_eq!((done.sessions, done.rewritten), (2, 1));
}

/// A rekey whose current key has the right id but other bytes (a typo in the key file)
/// would leave each session under two keys of one name; it refuses, writing nothing.
#[tokio::test]
async fn a_rekey_with_other_bytes_under_the_current_id_refuses_and_writes_nothing() {
    let (raw, old) = stores(&layer("old", &OLD));
    old.append("s", &[ChatMessage::user("one")]).await.unwrap();
    let rotated = |new: &[u8; 32]| {
        EncryptionLayer::new(
            EncryptionKeys::new("new", new)
                .unwrap()
                .with_previous("old", &OLD)
                .unwrap(),
        )
    };
    let right = raw.clone().layer(rotated(&NEW));
    right
        .append("s", &[ChatMessage::user("two")])
        .await
        .unwrap();
    let before = raw.load("s").await.unwrap();

    let typo = rotated(&[0x5D; 32]);
    for dry_run in [true, false] {
        let err = if dry_run {
            typo.rekey_store_dry_run(raw.as_ref()).await.unwrap_err()
        } else {
            typo.rekey_store(raw.as_ref()).await.unwrap_err()
        };
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        let text = err.to_string();
        // The message under "new" is the second: counted from 1, its index beside it.
        assert!(
            text.contains("\"s\"") && text.contains("message 2 (index 1)"),
            "{text}"
        );
        assert!(text.contains("two different keys named \"new\""), "{text}");
        assert_eq!(raw.load("s").await.unwrap(), before);
    }
    // The right key still rekeys it.
    assert_eq!(
        rotated(&NEW)
            .rekey_store(raw.as_ref())
            .await
            .unwrap()
            .reencrypted,
        1
    );
}

#[tokio::test]
async fn clear_sessions_from_before_encryption_load_and_rekey_encrypts_them() {
    let layer = layer("k1", &OLD);
    let (raw, encrypted) = stores(&layer);
    let legacy = vec![ChatMessage::user("written in clear"), full_message()];
    raw.save("legacy", &legacy).await.unwrap();

    // Read as is, and extended with encrypted messages.
    assert_eq!(encrypted.load("legacy").await.unwrap(), legacy);
    encrypted
        .append("legacy", &[ChatMessage::user("new")])
        .await
        .unwrap();
    let mut expected = legacy.clone();
    expected.push(ChatMessage::user("new"));
    assert_eq!(encrypted.load("legacy").await.unwrap(), expected);

    // A layer that refuses clear text refuses the session until it is rekeyed.
    let strict = raw.clone().layer(layer.clone().accept_clear_text(false));
    let err = strict.load("legacy").await.unwrap_err();
    assert!(err.to_string().contains("clear text"), "{err}");

    let done = layer.rekey_session(raw.as_ref(), "legacy").await.unwrap();
    assert_eq!(
        (done.rewritten, done.encrypted, done.reencrypted),
        (1, 2, 0)
    );
    assert!(
        raw.load("legacy")
            .await
            .unwrap()
            .iter()
            .all(|m| stored_key_id(m) == "k1")
    );
    assert_eq!(strict.load("legacy").await.unwrap(), expected);
    assert_eq!(
        layer
            .rekey_session(raw.as_ref(), "never-written")
            .await
            .unwrap(),
        Rekeyed::default()
    );
}

/// Appends a clear message to the session behind every `load_revision`'s back, the first
/// `times` times: a writer that comes between a rekey's read and its write.
struct Meddling {
    inner: Arc<dyn ConversationStorage>,
    times: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Intercept for Meddling {
    fn inner(&self) -> &dyn ConversationStorage {
        self.inner.as_ref()
    }
    async fn load_revision(&self, id: &str) -> fusion_core::Result<(Vec<ChatMessage>, Revision)> {
        let read = self.inner.load_revision(id).await?;
        let left = self.times.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.times
                .store(left - 1, std::sync::atomic::Ordering::SeqCst);
            self.inner
                .append(id, &[ChatMessage::user("meanwhile")])
                .await?;
        }
        Ok(read)
    }
}

#[tokio::test]
async fn rekey_loses_no_message_appended_between_its_read_and_its_write() {
    let layer = layer("k1", &OLD);
    let raw = Arc::new(InMemoryStorage::new());
    raw.save("s", &[ChatMessage::user("clear")]).await.unwrap();
    let meddling = Intercepted(Meddling {
        inner: raw.clone(),
        times: 2.into(),
    });

    let done = layer.rekey_session(&meddling, "s").await.unwrap();
    assert_eq!((done.rewritten, done.encrypted), (1, 3));
    let stored = raw.load("s").await.unwrap();
    assert!(stored.iter().all(|m| stored_key_id(m) == "k1"));
    let plain = raw.clone().layer(layer).load("s").await.unwrap();
    let texts: Vec<&str> = plain.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["clear", "meanwhile", "meanwhile"]);
}

#[tokio::test]
async fn keys_never_show_in_debug_or_errors() {
    let text = "old:p6enp6enp6enp6enp6enp6enp6enp6enp6enp6enp6c=,new:XFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFw=";
    let keys = EncryptionKeys::parse(text).unwrap();
    let layer = EncryptionLayer::new(keys.clone());
    let (raw, encrypted) = stores(&layer);
    encrypted
        .append("s", &[ChatMessage::user("hi")])
        .await
        .unwrap();
    let wrong = raw.clone().layer(EncryptionLayer::new(
        EncryptionKeys::new("old", &NEW).unwrap(),
    ));
    let missing = raw.clone().layer(EncryptionLayer::new(
        EncryptionKeys::new("k9", &NEW).unwrap(),
    ));
    let errors = [
        wrong.load("s").await.unwrap_err(),
        missing.load("s").await.unwrap_err(),
        EncryptionKeys::parse("old:p6enp6enp6enp6enp6enp6enp6enp6enp6enp6en")
            .map(|_| ())
            .unwrap_err(),
        EncryptionKeys::parse("p6enp6enp6enp6enp6enp6enp6enp6enp6enp6enp6c:x")
            .map(|_| ())
            .unwrap_err(),
        EncryptionKeys::parse("k:p6enp6enp6enp6enp6enp6enp6enp6enp6enp6enp6en")
            .map(|_| ())
            .unwrap_err(),
    ];
    let mut shown = vec![
        format!("{keys:?}"),
        format!("{keys:#?}"),
        format!("{layer:?}"),
    ];
    for err in &errors {
        shown.push(err.to_string());
        shown.push(format!("{err:?}"));
    }
    for line in &shown {
        for secret in ["p6en", "XFxc", "167, 167", "92, 92", "a7a7", "5c5c"] {
            assert!(!line.contains(secret), "{secret:?} shows in {line}");
        }
    }
    assert!(
        shown[0].contains("\"old\"") && shown[0].contains("\"new\""),
        "{}",
        shown[0]
    );
}

#[tokio::test]
async fn a_message_too_deep_to_read_back_is_refused_before_it_is_encrypted() {
    let (raw, encrypted) = stores(&layer("k1", &OLD));
    let mut deep = serde_json::json!(0);
    for _ in 0..=fusion_core::MAX_METADATA_DEPTH {
        deep = serde_json::json!([deep]);
    }
    let refused = [
        ChatMessage::user("ok"),
        ChatMessage::user("x").with_metadata("k", deep),
    ];
    let err = encrypted.append("s", &refused).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidMessage { index: 1, .. }),
        "{err:?}"
    );
    assert!(raw.load("s").await.unwrap().is_empty());
}

#[test]
fn a_key_file_holds_one_entry_per_line_with_comments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    std::fs::write(
        &path,
        "# current key first\n2025-06:XFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFw=\n\n\
         # kept to read older messages\n2024-01:p6enp6enp6enp6enp6enp6enp6enp6enp6enp6enp6c=\n",
    )
    .unwrap();
    let keys = EncryptionKeys::from_file(&path).unwrap();
    assert_eq!(keys.current_id(), "2025-06");
    assert_eq!(keys.ids().collect::<Vec<_>>(), ["2025-06", "2024-01"]);
    let err = EncryptionKeys::from_file(dir.path().join("absent")).unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");
}

/// A writer of the store who changes a stored message's encoding (padding, whitespace, the
/// standard base64 alphabet) or its key id to another loaded key gets an error, and one who
/// adds clear fields beside the ciphertext (a name, tool calls, metadata) gets none of
/// them back: a read returns only what the ciphertext holds.
#[tokio::test]
async fn an_envelope_altered_around_its_ciphertext_never_reads_as_altered() {
    let keys = EncryptionKeys::new("k1", &OLD)
        .unwrap()
        .with_previous("k2", &NEW)
        .unwrap();
    let (raw, encrypted) = stores(&EncryptionLayer::new(keys));
    let said = ChatMessage::user("wire 10 EUR to Bob").with_new_id();
    encrypted
        .append("s", std::slice::from_ref(&said))
        .await
        .unwrap();
    let stored = raw.load("s").await.unwrap().remove(0);
    let content = stored.content.clone();
    let altered = [
        format!("{content}="),
        format!("{content}=="),
        format!("{content} "),
        format!("{content}\n"),
        content.replace('-', "+").replace('_', "/"),
        content.replacen(":k1:", ":k2:", 1),
    ];
    for text in altered.into_iter().filter(|text| *text != content) {
        let mut message = stored.clone();
        message.content = text.clone();
        raw.save("s", &[message]).await.unwrap();
        let err = encrypted.load("s").await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{text:?}: {err:?}");
    }

    let mut padded = stored.clone();
    padded.name = Some("mallory".into());
    padded.tool_call_id = Some("call_9".into());
    padded.tool_calls = vec![ToolCall::new("call_9", "pay", "{}")];
    padded
        .metadata
        .insert("approved".into(), serde_json::json!(true));
    raw.save("s", &[padded]).await.unwrap();
    assert_eq!(encrypted.load("s").await.unwrap(), [said]);
}

/// A message given without an id is stored under an envelope id of its own, the one the
/// backend dedupes a retried append by. A rekey keeps that id: it gave the message a
/// fresh one, so a retried append of the message, racing the rekey, stored it again.
#[tokio::test]
async fn a_rekey_keeps_the_stored_id_of_a_message_given_without_one() {
    let (raw, before) = stores(&layer("old", &OLD));
    let said = [
        ChatMessage::user("no id"),
        ChatMessage::user("id").with_new_id(),
    ];
    before.append("s", &said).await.unwrap();
    let ids = async || -> Vec<_> {
        let stored = raw.load("s").await.unwrap();
        stored.into_iter().map(|m| m.id).collect()
    };
    let stored_before = ids().await;

    let rotated = EncryptionLayer::new(
        EncryptionKeys::new("new", &NEW)
            .unwrap()
            .with_previous("old", &OLD)
            .unwrap(),
    );
    let done = rotated.rekey_session(raw.as_ref(), "s").await.unwrap();
    assert_eq!(done.reencrypted, 2);
    let stored = raw.load("s").await.unwrap();
    assert!(stored.iter().all(|m| stored_key_id(m) == "new"));
    assert_eq!(ids().await, stored_before, "the ids the backend holds");
    let reader = raw.clone().layer(layer("new", &NEW));
    assert_eq!(reader.load("s").await.unwrap(), said, "loads as given");
}
