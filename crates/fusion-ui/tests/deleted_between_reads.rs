//! A session deleted between a handler's read of its facts and its read of its messages
//! (another tab's delete, `fusion sessions delete`) is answered as gone (404), not as a
//! session rewritten or one without a turn; an undo's post too.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::StatusCode;
use fusion::ChatMessage;
use fusion::storage::{ConversationStorage, InMemoryStorage, Revision, SessionMeta};
use fusion_core::{Intercept, Intercepted, Result};

use common::*;

/// The store, except that session `.1` is deleted just before its messages are read.
struct DeletedOnRead(Arc<InMemoryStorage>, &'static str);

#[async_trait]
impl Intercept for DeletedOnRead {
    fn inner(&self) -> &dyn ConversationStorage {
        self.0.as_ref()
    }

    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        if session_id == self.1 {
            self.0.delete(session_id).await?;
        }
        self.0.load_revision(session_id).await
    }
}

/// The app over `storage`, deleting session `s` whenever a handler reads its messages.
fn app_deleting_s(storage: &Arc<InMemoryStorage>) -> axum::Router {
    app_over(Arc::new(Intercepted(DeletedOnRead(storage.clone(), "s"))))
}

#[tokio::test]
async fn a_fork_of_a_session_deleted_meanwhile_says_it_was_deleted() {
    // It said the session "was rewritten since its page was shown" (a 409).
    let storage = store();
    let mut history = exchange();
    history.push(ChatMessage::user("Delete a.txt"));
    history.push(ChatMessage::assistant("Done."));
    put(&storage, "s", SessionMeta::new(), &history).await;
    let page = send(&app(storage.clone()), get("/sessions/s")).await.body;

    let app = app_deleting_s(&storage);
    let reply = send(&app, post_form("/sessions/s/fork", &fork_form(&page, 5))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    assert!(reply.body.contains("was deleted"), "{}", reply.body);
    assert!(storage.list_sessions().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_undo_of_a_session_deleted_meanwhile_says_it_was_deleted() {
    // It said the session "changed since its page was shown" (a 409), which a reload
    // cannot fix.
    let storage = store();
    put(&storage, "s", SessionMeta::new(), &exchange()).await;
    let page = send(&app(storage.clone()), get("/sessions/s/undo"))
        .await
        .body;
    let field = |name: &str| {
        let value = page.split(&format!("name=\"{name}\" value=\"")).nth(1);
        value.unwrap().split('"').next().unwrap().to_string()
    };
    let form = format!("generation={}&len={}", field("generation"), field("len"));

    let reply = send(
        &app_deleting_s(&storage),
        post_form("/sessions/s/undo", &form),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    assert!(reply.body.contains("was deleted"), "{}", reply.body);
}

#[tokio::test]
async fn every_page_of_a_session_deleted_meanwhile_is_a_404() {
    // The undo confirmation said the session held no message from the user (a 400).
    let storage = store();
    let app = app_deleting_s(&storage);
    for path in [
        "/sessions/s/undo",
        "/sessions/s",
        "/sessions/s/messages/0",
        "/sessions/s/export?format=json",
    ] {
        put(&storage, "s", SessionMeta::new(), &exchange()).await;
        let reply = send(&app, get(path)).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.body
        );
        assert!(reply.body.contains("No session"), "{path}: {}", reply.body);
    }
}
