//! A page left open while `fusion ui` restarts: its turn's address names no turn of the
//! new process, so its event stream tells it to reload and its Approve button answers
//! nothing, even when the new process asks about another call at the same point of its
//! own first turn (found by an audit: a card showing `delete_file(a.txt)` deleted
//! `b.txt`). Two apps over one store and one directory stand for the two processes.

mod chat_support;
mod common;

use axum::http::StatusCode;
use fusion::agent::ToolRegistry;
use fusion::agent::testing::MockLlmServer;

use chat_support::{Events, answer_of, chat_app, htmx_post, seeded, start_turn};
use common::send;

#[tokio::test]
async fn a_card_from_before_a_restart_answers_no_call_of_the_new_process() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["a.txt", "b.txt"] {
        std::fs::write(dir.path().join(file), file).unwrap();
    }
    let storage = seeded().await;
    let server = MockLlmServer::start().await;
    server
        .push_tool_call("delete_file", r#"{"path":"a.txt"}"#)
        .push_tool_call("delete_file", r#"{"path":"b.txt"}"#)
        .push_text("Deleted b.txt.");
    let tools = || ToolRegistry::with_file_tools([dir.path()]).unwrap();

    // The first process asks about a.txt; the page shows its card.
    let before = chat_app(storage.clone(), &server, tools());
    let old_turn = start_turn(&before, "s1", "delete a.txt").await;
    let mut old_events = Events::open(&before, &format!("{old_turn}/events"), None).await;
    let asked = old_events.until("wants to run").await;
    let old_card = asked.last().unwrap().clone();
    assert!(old_card.data.contains("a.txt"), "{}", old_card.data);
    // The process goes away (its shutdown stops the turn as Stop does).
    send(&before, htmx_post(&format!("{old_turn}/stop"), "")).await;
    old_events.through_end().await;

    // The next process asks about b.txt, in the first turn it runs.
    let after = chat_app(storage.clone(), &server, tools());
    let new_turn = start_turn(&after, "s1", "delete b.txt").await;
    let mut new_events = Events::open(&after, &format!("{new_turn}/events"), None).await;
    let new_card = new_events.until("wants to run").await.pop().unwrap().data;
    assert!(new_card.contains("b.txt"), "{new_card}");

    // The old page's Approve, posted to the new process, approves nothing.
    let (old_href, old_answer) = answer_of(&old_card.data, "approve");
    let stale = send(&after, htmx_post(&old_href, &old_answer)).await;
    assert_eq!(stale.status, StatusCode::NOT_FOUND, "{}", stale.body);
    assert!(stale.body.contains("reload"), "{}", stale.body);
    assert!(
        dir.path().join("b.txt").exists(),
        "the stale card ran nothing"
    );
    assert_ne!(
        new_turn, old_turn,
        "turn addresses do not repeat across runs"
    );

    // Its stream, resuming where it was, is told to reload: its card is replaced.
    let resumed = Events::open(
        &after,
        &format!("{old_turn}/events"),
        old_card.id.as_deref(),
    )
    .await
    .through_end()
    .await;
    assert_eq!(resumed.len(), 1, "{resumed:#?}");
    assert!(resumed[0].data.contains("reload the page"), "{resumed:#?}");
    assert!(!resumed[0].data.contains("<button"), "{resumed:#?}");

    // The old card's call and digest, sent to the question now waiting, are refused: an
    // approval names the call it showed.
    let (new_href, _) = answer_of(&new_card, "approve");
    let (_, old_fields) = answer_of(&old_card.data, "approve");
    let crossed = send(&after, htmx_post(&new_href, &old_fields)).await;
    assert_eq!(crossed.status, StatusCode::CONFLICT, "{}", crossed.body);
    assert!(crossed.body.contains("another call"), "{}", crossed.body);
    assert!(dir.path().join("b.txt").exists(), "nothing was decided");

    // The new page's own card still works.
    let (href, answer) = answer_of(&new_card, "approve");
    let approved = send(&after, htmx_post(&href, &answer)).await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    let end = new_events.through_end().await;
    assert!(end.last().unwrap().data.contains("Finished"), "{end:#?}");
    assert!(!dir.path().join("b.txt").exists(), "approved: deleted");
    assert!(dir.path().join("a.txt").exists(), "never approved: kept");
}

#[tokio::test]
async fn an_approval_without_the_call_it_shows_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "a").unwrap();
    let storage = seeded().await;
    let server = MockLlmServer::start().await;
    server
        .push_tool_call("delete_file", r#"{"path":"a.txt"}"#)
        .push_text("Kept it.");
    let app = chat_app(
        storage,
        &server,
        ToolRegistry::with_file_tools([dir.path()]).unwrap(),
    );
    let turn = start_turn(&app, "s1", "delete a.txt").await;
    let mut events = Events::open(&app, &format!("{turn}/events"), None).await;
    let card = events.until("wants to run").await.pop().unwrap().data;
    let (href, answer) = answer_of(&card, "approve");
    for (form, status) in [
        ("decision=approve", StatusCode::BAD_REQUEST),
        (&answer.replace("digest=", "digest=0"), StatusCode::CONFLICT),
        (&answer.replace("call=", "call=x"), StatusCode::CONFLICT),
    ] {
        let refused = send(&app, htmx_post(&href, form)).await;
        assert_eq!(refused.status, status, "{form}: {}", refused.body);
    }
    assert!(dir.path().join("a.txt").exists(), "nothing was approved");
    let (_, deny) = answer_of(&card, "deny");
    let denied = send(&app, htmx_post(&href, &deny)).await;
    assert_eq!(denied.status, StatusCode::OK, "{}", denied.body);
    events.through_end().await;
    assert!(dir.path().join("a.txt").exists());
}
