//! The stored form of an encrypted message and the cryptography behind it: one
//! [`ChatMessage`] in, one [`ChatMessage`] out, so every backend stores it unchanged.
//!
//! Stored form: `id` (if the message has one) and `role` in clear, `content` =
//! `fusion:enc:v1:<key id>:<base64url(nonce || ciphertext || tag)>`, no other field. The
//! plaintext is the whole message's JSON, so tool calls, names and metadata are inside.
//! The id stays in clear because the backend needs it to store a retried append once
//! ([`fusion_core::DEDUP_WINDOW`]).
//!
//! - Cipher: AES-256-GCM with a fresh random 96-bit nonce per message (safe with random
//!   nonces up to 2^32 messages per key, and each session has a key of its own).
//! - Key: HKDF-SHA256 of the master key, salt [`SESSION_KEY_SALT`], info = key id and
//!   session id, so each session has a key of its own.
//! - Associated data: the format version, key id, session id, role and (when there is
//!   one) message id, so a message copied into another session, relabelled with another
//!   key id or given another role or id fails to decrypt. A message without an id has
//!   the associated data of messages written before ids existed.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use base64_simd::URL_SAFE_NO_PAD;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fusion_core::{ChatMessage, Error, MessageId, Result, Role};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use super::keys::{EncryptionKeys, KEY_LEN, is_key_id};

/// What every encrypted message's content starts with, whatever the format version.
pub const ENCRYPTED_PREFIX: &str = "fusion:enc:";

/// The prefix of format version 1, the one this release writes.
const V1_PREFIX: &str = "fusion:enc:v1:";

/// The HKDF salt of per-session keys: a fixed label, so a change of derivation gets a
/// new label rather than silently different keys.
pub const SESSION_KEY_SALT: &[u8] = b"fusion-session-key/v1";

/// The first field of the associated data: the format version it belongs to.
const AAD_LABEL: &[u8] = b"fusion:enc:v1";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The settings every encrypting storage of one layer shares.
#[derive(Clone)]
pub(crate) struct Codec {
    /// `None`: a layer without keys, which stores what it is given and refuses to read an
    /// encrypted message (see `EncryptionLayer::without_keys`).
    pub(crate) keys: Option<EncryptionKeys>,
    /// Whether a stored message in clear text (written before encryption) is returned as
    /// is, or refused.
    pub(crate) accept_clear_text: bool,
    /// The per-session ciphers derived lately.
    pub(crate) ciphers: CipherCache,
}

impl Codec {
    pub(crate) fn new(keys: Option<EncryptionKeys>, accept_clear_text: bool) -> Self {
        Self {
            keys,
            accept_clear_text,
            ciphers: CipherCache::default(),
        }
    }
}

/// Per-session ciphers by key id and session id, so an agent's turns in one session
/// derive its key once rather than on every append (HKDF costs about as much as sealing
/// a turn). At most [`CipherCache::CAPACITY`] entries, emptied when full. The expanded
/// AES key schedules it holds stay in memory as long as the layer, as the master keys
/// they come from do.
#[derive(Default)]
pub(crate) struct CipherCache(Mutex<HashMap<CipherKey, Arc<Aes256Gcm>>>);

/// A cached cipher's key id and session id.
type CipherKey = (Box<str>, Box<str>);

impl CipherCache {
    const CAPACITY: usize = 4096;

    /// The cipher of `session_id` under `key_id`, derived from `master` if not cached.
    fn get(&self, master: &[u8; KEY_LEN], key_id: &str, session_id: &str) -> Arc<Aes256Gcm> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The map's keys are owned, so a lookup builds one: two short allocations, far
        // cheaper than the derivation they save.
        let key = (Box::from(key_id), Box::from(session_id));
        if let Some(cipher) = map.get(&key) {
            return Arc::clone(cipher);
        }
        if map.len() >= Self::CAPACITY {
            map.clear();
        }
        let cipher = Arc::new(derive_cipher(master, key_id, session_id));
        map.insert(key, Arc::clone(&cipher));
        cipher
    }
}

/// A clone starts empty: ciphers are derived again on demand.
impl Clone for CipherCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// How a stored message reads.
pub(crate) enum Stored<'a> {
    /// Not encrypted: written before the layer was added.
    Clear,
    /// Encrypted under format v1 with the key `key_id`.
    V1 { key_id: &'a str, payload: &'a str },
    /// Starts like an encrypted message but is not one this release can read.
    Unreadable(&'static str),
}

impl Stored<'_> {
    /// How `message`, as a backend returned it, reads.
    pub(crate) fn of(message: &ChatMessage) -> Stored<'_> {
        let Some(rest) = message.content.strip_prefix(ENCRYPTED_PREFIX) else {
            return Stored::Clear;
        };
        let Some(rest) = rest.strip_prefix("v1:") else {
            return Stored::Unreadable("a format version this release does not know");
        };
        match rest.split_once(':') {
            Some((key_id, payload)) if is_key_id(key_id) => Stored::V1 { key_id, payload },
            _ => Stored::Unreadable("no valid key id after the format version"),
        }
    }
}

/// A buffer for plaintext that zeroes what it leaves behind as it grows: a `Vec` that
/// outgrows its allocation frees the old one as it is, which would leave a copy of the
/// text written so far in freed memory.
struct ZeroizingWriter(Zeroizing<Vec<u8>>);

impl ZeroizingWriter {
    fn push(&mut self, bytes: &[u8]) {
        if self.0.capacity() - self.0.len() < bytes.len() {
            self.grow(bytes.len());
        }
        self.0.extend_from_slice(bytes);
    }

    #[cold]
    fn grow(&mut self, more: usize) {
        let room = (self.0.len() + more).max(2 * self.0.capacity());
        let mut grown = Zeroizing::new(Vec::with_capacity(room));
        grown.extend_from_slice(&self.0);
        // The old buffer is zeroed as it drops.
        self.0 = grown;
    }
}

/// `write_all` as well as `write`: serde_json writes every token with `write_all`, whose
/// default loops over `write`.
impl std::io::Write for ZeroizingWriter {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.push(bytes);
        Ok(bytes.len())
    }

    #[inline]
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.push(bytes);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The ciphers of one session, derived from the master keys when first needed: every
/// call that reads or writes messages makes one, so a call derives each key it uses once.
pub(crate) struct SessionCrypt<'a> {
    codec: &'a Codec,
    backend: &'static str,
    session_id: &'a str,
    ciphers: Vec<(String, Arc<Aes256Gcm>)>,
}

impl<'a> SessionCrypt<'a> {
    /// The ciphers of `session_id` (already validated) on `backend`.
    pub(crate) fn new(codec: &'a Codec, backend: &'static str, session_id: &'a str) -> Self {
        Self {
            codec,
            backend,
            session_id,
            ciphers: Vec::new(),
        }
    }

    /// `message` (at `index` in the write) encrypted with the current key, in its stored
    /// form; as it is when the layer has no keys.
    pub(crate) fn seal(&mut self, index: usize, message: &ChatMessage) -> Result<ChatMessage> {
        self.reseal(index, message, None)
    }

    /// [`seal`](Self::seal) of `message` under its own id, else `stored_id`, the id of the
    /// envelope it was opened from (so re-encrypting a message given without an id keeps
    /// the id the backend holds it by, which a retried append of it looks for), else a
    /// fresh one.
    pub(crate) fn reseal(
        &mut self,
        index: usize,
        message: &ChatMessage,
        stored_id: Option<MessageId>,
    ) -> Result<ChatMessage> {
        let codec = self.codec;
        let Some(keys) = &codec.keys else {
            return Ok(message.clone());
        };
        let (key_id, _) = keys.current();
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| Error::Backend {
            backend: self.backend,
            message: format!(
                "encrypting a message of session \"{}\": the operating system's random source \
                 failed: {e}",
                self.session_id
            ),
            retryable: true,
            source: None,
        })?;
        // The envelope always carries an id, bound into the associated data: a message
        // given without one gets a fresh id here. Otherwise a layer below this one that
        // gives id-less messages ids (a `RetryLayer`, so that its attempts dedupe) would
        // store an id the seal did not bind, and the message would never decrypt. The
        // plaintext is the message as given, so it loads back without an id.
        let id = (message.id.clone().or(stored_id)).unwrap_or_else(MessageId::new);
        let aad = associated_data(key_id, self.session_id, message.role, Some(&id));
        // Nonce, plaintext and tag in one buffer, the plaintext encrypted where it lies:
        // no copy of it, and one buffer to zero (it holds the plaintext until then).
        let mut writer = ZeroizingWriter(Zeroizing::new(Vec::with_capacity(
            NONCE_LEN + message.content.len() + 128 + TAG_LEN,
        )));
        writer.0.extend_from_slice(&nonce);
        serde_json::to_writer(&mut writer, message)?;
        let mut sealed = writer.0;
        let tag = self
            .cipher(key_id)?
            .encrypt_inout_detached(&Nonce::from(nonce), &aad, (&mut sealed[NONCE_LEN..]).into())
            .map_err(|_| {
                // Only a message beyond 256 GiB gets here.
                Error::InvalidMessage {
                    backend: self.backend,
                    session_id: self.session_id.to_string(),
                    index,
                    detail: "too large to encrypt".into(),
                }
            })?;
        sealed.extend_from_slice(&tag);
        let mut content = String::with_capacity(
            V1_PREFIX.len() + key_id.len() + 1 + URL_SAFE_NO_PAD.encoded_length(sealed.len()),
        );
        content.push_str(V1_PREFIX);
        content.push_str(key_id);
        content.push(':');
        URL_SAFE_NO_PAD.encode_append(&*sealed, &mut content);
        let mut stored = ChatMessage::new(message.role, content);
        stored.id = Some(id);
        Ok(stored)
    }

    /// Every message of `messages` sealed with the current key.
    ///
    /// A message that is already one of this session's stored messages (it opens with the
    /// loaded keys) is refused, nothing sealed: a rekey handed the storage through the
    /// layer rather than the one under it, or stored messages copied back into their
    /// session, would otherwise be sealed a second time and load back as ciphertext in
    /// place of their text. Only a text starting with [`ENCRYPTED_PREFIX`] is tried, so
    /// an ordinary write costs a prefix check per message. A layer stacked over one with
    /// the same key hands this one messages it cannot tell from stored ones, so such a
    /// stack writes nothing; the refusal names it as a cause.
    pub(crate) fn seal_all(&mut self, messages: &[ChatMessage]) -> Result<Vec<ChatMessage>> {
        if self.codec.keys.is_some() {
            self.refuse_own_stored_form(messages)?;
        }
        messages
            .iter()
            .enumerate()
            .map(|(index, m)| self.seal(index, m))
            .collect()
    }

    /// The message `stored` (at `index` in its session) decrypted, or as is if it is clear
    /// text and the layer accepts clear text. An error names it counted from 1 with the
    /// index beside it (`message 2 (index 1, key "k1")`), as `Error::InvalidMessage` names
    /// a write's message: a bare index reads as a count to a person.
    pub(crate) fn open(&mut self, index: usize, stored: ChatMessage) -> Result<ChatMessage> {
        if self.codec.accept_clear_text && matches!(Stored::of(&stored), Stored::Clear) {
            return Ok(stored);
        }
        self.open_ref(index, &stored)
    }

    /// [`open`](Self::open) of a borrowed message, which allocates only what it returns
    /// (the clear text is copied).
    fn open_ref(&mut self, index: usize, stored: &ChatMessage) -> Result<ChatMessage> {
        let (key_id, payload) = match Stored::of(stored) {
            Stored::Clear if self.codec.accept_clear_text => return Ok(stored.clone()),
            Stored::Clear => {
                return Err(self.corrupt(format!(
                    "message {} (index {index}) is stored in clear text, and this \
                     encryption layer refuses clear text; run a rekey to encrypt the session",
                    index + 1
                )));
            }
            Stored::Unreadable(why) => {
                return Err(self.corrupt(format!(
                    "message {} (index {index}) looks encrypted but cannot be read: {why}",
                    index + 1
                )));
            }
            Stored::V1 { key_id, .. } if self.codec.keys.is_none() => {
                return Err(self.no_keys(index, key_id));
            }
            Stored::V1 { key_id, payload } => (key_id, payload),
        };
        let sealed = self.decrypt(index, stored, key_id, payload)?;
        let plaintext = &sealed[NONCE_LEN..sealed.len() - TAG_LEN];
        // Authentic, so the JSON is what this layer wrote; a failure here is a bug or a
        // newer writer, reported without any of the plaintext.
        let mut message: ChatMessage = serde_json::from_slice(plaintext).map_err(|_| {
            self.corrupt(format!(
                "message {} (index {index}, key \"{key_id}\") decrypts to something that is \
                 not a message",
                index + 1
            ))
        })?;
        // The id stays the plaintext's: a message sealed without one keeps none, though
        // its envelope carries the id `seal` gave it (bound in `decrypt`, so not forgeable).
        message.role = stored.role;
        Ok(message)
    }

    /// The payload of `stored` (at `index`, under `key_id`) decoded and decrypted where it
    /// lies: nonce, plaintext, tag, in a buffer wiped when dropped. Fails unless it is
    /// authentic: sealed by this layer's key `key_id` for this session, role and id.
    fn decrypt(
        &mut self,
        index: usize,
        stored: &ChatMessage,
        key_id: &str,
        payload: &str,
    ) -> Result<Zeroizing<Vec<u8>>> {
        // The key first: a message under a key not loaded is that configuration mistake
        // whatever its payload, not a damaged message under a key "loaded as" its id.
        self.cipher(key_id)?;
        let (backend, session_id) = (self.backend, self.session_id);
        let undecryptable = || {
            let detail = format!(
                "message {} (index {index}, key \"{key_id}\") does not decrypt: the key loaded as \
                 \"{key_id}\" is not the one it was written with, or the message was altered, \
                 copied from another session or given another role or id",
                index + 1
            );
            Error::corrupt(backend, session_id, detail)
        };
        // Decrypted where it was decoded: no copy, and one buffer to zero (it holds the
        // plaintext once decrypted).
        let mut sealed = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode_to_vec(payload)
                .map_err(|_| undecryptable())?,
        );
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(undecryptable());
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let (plaintext, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let nonce = Nonce::try_from(&*nonce).map_err(|_| undecryptable())?;
        let tag = Tag::try_from(&*tag).map_err(|_| undecryptable())?;
        let aad = associated_data(key_id, self.session_id, stored.role, stored.id.as_ref());
        self.cipher(key_id)?
            .decrypt_inout_detached(&nonce, &aad, (&mut *plaintext).into(), &tag)
            .map_err(|_| undecryptable())?;
        Ok(sealed)
    }

    /// The messages of `stored`, which start at `start` in their session, decrypted.
    fn open_run(&mut self, start: usize, stored: &[ChatMessage]) -> Result<Vec<ChatMessage>> {
        stored
            .iter()
            .enumerate()
            .map(|(i, m)| self.open_ref(start + i, m))
            .collect()
    }

    /// The cipher of this session under the key `key_id`, derived on first use.
    fn cipher(&mut self, key_id: &str) -> Result<&Aes256Gcm> {
        if let Some(position) = self.ciphers.iter().position(|(id, _)| id == key_id) {
            return Ok(&self.ciphers[position].1);
        }
        let master = self
            .codec
            .keys
            .as_ref()
            .and_then(|keys| keys.key(key_id))
            .ok_or_else(|| self.unknown_key(key_id))?;
        let cipher = self.codec.ciphers.get(master, key_id, self.session_id);
        self.ciphers.push((key_id.to_string(), cipher));
        Ok(&self.ciphers[self.ciphers.len() - 1].1)
    }

    fn corrupt(&self, detail: String) -> Error {
        Error::corrupt(self.backend, self.session_id, detail)
    }

    /// A key the stored data names but the layer was not given: a configuration mistake.
    fn unknown_key(&self, key_id: &str) -> Error {
        let loaded = self.codec.keys.as_ref().map(EncryptionKeys::describe_ids);
        Error::Config(format!(
            "{}: session \"{}\" holds messages encrypted with key \"{key_id}\", which is not \
             among the encryption keys loaded ({}); add it to {} or the key file",
            self.backend,
            self.session_id,
            loaded.as_deref().unwrap_or("none"),
            super::keys::KEY_ENV,
        ))
    }

    /// An encrypted message read by a layer without keys: the caller has to give the key,
    /// and says how (the `fusion` command's flag, or the variable any program reads).
    fn no_keys(&self, index: usize, key_id: &str) -> Error {
        Error::Config(format!(
            "{}: session \"{}\" is encrypted (its message {}, index {index}, is under key \
             \"{key_id}\") and no encryption key is loaded: pass --encryption-key-file FILE or \
             set {}",
            self.backend,
            self.session_id,
            index + 1,
            super::keys::KEY_ENV,
        ))
    }
}

/// The AES-256-GCM cipher of `session_id` under the master key `master` (id
/// `key_id`): HKDF-SHA256, salt [`SESSION_KEY_SALT`], info = both ids, length-prefixed.
fn derive_cipher(master: &[u8; KEY_LEN], key_id: &str, session_id: &str) -> Aes256Gcm {
    let mut info = Vec::with_capacity(8 + key_id.len() + session_id.len());
    push_field(&mut info, key_id.as_bytes());
    push_field(&mut info, session_id.as_bytes());
    let mut okm = Zeroizing::new([0u8; KEY_LEN]);
    // `extract` rather than `new`, which drops the intermediate key (the PRK) unwiped:
    // this way our copy of it is wiped. The HMAC state `hkdf` holds is wiped as it drops
    // (sha2's `zeroize` feature); the stack copies hmac and hkdf make inside their calls
    // (the padded keys, each output block) are out of reach.
    let (mut prk, hkdf) = Hkdf::<Sha256>::extract(Some(SESSION_KEY_SALT), master);
    prk.as_mut_slice().zeroize();
    hkdf.expand(&info, okm.as_mut_slice())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Aes256Gcm::new_from_slice(okm.as_slice()).expect("the key is 32 bytes")
}

/// The associated data: the format label, then key id, session id, role and message id
/// (when there is one), each length-prefixed so no two different lists make the same
/// bytes.
fn associated_data(key_id: &str, session_id: &str, role: Role, id: Option<&MessageId>) -> Vec<u8> {
    let id_len = id.map_or(0, |id| 4 + id.as_str().len());
    let mut aad =
        Vec::with_capacity(AAD_LABEL.len() + 12 + key_id.len() + session_id.len() + 9 + id_len);
    aad.extend_from_slice(AAD_LABEL);
    push_field(&mut aad, key_id.as_bytes());
    push_field(&mut aad, session_id.as_bytes());
    push_field(&mut aad, role.as_str().as_bytes());
    if let Some(id) = id {
        push_field(&mut aad, id.as_str().as_bytes());
    }
    aad
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    let len = u32::try_from(field.len()).expect("ids are far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

mod own_stored;
mod parallel;

#[cfg(test)]
mod tests;
