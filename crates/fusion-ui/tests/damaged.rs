//! A session whose facts cannot be read (a damaged metadata file on the fs backend) can
//! still be deleted from the pages: the confirmations say what is wrong instead of
//! failing, and the delete, which reads none of it, goes through. A damaged fork does not
//! stop the next fork of its session.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::StatusCode;
use fusion::storage::{ConversationStorage, InMemoryStorage, SessionInfo, SessionMeta};
use fusion_core::{Error, Intercept, Intercepted, Result};

use common::*;

/// The store, except that the facts of the session it names cannot be read, as when its
/// metadata file is not JSON.
struct Damaged(Arc<InMemoryStorage>, &'static str);

#[async_trait]
impl Intercept for Damaged {
    fn inner(&self) -> &dyn ConversationStorage {
        self.0.as_ref()
    }

    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        if session_id == self.1 {
            return Err(Error::corrupt(
                "fs",
                session_id,
                "its metadata file is not JSON",
            ));
        }
        self.0.session_info(session_id).await
    }
}

/// The app over `storage`, except that the facts of session `damaged` cannot be read.
fn app_damaging(storage: &Arc<InMemoryStorage>, damaged: &'static str) -> axum::Router {
    app_over(Arc::new(Intercepted(Damaged(storage.clone(), damaged))))
}

#[tokio::test]
async fn a_session_whose_facts_cannot_be_read_is_asked_about_and_deleted() {
    let storage = store();
    put(&storage, "damaged", SessionMeta::new(), &exchange()).await;
    put(&storage, "fine", SessionMeta::new(), &exchange()).await;
    let app = app_damaging(&storage, "damaged");

    let reply = send(&app, get("/sessions/damaged/delete")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(
        reply.body.contains("its metadata file is not JSON"),
        "{}",
        reply.body
    );
    let reply = send(&app, get("/bulk-delete?id=damaged&id=fine")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains("(damaged: "), "{}", reply.body);
    assert!(reply.body.contains("messages)"), "{}", reply.body);
    let bulk = bulk_form(&reply.body);
    let reply = send(&app, get("/sessions/gone/delete")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    let reply = send(&app, post_form("/sessions/damaged/delete", "")).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(storage.list_sessions().await.unwrap(), ["fine"]);

    // The bulk confirmation's form deletes a damaged session as listed, whatever it holds.
    put(&storage, "damaged", SessionMeta::new(), &exchange()).await;
    let reply = send(&app, post_form("/bulk-delete", &bulk)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(storage.list_sessions().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_damaged_fork_does_not_stop_the_next() {
    // A post carrying its page's token read each taken fork id to find its own fork, and
    // a damaged one failed every fork of the session with a 500.
    let storage = store();
    put(&storage, "s", SessionMeta::new(), &exchange()).await;
    put(&storage, "s-fork-1", SessionMeta::new(), &exchange()).await;
    let app = app_damaging(&storage, "s-fork-1");
    let page = send(&app, get("/sessions/s")).await.body;

    let reply = send(&app, post_form("/sessions/s/fork", &fork_form(&page, 1))).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(reply.header("location"), "/sessions/s-fork-2");
}
