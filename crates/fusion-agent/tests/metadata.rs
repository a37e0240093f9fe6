//! Session metadata through the agent: what a session the agent creates starts with
//! (owner, title, tags, data, a title from the first message), that it is written in the
//! same step as the first messages, that resuming never rewrites it, and that an owner
//! only ever sees and writes that owner's session.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::{Harness, SESSION, client, turn};
use fusion_agent::{AUTO_TITLE_CHARS, AgentSession, TitlePolicy};
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, MetaUpdate, Result, Revision,
    SessionInfo, SessionMeta,
};
use fusion_storage_memory::InMemoryStorage;

/// Passes every call to memory storage and records which calls wrote.
struct Recorder {
    inner: InMemoryStorage,
    writes: Mutex<Vec<&'static str>>,
}

impl Recorder {
    fn new(inner: InMemoryStorage) -> Arc<Self> {
        Arc::new(Self {
            inner,
            writes: Mutex::default(),
        })
    }

    fn record(&self, call: &'static str) {
        self.writes.lock().unwrap().push(call);
    }

    fn writes(&self) -> Vec<&'static str> {
        self.writes.lock().unwrap().clone()
    }
}

#[async_trait]
impl ConversationStorage for Recorder {
    async fn save(&self, id: &str, history: &[ChatMessage]) -> Result<()> {
        self.record("save");
        self.inner.save(id, history).await
    }
    async fn load(&self, id: &str) -> Result<Vec<ChatMessage>> {
        self.inner.load(id).await
    }
    async fn delete(&self, id: &str) -> Result<()> {
        self.record("delete");
        self.inner.delete(id).await
    }
    async fn list_sessions(&self) -> Result<Vec<String>> {
        self.inner.list_sessions().await
    }
    async fn load_revision(&self, id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        self.inner.load_revision(id).await
    }
    async fn write_if(&self, id: &str, expected: Expect, change: Change<'_>) -> Result<u64> {
        self.record("write_if");
        self.inner.write_if(id, expected, change).await
    }
    async fn session_info(&self, id: &str) -> Result<Option<SessionInfo>> {
        self.inner.session_info(id).await
    }
    async fn create_session(
        &self,
        id: &str,
        meta: &SessionMeta,
        messages: &[ChatMessage],
    ) -> Result<u64> {
        self.record("create_session");
        self.inner.create_session(id, meta, messages).await
    }
    async fn update_session(&self, id: &str, update: &MetaUpdate) -> Result<Option<SessionInfo>> {
        self.record("update_session");
        self.inner.update_session(id, update).await
    }
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}

/// A backend written from the product description: the four required methods only, so
/// it has nowhere to keep metadata.
#[derive(Default)]
struct FourMethods(Mutex<HashMap<String, Vec<ChatMessage>>>);

#[async_trait]
impl ConversationStorage for FourMethods {
    async fn save(&self, id: &str, history: &[ChatMessage]) -> Result<()> {
        let mut sessions = self.0.lock().unwrap();
        if history.is_empty() {
            sessions.remove(id);
        } else {
            sessions.insert(id.to_string(), history.to_vec());
        }
        Ok(())
    }
    async fn load(&self, id: &str) -> Result<Vec<ChatMessage>> {
        Ok(self.0.lock().unwrap().get(id).cloned().unwrap_or_default())
    }
    async fn delete(&self, id: &str) -> Result<()> {
        self.0.lock().unwrap().remove(id);
        Ok(())
    }
    async fn list_sessions(&self) -> Result<Vec<String>> {
        Ok(self.0.lock().unwrap().keys().cloned().collect())
    }
}

async fn meta_of(storage: &dyn ConversationStorage, id: &str) -> SessionMeta {
    storage.session_info(id).await.unwrap().unwrap().meta
}

#[tokio::test]
async fn metadata_is_written_with_the_first_messages_and_resuming_keeps_it() {
    let h = Harness::new().await;
    let storage = Recorder::new(InMemoryStorage::new());
    let mut session = h
        .builder()
        .storage(storage.clone())
        .title("File clean-up")
        .tags(["ops", "files"])
        .data("ticket", 42)
        .build()
        .await
        .unwrap();
    assert_eq!(session.info().await.unwrap(), None, "nothing stored yet");
    turn(&h.server, &mut session, "hi", "hello").await;

    // One write created the session: nobody could see it without its metadata.
    assert_eq!(storage.writes(), ["create_session", "write_if"]);
    let expected = SessionMeta::new()
        .title("File clean-up")
        .tags(["files", "ops"])
        .data("ticket", 42);
    let info = session.info().await.unwrap().unwrap();
    assert_eq!(info.meta, expected);
    assert_eq!(info.message_count, 3);

    // A later process resumes with other settings: the stored metadata stands.
    let mut resumed = h
        .builder()
        .storage(storage.clone())
        .title("Something else")
        .tags(["other"])
        .title_policy(TitlePolicy::FirstUserMessage)
        .build()
        .await
        .unwrap();
    assert_eq!(resumed.message_count(), 3);
    turn(&h.server, &mut resumed, "more", "sure").await;
    assert_eq!(meta_of(storage.as_ref(), SESSION).await, expected);
    assert!(!storage.writes().contains(&"update_session"));

    // A cleared session starts over, with the metadata of the session that clears it.
    resumed.clear_history().await.unwrap();
    turn(&h.server, &mut resumed, "again", "ok").await;
    let restarted = meta_of(storage.as_ref(), SESSION).await;
    assert_eq!(restarted.title.as_deref(), Some("Something else"));
    assert_eq!(restarted.tags, ["other"]);
}

#[tokio::test]
async fn the_title_policy_titles_a_new_session_after_its_first_message_only() {
    let h = Harness::new().await;
    let long = format!("Please {} tidy\nsecond line", "really ".repeat(20));
    let mut session = h
        .builder()
        .title_policy(TitlePolicy::FirstUserMessage)
        .build()
        .await
        .unwrap();
    turn(&h.server, &mut session, &long, "ok").await;
    let title = meta_of(h.storage.as_ref(), SESSION).await.title.unwrap();
    assert_eq!(title.chars().count(), AUTO_TITLE_CHARS);
    assert!(title.starts_with("Please really really") && title.ends_with('…'));
    turn(&h.server, &mut session, "Another question", "ok").await;
    assert_eq!(
        meta_of(h.storage.as_ref(), SESSION).await.title.unwrap(),
        title
    );

    // A given title wins over the policy.
    let mut named = h
        .builder()
        .storage(Arc::new(InMemoryStorage::new()) as Arc<dyn ConversationStorage>)
        .title("Given")
        .title_policy(TitlePolicy::FirstUserMessage)
        .build()
        .await
        .unwrap();
    turn(&h.server, &mut named, "What is in /tmp?", "ok").await;
    assert_eq!(
        named.info().await.unwrap().unwrap().meta.title.as_deref(),
        Some("Given")
    );

    // A session created without a title is not titled when it is resumed under the policy.
    let untitled = Arc::new(InMemoryStorage::new());
    let mut plain = h.builder().storage(untitled.clone()).build().await.unwrap();
    turn(&h.server, &mut plain, "first", "ok").await;
    let mut resumed = h
        .builder()
        .storage(untitled.clone())
        .title_policy(TitlePolicy::FirstUserMessage)
        .build()
        .await
        .unwrap();
    turn(&h.server, &mut resumed, "second", "ok").await;
    assert_eq!(meta_of(untitled.as_ref(), SESSION).await.title, None);
}

#[tokio::test]
async fn an_owner_only_ever_sees_and_writes_its_own_session() {
    let h = Harness::new().await;
    let mut alice = h.builder().owner("alice").build().await.unwrap();
    assert_eq!(alice.owner(), Some("alice"));
    turn(&h.server, &mut alice, "alice's secret", "noted").await;
    let stored = h.stored().await;
    assert_eq!(
        meta_of(h.storage.as_ref(), SESSION).await.owner.as_deref(),
        Some("alice")
    );

    // Bob opens the same id: he sees nothing, and his first message is refused.
    let mut bob = h.builder().owner("bob").build().await.unwrap();
    assert_eq!(
        bob.message_count(),
        0,
        "alice's history is not bob's to read"
    );
    assert_eq!(bob.info().await.unwrap(), None);
    let err = bob.send_message("let me in").await.unwrap_err();
    assert!(
        matches!(&err, Error::NotOwner { session_id, owner } if session_id == SESSION && owner == "bob"),
        "{err:?}"
    );
    assert_eq!(h.stored().await, stored, "nothing of bob's was written");
    let err = bob
        .update_meta(&MetaUpdate::new().title(Some("mine")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotOwner { .. }), "{err:?}");
    assert_eq!(
        h.server.request_count(),
        1,
        "bob's turn never reached the model"
    );

    // Alice resumes and continues; a session without an owner is nobody's to take.
    let mut again = h.builder().owner("alice").build().await.unwrap();
    assert_eq!(again.history(), stored.as_slice());
    turn(&h.server, &mut again, "still me", "yes").await;
    h.storage
        .save("unowned", &[ChatMessage::user("hi")])
        .await
        .unwrap();
    let mut taker = AgentSession::builder("unowned")
        .llm(Arc::new(client(&h.server)))
        .storage(h.storage.clone())
        .workspace_roots([h.workspace.path()])
        .owner("alice")
        .build()
        .await
        .unwrap();
    let err = taker.send_message("mine now").await.unwrap_err();
    assert!(matches!(err, Error::NotOwner { .. }), "{err:?}");
    assert_eq!(h.storage.load("unowned").await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_owned_session_is_created_with_its_owner_and_builder_metadata_and_forks_carry_it() {
    let h = Harness::new().await;
    let mut session = h
        .builder()
        .owner("u-1")
        .tags(["t"])
        .title_policy(TitlePolicy::FirstUserMessage)
        .build()
        .await
        .unwrap();
    turn(&h.server, &mut session, "Plan the release", "ok").await;
    let expected = SessionMeta::new()
        .owner("u-1")
        .title("Plan the release")
        .tags(["t"]);
    assert_eq!(meta_of(h.storage.as_ref(), SESSION).await, expected);

    let updated = session
        .update_meta(&MetaUpdate::new().add_tag("starred"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.meta.tags, ["starred", "t"]);
    let err = session
        .update_meta(&MetaUpdate::new().owner(Some("u-2")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMeta(_)), "{err:?}");

    let fork = session.fork("copy").await.unwrap();
    let copied = fork.info().await.unwrap().unwrap().meta;
    assert_eq!(copied, updated.meta, "the fork has the session's metadata");
    assert_eq!(fork.owner(), Some("u-1"));
}

#[tokio::test]
async fn invalid_metadata_is_refused_when_the_session_is_built() {
    let h = Harness::new().await;
    for builder in [
        h.builder().owner("../escape"),
        h.builder().tags(["a,b"]),
        h.builder().title("two\nlines"),
    ] {
        let err = builder.build().await.unwrap_err();
        assert!(matches!(err, Error::InvalidMeta(_)), "{err:?}");
    }
}

#[tokio::test]
async fn a_backend_without_metadata_works_until_metadata_is_asked_of_it() {
    let h = Harness::new().await;
    let plain = Arc::new(FourMethods::default());
    let mut session = h.builder().storage(plain.clone()).build().await.unwrap();
    turn(&h.server, &mut session, "hi", "hello").await;
    assert_eq!(plain.load(SESSION).await.unwrap().len(), 3);

    // A title the policy would derive is left out there; one the application gives is not.
    let auto = Arc::new(FourMethods::default());
    let mut untitled = h
        .builder()
        .storage(auto.clone())
        .title_policy(TitlePolicy::FirstUserMessage)
        .build()
        .await
        .unwrap();
    turn(&h.server, &mut untitled, "hi", "hello").await;
    assert_eq!(auto.load(SESSION).await.unwrap().len(), 3);

    let fresh = Arc::new(FourMethods::default());
    let mut titled = h
        .builder()
        .storage(fresh.clone())
        .title("Needs a place to live")
        .build()
        .await
        .unwrap();
    let err = titled.send_message("hi").await.unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert!(
        err.to_string().contains("not supported by this backend"),
        "{err}"
    );
    assert!(
        fresh.list_sessions().await.unwrap().is_empty(),
        "nothing stored"
    );
}
