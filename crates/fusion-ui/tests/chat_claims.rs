//! A Send and a delete (single, `DELETE`, bulk) or an undo of one session, interleaved:
//! exactly one goes ahead, the other is a 409 saying why. Each test holds one request
//! inside its storage call, between its check and its act, sends the other into that
//! gap, then lets the first go on. Found by an audit: a Send between a delete's check
//! that no turn runs and its delete started a turn on a session about to vanish, and a
//! delete between a Send's check that the session exists and its turn's start removed
//! the session under the turn.

mod chat_support;
mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use fusion::agent::ToolRegistry;
use fusion::agent::testing::MockLlmServer;
use fusion::storage::{Change, ConversationStorage, Expect, InMemoryStorage, SessionInfo};
use fusion_core::{Intercept, Intercepted, Result};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use chat_support::{Events, chat_app_over, htmx_post, seeded, turn_path};
use common::{ORIGIN, Reply, post_form, request, send};

/// The memory store, except that the next call of the method it is told to hold waits,
/// once it has said so, until the test releases it.
struct Gated {
    inner: Arc<InMemoryStorage>,
    hold: Mutex<Option<&'static str>>,
    entered: Notify,
    release: Notify,
}

impl Gated {
    /// Holds the next call of `method`.
    fn hold(&self, method: &'static str) {
        *self.hold.lock().unwrap() = Some(method);
    }

    /// Waits here if `method` is the one to hold (once).
    async fn gate(&self, method: &'static str) {
        let held = {
            let mut hold = self.hold.lock().unwrap();
            hold.take_if(|held| *held == method).is_some()
        };
        if held {
            self.entered.notify_one();
            self.release.notified().await;
        }
    }
}

/// The storage the app is given: every call through [`Gated`].
struct Through(Arc<Gated>);

#[async_trait]
impl Intercept for Through {
    fn inner(&self) -> &dyn ConversationStorage {
        self.0.inner.as_ref()
    }

    async fn delete(&self, session_id: &str) -> Result<()> {
        self.0.gate("delete").await;
        self.inner().delete(session_id).await
    }

    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        self.0.gate("session_info").await;
        self.inner().session_info(session_id).await
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        self.0.gate("write_if").await;
        self.inner().write_if(session_id, expected, change).await
    }
}

/// Waits until the request `task` sends is held at the gate; fails if it was answered
/// without getting there.
async fn until_held(gated: &Gated, task: &mut JoinHandle<Reply>) {
    tokio::select! {
        () = gated.entered.notified() => {}
        reply = task => {
            let reply = reply.unwrap();
            panic!("answered before the call held: {} {}", reply.status, reply.body);
        }
    }
}

/// A chat app over session `s1` (two messages), and the gate in its storage.
async fn gated_app(server: &MockLlmServer) -> (Router, Arc<Gated>) {
    let gated = Arc::new(Gated {
        inner: seeded().await,
        hold: Mutex::new(None),
        entered: Notify::new(),
        release: Notify::new(),
    });
    let storage: Arc<dyn ConversationStorage> = Arc::new(Intercepted(Through(gated.clone())));
    let app = chat_app_over(storage, server, ToolRegistry::default());
    (app, gated)
}

/// The Send of the transcript page's chat box, as htmx posts it.
fn send_message() -> Request<Body> {
    htmx_post("/sessions/s1/chat", "message=hello+again")
}

/// A way to delete `s1` or undo its last turn.
struct Removal {
    what: &'static str,
    /// The storage method it ends in: where it is held.
    method: &'static str,
    request: Request<Body>,
    /// What it answers when it goes ahead.
    done: StatusCode,
}

/// Each way to delete `s1`, and its undo with the form as the page read it.
async fn removals(storage: &InMemoryStorage) -> Vec<Removal> {
    let (_, revision) = storage.load_revision("s1").await.unwrap();
    let undo = format!("generation={}&len={}", revision.generation, revision.len);
    let bulk = format!("id=s1&revision={}+{}+s1", revision.generation, revision.len);
    let delete_now = request("DELETE", "/sessions/s1")
        .header("origin", ORIGIN)
        .body(Body::empty())
        .unwrap();
    let removal = |what, method, request, done| Removal {
        what,
        method,
        request,
        done,
    };
    vec![
        removal(
            "delete",
            "delete",
            post_form("/sessions/s1/delete", ""),
            StatusCode::SEE_OTHER,
        ),
        removal("DELETE", "delete", delete_now, StatusCode::NO_CONTENT),
        removal(
            "bulk delete",
            "write_if",
            post_form("/bulk-delete", &bulk),
            StatusCode::OK,
        ),
        removal(
            "undo",
            "write_if",
            post_form("/sessions/s1/undo", &undo),
            StatusCode::SEE_OTHER,
        ),
    ]
}

#[tokio::test]
async fn a_send_while_a_delete_or_undo_is_under_way_starts_no_turn() {
    let server = MockLlmServer::start().await;
    for at in 0..4 {
        let (app, gated) = gated_app(&server).await;
        let Removal {
            what,
            method,
            request,
            done,
        } = removals(&gated.inner).await.swap_remove(at);
        gated.hold(method);
        let mut removing = tokio::spawn({
            let app = app.clone();
            async move { send(&app, request).await }
        });
        until_held(&gated, &mut removing).await;

        let sent = send(&app, send_message()).await;
        assert_eq!(sent.status, StatusCode::CONFLICT, "{what}: {}", sent.body);
        assert!(
            sent.body.contains("Another request is") && sent.body.contains("session"),
            "{what}: {}",
            sent.body
        );
        assert!(
            !sent.body.contains("sse-connect"),
            "{what}: no turn started"
        );

        gated.release.notify_one();
        let removed: Reply = removing.await.unwrap();
        assert_eq!(removed.status, done, "{what}: {}", removed.body);
        let left = gated.inner.load("s1").await.unwrap();
        assert!(
            left.iter().all(|m| m.content != "hello again"),
            "{what}: the refused message was never stored: {left:#?}"
        );
    }
    assert_eq!(
        server.request_count(),
        0,
        "no turn asked the model anything"
    );
}

#[tokio::test]
async fn a_delete_or_undo_while_a_send_starts_its_turn_is_refused_and_the_turn_is_stored() {
    let server = MockLlmServer::start().await;
    server.push_text("Hello again.");
    let (app, gated) = gated_app(&server).await;
    // The Send's check that the session exists is held.
    gated.hold("session_info");
    let mut sending = tokio::spawn({
        let app = app.clone();
        async move { send(&app, send_message()).await }
    });
    until_held(&gated, &mut sending).await;

    for Removal { what, request, .. } in removals(&gated.inner).await {
        let refused = send(&app, request).await;
        // The bulk page reports the session it left, and why, as the others refuse.
        assert_eq!(
            refused.status,
            StatusCode::CONFLICT,
            "{what}: {}",
            refused.body
        );
        assert!(
            refused.body.contains("A chat turn is starting on session"),
            "{what}: {}",
            refused.body
        );
    }
    assert_eq!(
        gated.inner.load("s1").await.unwrap().len(),
        2,
        "nothing removed"
    );

    gated.release.notify_one();
    let sent = sending.await.unwrap();
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    let mut events = Events::open(&app, &format!("{}/events", turn_path(&sent.body)), None).await;
    let end = events.through_end().await;
    assert!(end.last().unwrap().data.contains("Finished"), "{end:#?}");
    let stored = gated.inner.load("s1").await.unwrap();
    assert_eq!(stored.len(), 4, "the turn is stored whole: {stored:#?}");
    assert_eq!(stored[3].content, "Hello again.");
}
