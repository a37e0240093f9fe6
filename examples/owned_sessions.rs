//! Sessions that belong to someone: create sessions per owner with a title and tags, list
//! one owner's newest first a page at a time, filter by tag, retitle, see that an owner
//! never sees another owner's sessions, and let a session expire and be purged. Storage
//! only, no LLM.
//!
//! ```bash
//! cargo run --example owned_sessions                          # in memory
//! cargo run --example owned_sessions -- sqlite://owned.db     # or any storage URL
//! ```

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fusion::ChatMessage;
use fusion::storage::{
    ConversationStorage, Expiry, MetaUpdate, OwnerScope, SessionMeta, SessionQuery, StorageType,
    list_sessions_page, purge_all_expired,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".to_string());
    let storage_type: StorageType = url.parse()?;
    let storage: Arc<dyn ConversationStorage> =
        storage_type.open().await.context("opening the storage")?;
    println!("storage: {storage_type}");

    // Each owner writes through its own scope: a session it creates gets its owner (and
    // these tags) in the same write as its first message.
    for (owner, topics) in [
        (
            "alice",
            [
                "Rotate the logs",
                "Why is the build slow?",
                "Plan the release",
            ],
        ),
        (
            "bob",
            ["Fix the login page", "Weekly report", "Clean up /tmp"],
        ),
    ] {
        let scope = OwnerScope::new(storage.clone(), owner)?
            .on_create(SessionMeta::new().tags(["example"]))?;
        for (n, topic) in topics.iter().enumerate() {
            let id = format!("{owner}-chat-{n}");
            storage.delete(&id).await?; // a rerun on persistent storage starts clean
            scope.append(&id, &[ChatMessage::user(*topic)]).await?;
            scope
                .update_session(&id, &MetaUpdate::new().title(Some(*topic)))
                .await?;
        }
    }

    // Alice's sessions, newest first, two at a time: each page says where the next starts.
    let mut query = SessionQuery::new().owner("alice").limit(2);
    let mut page_number = 1;
    loop {
        let page = list_sessions_page(storage.as_ref(), &query).await?;
        for info in &page.sessions {
            println!(
                "page {page_number}: {} {:?} ({} message)",
                info.id,
                info.meta.title.as_deref().unwrap_or("-"),
                info.message_count
            );
        }
        match page.next {
            Some(next) => query = query.after(Some(next)),
            None => break,
        }
        page_number += 1;
    }

    // Tag one of bob's sessions and find it by its tag.
    storage
        .update_session("bob-chat-1", &MetaUpdate::new().add_tag("urgent"))
        .await?;
    let urgent = list_sessions_page(storage.as_ref(), &SessionQuery::new().tag("urgent")).await?;
    for info in &urgent.sessions {
        println!(
            "urgent: {} of {}",
            info.id,
            info.meta.owner.as_deref().unwrap_or("-")
        );
    }

    // Bob's scope sees none of alice's sessions, and cannot write to them.
    let bob = OwnerScope::new(storage.clone(), "bob")?;
    println!(
        "bob sees alice-chat-0: {} messages",
        bob.load("alice-chat-0").await?.len()
    );
    match bob.append("alice-chat-0", &[ChatMessage::user("hi")]).await {
        Err(err) => println!("bob writing to alice-chat-0: {err}"),
        Ok(()) => anyhow::bail!("an owner wrote another owner's session"),
    }

    // A scratch session that expires 200 ms after its last write: gone for every reader
    // from then on, and purged (its space freed) in bounded batches.
    storage.delete("scratch").await?;
    let idle = SessionMeta::new().expiry(Expiry::Idle(Duration::from_millis(200)));
    storage
        .create_session("scratch", &idle, &[ChatMessage::user("temporary")])
        .await?;
    let expires = storage
        .session_info("scratch")
        .await?
        .and_then(|i| i.expires_at);
    println!("scratch expires at {expires:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "after 300 ms scratch holds {} messages; purged {} expired session(s)",
        storage.load("scratch").await?.len(),
        purge_all_expired(storage.as_ref(), 100).await?
    );
    Ok(())
}
