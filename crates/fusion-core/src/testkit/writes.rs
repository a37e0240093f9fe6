//! Every write a stored session can take, for a backend's tests that check each of them
//! meets a damaged session the same way (refused, naming the session, nothing written).

use crate::{Change, ChatMessage, ConversationStorage, Expect, Result};

/// Runs, in turn on session `id` of `storage`, an append (with and without ids), a save, a
/// truncate to one message, and a conditional append, replace, rewrite and truncate on
/// condition `expect`; returns each result under its name. Meant for a session every one
/// of them is refused on: on a sound one, each write changes what the next meets.
pub async fn every_write<S>(
    storage: &S,
    id: &str,
    expect: Expect,
) -> Vec<(&'static str, Result<()>)>
where
    S: ConversationStorage + ?Sized,
{
    let more = [ChatMessage::user("more")];
    let ided = [ChatMessage::user("more, with an id").with_new_id()];
    let conditional = |change| async move { storage.write_if(id, expect, change).await.map(drop) };
    vec![
        ("append", storage.append(id, &more).await),
        ("append with ids", storage.append(id, &ided).await),
        ("save", storage.save(id, &more).await),
        ("truncate", storage.truncate(id, 1).await),
        ("write_if append", conditional(Change::Append(&ided)).await),
        (
            "write_if replace",
            conditional(Change::Replace(&more)).await,
        ),
        (
            "write_if rewrite",
            conditional(Change::Rewrite(&more)).await,
        ),
        ("write_if truncate", conditional(Change::Truncate(1)).await),
    ]
}
