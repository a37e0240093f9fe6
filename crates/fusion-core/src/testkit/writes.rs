//! Every write a stored session can take, for a backend's tests that check each of them
//! meets a damaged session the same way (refused, naming the session, nothing written).

use std::fmt::Debug;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{
    Change, ChatMessage, ConversationStorage, Error, Expect, MetaUpdate, Result, Revision,
    SessionMeta, SessionTimes,
};

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

/// Whether the conditional writes of [`every_write_is_refused`] carry expectations the
/// damaged session meets (its revision as loaded before the damage) or ones it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectations {
    /// [`every_write`] on the session's generation, a metadata update (title, owner and a
    /// tag), and a truncate under `UnwrittenSince` its revision and now.
    Met,
    /// [`every_write`] on a generation the session does not have; a conditional append
    /// expecting no session, the exact revision of one more message, and `UnwrittenSince`
    /// that revision; and a creation of the session that exists, with and without times.
    /// A backend must not call these `Conflict` when the session's own row is damaged:
    /// a reload and retry would only meet the damage.
    Unmet,
}

/// Creates session `id` afresh (deleting any first) with two messages and `meta`, runs
/// `damage` on it (a hand edit of its stored row), then every write [`Expectations`]
/// lists; returns what went wrong, empty when each write was an error `refused` accepts,
/// `snapshot` (the backend's stored rows, as the test reads them) was the same after the
/// writes as before them, and the session's messages still load.
///
/// Kept in one place so that each SQL backend's tests of damaged times meet the same
/// writes with the same expectations: they grew as near-copies of each other.
pub async fn every_write_is_refused<S, T>(
    storage: &S,
    id: &str,
    meta: &SessionMeta,
    expectations: Expectations,
    damage: impl AsyncFnOnce(),
    mut snapshot: impl AsyncFnMut() -> T,
    refused: impl Fn(&Error) -> bool,
) -> Vec<String>
where
    S: ConversationStorage + ?Sized,
    T: PartialEq + Debug,
{
    let history = [ChatMessage::user("a"), ChatMessage::user("b")];
    storage.delete(id).await.expect("deleting the session");
    storage
        .create_session(id, meta, &history)
        .await
        .expect("creating the session");
    let (_, revision) = storage.load_revision(id).await.expect("its revision");
    damage().await;
    let before = snapshot().await;
    let writes = match expectations {
        Expectations::Met => met_writes(storage, id, revision).await,
        Expectations::Unmet => unmet_writes(storage, id, meta, revision, &history).await,
    };
    let mut wrong: Vec<String> = writes
        .into_iter()
        .filter_map(|(what, result)| match result {
            Ok(()) => Some(format!("{what}: written")),
            Err(e) if refused(&e) => None,
            Err(e) => Some(format!("{what}: {e:?}")),
        })
        .collect();
    let after = snapshot().await;
    if after != before {
        wrong.push(format!(
            "something was written: {before:?} became {after:?}"
        ));
    }
    match storage.load(id).await {
        Ok(loaded) if loaded == history => {}
        other => wrong.push(format!("its messages no longer load: {other:?}")),
    }
    wrong
}

/// The writes of [`Expectations::Met`].
async fn met_writes<S>(storage: &S, id: &str, revision: Revision) -> Vec<(&'static str, Result<()>)>
where
    S: ConversationStorage + ?Sized,
{
    let mut writes = every_write(storage, id, Expect::Generation(revision.generation)).await;
    let retag = MetaUpdate::new()
        .title(Some("t"))
        .owner(Some("o"))
        .add_tag("t");
    let updated = storage.update_session(id, &retag).await;
    writes.push(("update_session", updated.map(drop)));
    let since = Expect::UnwrittenSince {
        revision,
        since: SystemTime::now(),
    };
    let truncated = storage.write_if(id, since, Change::Truncate(1)).await;
    writes.push(("write_if since", truncated.map(drop)));
    writes
}

/// The writes of [`Expectations::Unmet`].
async fn unmet_writes<S>(
    storage: &S,
    id: &str,
    meta: &SessionMeta,
    revision: Revision,
    history: &[ChatMessage],
) -> Vec<(&'static str, Result<()>)>
where
    S: ConversationStorage + ?Sized,
{
    let wrong = Expect::Generation(revision.generation.wrapping_add(1));
    let mut writes = every_write(storage, id, wrong).await;
    let stale = Revision {
        len: revision.len + 1,
        ..revision
    };
    let since = Expect::UnwrittenSince {
        revision: stale,
        since: SystemTime::now(),
    };
    for (what, expect) in [
        ("write_if absent", Expect::Generation(0)),
        ("write_if exactly", Expect::Exactly(stale)),
        ("write_if since", since),
    ] {
        let result = storage.write_if(id, expect, Change::Append(history)).await;
        writes.push((what, result.map(drop)));
    }
    let created = storage.create_session(id, meta, history).await;
    writes.push(("create_session", created.map(drop)));
    let times = SessionTimes::new(UNIX_EPOCH, UNIX_EPOCH);
    let created = storage
        .create_session_with_times(id, meta, history, times)
        .await;
    writes.push(("create_session_with_times", created.map(drop)));
    writes
}
