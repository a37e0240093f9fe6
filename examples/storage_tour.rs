//! A tour of conversation storage: write a session, reopen the store, read it back, list
//! and delete sessions, on any backend, without an LLM.
//!
//! ```bash
//! cargo run --example storage_tour                         # ./sessions on disk
//! cargo run --example storage_tour -- sqlite://tour.db     # or any storage URL
//! cargo run --example storage_tour -- redis://127.0.0.1:6379
//! ```

use anyhow::Context;
use fusion::api::session::{self, StorageType};
use fusion::{ChatMessage, ToolCall};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "./sessions".to_string());
    let storage_type: StorageType = url.parse()?;
    println!("storage: {storage_type}");

    // Write one turn of a conversation, the way an agent session does: one append per step.
    let store = storage_type.open().await.context("opening the storage")?;
    let id = "storage-tour";
    store.delete(id).await?;
    store
        .append(
            id,
            &[ChatMessage::system("You are a helpful file assistant.")],
        )
        .await?;
    store
        .append(id, &[ChatMessage::user("What files are in /tmp?")])
        .await?;
    store
        .append(
            id,
            &[ChatMessage::assistant_with_tool_calls(
                "",
                vec![ToolCall::new(
                    "call_1",
                    "list_directory",
                    r#"{"path":"/tmp"}"#,
                )],
            )],
        )
        .await?;
    store
        .append(
            id,
            &[ChatMessage::tool_result("call_1", "notes.txt\ntodo.txt")],
        )
        .await?;
    store
        .append(
            id,
            &[ChatMessage::assistant("/tmp holds notes.txt and todo.txt.")],
        )
        .await?;
    drop(store);

    // A fresh instance, as after a restart, sees everything.
    let reopened = storage_type.open().await?;
    let history = reopened.load(id).await?;
    println!(
        "\nsession {id:?} after reopening: {} messages",
        history.len()
    );
    for message in &history {
        let calls: Vec<String> = message
            .tool_calls
            .iter()
            .map(|c| format!("{}({})", c.name, c.arguments))
            .collect();
        let text = if calls.is_empty() {
            message.content.clone()
        } else {
            format!("calls {}", calls.join(", "))
        };
        println!(
            "  {:<9} {}",
            message.role.as_str(),
            text.replace('\n', " | ")
        );
    }

    reopened
        .append("storage-tour-2", &[ChatMessage::user("hello")])
        .await?;
    println!(
        "\nsessions: {:?}",
        session::list_all_sessions(&storage_type).await?
    );
    if let Some(info) = session::session_info(id, &storage_type).await? {
        println!("{id}: {} messages", info.message_count);
    }
    session::delete_session("storage-tour-2", &storage_type).await?;
    println!(
        "after delete: {:?}",
        session::list_all_sessions(&storage_type).await?
    );

    // Hostile ids are refused before anything touches storage.
    let err = reopened.load("../etc/passwd").await.unwrap_err();
    println!("\nloading \"../etc/passwd\": {err}");
    Ok(())
}
