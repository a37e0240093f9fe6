//! The encrypting storage: the calls that carry messages encrypt on the way in and
//! decrypt on the way out; every other call (truncate, delete, listing, metadata, info)
//! goes to the inner storage unchanged, as [`Intercept`] forwards it by default.
//!
//! Each call checks its input the way a backend would (session id, then
//! [`check_storable`]) *before* encrypting: once a message is encrypted its metadata is
//! inside the ciphertext, where the inner backend's own check cannot see it.

use std::sync::Arc;

use async_trait::async_trait;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, Intercept, Result, Revision,
    SessionId, SessionMeta, SessionTimes, check_creation, check_storable,
};

use super::envelope::{Codec, ENCRYPTED_PREFIX, SessionCrypt, Stored};
use super::keys::KEY_ENV;
use super::reading::refuse_rekey_through;

/// A storage whose messages are stored encrypted in `inner`.
pub(crate) struct EncryptedStorage {
    pub(crate) inner: Arc<dyn ConversationStorage>,
    pub(crate) codec: Arc<Codec>,
}

impl EncryptedStorage {
    fn crypt<'a>(&'a self, session_id: &'a str) -> SessionCrypt<'a> {
        SessionCrypt::new(&self.codec, self.inner.backend_name(), session_id)
    }

    /// `messages` encrypted for `session_id`, after the checks the backend would run.
    fn seal_checked(&self, session_id: &str, messages: &[ChatMessage]) -> Result<Vec<ChatMessage>> {
        SessionId::validate(session_id)?;
        check_storable(self.inner.backend_name(), session_id, messages)?;
        self.seal(session_id, messages)
    }

    /// `messages` encrypted for `session_id`; for a layer without keys, `messages` as they
    /// are if it could read them back ([`check_readable_in_clear`]).
    fn seal(&self, session_id: &str, messages: &[ChatMessage]) -> Result<Vec<ChatMessage>> {
        if self.codec.keys.is_none() {
            let place = (self.inner.backend_name(), session_id);
            check_readable_in_clear(&self.codec, place, messages)?;
        }
        self.crypt(session_id).seal_all(messages)
    }
}

/// Refuses `messages`, which a layer without keys stores in clear text, if that layer
/// could not read one of them back: every message when it refuses clear text, and one
/// whose text starts like an encrypted message (read back, it would be taken for one and
/// make its whole session unreadable, refused as "encrypted" with no key to give).
fn check_readable_in_clear(
    codec: &Codec,
    (backend, session_id): (&'static str, &str),
    messages: &[ChatMessage],
) -> Result<()> {
    if !codec.accept_clear_text && !messages.is_empty() {
        return Err(Error::Config(format!(
            "{backend}: nothing was written to session \"{session_id}\": this encryption layer \
             has no key to encrypt messages with and refuses clear text, so it could never read \
             them back; load a key ({KEY_ENV} or a key file), or accept clear text"
        )));
    }
    let looks_encrypted = messages
        .iter()
        .position(|m| !matches!(Stored::of(m), Stored::Clear));
    match looks_encrypted {
        None => Ok(()),
        Some(index) => Err(Error::InvalidMessage {
            backend,
            session_id: session_id.to_string(),
            index,
            detail: format!(
                "its text starts with \"{ENCRYPTED_PREFIX}\", the mark of an encrypted message, \
                 and this encryption layer has no key to encrypt it with: stored in clear text it \
                 would read back as an encrypted message and make the session unreadable; load \
                 an encryption key ({KEY_ENV} or a key file), or change the text"
            ),
        }),
    }
}

#[async_trait]
impl Intercept for EncryptedStorage {
    fn inner(&self) -> &dyn ConversationStorage {
        self.inner.as_ref()
    }

    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        let sealed = self.seal_checked(session_id, history)?;
        self.inner.save(session_id, &sealed).await
    }

    /// Refused, nothing read, inside a rekey's read as [`load_revision`](Self::load_revision)
    /// is: a layer between the rekey and this storage may read with `load` (the trait's
    /// default `load_revision` does).
    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        refuse_rekey_through(&self.codec, self.inner.backend_name(), session_id)?;
        let stored = self.inner.load(session_id).await?;
        self.crypt(session_id).open_all(stored)
    }

    /// O(`messages.len()`): one key derivation, then one encryption per new message.
    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        let sealed = self.seal_checked(session_id, messages)?;
        self.inner.append(session_id, &sealed).await
    }

    /// Refused, nothing read, as a rekey's read when the rekey holds one of this layer's
    /// keys: it was given this storage rather than the one under it (`reading`).
    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        refuse_rekey_through(&self.codec, self.inner.backend_name(), session_id)?;
        let (stored, revision) = self.inner.load_revision(session_id).await?;
        Ok((self.crypt(session_id).open_all(stored)?, revision))
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        let sealed = self.seal_checked(session_id, change.messages())?;
        let change = match change {
            Change::Append(_) => Change::Append(&sealed),
            Change::Replace(_) => Change::Replace(&sealed),
            Change::Rewrite(_) => Change::Rewrite(&sealed),
            truncate @ Change::Truncate(_) => truncate,
        };
        self.inner.write_if(session_id, expected, change).await
    }

    async fn create_session(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
    ) -> Result<u64> {
        check_creation(self.inner.backend_name(), session_id, meta, messages)?;
        let sealed = self.seal(session_id, messages)?;
        self.inner.create_session(session_id, meta, &sealed).await
    }

    async fn create_session_with_times(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: SessionTimes,
    ) -> Result<u64> {
        check_creation(self.inner.backend_name(), session_id, meta, messages)?;
        times.validate()?;
        let sealed = self.seal(session_id, messages)?;
        self.inner
            .create_session_with_times(session_id, meta, &sealed, times)
            .await
    }
}
