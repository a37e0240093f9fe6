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
    Change, ChatMessage, ConversationStorage, Expect, Intercept, Result, Revision, SessionId,
    SessionMeta, check_creation, check_storable,
};

use super::envelope::{Codec, SessionCrypt};

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
        self.crypt(session_id).seal_all(messages)
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

    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        let stored = self.inner.load(session_id).await?;
        self.crypt(session_id).open_all(stored)
    }

    /// O(`messages.len()`): one key derivation, then one encryption per new message.
    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        let sealed = self.seal_checked(session_id, messages)?;
        self.inner.append(session_id, &sealed).await
    }

    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
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
        let sealed = self.crypt(session_id).seal_all(messages)?;
        self.inner.create_session(session_id, meta, &sealed).await
    }
}
