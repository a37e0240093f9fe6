//! `fusion sessions watch`: each change to a Redis storage's sessions, printed as it
//! happens, one line each, in the order each session's changes were made.
//!
//! Redis publishes a change only when the storage that made it was opened with
//! `publish_changes=true` in its URL (`RedisOptions::publish_changes` in code); other
//! backends publish nothing, so watching one is refused. The subscription is the
//! library's `RedisStorage::subscribe_changes`: notices, not a log, so changes made
//! before the watch starts, or while its connection is down, are not shown.
//!
//! Anyone who can `PUBLISH` on the server can put a message on the channel. The library
//! gives a change only for a session id a storage could hold (`fusion::SessionId`), so
//! the id printed holds no line feed (which would print a forged change of its own) and
//! no escape sequence; any other message is an error item, a warning here, shown escaped.

use std::io::Write;

use anyhow::{Context, Result, bail};
use fusion::storage::SessionChange;
use futures::StreamExt;

use crate::render;
use crate::store::Store;

/// `sessions watch [--count N]`: prints changes until `count` have been printed, or
/// forever without it (Ctrl-C stops). Fails when the subscription ends (the connection
/// to Redis dropped).
pub async fn watch(store: &Store, count: Option<u64>) -> Result<()> {
    let redis = store
        .kind()
        .open_redis()
        .await
        .with_context(|| format!("cannot watch storage {}", store.kind()))?;
    let mut changes = redis.subscribe_changes().await?;
    // On stderr, so stdout holds only changes; a script waits for it before writing.
    render::note(format_args!(
        "watching {} (writers publish with publish_changes=true in their storage URL)",
        changes.channel()
    ));
    let mut printed = 0;
    while count.is_none_or(|count| printed < count) {
        match changes.next().await {
            Some(Ok(change)) => {
                let mut out = render::stdout();
                writeln!(out, "{}", line(&change))?;
                out.flush()?;
                printed += 1;
            }
            // Someone else's message on the channel: said, and the watch goes on.
            Some(Err(err)) => render::note(format_args!("warning: {err}")),
            None => bail!(
                "the subscription to {} ended: the connection to Redis dropped",
                changes.channel()
            ),
        }
    }
    Ok(())
}

/// `appended  user-1  12 messages  generation 1733370000123456`.
fn line(change: &SessionChange) -> String {
    let plural = if change.len == 1 { "" } else { "s" };
    format!(
        "{:<9}  {}  {} message{plural}  generation {}",
        change.kind.as_str(),
        change.session_id,
        change.len,
        change.generation
    )
}
