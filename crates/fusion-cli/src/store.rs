//! The storage a command works on, opened the one way every command shares: wrapped in the
//! encryption layer, with the user's key or without one, and in the retry layer.
//!
//! With a key (`--encryption-key-file FILE`, else `FUSION_ENCRYPTION_KEY`), every message
//! written is encrypted and every encrypted message read is decrypted. Without one the
//! layer still wraps the storage: clear text passes both ways, and reading an encrypted
//! session fails with an error naming the session, its key id and how to give the key. So
//! no command can show ciphertext as a message, or send it to the model, whatever path it
//! reads by.
//!
//! Calls that fail with a retryable error (a dropped connection, a failover, a timeout)
//! are tried again with backoff ([`RetryLayer`]) unless `--no-retry` (or
//! `FUSION_NO_RETRY`) turns that off. The retry layer sits outside the encryption layer,
//! so a retry also covers a failure to encrypt (the random source); it gives a message
//! without an id its id before the first attempt, each attempt seals afresh, and the id,
//! kept in clear, lets the backend store a message whose reply was lost only once.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use fusion::layers::RetryLayer;
use fusion::layers::encryption::{EncryptionKeys, EncryptionLayer, KEY_ENV};
use fusion::storage::{
    ConversationStorage, InMemoryStorage, StorageExt, StorageLocation, StorageType,
};

/// The layers every storage a command opens is wrapped in, as the command line asks for
/// them. Cheap to clone.
#[derive(Clone)]
pub struct Layers {
    encryption: EncryptionLayer,
    /// `None` with `--no-retry`.
    retry: Option<RetryLayer>,
}

impl Layers {
    /// `encryption`, and the retry layer's defaults (4 attempts, about 25, 50 and 100 ms
    /// apart) when `retry` is true.
    pub fn new(encryption: EncryptionLayer, retry: bool) -> Self {
        Self {
            encryption,
            retry: retry.then(RetryLayer::new),
        }
    }

    /// The layers the command line asks for: the keys of [`encryption`], and retries
    /// unless `no_retry`.
    pub fn from_args(key_file: Option<&Path>, no_retry: bool) -> Result<Self> {
        Ok(Self::new(encryption(key_file)?, !no_retry))
    }

    /// The encryption layer every opened storage is wrapped in.
    pub fn encryption(&self) -> &EncryptionLayer {
        &self.encryption
    }

    /// `storage` in the retry layer, if retries are on.
    fn retried(&self, storage: Arc<dyn ConversationStorage>) -> Arc<dyn ConversationStorage> {
        match &self.retry {
            Some(retry) => storage.layer(retry.clone()),
            None => storage,
        }
    }

    /// `raw` as commands use it: encrypted, then retried around that (see the module docs
    /// for why in this order).
    fn wrap(&self, raw: Arc<dyn ConversationStorage>) -> Arc<dyn ConversationStorage> {
        self.retried(raw.layer(self.encryption.clone()))
    }

    /// `raw` seen the three ways a command that writes copies needs it: see [`Views`].
    pub fn views(&self, raw: Arc<dyn ConversationStorage>) -> Views {
        let unretried = raw.clone().layer(self.encryption.clone());
        Views {
            storage: self.retried(unretried.clone()),
            unretried,
            raw: self.retried(raw),
            retries: self.retry.is_some(),
        }
    }
}

/// A storage as the command line names it, and the layers it is read and written through.
pub struct Store {
    kind: StorageType,
    layers: Layers,
}

impl Store {
    /// `kind` read and written through `layers`.
    pub fn new(kind: StorageType, layers: Layers) -> Self {
        Self { kind, layers }
    }

    /// The storage's URL form, as the user gave it (any password hidden when shown).
    pub fn kind(&self) -> &StorageType {
        &self.kind
    }

    /// The encryption layer every opened storage is wrapped in.
    pub fn encryption(&self) -> &EncryptionLayer {
        self.layers.encryption()
    }

    /// Whether messages written through this store are encrypted (a key was given).
    pub fn encrypts(&self) -> bool {
        self.encryption().keys().is_some()
    }

    /// Opens the storage, wrapped in the encryption layer and the retry layer.
    pub async fn open(&self) -> Result<Arc<dyn ConversationStorage>> {
        Ok(self.layers.wrap(self.connect(false).await?))
    }

    /// [`open`](Self::open) for a command that reads sessions or changes ones that exist:
    /// a storage that does not exist (a SQLite database file or a PostgreSQL schema: a
    /// typo, or a store not written yet) is an empty storage, not one to create, as a
    /// missing file-system directory already is ([`StorageType::open_existing`]). So
    /// `sessions list --storage sqlite://typo.db` says there are no sessions and leaves no
    /// `typo.db` behind, and `?schema=typo` no schema `typo`.
    pub async fn open_existing(&self) -> Result<Arc<dyn ConversationStorage>> {
        Ok(self.layers.wrap(self.connect(true).await?))
    }

    /// [`open`](Self::open) for a storage that must exist already: `None`, having created
    /// nothing, where [`open_existing`](Self::open_existing) would give an empty storage.
    pub async fn open_if_exists(&self) -> Result<Option<Arc<dyn ConversationStorage>>> {
        Ok(self
            .open_raw_if_exists()
            .await?
            .map(|raw| self.layers.wrap(raw)))
    }

    /// Whether this storage keeps nothing after the process ([`ephemeral`]).
    pub fn ephemeral(&self) -> bool {
        ephemeral(&self.kind)
    }

    /// Opens the storage without the encryption layer, still retried: for a rekey, which
    /// has to see the stored form (and finds nothing to do in a SQLite file or PostgreSQL
    /// schema that does not exist, as [`open_existing`](Self::open_existing)).
    pub async fn open_raw(&self) -> Result<Arc<dyn ConversationStorage>> {
        Ok(self.layers.retried(self.connect(true).await?))
    }

    /// One connection seen the three ways a migrate needs of its target: see [`Views`].
    /// For a dry run, which writes nothing, a SQLite file or PostgreSQL schema that does not
    /// exist is an empty target rather than one to create.
    pub async fn open_views(&self, dry_run: bool) -> Result<Views> {
        Ok(self.layers.views(self.connect(dry_run).await?))
    }

    /// The storage itself, no layer; with `existing`, a storage that does not exist is an
    /// empty storage in memory instead of one to create.
    async fn connect(&self, existing: bool) -> Result<Arc<dyn ConversationStorage>> {
        if existing {
            let found = self.open_raw_if_exists().await?;
            return Ok(found.unwrap_or_else(|| Arc::new(InMemoryStorage::new())));
        }
        self.kind
            .open()
            .await
            .with_context(|| format!("cannot open storage {}", self.kind))
    }

    /// The storage itself, no layer, if it exists ([`StorageType::open_existing`]): for a
    /// call that reads no message, so needs no key, and must create nothing.
    pub async fn open_raw_if_exists(&self) -> Result<Option<Arc<dyn ConversationStorage>>> {
        self.kind
            .open_existing()
            .await
            .with_context(|| format!("cannot open storage {}", self.kind))
    }
}

/// One connection to a storage, seen three ways.
pub struct Views {
    /// As [`Store::open`] gives it: encrypted, retried.
    pub storage: Arc<dyn ConversationStorage>,
    /// Encrypted, not retried: for writes that must store messages exactly as given (the
    /// retry layer gives each message without an id one), by a caller that handles a
    /// lost reply itself, as migrate does by reading the target again and deciding anew.
    pub unretried: Arc<dyn ConversationStorage>,
    /// As [`Store::open_raw`] gives it: retried, not encrypted.
    pub raw: Arc<dyn ConversationStorage>,
    retries: bool,
}

impl Views {
    /// Whether retries are on (no `--no-retry`): a caller retrying an `unretried` write
    /// itself should do so only then.
    pub fn retries(&self) -> bool {
        self.retries
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

/// The encryption layer the command line asks for: the keys of `key_file` if given (it
/// wins over the environment, being typed for this run), else of `FUSION_ENCRYPTION_KEY`,
/// else (the variable unset) a layer without keys. The variable set but blank is an error,
/// not a layer without keys: a secret injected as an empty string must not make a run
/// that writes clear text.
///
/// Errors name the file or the variable and an entry's position, never key material.
fn encryption(key_file: Option<&Path>) -> Result<EncryptionLayer> {
    let keys = match key_file {
        Some(file) => Some(EncryptionKeys::from_file(file).context("bad --encryption-key-file")?),
        None => EncryptionKeys::from_env().with_context(|| format!("bad {KEY_ENV}"))?,
    };
    Ok(keys.map_or_else(EncryptionLayer::without_keys, EncryptionLayer::new))
}

/// Whether `kind` keeps nothing after the process: `memory://`, or an in-memory SQLite
/// database (which has no location).
pub fn ephemeral(kind: &StorageType) -> bool {
    match kind.location() {
        Ok(Some(StorageLocation::ProcessMemory)) => true,
        Ok(None) => matches!(kind, StorageType::Sqlite(_)),
        _ => false,
    }
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
    use fusion::ChatMessage;
    use fusion::storage::{InMemoryStorage, Intercepted};
    use fusion_core::testkit::faults::LoseReplies;

    use super::*;

    fn keyed() -> EncryptionLayer {
        EncryptionLayer::new(EncryptionKeys::new("k1", &[7; 32]).unwrap())
    }

    /// The layers over a memory store whose next write applies and then loses its reply.
    fn over_lossy(
        layers: &Layers,
    ) -> (
        Arc<Intercepted<LoseReplies<InMemoryStorage>>>,
        Arc<dyn ConversationStorage>,
    ) {
        let raw = Arc::new(Intercepted(LoseReplies::new(InMemoryStorage::new())));
        raw.0.arm();
        let opened = layers.wrap(raw.clone());
        (raw, opened)
    }

    #[tokio::test]
    async fn a_write_whose_reply_was_lost_is_retried_and_stored_once_encrypted() {
        let (raw, store) = over_lossy(&Layers::new(keyed(), true));
        // No id: the retry layer gives it one before the encryption layer seals it.
        store
            .append("s", &[ChatMessage::user("hello")])
            .await
            .unwrap();
        assert_eq!(
            raw.0.lost(),
            1,
            "the first attempt applied and lost its reply"
        );
        let stored = raw.load("s").await.unwrap();
        assert_eq!(stored.len(), 1, "stored once");
        assert!(stored[0].id.is_some() && !stored[0].content.contains("hello"));
        let read = store.load("s").await.unwrap();
        assert_eq!(
            read[0].content, "hello",
            "it still opens: sealed with its id"
        );
    }

    #[tokio::test]
    async fn without_retry_the_lost_reply_is_the_caller_s_error() {
        let (raw, store) = over_lossy(&Layers::new(keyed(), false));
        let err = store
            .append("s", &[ChatMessage::user("hello")])
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(raw.load("s").await.unwrap().len(), 1, "yet it applied");
    }

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
