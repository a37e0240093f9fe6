//! The storage a command works on, opened the one way every command shares: wrapped in the
//! encryption layer, with the user's key or without one.
//!
//! With a key (`--encryption-key-file FILE`, else `FUSION_ENCRYPTION_KEY`), every message
//! written is encrypted and every encrypted message read is decrypted. Without one the
//! layer still wraps the storage: clear text passes both ways, and reading an encrypted
//! session fails with an error naming the session, its key id and how to give the key. So
//! no command can show ciphertext as a message, or send it to the model, whatever path it
//! reads by.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use fusion::layers::encryption::{EncryptionKeys, EncryptionLayer, KEY_ENV};
use fusion::storage::{ConversationStorage, StorageExt, StorageType};

/// A storage as the command line names it, and the encryption it is read and written
/// through.
pub struct Store {
    kind: StorageType,
    encryption: EncryptionLayer,
}

impl Store {
    /// `kind` read and written through `encryption`.
    pub fn new(kind: StorageType, encryption: EncryptionLayer) -> Self {
        Self { kind, encryption }
    }

    /// The storage's URL form, as the user gave it (any password hidden when shown).
    pub fn kind(&self) -> &StorageType {
        &self.kind
    }

    /// The encryption layer every opened storage is wrapped in.
    pub fn encryption(&self) -> &EncryptionLayer {
        &self.encryption
    }

    /// Whether messages written through this store are encrypted (a key was given).
    pub fn encrypts(&self) -> bool {
        self.encryption.keys().is_some()
    }

    /// Opens the storage, wrapped in the encryption layer.
    pub async fn open(&self) -> Result<Arc<dyn ConversationStorage>> {
        Ok(self.open_raw().await?.layer(self.encryption.clone()))
    }

    /// Opens the storage without the layer: for a rekey, which has to see the stored form.
    pub async fn open_raw(&self) -> Result<Arc<dyn ConversationStorage>> {
        self.kind
            .open()
            .await
            .with_context(|| format!("cannot open storage {}", self.kind))
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

/// The encryption layer the command line asks for: the keys of `key_file` if given (it
/// wins over the environment, being typed for this run), else of `FUSION_ENCRYPTION_KEY`,
/// else a layer without keys.
///
/// Errors name the file or the variable and an entry's position, never key material.
pub fn encryption(key_file: Option<&Path>) -> Result<EncryptionLayer> {
    let keys = match key_file {
        Some(file) => Some(EncryptionKeys::from_file(file).context("bad --encryption-key-file")?),
        None => EncryptionKeys::from_env().with_context(|| format!("bad {KEY_ENV}"))?,
    };
    Ok(keys.map_or_else(EncryptionLayer::without_keys, EncryptionLayer::new))
}

/// Fails, saying how to give a key, when `encryption` has none: for what cannot work
/// without one (`what` names it).
pub fn require_key(encryption: &EncryptionLayer, what: &str) -> Result<()> {
    if encryption.keys().is_none() {
        bail!("{what} needs an encryption key: pass --encryption-key-file FILE or set {KEY_ENV}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_read_and_its_errors_never_echo_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.key");
        std::fs::write(&good, "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
        let layer = encryption(Some(&good)).unwrap();
        assert_eq!(layer.keys().unwrap().current_id(), "k1");
        require_key(&layer, "a rekey").unwrap();

        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "k1:SECRETbutshort\n").unwrap();
        let err = format!("{:#}", encryption(Some(&bad)).unwrap_err());
        assert!(err.contains("--encryption-key-file"), "{err}");
        assert!(!err.contains("SECRETbutshort"), "{err}");
    }

    #[test]
    fn a_layer_without_keys_says_how_to_give_one() {
        let err = require_key(&EncryptionLayer::without_keys(), "a rekey").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("a rekey needs an encryption key"),
            "{text}"
        );
        assert!(text.contains("--encryption-key-file FILE"), "{text}");
        assert!(text.contains(KEY_ENV), "{text}");
    }
}
