//! Following the changes other processes make to sessions on Redis, as they happen.
//!
//! ```bash
//! cargo run --example redis_changes [REDIS_URL]     # default redis://127.0.0.1:6379
//! ```
//! One storage subscribes to the changes published under the key prefix
//! `redis-changes-demo`; a second one, as another process would, appends to a session,
//! replaces it, truncates it and deletes it. Each change is printed as it arrives, in the
//! order it was made. Writers publish only when opened with `publish_changes(true)`.

use std::process::ExitCode;

use fusion::ChatMessage;
use fusion::storage::{ChangeKind, ConversationStorage, RedisOptions, RedisStorage, SessionChange};
use futures::StreamExt;

const PREFIX: &str = "redis-changes-demo";
const SESSION: &str = "demo";

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

async fn run(url: &str) -> fusion::Result<()> {
    let options = RedisOptions::new().key_prefix(PREFIX).publish_changes(true);
    let watcher = RedisStorage::connect_with(url, options.clone()).await?;
    let writer = RedisStorage::connect_with(url, options).await?;
    writer.delete(SESSION).await?; // a clean start, before subscribing
    let mut changes = watcher.subscribe_changes().await?;
    println!("subscribed to {}", changes.channel());

    let writes = async {
        let hello = ChatMessage::user("Find the log files in /tmp.");
        let found = ChatMessage::assistant("There are two: a.log and b.log.");
        writer.append(SESSION, std::slice::from_ref(&hello)).await?;
        writer.append(SESSION, &[found]).await?;
        writer.save(SESSION, &[hello]).await?;
        writer.truncate(SESSION, 0).await?;
        Ok::<_, fusion::Error>(())
    };
    let follow = async {
        let mut seen = Vec::new();
        while let Some(change) = changes.next().await {
            let change = change?;
            println!("{}", describe(&change));
            let done = change.kind == ChangeKind::Deleted;
            seen.push(change);
            if done {
                break;
            }
        }
        Ok::<_, fusion::Error>(seen)
    };
    let (wrote, seen) = tokio::join!(writes, follow);
    wrote?;
    println!("{} changes followed", seen?.len());
    Ok(())
}

fn describe(change: &SessionChange) -> String {
    let plural = if change.len == 1 { "" } else { "s" };
    format!(
        "{} {}: {} message{plural}",
        change.kind, change.session_id, change.len
    )
}
