//! Following the changes other processes make to sessions on Redis, as they happen.
//!
//! ```bash
//! cargo run --example redis_changes [REDIS_URL]     # default redis://127.0.0.1:6379
//! ```
//! One storage subscribes to the changes published under a key prefix of this run's own
//! (`redis-changes-demo-PID`); a second one, as another process would, appends to a
//! session, replaces it and deletes it. Each change is printed as it arrives, in the
//! order it was made. Writers publish only when opened with `publish_changes(true)`.

use std::process::ExitCode;
use std::time::Duration;

use fusion::ChatMessage;
use fusion::storage::{
    ChangeKind, ConversationStorage, RedisOptions, RedisStorage, SessionChange, SessionChanges,
};
use futures::StreamExt;

const SESSION: &str = "demo";
/// How long to wait for a change whose write went through before giving up.
const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string());
    match run(&url).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str) -> anyhow::Result<()> {
    let options = RedisOptions::new()
        .key_prefix(format!("redis-changes-demo-{}", std::process::id()))
        .publish_changes(true);
    let watcher = RedisStorage::connect_with(url, options.clone()).await?;
    let writer = RedisStorage::connect_with(url, options).await?;
    let mut changes = watcher.subscribe_changes().await?;
    println!("subscribed to {}", changes.channel());

    // Each write, then the change it published: a write that fails stops the demo at
    // once, and a change that does not come within `PATIENCE` too.
    let hello = ChatMessage::user("Find the log files in /tmp.");
    let found = ChatMessage::assistant("There are two: a.log and b.log.");
    writer.append(SESSION, std::slice::from_ref(&hello)).await?;
    print_next(&mut changes).await?;
    writer.append(SESSION, &[found]).await?;
    print_next(&mut changes).await?;
    writer.save(SESSION, &[hello]).await?;
    print_next(&mut changes).await?;
    writer.delete(SESSION).await?;
    let last = print_next(&mut changes).await?;
    anyhow::ensure!(
        last.kind == ChangeKind::Deleted,
        "expected the deletion, got {last:?}"
    );
    println!("the session is gone; 4 changes followed");
    Ok(())
}

async fn print_next(changes: &mut SessionChanges) -> anyhow::Result<SessionChange> {
    let next = tokio::time::timeout(PATIENCE, changes.next()).await;
    let change = next
        .map_err(|_| anyhow::anyhow!("no change within {PATIENCE:?}"))?
        .ok_or_else(|| anyhow::anyhow!("the subscription ended"))??;
    let plural = if change.len == 1 { "" } else { "s" };
    println!(
        "{} {}: {} message{plural}",
        change.kind, change.session_id, change.len
    );
    Ok(change)
}
