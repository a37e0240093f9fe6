//! A message's stored JSON (`GET /sessions/{id}/messages/{n}`), which the transcript's
//! "raw JSON" blocks and copy buttons fetch: the page carries each stored text once, a
//! tool output of megabytes included (the JSON embedded beside it had doubled it); the
//! route serves the message whole and exact, keeps serving it while the session is only
//! appended to, and refuses it once a rewrite may have put another message there.

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use fusion::storage::{Change, ConversationStorage, Expect};
use fusion::{ChatMessage, ToolCall};

use common::*;

/// How often `marker` occurs in `text`.
fn count(text: &str, marker: &str) -> usize {
    text.matches(marker).count()
}

/// Text of about `bytes` bytes, lines of it, ending with `marker` (so no shown head of
/// it holds the marker).
fn big(bytes: usize, marker: &str) -> String {
    let line = "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n";
    let mut text = line.repeat(bytes / line.len());
    text.push_str(marker);
    text
}

#[tokio::test]
async fn a_page_carries_each_text_of_megabytes_once() {
    let output = big(3 << 20, "END-OF-OUTPUT");
    let orphan = big(256 << 10, "END-OF-ORPHAN");
    let answer = big(256 << 10, "END-OF-ANSWER");
    let arguments = serde_json::json!({ "text": big(256 << 10, "END-OF-ARGUMENTS") });
    let messages = vec![
        ChatMessage::user("Dump it"),
        ChatMessage::assistant_with_tool_calls(
            "",
            vec![ToolCall::new("call-1", "dump", arguments.to_string())],
        ),
        ChatMessage::tool_result("call-1", output.as_str()),
        ChatMessage::tool_result("call-unknown", orphan.as_str()),
        ChatMessage::assistant(answer.as_str()),
    ];
    let storage = store();
    put(&storage, "big", Default::default(), &messages).await;
    let app = app(storage);

    let page = send(&app, get("/sessions/big")).await;
    assert_eq!(page.status, StatusCode::OK);
    for marker in [
        "END-OF-OUTPUT",
        "END-OF-ORPHAN",
        "END-OF-ANSWER",
        "END-OF-ARGUMENTS",
    ] {
        assert_eq!(count(&page.body, marker), 1, "{marker} in the page");
    }
    assert!(
        page.body.len() < 5 << 20,
        "{} bytes for 3.75 MB of text",
        page.body.len()
    );
    // A window holding the call but not its result: the card shows it, once.
    let window = send(&app, get("/sessions/big/messages?before=2")).await;
    assert_eq!(count(&window.body, "END-OF-OUTPUT"), 1, "in the window");
    assert_eq!(count(&window.body, "END-OF-ORPHAN"), 0);

    // What "raw JSON" and the copy buttons fetch holds it whole.
    let raw = send(&app, get("/sessions/big/messages/2")).await;
    assert_eq!(raw.status, StatusCode::OK);
    let stored: ChatMessage = serde_json::from_str(&raw.body).unwrap();
    assert_eq!(stored, messages[2]);
    assert!(
        page.body
            .contains(r#"data-json-from="/sessions/big/messages/2?generation="#),
        "the raw JSON block fetches it"
    );
}

#[tokio::test]
async fn the_stored_json_follows_appends_and_is_refused_after_a_rewrite() {
    let storage = store();
    put(&storage, "s", Default::default(), &exchange()).await;
    let app = app(storage.clone());
    let generation = storage.load_revision("s").await.unwrap().1.generation;
    let href = format!("/sessions/s/messages/3?generation={generation}");

    let reply = send(&app, get(&href)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body,
        serde_json::to_string_pretty(&exchange()[3]).unwrap(),
        "whole, pretty-printed, exact"
    );
    storage
        .append("s", &[ChatMessage::user("more")])
        .await
        .unwrap();
    let appended = send(&app, get(&href)).await;
    assert_eq!(appended.status, StatusCode::OK, "positions stay");
    assert_eq!(appended.body, reply.body);

    for (path, status) in [
        ("/sessions/s/messages/99", StatusCode::NOT_FOUND),
        ("/sessions/nobody/messages/0", StatusCode::NOT_FOUND),
        ("/sessions/.x/messages/0", StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(send(&app, get(path)).await.status, status, "{path}");
    }

    // An undo-like rewrite: message 3 may now be another one.
    let now = storage.load_revision("s").await.unwrap().1;
    storage
        .write_if("s", Expect::Exactly(now), Change::Replace(&exchange()[..2]))
        .await
        .unwrap();
    let rewritten = send(&app, get(&href)).await;
    assert_eq!(rewritten.status, StatusCode::CONFLICT, "{}", rewritten.body);
    assert!(
        rewritten.body.contains("reload the page"),
        "{}",
        rewritten.body
    );
    // Opened from the page (htmx), it says so in the refusal box.
    let htmx = request("GET", &href)
        .header("hx-request", "true")
        .body(Body::empty())
        .unwrap();
    let refused = send(&app, htmx).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.header("hx-retarget"), "#refusal");
}
