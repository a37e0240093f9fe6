//! The stores the browser tests and screenshots are taken over: the same sessions as
//! `examples/demo.rs` (a tool exchange, a dozen short sessions of two owners, a long
//! transcript), in the same order, plus a hostile session whose payloads would leave a
//! mark if any of them ran.
//!
//! Deterministic but for the times the store stamps (creation and update).

use std::sync::Arc;

use fusion::storage::{ConversationStorage, InMemoryStorage, SessionMeta};
use fusion::{ChatMessage, ToolCall};

/// The session with a tool call and its result.
pub const CHORES: &str = "chores-1";
/// The 1,000-message session.
pub const LONG: &str = "long-1";
/// The session of hostile text.
pub const HOSTILE: &str = "xss-1";
/// Messages in [`LONG`].
pub const LONG_MESSAGES: usize = 1_000;

/// What each payload would do if it ran: set this window flag...
pub const FLAG: &str = "__fusion_pwned";
/// ...and change the page's title to this.
pub const PWNED_TITLE: &str = "pwned";
/// The text of the `javascript:` link in [`HOSTILE`].
pub const LINK_TEXT: &str = "claim your prize";

/// The demo's sessions, in a fresh memory store.
pub async fn demo_store() -> Arc<InMemoryStorage> {
    let storage = Arc::new(InMemoryStorage::new());
    seed_demo(&storage).await;
    storage
}

/// The demo's sessions and [`HOSTILE`], in a fresh memory store.
pub async fn hostile_store() -> Arc<InMemoryStorage> {
    let storage = demo_store().await;
    seed_hostile(&storage).await;
    storage
}

async fn seed_demo(storage: &InMemoryStorage) {
    let chores = [
        ChatMessage::system("You manage files in the user's project."),
        ChatMessage::user("Which **text files** are in `/tmp`?"),
        ChatMessage::assistant_with_tool_calls(
            "Let me look.",
            vec![ToolCall::new(
                "call-1",
                "list_files",
                r#"{"path":"/tmp","pattern":"*.txt"}"#,
            )],
        ),
        ChatMessage::tool_result(
            "call-1",
            "notes.txt\ntodo.txt\n<script>alert('x')</script>.txt",
        ),
        ChatMessage::assistant(
            "There are three:\n\n| file | note |\n|---|---|\n| `notes.txt` | |\n| `todo.txt` | |\n\
             | `<script>…</script>.txt` | an odd name |\n\n[Docs](https://example.com) \
             [not a link](javascript:alert(1))",
        ),
    ];
    let meta = SessionMeta::new()
        .owner("ann")
        .title("Tidy /tmp")
        .tags(["files", "ops"]);
    storage
        .create_session(CHORES, &meta, &chores)
        .await
        .unwrap();
    for i in 0..12 {
        let meta = SessionMeta::new()
            .owner(if i % 3 == 0 { "bob" } else { "ann" })
            .tags(if i % 2 == 0 {
                vec!["ops"]
            } else {
                vec!["research"]
            });
        let messages = [
            ChatMessage::user(format!("Question {i}")),
            ChatMessage::assistant(format!("Answer {i}")),
        ];
        storage
            .create_session(&format!("session-{i:02}"), &meta, &messages)
            .await
            .unwrap();
    }
    let long: Vec<ChatMessage> = (0..LONG_MESSAGES)
        .map(|i| match i % 2 {
            0 => ChatMessage::user(format!("Step {i}: go on")),
            _ => ChatMessage::assistant(format!("Done with step {i}.")),
        })
        .collect();
    let meta = SessionMeta::new().owner("bob").title("A long session");
    storage.create_session(LONG, &meta, &long).await.unwrap();
}

/// Each way hostile text could try to run: a script tag, an image's error handler, a
/// `javascript:` link in markdown and in raw HTML, an SVG's onload; each would set
/// [`FLAG`] and the title.
fn payloads() -> String {
    let act = format!("window.{FLAG}=1;document.title='{PWNED_TITLE}'");
    format!(
        "<script>{act}</script>\n\n<img src=x onerror=\"{act}\">\n\n\
         [{LINK_TEXT}](javascript:{act})\n\n<a href=\"javascript:{act}\">raw link</a>\n\n\
         <svg onload=\"{act}\"></svg>"
    )
}

async fn seed_hostile(storage: &InMemoryStorage) {
    let payloads = payloads();
    let messages = [
        ChatMessage::user(format!("Summarise this page:\n\n{payloads}")),
        ChatMessage::assistant_with_tool_calls(
            payloads.clone(),
            vec![ToolCall::new(
                "call-x",
                "fetch_page",
                serde_json::json!({ "url": "https://example.com", "note": payloads }).to_string(),
            )],
        ),
        ChatMessage::tool_result("call-x", payloads.clone()),
        ChatMessage::assistant(payloads.clone()),
    ];
    let meta = SessionMeta::new()
        .owner("mallory")
        .title(format!(
            "<script>window.{FLAG}=1</script><img src=x onerror=\"window.{FLAG}=1\">"
        ))
        .tags(["xss"]);
    storage
        .create_session(HOSTILE, &meta, &messages)
        .await
        .unwrap();
}
