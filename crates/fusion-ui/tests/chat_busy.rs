//! Undo and delete wait for the chat's running turn: while a turn of this app runs on a
//! session (here, one waiting for its delete to be approved), undoing its last turn or
//! deleting it is refused with a 409 saying to stop the turn first, on the confirmation
//! pages and on their posts; a bulk delete leaves it out, saying why. Found by an audit: an undo went through, the card was then
//! approved, the file deleted, and the turn failed on its write, so the session kept no
//! record of the deletion.

mod chat_support;
mod common;

use axum::http::StatusCode;
use fusion::agent::ToolRegistry;
use fusion::agent::testing::MockLlmServer;
use fusion::storage::ConversationStorage;

use chat_support::{Events, answer_of, chat_app, htmx_post, seeded, start_turn};
use common::{get, post_form, request, send};

#[tokio::test]
async fn undo_and_delete_are_refused_while_a_turn_runs_and_allowed_after() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "a").unwrap();
    let storage = seeded().await;
    let server = MockLlmServer::start().await;
    server
        .push_tool_call("delete_file", r#"{"path":"a.txt"}"#)
        .push_text("Deleted a.txt.");
    let tools = ToolRegistry::with_file_tools([dir.path()]).unwrap();
    let app = chat_app(storage.clone(), &server, tools);
    let turn = start_turn(&app, "s1", "delete a.txt").await;
    let mut events = Events::open(&app, &format!("{turn}/events"), None).await;
    let card = events.until("wants to run").await.pop().unwrap().data;

    let (history, revision) = storage.load_revision("s1").await.unwrap();
    let undo = format!("generation={}&len={}", revision.generation, revision.len);
    let delete_now = request("DELETE", "/sessions/s1")
        .header("origin", common::ORIGIN)
        .body(axum::body::Body::empty())
        .unwrap();
    for (what, reply) in [
        ("undo page", send(&app, get("/sessions/s1/undo")).await),
        (
            "undo",
            send(&app, post_form("/sessions/s1/undo", &undo)).await,
        ),
        ("delete page", send(&app, get("/sessions/s1/delete")).await),
        (
            "delete",
            send(&app, post_form("/sessions/s1/delete", "")).await,
        ),
        ("DELETE", send(&app, delete_now).await),
    ] {
        assert_eq!(reply.status, StatusCode::CONFLICT, "{what}: {}", reply.body);
        assert!(
            reply.body.contains("Stop the turn first"),
            "{what}: {}",
            reply.body
        );
        assert!(!reply.body.contains("<button"), "{what}: nothing to press");
    }
    // Bulk delete leaves it too, saying why, and the page is the failure page.
    let bulk = send(&app, post_form("/bulk-delete", "id=s1")).await;
    assert_eq!(bulk.status, StatusCode::CONFLICT, "{}", bulk.body);
    assert!(bulk.body.contains("stop the turn first"), "{}", bulk.body);
    assert_eq!(
        storage.load("s1").await.unwrap(),
        history,
        "nothing removed"
    );

    // The question is answered, the call runs and the turn stores it.
    let (href, approve) = answer_of(&card, "approve");
    let approved = send(&app, htmx_post(&href, &approve)).await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    let end = events.through_end().await;
    assert!(end.last().unwrap().data.contains("Finished"), "{end:#?}");
    assert!(!dir.path().join("a.txt").exists());
    let stored = storage.load("s1").await.unwrap();
    assert!(
        stored.iter().any(|m| m.content.contains("approved")),
        "the session records the deletion: {stored:#?}"
    );

    // With the turn over, both go ahead.
    let page = send(&app, get("/sessions/s1/undo")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let deleted = send(&app, post_form("/sessions/s1/delete", "")).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    assert!(storage.load("s1").await.unwrap().is_empty());
}
