//! An export reads the session's facts (times, count) and then its messages; a write
//! between the two (an append by a running agent) made a file whose `updated_at` was
//! older than its last message. The two are now of one revision.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use axum::http::StatusCode;
use fusion::ChatMessage;
use fusion::storage::{ConversationStorage, InMemoryStorage, Revision, SessionMeta, SessionTimes};
use fusion_core::{Intercept, Intercepted, Result};
use fusion_ui::{UiConfig, router};

use common::{HOST, get, send};

/// A storage where another writer appends to the session once, just before its messages
/// are first read.
struct WriterBetween {
    inner: Arc<dyn ConversationStorage>,
    done: AtomicBool,
}

impl WriterBetween {
    async fn maybe_append(&self, id: &str) -> Result<()> {
        if !self.done.swap(true, Ordering::SeqCst) {
            let late = ChatMessage::assistant("written between the reads");
            self.inner.append(id, &[late]).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Intercept for WriterBetween {
    fn inner(&self) -> &dyn ConversationStorage {
        self.inner.as_ref()
    }

    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        self.maybe_append(session_id).await?;
        self.inner.load(session_id).await
    }

    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        self.maybe_append(session_id).await?;
        self.inner.load_revision(session_id).await
    }
}

#[tokio::test]
async fn an_export_is_of_one_revision_when_a_write_comes_between_its_reads() {
    let inner: Arc<dyn ConversationStorage> = Arc::new(InMemoryStorage::new());
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let first = [ChatMessage::user("hello"), ChatMessage::assistant("hi")];
    let times = SessionTimes::new(an_hour_ago, an_hour_ago);
    let meta = SessionMeta::new().title("Exported");
    inner
        .create_session_with_times("e1", &meta, &first, times)
        .await
        .unwrap();
    let storage = Arc::new(Intercepted(WriterBetween {
        inner: inner.clone(),
        done: AtomicBool::new(false),
    }));
    let address = HOST.parse().unwrap();
    let settings = UiConfig::new(address).settings(address).unwrap();
    let app = router(storage, &settings);

    let reply = send(&app, get("/sessions/e1/export?format=json")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let now = inner.session_info("e1").await.unwrap().unwrap();
    let exported = fusion::api::export::read(&reply.body).unwrap();
    assert_eq!(exported.messages.len(), 3, "{}", reply.body);
    assert_eq!(
        exported.times.map(|times| times.updated_at),
        now.updated_at,
        "the file's last write is that of its last message: {}",
        reply.body
    );
}
