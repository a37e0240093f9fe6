//! An export reads the session's facts (times, count) and then its messages; a write
//! between the two (an append by a running agent) made a file whose `updated_at` was
//! older than its last message. The two are now of one revision.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use axum::http::StatusCode;
use fusion::ChatMessage;
use fusion::storage::{
    ConversationStorage, Expiry, InMemoryStorage, Revision, SessionMeta, SessionTimes,
};
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

fn app(storage: Arc<dyn ConversationStorage>) -> axum::Router {
    let address = HOST.parse().unwrap();
    let settings = UiConfig::new(address).settings(address).unwrap();
    router(storage, &settings)
}

/// A session exports on every backend, as created, after an append, a truncate and a
/// rewrite, one written by appends alone and one copied in with its times, expiring:
/// the facts' generation and count are those its messages are read at on each (a backend
/// whose facts never matched would refuse every export with a 409).
async fn exports_as_written(storage: Arc<dyn ConversationStorage>) {
    let app = app(storage.clone());
    let meta = SessionMeta::new().title("Exported").tags(["b", "a"]);
    let first = [ChatMessage::user("hello"), ChatMessage::assistant("hi")];
    storage.create_session("x1", &meta, &first).await.unwrap();
    let export = async |count: usize, step: &str| {
        let reply = send(&app, get("/sessions/x1/export?format=json")).await;
        let backend = storage.backend_name();
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{backend}, {step}: {}",
            reply.body
        );
        let exported = fusion::api::export::read(&reply.body).unwrap();
        assert_eq!(exported.messages.len(), count, "{backend}, {step}");
    };
    export(2, "created").await;
    storage
        .append("x1", &[ChatMessage::user("more")])
        .await
        .unwrap();
    export(3, "appended").await;
    storage.truncate("x1", 1).await.unwrap();
    export(1, "truncated").await;
    storage
        .save("x1", &[ChatMessage::user("a"), ChatMessage::assistant("b")])
        .await
        .unwrap();
    export(2, "replaced").await;

    // Written by appends alone, with no metadata ever set (as an agent's session is).
    storage
        .append("x2", &[ChatMessage::user("plain")])
        .await
        .unwrap();
    let reply = send(&app, get("/sessions/x2/export?format=markdown")).await;
    let backend = storage.backend_name();
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{backend}, appended: {}",
        reply.body
    );
    assert!(reply.body.contains("plain"), "{backend}: {}", reply.body);

    // Copied in with its times (as `fusion migrate` and an import create one), expiring.
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let times = SessionTimes::new(an_hour_ago, an_hour_ago);
    let meta = SessionMeta::new().expiry(Expiry::Idle(Duration::from_secs(86_400)));
    storage
        .create_session_with_times("x3", &meta, &first, times)
        .await
        .unwrap();
    let reply = send(&app, get("/sessions/x3/export?format=json")).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{backend}, copied: {}",
        reply.body
    );
}

#[tokio::test]
async fn a_session_exports_on_every_backend() {
    common::backends::each_backend(exports_as_written).await;
}

/// A storage where another writer appends to the session before every read of its
/// messages.
struct BusyWriter {
    inner: Arc<dyn ConversationStorage>,
    reads: Arc<AtomicUsize>,
}

#[async_trait]
impl Intercept for BusyWriter {
    fn inner(&self) -> &dyn ConversationStorage {
        self.inner.as_ref()
    }

    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let late = ChatMessage::assistant("written between the reads");
        self.inner.append(session_id, &[late]).await?;
        self.inner.load_revision(session_id).await
    }
}

/// A session written between every read of its facts and its messages is read three
/// times, then refused with a 409 saying it kept changing and what to do.
#[tokio::test]
async fn a_session_that_keeps_changing_is_refused_after_three_reads() {
    let inner: Arc<dyn ConversationStorage> = Arc::new(InMemoryStorage::new());
    let first = [ChatMessage::user("hello"), ChatMessage::assistant("hi")];
    inner
        .create_session("busy", &SessionMeta::new(), &first)
        .await
        .unwrap();
    let reads = Arc::new(AtomicUsize::new(0));
    let reads_counted = reads.clone();
    let app = app(Arc::new(Intercepted(BusyWriter {
        inner,
        reads: reads_counted,
    })));

    let reply = send(&app, get("/sessions/busy/export?format=json")).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert!(
        reply
            .body
            .contains("kept changing while it was read for export")
            && reply.body.contains("try again when it is idle"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("busy"), "{}", reply.body);
    assert_eq!(reads.load(Ordering::SeqCst), 3, "read three times");
}
