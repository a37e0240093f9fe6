//! What `fusion migrate --encrypt --dry-run` says it would encrypt in each session: the
//! messages it would copy (written encrypted with the current key), and those the target
//! already holds in clear text or under an older key (re-encrypted after the copy).
//!
//! The second count comes from the encryption layer's own dry-run rekey, run on a view of
//! the raw target that holds just this session, so a dry run counts exactly what the real
//! run's [`rekey_session`](EncryptionLayer::rekey_session) would rewrite, and fails where
//! it would (a message under a key that is not loaded).

use async_trait::async_trait;
use fusion::layers::encryption::{EncryptionLayer, Rekeyed};
use fusion::storage::{ConversationStorage, Intercept, Intercepted};

use super::outcome::Outcome;
use crate::render::plural;

/// What the rekey after `outcome` would re-encrypt in session `id` of the raw target,
/// writing nothing.
pub(super) async fn would_seal(
    encryption: &EncryptionLayer,
    raw_target: &dyn ConversationStorage,
    id: &str,
    outcome: &Outcome,
) -> fusion::Result<Rekeyed> {
    match outcome.done() {
        // The target holds nothing of this session, or the copy replaces all it holds:
        // every message it would then hold is one the copy writes encrypted.
        Outcome::Copied(_) | Outcome::Replaced { .. } => Ok(Rekeyed::default()),
        _ => {
            let view = Intercepted(OneSession {
                raw: raw_target,
                id: id.to_string(),
            });
            encryption.rekey_store_dry_run(&view).await
        }
    }
}

/// The part of a dry run's line that says what would be encrypted: the messages to copy,
/// then those the target holds to (re-)encrypt.
pub(super) fn plan(encryption: &EncryptionLayer, outcome: &Outcome, sealed: &Rekeyed) -> String {
    let key = encryption.keys().map_or("", |keys| keys.current_id());
    let mut parts = Vec::new();
    if outcome.written() > 0 {
        parts.push(format!(
            "{} to write encrypted with key \"{key}\"",
            plural(outcome.written(), "message")
        ));
    }
    if sealed.encrypted > 0 {
        parts.push(format!(
            "{} held in clear text to encrypt",
            plural(sealed.encrypted, "message")
        ));
    }
    if sealed.reencrypted > 0 {
        parts.push(format!(
            "{} under an older key to re-encrypt",
            plural(sealed.reencrypted, "message")
        ));
    }
    if parts.is_empty() {
        return format!("nothing to encrypt, all under key \"{key}\"");
    }
    parts.join(", ")
}

/// The raw target as if it held only session `id`: what a whole-store rekey sees of it.
struct OneSession<'a> {
    raw: &'a dyn ConversationStorage,
    id: String,
}

#[async_trait]
impl Intercept for OneSession<'_> {
    fn inner(&self) -> &dyn ConversationStorage {
        self.raw
    }

    async fn list_sessions(&self) -> fusion::Result<Vec<String>> {
        Ok(vec![self.id.clone()])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use fusion::ChatMessage;
    use fusion::layers::encryption::EncryptionKeys;
    use fusion::storage::{InMemoryStorage, StorageExt};

    fn layer(id: &str, byte: u8) -> EncryptionLayer {
        EncryptionLayer::new(EncryptionKeys::new(id, &[byte; 32]).unwrap())
    }

    #[tokio::test]
    async fn counts_only_the_session_asked_about_and_writes_nothing() {
        let raw: Arc<dyn ConversationStorage> = Arc::new(InMemoryStorage::new());
        let old = layer("k1", 1);
        let keys = EncryptionKeys::new("k2", &[2; 32]).unwrap();
        let new = EncryptionLayer::new(keys.with_previous("k1", &[1; 32]).unwrap());
        let clear = [ChatMessage::user("a"), ChatMessage::user("b")];
        raw.save("mixed", &clear).await.unwrap();
        raw.clone()
            .layer(old.clone())
            .append("mixed", &[ChatMessage::user("c")])
            .await
            .unwrap();
        raw.save("other", &clear).await.unwrap();
        let before = raw.load("mixed").await.unwrap();

        let sealed = would_seal(&new, raw.as_ref(), "mixed", &Outcome::Extended(4))
            .await
            .unwrap();
        assert_eq!((sealed.encrypted, sealed.reencrypted), (2, 1));
        assert_eq!(raw.load("mixed").await.unwrap(), before, "nothing written");
        assert_eq!(
            plan(&new, &Outcome::Extended(4), &sealed),
            "4 messages to write encrypted with key \"k2\", 2 messages held in clear text \
             to encrypt, 1 message under an older key to re-encrypt"
        );
        let copied = would_seal(&new, raw.as_ref(), "other", &Outcome::Copied(2))
            .await
            .unwrap();
        assert_eq!((copied.encrypted, copied.reencrypted), (0, 0));
        assert_eq!(
            plan(&new, &Outcome::UpToDate, &copied),
            "nothing to encrypt, all under key \"k2\""
        );
    }

    #[tokio::test]
    async fn a_message_under_a_key_not_loaded_fails_as_the_real_run_would() {
        let raw: Arc<dyn ConversationStorage> = Arc::new(InMemoryStorage::new());
        raw.clone()
            .layer(layer("gone", 9))
            .append("s", &[ChatMessage::user("x")])
            .await
            .unwrap();
        let err = would_seal(&layer("k2", 2), raw.as_ref(), "s", &Outcome::UpToDate)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
