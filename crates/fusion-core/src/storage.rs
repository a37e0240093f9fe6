//! The `ConversationStorage` trait every backend implements.
//!
//! The first four methods are exactly the product description's trait, so a backend
//! written from that description compiles unchanged. Everything else has a default
//! implementation built on those four; backends override the defaults when they can do
//! better, above all [`ConversationStorage::append`], which runs on every turn.
//!
//! Every method validates its `session_id` with [`crate::SessionId`] before touching
//! storage, so a hostile id is rejected the same way by every backend.

use async_trait::async_trait;

use crate::{
    Change, ChatMessage, Error, Expect, LEGACY_GENERATION, MetaUpdate, Result, Revision, SessionId,
    SessionInfo, SessionMeta, SessionPage, SessionQuery, SessionTimes, check_purge_batch,
    check_storable,
};

/// Persistent storage for conversation histories, keyed by session id.
///
/// Implementations must be safe to share between tasks (`Send + Sync`) and must keep
/// every session independent: a failure reading one session never affects another.
///
/// Semantics every backend shares (checked by the conformance suite in `testkit`):
/// - `load` of a session that was never written returns an empty history;
/// - a session with no messages does not exist: `save(id, &[])` behaves like `delete`;
/// - `delete` of an unknown session is `Ok`;
/// - `save` and `append` refuse a message that could not be read back
///   ([`Error::InvalidMessage`](crate::Error::InvalidMessage)) and store nothing;
/// - `list_sessions` returns each stored session exactly once, in no particular order;
/// - concurrent `append`s to one session, from tasks or processes, lose nothing and keep
///   each writer's own order;
/// - `save`, `truncate` and `delete` give the session a new generation (see
///   [`Revision`]), `append` keeps it, and [`write_if`](Self::write_if) writes only if the
///   session is still what the caller read.
#[async_trait]
pub trait ConversationStorage: Send + Sync {
    /// Replaces the whole history of `session_id` with `history`, atomically: a reader
    /// sees the old history or the new one, never a mix.
    ///
    /// Implementations call [`check_storable`](crate::check_storable) before writing, so
    /// a message that could not be read back is refused and nothing changes.
    ///
    /// Cost: O(len of `history`). Use [`append`](Self::append) for new messages.
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()>;

    /// Returns the history of `session_id` in order, or an empty vector if it has none.
    ///
    /// Cost: O(len of history).
    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>>;

    /// Removes `session_id` and all its messages. Unknown sessions are not an error.
    async fn delete(&self, session_id: &str) -> Result<()>;

    /// The ids of every stored session.
    ///
    /// Cost: O(number of sessions); never a scan of all messages.
    async fn list_sessions(&self) -> Result<Vec<String>>;

    /// Adds `messages` to the end of the history of `session_id`, creating the session if
    /// needed. All of `messages` are stored, contiguously and in order, or none are.
    ///
    /// This runs inline on every agent turn, so backends should make it cost
    /// O(`messages.len()`), independent of history length. The default loads, extends and
    /// saves the whole history (O(history)) and is not safe against concurrent appenders;
    /// every bundled backend overrides it.
    ///
    /// Every backend refuses, before writing anything, a batch holding a message it could
    /// not read back ([`check_storable`](crate::check_storable)), with
    /// [`Error::InvalidMessage`](crate::Error::InvalidMessage); the default does too. An
    /// implementation of [`save`](Self::save) should call `check_storable` likewise.
    ///
    /// **Exactly once.** A message whose [`id`](ChatMessage::id) is the id of one of the
    /// session's last [`DEDUP_WINDOW`](crate::DEDUP_WINDOW) messages is not stored again;
    /// the rest of the batch is, in order. So an append retried after an error that left
    /// its outcome unknown (the server applied it, the reply was lost) stores nothing
    /// twice. Every bundled backend checks inside its write, atomically with it; the
    /// default checks the history it loads anyway ([`unstored`](crate::unstored)).
    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        SessionId::validate(session_id)?;
        if messages.is_empty() {
            return Ok(());
        }
        check_storable(self.backend_name(), session_id, messages)?;
        let mut history = self.load(session_id).await?;
        let fresh = crate::unstored(messages, |id| {
            history.iter().any(|m| m.id.as_ref() == Some(id))
        });
        if fresh.is_empty() {
            return Ok(());
        }
        history.extend_from_slice(&fresh);
        self.save(session_id, &history).await
    }

    /// Keeps only the first `len` messages of `session_id` (used to undo a turn).
    ///
    /// The default loads and saves the shorter history; backends may do it in place.
    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        let mut history = self.load(session_id).await?;
        if history.len() > len {
            history.truncate(len);
            self.save(session_id, &history).await?;
        }
        Ok(())
    }

    /// The history of `session_id` and its [`Revision`], read at one instant
    /// ([`Revision::ABSENT`] and an empty history for an unknown session).
    ///
    /// The default loads the history and reports [`LEGACY_GENERATION`] for any session
    /// that exists: a backend that keeps no generation cannot tell a rewrite of the same
    /// length from no change. Every bundled backend overrides it.
    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        let history = self.load(session_id).await?;
        let revision = if history.is_empty() {
            Revision::ABSENT
        } else {
            Revision {
                generation: LEGACY_GENERATION,
                len: history.len(),
            }
        };
        Ok((history, revision))
    }

    /// Applies `change` only if the session still meets `expected`, atomically: the check
    /// and the write are one step, so no other writer comes between them. Otherwise
    /// nothing is written and the result is
    /// [`Error::Conflict`](crate::Error::Conflict) (built by [`Expect::conflict`]), after
    /// which the caller re-reads with [`load_revision`](Self::load_revision) and decides
    /// again.
    ///
    /// Returns the session's generation after the write: unchanged by an append to an
    /// existing session, fresh when the write created, replaced or truncated it, and 0
    /// when it left the session empty (deleted). Messages are checked with
    /// [`check_storable`](crate::check_storable) first, as `append` and `save` do.
    ///
    /// Cost: an append under [`Expect::Generation`] costs what `append` costs (the check
    /// reads one number); [`Expect::Exactly`] may cost a count of the messages (and
    /// [`Expect::UnwrittenSince`] a read of the session's `updated_at` besides), and
    /// `Truncate`, `Replace` and `Rewrite` cost what `truncate` and `save` cost.
    ///
    /// The default is built on `load`, `save` and `append`: it checks the length (and
    /// whether the session exists) and then writes, which is *not* atomic, and it cannot
    /// see a rewrite that kept the length; it writes a [`Change::Rewrite`] as a save,
    /// which moves the session's times. Backends shared by several writers must override
    /// it; every bundled backend does.
    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        SessionId::validate(session_id)?;
        check_storable(self.backend_name(), session_id, change.messages())?;
        let (history, now) = self.load_revision(session_id).await?;
        let updated_at = match expected {
            Expect::UnwrittenSince { .. } if now.exists() => self
                .session_info(session_id)
                .await?
                .and_then(|info| info.updated_at),
            _ => None,
        };
        if !expected.is_met_by(now.generation, || now.len, || updated_at) {
            return Err(expected.conflict(
                self.backend_name(),
                session_id,
                now.generation,
                Some(now.len),
            ));
        }
        let remains = match change {
            Change::Append(messages) => {
                drop(history);
                self.append(session_id, messages).await?;
                now.exists() || !messages.is_empty()
            }
            Change::Truncate(len) => {
                self.truncate(session_id, len).await?;
                len.min(now.len) > 0
            }
            // Without a way to keep the session's times, a rewrite is a save.
            Change::Replace(messages) | Change::Rewrite(messages) => {
                self.save(session_id, messages).await?;
                !messages.is_empty()
            }
        };
        Ok(if remains { LEGACY_GENERATION } else { 0 })
    }

    /// Facts about `session_id` (count, timestamps, generation and metadata), or `None`
    /// if it holds no messages.
    ///
    /// The default counts a full [`load_revision`](Self::load_revision), so its count and
    /// generation are those a read reports (a backend that overrides `load_revision` with
    /// generations of its own gets them here too, and a reader comparing the two sees one
    /// session), and knows no timestamps or metadata.
    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        let (history, revision) = self.load_revision(session_id).await?;
        Ok((!history.is_empty()).then(|| SessionInfo {
            generation: revision.generation,
            ..SessionInfo::new(session_id, history.len())
        }))
    }

    /// Creates `session_id` holding `messages` (at least one) with the metadata `meta`,
    /// in one atomic step: nobody ever sees the session without its owner. Refused with
    /// [`Error::Conflict`] if the session already exists, and with
    /// [`Error::InvalidMeta`] if `meta` breaks a rule of [`SessionMeta::validate`] or
    /// `messages` is empty; nothing is written then. Returns the new generation.
    ///
    /// The default can store no metadata: it creates the session with a conditional
    /// append when `meta` is empty and returns [`Error::Unsupported`] otherwise. Every
    /// bundled backend overrides it.
    async fn create_session(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
    ) -> Result<u64> {
        check_creation(self.backend_name(), session_id, meta, messages)?;
        if !meta.is_empty() {
            return Err(Error::Unsupported {
                backend: self.backend_name(),
                operation: "session metadata",
            });
        }
        self.write_if(session_id, Expect::Generation(0), Change::Append(messages))
            .await
    }

    /// Creates `session_id` as [`create_session`](Self::create_session) does, with the
    /// times it had elsewhere: `fusion migrate` and `fusion sessions import` give a copied
    /// session its source's `created_at` and `updated_at`, so listings keep their order
    /// and dates. The times are kept as the backend keeps its own (SQLite and Redis:
    /// whole milliseconds), and none later than the storage's clock at the write
    /// ([`SessionTimes::stored_at`]). An idle expiry counts from the given `updated_at`
    /// like one set at that write, so a session whose expiry has passed by then is
    /// created expired: gone for every reader, as one created with an [`Expiry::At`] in
    /// the past is. Refused as `create_session` refuses, and with [`Error::InvalidMeta`]
    /// when `times` breaks a rule of [`SessionTimes::validate`]; nothing is written then.
    ///
    /// The default checks `times` and creates the session with `create_session`, at the
    /// storage's own time: a backend that keeps no times has none to set. Every bundled
    /// backend overrides it.
    ///
    /// [`Expiry::At`]: crate::Expiry::At
    async fn create_session_with_times(
        &self,
        session_id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
        times: SessionTimes,
    ) -> Result<u64> {
        times.validate()?;
        self.create_session(session_id, meta, messages).await
    }

    /// Applies `update` to the metadata of `session_id` atomically (a concurrent update
    /// of other fields is never undone) and returns the session's facts after it, or
    /// `None`, writing nothing, if the session does not exist. A result that breaks a rule
    /// of [`SessionMeta::validate`] is refused with [`Error::InvalidMeta`], and an update
    /// whose owner condition ([`MetaUpdate::if_owner`]) fails with [`Error::NotOwner`],
    /// one whose title condition ([`MetaUpdate::if_title`]) fails with
    /// [`Error::TitleChanged`]; nothing changes then. A change counts as a write: `updated_at` moves. A backend
    /// applies the update with [`MetaUpdate::apply_to_stored`] in the atomic step that
    /// stores it.
    ///
    /// The default returns [`Error::Unsupported`] for any change (an empty `update` reads
    /// [`session_info`](Self::session_info)). Every bundled backend overrides it.
    async fn update_session(
        &self,
        session_id: &str,
        update: &MetaUpdate,
    ) -> Result<Option<SessionInfo>> {
        SessionId::validate(session_id)?;
        if !update.is_empty() {
            return Err(Error::Unsupported {
                backend: self.backend_name(),
                operation: "session metadata",
            });
        }
        self.session_info(session_id).await
    }

    /// One page of the sessions `query` selects (owner, tag, search), in its order,
    /// starting after its cursor: see [`SessionQuery`] for the order and what a cursor
    /// guarantees while sessions are written.
    ///
    /// Cost: bundled backends read an index, O(page) however many sessions are stored,
    /// plus, for a tag or a search, the entries they skip until a page's worth match.
    /// The default reads [`session_info`](Self::session_info) of every session and sorts
    /// them, O(all sessions); a user-written backend with many sessions overrides it.
    async fn list_page(&self, query: &SessionQuery) -> Result<SessionPage> {
        query.validate()?;
        let mut infos = Vec::new();
        for id in self.list_sessions().await? {
            infos.extend(self.session_info(&id).await?);
        }
        query.page_of(infos)
    }

    /// Deletes up to `batch` sessions whose [`Expiry`](crate::Expiry) has passed and
    /// returns how many it deleted; call it again until it returns less than `batch`. A
    /// session written again after it expired is a new session and is kept. `batch` is 1
    /// to [`MAX_PURGE_BATCH`](crate::MAX_PURGE_BATCH) ([`check_purge_batch`]).
    ///
    /// Expired sessions are already invisible to every reader; this frees their space.
    /// Cost: bundled backends read an index of expiry instants, O(batch) however many
    /// sessions are stored. The default returns 0: a backend that cannot store an expiry
    /// ([`create_session`](Self::create_session) refuses one) has nothing to purge.
    async fn purge_expired(&self, batch: usize) -> Result<usize> {
        check_purge_batch(batch)?;
        Ok(0)
    }

    /// A short name for messages and logs (`memory`, `fs`, `sqlite`, `redis`, ...).
    fn backend_name(&self) -> &'static str {
        "custom"
    }
}

/// The checks every [`ConversationStorage::create_session`] runs before writing: a valid
/// id, valid metadata, at least one message, and every message one `backend` can read
/// back ([`check_storable`]).
pub fn check_creation(
    backend: &'static str,
    session_id: &str,
    meta: &SessionMeta,
    messages: &[ChatMessage],
) -> Result<()> {
    SessionId::validate(session_id)?;
    meta.validate()?;
    if messages.is_empty() {
        return Err(Error::InvalidMeta(format!(
            "session \"{session_id}\" must be created with at least one message; none were given"
        )));
    }
    check_storable(backend, session_id, messages)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::{Error, MAX_METADATA_DEPTH};

    /// A user-written backend with only the four required methods, so every other call
    /// takes the trait's defaults.
    #[derive(Default)]
    struct Minimal(Mutex<HashMap<String, Vec<ChatMessage>>>);

    #[async_trait]
    impl ConversationStorage for Minimal {
        async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
            let mut sessions = self.0.lock().unwrap();
            sessions.insert(session_id.to_string(), history.to_vec());
            Ok(())
        }
        async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .get(session_id)
                .cloned()
                .unwrap_or_default())
        }
        async fn delete(&self, session_id: &str) -> Result<()> {
            self.0.lock().unwrap().remove(session_id);
            Ok(())
        }
        async fn list_sessions(&self) -> Result<Vec<String>> {
            Ok(self.0.lock().unwrap().keys().cloned().collect())
        }
    }

    /// [`Minimal`] with generations of its own: the one `load_revision` a user-written
    /// backend overrides first, and the only call it overrides.
    #[derive(Default)]
    struct WithGenerations(Minimal);

    #[async_trait]
    impl ConversationStorage for WithGenerations {
        async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
            self.0.save(session_id, history).await
        }
        async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
            self.0.load(session_id).await
        }
        async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
            let history = self.0.load(session_id).await?;
            let len = history.len();
            let revision = match len {
                0 => Revision::ABSENT,
                _ => Revision {
                    generation: 42,
                    len,
                },
            };
            Ok((history, revision))
        }
        async fn delete(&self, session_id: &str) -> Result<()> {
            self.0.delete(session_id).await
        }
        async fn list_sessions(&self) -> Result<Vec<String>> {
            self.0.list_sessions().await
        }
    }

    #[tokio::test]
    async fn the_default_session_info_reports_the_generation_load_revision_reads() {
        let store = WithGenerations::default();
        assert!(store.session_info("s").await.unwrap().is_none());
        store.save("s", &[ChatMessage::user("a")]).await.unwrap();
        let info = store.session_info("s").await.unwrap().unwrap();
        let (_, revision) = store.load_revision("s").await.unwrap();
        assert_eq!((info.generation, info.message_count), (42, 1));
        assert_eq!(info.generation, revision.generation);
        // A backend that overrides neither reports the legacy generation in both.
        let minimal = Minimal::default();
        minimal.save("s", &[ChatMessage::user("a")]).await.unwrap();
        let info = minimal.session_info("s").await.unwrap().unwrap();
        assert_eq!(info.generation, LEGACY_GENERATION);
    }

    fn nested(depth: usize) -> serde_json::Value {
        (0..depth).fold(serde_json::json!(1), |inner, _| serde_json::json!([inner]))
    }

    #[tokio::test]
    async fn the_default_append_refuses_a_message_too_deep_to_read_back_and_stores_nothing() {
        let store = Minimal::default();
        let kept = [ChatMessage::user("first")];
        store.append("s", &kept).await.unwrap();
        let at_limit = ChatMessage::user("ok").with_metadata("m", nested(MAX_METADATA_DEPTH));
        let too_deep = ChatMessage::user("no").with_metadata("m", nested(MAX_METADATA_DEPTH + 1));
        let err = store
            .append("s", &[at_limit.clone(), too_deep])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidMessage {
                    backend: "custom",
                    index: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(store.load("s").await.unwrap(), kept);
        store
            .append("s", std::slice::from_ref(&at_limit))
            .await
            .unwrap();
        assert_eq!(store.load("s").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn the_default_conditional_write_checks_existence_and_length() {
        let store = Minimal::default();
        let first = [ChatMessage::user("a"), ChatMessage::user("b")];
        let created = store
            .write_if("s", Expect::Generation(0), Change::Append(&first))
            .await
            .unwrap();
        assert_eq!(created, LEGACY_GENERATION);
        let (history, at) = store.load_revision("s").await.unwrap();
        assert_eq!(history, first);
        assert_eq!(
            at,
            Revision {
                generation: LEGACY_GENERATION,
                len: 2
            }
        );

        let again = store
            .write_if("s", Expect::Generation(0), Change::Append(&first))
            .await;
        assert!(
            matches!(
                again,
                Err(Error::Conflict {
                    backend: "custom",
                    ..
                })
            ),
            "{again:?}"
        );
        let stale = Revision {
            generation: LEGACY_GENERATION,
            len: 1,
        };
        let undo = store
            .write_if("s", Expect::Exactly(stale), Change::Truncate(1))
            .await;
        assert!(matches!(undo, Err(Error::Conflict { .. })), "{undo:?}");
        assert_eq!(store.load("s").await.unwrap().len(), 2, "nothing changed");

        let emptied = store
            .write_if("s", Expect::Exactly(at), Change::Truncate(0))
            .await
            .unwrap();
        assert_eq!(emptied, 0);
        assert_eq!(store.load_revision("s").await.unwrap().1, Revision::ABSENT);
    }

    #[tokio::test]
    async fn the_defaults_list_pages_and_refuse_metadata_they_cannot_store() {
        let store = Minimal::default();
        for id in ["c", "a", "b"] {
            store.append(id, &[ChatMessage::user(id)]).await.unwrap();
        }
        let by_id = SessionQuery::new().order(crate::SessionOrder::Id).limit(2);
        let first = store.list_page(&by_id).await.unwrap();
        let ids: Vec<_> = first.sessions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let rest = store.list_page(&by_id.after(first.next)).await.unwrap();
        assert_eq!(rest.sessions.len(), 1);
        assert_eq!(rest.next, None);

        let created = store
            .create_session("d", &SessionMeta::new(), &[ChatMessage::user("d")])
            .await
            .unwrap();
        assert_eq!(created, LEGACY_GENERATION);
        let owned = SessionMeta::new().owner("o");
        let err = store
            .create_session("e", &owned, &[ChatMessage::user("e")])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Unsupported {
                    backend: "custom",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(store.load("e").await.unwrap().is_empty(), "nothing written");
        let err = store
            .update_session("d", &MetaUpdate::new().title(Some("t")))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
        let unchanged = store.update_session("d", &MetaUpdate::new()).await.unwrap();
        assert_eq!(unchanged.map(|i| i.message_count), Some(1));
    }
}
