//! The conformance cases of message ids: an append never stores a message whose id is
//! among the session's last [`DEDUP_WINDOW`] messages, whichever
//! write path it takes (`append`, a conditional append, `create_session`), while others
//! append in between, across rewrites, and when two instances race with one batch.
//!
//! [`lost_replies_are_retried_exactly_once`] is not a conformance case: it runs a storage
//! behind a fault (a wrapper or a TCP proxy) that applies a write and then loses its
//! reply, the way each backend's `tests/exactly_once.rs` does.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{StorageHarness, info, open, said};
use crate::{
    Change, ChatMessage, ConversationStorage, DEDUP_WINDOW, Error, Expect, MessageId, SessionMeta,
    SessionTimes, from_unix_micros, unix_micros,
};

/// `n` user messages `{prefix}-{i}`, each with a fresh id.
pub fn with_ids(prefix: &str, n: usize) -> Vec<ChatMessage> {
    (0..n)
        .map(|i| ChatMessage::user(format!("{prefix}-{i}")).with_new_id())
        .collect()
}

fn contents(history: &[ChatMessage]) -> Vec<&str> {
    history.iter().map(|m| m.content.as_str()).collect()
}

/// Ids round-trip; appending the same batch again, or a batch overlapping the stored
/// tail, stores only what is new; messages without ids are always stored.
pub async fn an_append_stores_each_id_once<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let batch = with_ids("a", 2);
    store.append("ids", &batch).await.unwrap();
    let (history, first) = store.load_revision("ids").await.unwrap();
    assert_eq!(history, batch, "ids round-trip with their messages");

    store.append("ids", &batch).await.unwrap();
    let (history, again) = store.load_revision("ids").await.unwrap();
    assert_eq!(history, batch, "the same batch again stores nothing");
    assert_eq!(again, first, "and changes neither length nor generation");

    let next = ChatMessage::user("b").with_new_id();
    let overlap = [batch[1].clone(), next.clone()];
    store.append("ids", &overlap).await.unwrap();
    let history = store.load("ids").await.unwrap();
    assert_eq!(contents(&history), ["a-0", "a-1", "b"], "only the new one");
    assert_eq!(history[2], next);

    let plain = ChatMessage::user("no id");
    store
        .append("ids", std::slice::from_ref(&plain))
        .await
        .unwrap();
    store
        .append("ids", std::slice::from_ref(&plain))
        .await
        .unwrap();
    let history = store.load("ids").await.unwrap();
    assert_eq!(
        contents(&history)[3..],
        ["no id", "no id"],
        "no id, no check"
    );
    let info = super::info(&store, "ids").await;
    assert_eq!(info.message_count, 5, "the count saw no duplicate either");
}

/// A retry finds its messages while other writers appended up to the window after them,
/// through another instance too.
pub async fn a_retry_finds_its_messages_after_others_appended<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let other = open(harness).await;
    let mine = with_ids("mine", 2);
    store.append("busy", &mine).await.unwrap();
    for turn in 0..(DEDUP_WINDOW - 2) / 2 {
        other
            .append("busy", &said(&format!("t{turn}")))
            .await
            .unwrap();
    }
    store.append("busy", &mine).await.unwrap();
    other.append("busy", &mine[1..]).await.unwrap();
    let history = store.load("busy").await.unwrap();
    assert_eq!(
        history.len(),
        DEDUP_WINDOW,
        "nothing stored twice: {:?}",
        contents(&history)
    );
    assert_eq!(history[..2], mine);
}

/// A write holding two messages with one id is refused whole; save keeps ids, and
/// a truncate forgets the ids it cut.
pub async fn ids_survive_rewrites_and_repeats_are_refused<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let a = ChatMessage::user("a").with_new_id();
    let twice = [
        a.clone(),
        ChatMessage::user("a again").with_id(a.id.clone().unwrap()),
    ];
    for result in [
        store.append("rw", &twice).await,
        store.save("rw", &twice).await,
    ] {
        assert!(
            matches!(result, Err(Error::InvalidMessage { index: 1, .. })),
            "{result:?}"
        );
    }
    assert!(store.load("rw").await.unwrap().is_empty(), "nothing stored");

    let saved = with_ids("s", 4);
    store.save("rw", &saved).await.unwrap();
    assert_eq!(store.load("rw").await.unwrap(), saved, "save keeps ids");
    store.append("rw", &saved[2..]).await.unwrap();
    assert_eq!(
        store.load("rw").await.unwrap(),
        saved,
        "saved ids are known"
    );

    store.truncate("rw", 2).await.unwrap();
    store.append("rw", &saved[2..]).await.unwrap();
    assert_eq!(
        store.load("rw").await.unwrap(),
        saved,
        "a truncated message appended again is stored again"
    );
    store.append("rw", &saved[3..]).await.unwrap();
    assert_eq!(store.load("rw").await.unwrap().len(), 4);
}

/// The conditional append and the creation check ids too: a conditional append of
/// stored messages writes nothing and reports the generation unchanged.
pub async fn conditional_writes_and_creation_store_each_id_once<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let opening = with_ids("open", 2);
    let generation = store
        .create_session("cw", &SessionMeta::new().title("t"), &opening)
        .await
        .unwrap();
    let again = store
        .write_if(
            "cw",
            Expect::Generation(generation),
            Change::Append(&opening),
        )
        .await
        .unwrap();
    assert_eq!(again, generation);
    store.append("cw", &opening[1..]).await.unwrap();
    let more = with_ids("more", 1);
    let len = opening.len();
    let rev = crate::Revision { generation, len };
    store
        .write_if("cw", Expect::Exactly(rev), Change::Append(&more))
        .await
        .unwrap();
    let history = store.load("cw").await.unwrap();
    assert_eq!(contents(&history), ["open-0", "open-1", "more-0"]);
    assert_eq!(super::info(&store, "cw").await.message_count, 3);
}

/// A retry whose messages were all stored already stores nothing, and so is no write: the
/// session's last write, its place in newest-first listings and an idle expiry's clock stay
/// where the first attempt left them, whichever path the retry takes (the whole batch, its
/// tail, a conditional append). A retry that brings one message more is a write.
pub async fn a_retry_that_stores_nothing_leaves_the_last_write_alone<H: StorageHarness>(
    harness: &H,
) {
    let store = open(harness).await;
    // A day back, to the whole millisecond every backend keeps: a write would move it.
    let micros = unix_micros(SystemTime::now() - Duration::from_secs(24 * 3600));
    let day_ago = from_unix_micros(micros.div_euclid(1000) * 1000);
    let batch = with_ids("quiet", 3);
    let times = SessionTimes::new(day_ago, day_ago);
    (store.create_session_with_times("quiet", &SessionMeta::new(), &batch, times))
        .await
        .unwrap();
    let first = info(&store, "quiet").await;
    assert_eq!(first.updated_at, Some(day_ago));

    store.append("quiet", &batch).await.unwrap();
    store.append("quiet", &batch[1..]).await.unwrap();
    let same = Expect::Generation(first.generation);
    (store.write_if("quiet", same, Change::Append(&batch[2..])))
        .await
        .unwrap();
    let retried = info(&store, "quiet").await;
    assert_eq!(
        (retried.updated_at, retried.message_count),
        (Some(day_ago), 3),
        "a retry that stored nothing moved the last write"
    );

    let one_more = [batch[2].clone(), ChatMessage::user("new").with_new_id()];
    store.append("quiet", &one_more).await.unwrap();
    let written = info(&store, "quiet").await;
    assert_eq!(written.message_count, 4);
    assert!(
        written.updated_at > Some(day_ago),
        "a retry that stored a message is a write"
    );
}

/// Many instances appending the same batch at once (a retry racing its own first
/// attempt) store it once, while plain writers keep every message.
pub async fn racing_copies_of_one_batch_store_it_once<H: StorageHarness>(harness: &H) {
    let batch = Arc::new(with_ids("once", 3));
    let mut tasks = Vec::new();
    for writer in 0..6 {
        let store = Arc::new(open(harness).await);
        let batch = Arc::clone(&batch);
        tasks.push(tokio::spawn(async move {
            for round in 0..5 {
                store.append("race", &batch).await.unwrap();
                let own = ChatMessage::user(format!("w{writer}-{round}"));
                store.append("race", &[own]).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let store = open(harness).await;
    let history = store.load("race").await.unwrap();
    let copies = history
        .iter()
        .filter(|m| m.content.starts_with("once-"))
        .count();
    assert_eq!(copies, 3, "one copy of the batch: {:?}", contents(&history));
    let start = history.iter().position(|m| m.content == "once-0").unwrap();
    assert_eq!(
        history[start..start + 3],
        batch[..],
        "contiguous and in order"
    );
    assert_eq!(history.len(), 3 + 6 * 5, "every plain message kept");
}

/// What a storage behind a lost-reply fault does: `store` applies a write and then fails
/// it with a retryable error when `arm` was called before it. Appends through `store`
/// (the caller's retrying storage) must leave one copy of every message.
pub async fn lost_replies_are_retried_exactly_once(
    store: &dyn ConversationStorage,
    arm: &(dyn Fn() + Send + Sync),
    session: &str,
) {
    let mut expected = Vec::new();
    for turn in 0..10 {
        let batch = with_ids(&format!("t{turn}"), 2);
        if turn % 2 == 0 {
            arm();
        }
        store
            .append(session, &batch)
            .await
            .unwrap_or_else(|err| panic!("turn {turn}: the retried append failed: {err}"));
        expected.extend(batch);
    }
    let history = store.load(session).await.unwrap();
    assert_eq!(
        contents(&history),
        contents(&expected),
        "every message exactly once, in order"
    );
    let ids: Vec<Option<&MessageId>> = history.iter().map(|m| m.id.as_ref()).collect();
    assert!(ids.iter().all(Option::is_some), "ids kept");
}
