//! [`OwnerScope`]: a storage seen by one owner, who never sees, loads or overwrites
//! another owner's sessions.
//!
//! One mechanism for every backend: each call reads the session's facts
//! ([`session_info`](ConversationStorage::session_info): owner and generation) and then
//! acts through the backend's conditional write, expecting that generation. If the
//! session was deleted and created again (perhaps by another owner) in between, the
//! generation differs, the write is refused and the call starts over; so a scoped write
//! lands only on a session that was the owner's when it was checked. A write that
//! requires the session absent, on a session the check found, is refused without
//! writing: passed on, it could create the session without its owner had it been deleted
//! in between. A session this scope creates gets its owner in the same step as its first
//! messages ([`create_session`](ConversationStorage::create_session)).
//!
//! What the scope shows of a session that is not its owner's (another owner's, or one
//! with no owner): nothing. `load` returns an empty history, `session_info` `None`,
//! listings leave it out and `delete` does nothing; a write that would create it, whose
//! id is taken, fails with [`Error::NotOwner`].

use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    Change, ChatMessage, ConversationStorage, Error, Expect, MetaUpdate, Result, Revision,
    SessionId, SessionInfo, SessionMeta, SessionPage, SessionQuery, SessionTimes, validate_owner,
};

/// How often a call starts over when the session changed between its check and its
/// write, before it reports the conflict.
const ATTEMPTS: usize = 16;

/// A [`ConversationStorage`] limited to the sessions of one owner: it never shows that
/// owner a session of another owner or of none (`load` is empty, `session_info` is `None`,
/// listings leave it out, `delete` does nothing, and a write that would create it fails
/// with [`Error::NotOwner`]), and it creates sessions with their owner in the same step as
/// their first messages. Each call checks the session's owner and generation and then
/// writes through the backend's conditional write on that generation, so a session
/// deleted and recreated by someone else in between is never written.
///
/// ```
/// # async fn demo(storage: std::sync::Arc<dyn fusion_core::ConversationStorage>) -> fusion_core::Result<()> {
/// use fusion_core::{ChatMessage, ConversationStorage, OwnerScope, SessionQuery};
///
/// let alice = OwnerScope::new(storage.clone(), "alice")?;
/// alice.append("chat-1", &[ChatMessage::user("hi")]).await?;
/// let bob = OwnerScope::new(storage, "bob")?;
/// assert!(bob.load("chat-1").await?.is_empty());
/// assert!(bob.list_page(&SessionQuery::new()).await?.sessions.is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OwnerScope {
    storage: Arc<dyn ConversationStorage>,
    owner: String,
    on_create: SessionMeta,
}

/// What the scope found when it checked a session.
enum Found {
    Absent,
    Mine(Box<SessionInfo>),
    NotMine,
}

impl OwnerScope {
    /// `storage` as seen by `owner` (checked like a session id: [`validate_owner`]).
    pub fn new(storage: Arc<dyn ConversationStorage>, owner: impl Into<String>) -> Result<Self> {
        let owner = owner.into();
        validate_owner(&owner)?;
        let on_create = SessionMeta::new().owner(owner.clone());
        Ok(Self {
            storage,
            owner,
            on_create,
        })
    }

    /// Title, tags and data to give each session this scope creates (the owner is always
    /// this scope's).
    pub fn on_create(mut self, meta: SessionMeta) -> Result<Self> {
        meta.validate()?;
        self.on_create = SessionMeta {
            owner: Some(self.owner.clone()),
            ..meta
        };
        Ok(self)
    }

    /// The owner this scope serves.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The storage underneath, unscoped.
    pub fn storage(&self) -> &Arc<dyn ConversationStorage> {
        &self.storage
    }

    async fn check(&self, session_id: &str) -> Result<Found> {
        Ok(match self.storage.session_info(session_id).await? {
            None => Found::Absent,
            Some(info) if info.meta.owner.as_deref() == Some(self.owner.as_str()) => {
                Found::Mine(Box::new(info))
            }
            Some(_) => Found::NotMine,
        })
    }

    /// `meta` with this owner, for a session created through the scope; refused when it
    /// names another owner.
    fn owned(&self, session_id: &str, meta: &SessionMeta) -> Result<SessionMeta> {
        if meta.owner.as_ref().is_some_and(|o| *o != self.owner) {
            return Err(self.not_owner(session_id));
        }
        Ok(SessionMeta {
            owner: Some(self.owner.clone()),
            ..meta.clone()
        })
    }

    fn not_owner(&self, session_id: &str) -> Error {
        Error::NotOwner {
            session_id: session_id.to_string(),
            owner: self.owner.clone(),
        }
    }

    /// Applies `change` to a session of this owner, creating it with this owner when it
    /// does not exist. With `expected`, only if the session is still what it says (as the
    /// backend's `write_if`); with `None`, whatever the session holds now, starting over
    /// when another writer rewrote or recreated it between the check and the write.
    async fn write_scoped(
        &self,
        session_id: &str,
        expected: Option<Expect>,
        change: Change<'_>,
    ) -> Result<u64> {
        SessionId::validate(session_id)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let found = self.check(session_id).await?;
            let generation = match &found {
                Found::Mine(info) => info.generation,
                Found::Absent | Found::NotMine => 0,
            };
            let wanted = expected.unwrap_or(Expect::Generation(generation));
            let result = match found {
                // The session existed when checked. A write that requires it absent is
                // refused here, as the backend would refuse it: passed on, it would find
                // the session absent if someone deleted it after the check, and create it
                // without its owner, locking the owner out. Any other expectation names
                // the (non-zero) generation checked, so the write cannot create it.
                Found::Mine(info) if wanted.is_met_by(0, || 0, || None) => {
                    return Err(wanted.conflict(
                        self.backend_name(),
                        session_id,
                        info.generation,
                        Some(info.message_count),
                    ));
                }
                Found::Mine(_) => self.storage.write_if(session_id, wanted, change).await,
                Found::Absent | Found::NotMine if !wanted.is_met_by(0, || 0, || None) => {
                    return Err(wanted.conflict(self.backend_name(), session_id, 0, Some(0)));
                }
                Found::Absent => match change {
                    Change::Append(messages)
                    | Change::Replace(messages)
                    | Change::Rewrite(messages)
                        if !messages.is_empty() =>
                    {
                        self.storage
                            .create_session(session_id, &self.on_create, messages)
                            .await
                    }
                    _ => return Ok(0),
                },
                Found::NotMine => match change {
                    Change::Append([])
                    | Change::Replace([])
                    | Change::Rewrite([])
                    | Change::Truncate(_) => {
                        return Ok(0);
                    }
                    _ => return Err(self.not_owner(session_id)),
                },
            };
            match result {
                Err(Error::Conflict { .. }) if expected.is_none() && attempt < ATTEMPTS => {}
                other => return other,
            }
        }
    }
}

#[async_trait]
impl ConversationStorage for OwnerScope {
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        self.write_scoped(session_id, None, Change::Replace(history))
            .await
            .map(drop)
    }

    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        Ok(self.load_revision(session_id).await?.0)
    }

    async fn delete(&self, session_id: &str) -> Result<()> {
        self.write_scoped(session_id, None, Change::Truncate(0))
            .await
            .map(drop)
    }

    async fn list_sessions(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut query = SessionQuery::new()
            .order(crate::SessionOrder::Id)
            .limit(SessionQuery::MAX_LIMIT);
        loop {
            let page = self.list_page(&query).await?;
            ids.extend(page.sessions.into_iter().map(|s| s.id));
            match page.next {
                Some(next) => query = query.after(Some(next)),
                None => return Ok(ids),
            }
        }
    }

    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        if messages.is_empty() {
            return SessionId::validate(session_id);
        }
        self.write_scoped(session_id, None, Change::Append(messages))
            .await
            .map(drop)
    }

    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        self.write_scoped(session_id, None, Change::Truncate(len))
            .await
            .map(drop)
    }

    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        SessionId::validate(session_id)?;
        for _ in 0..ATTEMPTS {
            let generation = match self.check(session_id).await? {
                Found::Mine(info) => info.generation,
                Found::Absent | Found::NotMine => return Ok((Vec::new(), Revision::ABSENT)),
            };
            let (history, revision) = self.storage.load_revision(session_id).await?;
            if revision.generation == generation {
                return Ok((history, revision));
            }
        }
        Err(Expect::Generation(0).conflict(self.backend_name(), session_id, 0, None))
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        self.write_scoped(session_id, Some(expected), change).await
    }

    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        SessionId::validate(session_id)?;
        Ok(match self.check(session_id).await? {
            Found::Mine(info) => Some(*info),
            Found::Absent | Found::NotMine => None,
        })
    }

    async fn create_session(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
    ) -> Result<u64> {
        let meta = self.owned(session_id, meta)?;
        self.storage
            .create_session(session_id, &meta, messages)
            .await
    }

    async fn create_session_with_times(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: SessionTimes,
    ) -> Result<u64> {
        let meta = self.owned(session_id, meta)?;
        self.storage
            .create_session_with_times(session_id, &meta, messages, times)
            .await
    }

    async fn update_session(
        &self,
        session_id: &str,
        update: &MetaUpdate,
    ) -> Result<Option<SessionInfo>> {
        SessionId::validate(session_id)?;
        if update.owner.is_some() {
            return Err(Error::InvalidMeta(format!(
                "a caller scoped to owner \"{}\" cannot change the owner of session \"{session_id}\"",
                self.owner
            )));
        }
        match self.check(session_id).await? {
            // Read as the check found it: a backend answers a change of nothing by
            // reading, which would not check the owner again.
            Found::Mine(info) if update.is_empty() => Ok(Some(*info)),
            // The owner is checked again in the write's own atomic step: a session
            // deleted and created by another owner since the check is refused, never
            // changed (nor its facts returned).
            Found::Mine(_) => {
                let update = update.clone().if_owner(self.owner.clone());
                self.storage.update_session(session_id, &update).await
            }
            Found::Absent => Ok(None),
            Found::NotMine => Err(self.not_owner(session_id)),
        }
    }

    async fn list_page(&self, query: &SessionQuery) -> Result<SessionPage> {
        query.validate()?;
        if query.owner.as_ref().is_some_and(|o| *o != self.owner) {
            return Ok(SessionPage::new(Vec::new(), None));
        }
        let scoped = SessionQuery {
            owner: Some(self.owner.clone()),
            ..query.clone()
        };
        self.storage.list_page(&scoped).await
    }

    fn backend_name(&self) -> &'static str {
        self.storage.backend_name()
    }
}
