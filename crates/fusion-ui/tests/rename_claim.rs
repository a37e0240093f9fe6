//! A rename from this app while a delete of this app is between its check of the
//! session's metadata and its write waits its turn (a 409 saying a delete runs).
//!
//! Found by a hunt: a delete's page compares the title, tags and metadata it showed
//! before its write, and the write cannot compare them (no storage condition does), so a
//! rename in another tab landing between the two was deleted unseen wherever it left the
//! last write as it was (a clock set back). Renames and deletes of one app now hold the
//! session's claim, so the two never interleave; a writer in another process still can
//! (see `routes/delete.rs`).

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use fusion::storage::{ConversationStorage, InMemoryStorage, SessionMeta};
use fusion_core::{Intercept, Intercepted, Result};

use common::{ORIGIN, app_over, exchange, post_form, put, request, send};

/// The memory store, except that its delete first sends a rename of the session through
/// the app, as another tab would in that instant, and keeps the answer's status.
struct RenamedMeanwhile {
    inner: Arc<InMemoryStorage>,
    app: OnceLock<Router>,
    rename: Mutex<Option<StatusCode>>,
}

/// The storage the app is given: every call through [`RenamedMeanwhile`].
struct Through(Arc<RenamedMeanwhile>);

#[async_trait]
impl Intercept for Through {
    fn inner(&self) -> &dyn ConversationStorage {
        self.0.inner.as_ref()
    }

    async fn delete(&self, session_id: &str) -> Result<()> {
        let app = self.0.app.get().expect("the app is made");
        let path = format!("/sessions/{session_id}/title");
        let reply = send(app, post_form(&path, "title=renamed")).await;
        *self.0.rename.lock().unwrap() = Some(reply.status);
        self.0.inner.delete(session_id).await
    }
}

#[tokio::test]
async fn a_rename_while_this_app_deletes_the_session_is_refused_not_deleted_unseen() {
    let inner = Arc::new(InMemoryStorage::new());
    put(&inner, "s", SessionMeta::new(), &exchange()).await;
    let storage = Arc::new(RenamedMeanwhile {
        inner: inner.clone(),
        app: OnceLock::new(),
        rename: Mutex::new(None),
    });
    let app = app_over(Arc::new(Intercepted(Through(storage.clone()))));
    storage.app.set(app.clone()).ok();

    let delete = request("DELETE", "/sessions/s")
        .header("origin", ORIGIN)
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, delete).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(
        *storage.rename.lock().unwrap(),
        Some(StatusCode::CONFLICT),
        "the rename waits its turn: it is told a delete runs, not done and deleted"
    );
    assert!(inner.session_info("s").await.unwrap().is_none());
}
