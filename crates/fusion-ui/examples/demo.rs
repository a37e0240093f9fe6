//! A demo of the UI over a memory store seeded with a few sessions (tool calls, a long
//! transcript, context records, hostile text), for trying the pages by hand:
//! `cargo run -p fusion-ui --example demo [-- ADDR]`, then open the printed URL.

use std::sync::Arc;

use fusion::storage::{ConversationStorage, InMemoryStorage, SessionMeta};
use fusion::{ChatMessage, ToolCall};
use fusion_ui::UiConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| UiConfig::DEFAULT_BIND.to_string());
    let storage = Arc::new(InMemoryStorage::new());
    seed(&storage).await?;
    fusion_ui::serve(storage, UiConfig::new(bind.parse()?), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

async fn seed(storage: &InMemoryStorage) -> fusion::Result<()> {
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
    storage.create_session("chores-1", &meta, &chores).await?;
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
            .await?;
    }
    let long: Vec<ChatMessage> = (0..1_000)
        .map(|i| match i % 2 {
            0 => ChatMessage::user(format!("Step {i}: go on")),
            _ => ChatMessage::assistant(format!("Done with step {i}.")),
        })
        .collect();
    let meta = SessionMeta::new().owner("bob").title("A long session");
    storage.create_session("long-1", &meta, &long).await?;
    Ok(())
}
