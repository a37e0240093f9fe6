//! The window of exactly-once appends as Redis keeps it (`src/scripts/window.rs`): the
//! `recent` field of a session's meta hash, 4 characters per message for the last
//! `DEDUP_WINDOW` that have an id (the id's fingerprint, then its position modulo 64).
//!
//! The conformance suite checks what an append stores; these check the field itself,
//! and the cases only this layout has: a fingerprint only says "maybe", and a window
//! left by another history (an earlier release's rewrite, a list gone under its meta
//! hash) must never make an append skip a message the session does not hold.

mod common;

use common::{Harness, harness};
use fusion_core::testkit::exactly_once::with_ids;
use fusion_core::{ChatMessage, ConversationStorage, DEDUP_WINDOW};
use redis::AsyncCommands;

/// The fingerprint of `id`, as `src/scripts/window.rs` documents it.
fn fingerprint(id: &str) -> String {
    let hash = id
        .bytes()
        .fold(0u32, |hash, byte| (hash * 31 + u32::from(byte)) % 262_139);
    [12, 6, 0]
        .map(|shift| char::from(b'0' + ((hash >> shift) & 63) as u8))
        .iter()
        .collect()
}

/// The `recent` field of `id`'s meta hash, if it has one.
async fn window(h: &Harness, id: &str) -> Option<String> {
    let mut raw = h.raw().await;
    raw.hget(h.meta_key(id), "recent").await.unwrap()
}

/// The window of `history` as the list holds it: an entry for each of its last messages
/// that have an id, up to `DEDUP_WINDOW` of them.
fn window_of(history: &[ChatMessage]) -> String {
    let entries: Vec<String> = history
        .iter()
        .enumerate()
        .filter_map(|(at, m)| {
            let place = char::from(b'0' + (at % 64) as u8);
            Some(format!("{}{place}", fingerprint(m.id.as_ref()?.as_str())))
        })
        .collect();
    entries[entries.len().saturating_sub(DEDUP_WINDOW)..].concat()
}

#[tokio::test]
async fn appends_roll_the_last_entries_in_order_and_appends_without_ids_leave_them() {
    let Some(h) = harness().await else { return };
    let store = h.open().await;
    store
        .append("roll", &[ChatMessage::user("plain")])
        .await
        .unwrap();
    assert_eq!(window(&h, "roll").await, None, "no ids, no window");

    for turn in 0..150 {
        let batch = with_ids(&format!("t{turn}"), 2);
        store.append("roll", &batch).await.unwrap();
        if turn % 10 == 0 {
            // A message without an id in the batch takes no entry.
            let mixed = [
                ChatMessage::user("no id"),
                ChatMessage::user("x").with_new_id(),
            ];
            store.append("roll", &mixed).await.unwrap();
        }
    }
    let history = store.load("roll").await.unwrap();
    assert!(history.len() > 64, "positions wrap around");
    let expected = window_of(&history);
    assert_eq!(expected.len(), 4 * DEDUP_WINDOW);
    assert_eq!(window(&h, "roll").await.unwrap(), expected);

    store
        .append("roll", &[ChatMessage::user("plain again")])
        .await
        .unwrap();
    assert_eq!(
        window(&h, "roll").await.unwrap(),
        expected,
        "an append without ids does no window work"
    );

    // A batch larger than the window keeps only its own last entries, and all of those
    // are found again.
    let big = with_ids("big", DEDUP_WINDOW + 10);
    store.append("roll", &big).await.unwrap();
    let history = store.load("roll").await.unwrap();
    assert_eq!(window(&h, "roll").await.unwrap(), window_of(&history));
    store.append("roll", &big[10..]).await.unwrap();
    assert_eq!(
        store.load("roll").await.unwrap(),
        history,
        "all of those known"
    );
}

#[tokio::test]
async fn an_append_of_known_messages_changes_nothing_at_all() {
    let Some(h) = harness().await else { return };
    let store = h.open().await;
    let batch = with_ids("once", 2);
    store.append("still", &batch).await.unwrap();
    let mut raw = h.raw().await;
    let meta: Vec<(String, String)> = raw.hgetall(h.meta_key("still")).await.unwrap();
    let score: f64 = raw.zscore(h.updated_key(), "still").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store.append("still", &batch).await.unwrap();
    let again: Vec<(String, String)> = raw.hgetall(h.meta_key("still")).await.unwrap();
    assert_eq!(again, meta, "not even updated_at moves");
    let rescored: f64 = raw.zscore(h.updated_key(), "still").await.unwrap();
    assert_eq!(rescored, score, "nor the index");
}

#[tokio::test]
async fn rewrites_start_the_window_from_what_the_session_keeps() {
    let Some(h) = harness().await else { return };
    let store = h.open().await;
    let saved = with_ids("s", 100);
    store.save("rw", &saved).await.unwrap();
    assert_eq!(window(&h, "rw").await.unwrap(), window_of(&saved));

    store.truncate("rw", 20).await.unwrap();
    assert_eq!(
        window(&h, "rw").await.unwrap(),
        window_of(&saved[..20]),
        "the ids it kept, read from the list"
    );

    // Ids only further back than the last DEDUP_WINDOW: an empty window, still kept, so
    // that a truncate finds the ids again.
    let mut history = with_ids("early", 10);
    history.extend((0..DEDUP_WINDOW + 5).map(|i| ChatMessage::user(format!("late-{i}"))));
    store.save("rw", &history).await.unwrap();
    assert_eq!(window(&h, "rw").await.unwrap(), "");
    store.truncate("rw", 12).await.unwrap();
    assert_eq!(window(&h, "rw").await.unwrap(), window_of(&history[..12]));
    store.append("rw", &history[9..10]).await.unwrap();
    assert_eq!(store.load("rw").await.unwrap().len(), 12, "known again");

    // A save without any id leaves the window of the history it replaced, which finds
    // nothing of it in the list: what that history held is stored again.
    store
        .save("rw", &[ChatMessage::user("fresh start")])
        .await
        .unwrap();
    store.append("rw", &history[..2]).await.unwrap();
    assert_eq!(store.load("rw").await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_fingerprint_or_a_window_of_another_history_never_skips_a_message() {
    let Some(h) = harness().await else { return };
    let store = h.open().await;
    let mut raw = h.raw().await;
    let batch = with_ids("b", 3);

    // A window whose entry for a new message's fingerprint names another message's
    // position (what a collision of fingerprints looks like): the message is stored.
    store.append("clash", &batch).await.unwrap();
    let newcomer = ChatMessage::user("new").with_new_id();
    let fp = fingerprint(newcomer.id.as_ref().unwrap().as_str());
    let forged = format!("{}{fp}1", window(&h, "clash").await.unwrap());
    let _: () = raw
        .hset(h.meta_key("clash"), "recent", forged)
        .await
        .unwrap();
    store
        .append("clash", std::slice::from_ref(&newcomer))
        .await
        .unwrap();
    let history = store.load("clash").await.unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(history[3], newcomer);

    // An earlier release's truncate: LTRIM, the window untouched.
    store.append("old", &batch).await.unwrap();
    let _: () = raw.ltrim(h.list_key("old"), 0, 0).await.unwrap();
    store.append("old", &batch[1..]).await.unwrap();
    assert_eq!(
        store.load("old").await.unwrap(),
        batch,
        "the cut ones stored again"
    );

    // A list gone under its meta hash: the append makes a new session of all of it.
    store.append("gone", &batch).await.unwrap();
    let _: () = raw.del(h.list_key("gone")).await.unwrap();
    store.append("gone", &batch).await.unwrap();
    assert_eq!(store.load("gone").await.unwrap(), batch);
    assert_eq!(window(&h, "gone").await.unwrap(), window_of(&batch));

    // A session stored before generations keeps its window through appends.
    let old = ChatMessage::user("old");
    let _: () = raw
        .rpush(h.list_key("legacy"), serde_json::to_string(&old).unwrap())
        .await
        .unwrap();
    store.append("legacy", &batch).await.unwrap();
    store.append("legacy", &batch).await.unwrap();
    let history = store.load("legacy").await.unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(window(&h, "legacy").await.unwrap(), window_of(&history));
}
