//! The refusal of a message to write that is already one of its session's stored
//! messages ([`SessionCrypt::seal_all`]): sealed again it would load back as its
//! ciphertext.

use fusion_core::{ChatMessage, Error, Result};

use super::{SessionCrypt, Stored};

impl SessionCrypt<'_> {
    /// Fails on the first of `messages` that decrypts as a stored message of this session.
    pub(super) fn refuse_own_stored_form(&mut self, messages: &[ChatMessage]) -> Result<()> {
        for (index, message) in messages.iter().enumerate() {
            let Stored::V1 { key_id, payload } = Stored::of(message) else {
                continue;
            };
            // Authentic is enough, and its plaintext stays in the wiped buffer: no
            // message is parsed out of it only to be dropped unwiped.
            if self.decrypt(index, message, key_id, payload).is_ok() {
                return Err(Error::InvalidMessage {
                    backend: self.backend,
                    session_id: self.session_id.to_string(),
                    index,
                    detail: format!(
                        "it is already encrypted: it is a stored message of this session (key \
                         \"{key_id}\"), and sealed again it would load back as its ciphertext; \
                         write stored messages to the storage under the encryption layer (a \
                         rekey takes that storage), or open them first \
                         (EncryptionLayer::open_stored); or this encryption layer is stacked \
                         over another with the same key, which seals every message once \
                         already: wrap the storage in one of them"
                    ),
                });
            }
        }
        Ok(())
    }
}
