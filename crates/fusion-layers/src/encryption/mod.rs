//! Encryption at rest for any storage: [`EncryptionLayer`] encrypts every message before
//! the backend sees it and decrypts it on the way back.
//!
//! Unlike a backend's own encryption (an encrypted disk, TLS to Redis, PostgreSQL's
//! storage encryption), this protects the messages from whoever can read the stored data
//! itself — a copied SQLite file, a Redis dump, a backup — on every backend alike,
//! user-written ones included. What it leaves visible (session ids, session metadata,
//! message count, order and roles, sizes, timestamps) and how keys are handled is in
//! `docs/security.md`.
//!
//! Each message is stored as a [`ChatMessage`] with its role in
//! clear and `content` = `fusion:enc:v1:<key id>:<base64url(nonce‖ciphertext)>`; the
//! ciphertext holds the whole message (content, tool calls, name, metadata), under
//! AES-256-GCM with a key derived for the session (HKDF-SHA256 of the master key
//! and the session id) and a fresh random nonce. A stored message not in that form is
//! clear text written before encryption was turned on and is returned as is (see
//! [`EncryptionLayer::accept_clear_text`]); [`EncryptionLayer::rekey_store`] encrypts it.
//!
//! A load of 1,024 messages or more is decrypted on one thread per core the process may use
//! (scoped threads, joined before the load returns), so a long history costs its caller
//! about half the time on two cores; a shorter one is decrypted on the caller's thread, and
//! so is the part of a long one for which the operating system refuses a thread (a process
//! at its limit of threads): such a load takes longer, and still returns.
//!
//! ```no_run
//! use std::sync::Arc;
//! use fusion_core::{ChatMessage, ConversationStorage, StorageExt};
//! use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
//! use fusion_storage_memory::InMemoryStorage;
//!
//! # async fn demo() -> fusion_core::Result<()> {
//! // FUSION_ENCRYPTION_KEY="2025-06:<base64 of 32 random bytes>,2024-01:<older key>"
//! let keys = EncryptionKeys::from_env()?.expect("FUSION_ENCRYPTION_KEY is set");
//! let layer = EncryptionLayer::new(keys);
//! let raw = Arc::new(InMemoryStorage::new());
//! let storage = raw.clone().layer(layer.clone());
//! storage.append("user-1", &[ChatMessage::user("my card is 4111 1111 1111 1111")]).await?;
//! // After a rotation: re-encrypt every message still under an older key (or in clear).
//! let done = layer.rekey_store(raw.as_ref()).await?;
//! println!("{} sessions rewritten", done.rewritten);
//! # Ok(())
//! # }
//! ```

mod envelope;
mod keys;
mod reading;
mod rekey;
mod storage;

use std::sync::Arc;

use fusion_core::{ChatMessage, ConversationStorage, Intercepted, Layer, Result, SessionId};

pub use envelope::{ENCRYPTED_PREFIX, SESSION_KEY_SALT};
pub use keys::{DEFAULT_KEY_ID, EncryptionKeys, KEY_ENV, KEY_LEN, MAX_KEY_ID_LEN};
pub use rekey::Rekeyed;

use envelope::{Codec, SessionCrypt};
use rekey::Mode;
use storage::EncryptedStorage;

/// Encrypts every message stored through it; see the [module docs](self).
///
/// Cheap to clone: clones share the keys.
#[derive(Clone)]
pub struct EncryptionLayer {
    codec: Arc<Codec>,
}

impl EncryptionLayer {
    /// A layer that writes with the current key of `keys` and reads with any of them.
    ///
    /// A message to write that is already one of its session's stored messages (it opens
    /// with these keys as that session's, role and id included) is refused with
    /// [`Error::InvalidMessage`](fusion_core::Error::InvalidMessage), nothing written:
    /// sealed again it would load back as its ciphertext. A rekey given the storage
    /// through the layer rather than the one under it hands it such messages where its
    /// read was not refused already (see [`rekey_session`](Self::rekey_session)), as do
    /// stored messages copied back into their session ([`open_stored`](Self::open_stored)
    /// opens them) and a layer stacked over another with the same key (so such a stack
    /// writes nothing). Only a text starting with [`ENCRYPTED_PREFIX`] is tried: any
    /// other write costs a prefix check per message.
    pub fn new(keys: EncryptionKeys) -> Self {
        Self {
            codec: Arc::new(Codec::new(Some(keys), true)),
        }
    }

    /// A layer with no keys, for a program that takes its key from its user and has to
    /// behave safely when none is given: messages are written as given (clear text),
    /// clear messages read as they are, and an encrypted message is refused with an
    /// [`Error::Config`](fusion_core::Error::Config) naming the session and the message's
    /// key id — never returned as ciphertext.
    ///
    /// A write it could not read back is refused, nothing stored: a message whose text
    /// starts with [`ENCRYPTED_PREFIX`] (it would read back as an encrypted message and
    /// make its session unreadable) with
    /// [`Error::InvalidMessage`](fusion_core::Error::InvalidMessage), and any message once
    /// [`accept_clear_text(false)`](Self::accept_clear_text) is set with
    /// [`Error::Config`](fusion_core::Error::Config).
    ///
    /// Wrapping every storage in a layer, with keys or without, puts that refusal on every
    /// read path at once (the `fusion` command does this). A rekey needs keys and refuses.
    pub fn without_keys() -> Self {
        Self {
            codec: Arc::new(Codec::new(None, true)),
        }
    }

    /// Whether a stored message in clear text is returned as is (`true`, the default:
    /// sessions written before encryption stay readable) or refused with
    /// [`Error::Corrupt`](fusion_core::Error::Corrupt) (`false`: once a store is
    /// encrypted, a clear message can only be one written around the layer).
    pub fn accept_clear_text(self, accept: bool) -> Self {
        Self {
            codec: Arc::new(Codec {
                accept_clear_text: accept,
                ..Arc::unwrap_or_clone(self.codec)
            }),
        }
    }

    /// The keys this layer uses; `None` for a layer [`without_keys`](Self::without_keys).
    pub fn keys(&self) -> Option<&EncryptionKeys> {
        self.codec.keys.as_ref()
    }

    /// Messages of `session_id` in the form a backend under this layer stores them, as a
    /// load through the layer returns them: encrypted ones decrypted, clear ones as they
    /// are. For stored messages that reach a program other than through a storage, such as
    /// a session file copied out of an encrypted store and imported: written through the
    /// layer as they are, they would be sealed again, ciphertext for text, and load back as
    /// that ciphertext.
    ///
    /// Fails as a load would: a layer without keys or a key id not loaded
    /// ([`Error::Config`](fusion_core::Error::Config)), a message that does not open as one
    /// of `session_id`'s ([`Error::Corrupt`](fusion_core::Error::Corrupt)); `backend` names
    /// where the messages came from in those errors.
    ///
    /// Cost: as a load's decryption, O(total size of `stored`).
    pub fn open_stored(
        &self,
        backend: &'static str,
        session_id: &str,
        stored: Vec<ChatMessage>,
    ) -> Result<Vec<ChatMessage>> {
        SessionId::validate(session_id)?;
        SessionCrypt::new(&self.codec, backend, session_id).open_all(stored)
    }

    /// Re-encrypts, with the current key, every message of `session_id` that is under
    /// another key or in clear text, and returns what it did.
    ///
    /// `storage` is the raw storage *under* the layer, so that messages already under the
    /// current key are left as they are. Given the storage *through* a layer holding one of
    /// these keys (same id, same bytes), which would hand it every message decrypted, it is
    /// refused at its read with [`Error::Config`](fusion_core::Error::Config), nothing
    /// written. That takes the layer's read to run while the rekey polls its own, as with
    /// every bundled layer: the rekey marks its read on the thread that polls it, for the
    /// length of each poll, and that mark is all there is to go by (messages read
    /// decrypted look like the clear text of a store written before encryption, and the
    /// storage trait names no layers). So a
    /// user-written layer in between that runs the read on another task or thread (it
    /// spawns it), or shares one read between callers (the mark is then the first caller's),
    /// hides it, and then only a layer holding the current key refuses the write (see
    /// [`new`](Self::new)); one holding only older keys seals every message a second time.
    /// The other way round, any read through such a layer that the storage given here
    /// polls inside its own read is refused too, whoever it is for.
    ///
    /// The session is replaced only if it did not change since it was read (its generation
    /// and length); a session that keeps changing is read again a few times, then the
    /// [`Error::Conflict`](fusion_core::Error::Conflict) is returned. A session with nothing to re-encrypt is not written.
    ///
    /// Cost: O(length of the session), one read and at most one write.
    pub async fn rekey_session(
        &self,
        storage: &dyn ConversationStorage,
        session_id: &str,
    ) -> Result<Rekeyed> {
        rekey::rekey_session(&self.codec, storage, session_id, Mode::Write).await
    }

    /// [`rekey_session`](Self::rekey_session) of every session of the raw `storage`, one
    /// after the other. Run on a store written in clear text, it encrypts the store.
    ///
    /// Stops at the first session that fails (a message under a key not loaded, a
    /// session that kept changing); running it again skips what is already done.
    pub async fn rekey_store(&self, storage: &dyn ConversationStorage) -> Result<Rekeyed> {
        rekey::rekey_store(&self.codec, storage, Mode::Write).await
    }

    /// What [`rekey_store`](Self::rekey_store) would do, writing nothing: the same counts
    /// (`rewritten` = sessions it would rewrite), after decrypting every message it would
    /// re-encrypt, so a key that is not loaded, an altered message or the storage through
    /// the layer in place of the one under it fails here as it would there. One exception:
    /// where a layer in between hides the read from that refusal (see
    /// [`rekey_session`](Self::rekey_session)), a real run meets at most the refusal of its
    /// write (by a layer holding the current key), which a dry run does not make: the dry
    /// run passes, counting every message as clear text to encrypt.
    pub async fn rekey_store_dry_run(&self, storage: &dyn ConversationStorage) -> Result<Rekeyed> {
        rekey::rekey_store(&self.codec, storage, Mode::DryRun).await
    }
}

impl Layer for EncryptionLayer {
    fn layer(&self, inner: Arc<dyn ConversationStorage>) -> Arc<dyn ConversationStorage> {
        Arc::new(Intercepted(EncryptedStorage {
            inner,
            codec: self.codec.clone(),
        }))
    }
}

/// Key ids only, as [`EncryptionKeys`] shows them.
impl std::fmt::Debug for EncryptionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionLayer")
            .field("keys", &self.codec.keys)
            .field("accept_clear_text", &self.codec.accept_clear_text)
            .finish()
    }
}
