//! The window of known ids as this backend keeps it on the session's row (`recent_ids`,
//! migration 0004): what enters it, what rolls out, what a truncate and a save leave in
//! it, and that appends without ids never touch it. The conformance suite checks the
//! contract; these check the column behind it, through a raw connection.

mod support;

use fusion_core::testkit::StorageHarness;
use fusion_core::testkit::exactly_once::with_ids;
use fusion_core::{ChatMessage, ConversationStorage, DEDUP_WINDOW, MessageId};
use sqlx::PgConnection;
use support::harness;

/// The session's `(recent_ids, append_skipped)`.
async fn window(raw: &mut PgConnection, session: &str) -> (Option<Vec<String>>, Option<Vec<i64>>) {
    sqlx::query_as("SELECT recent_ids, append_skipped FROM sessions WHERE id = $1")
        .bind(session)
        .fetch_one(raw)
        .await
        .unwrap()
}

fn ids(messages: &[ChatMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| m.id.as_ref().map(|id| id.as_str().to_string()))
        .collect()
}

#[tokio::test]
async fn the_window_holds_the_last_ids_whatever_comes_between() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    let mut raw = harness.raw().await;

    storage
        .append("s", &[ChatMessage::user("plain")])
        .await
        .unwrap();
    assert_eq!(
        window(&mut raw, "s").await,
        (None, None),
        "no ids, no window"
    );

    let first = with_ids("first", 2);
    storage.append("s", &first).await.unwrap();
    let plain: Vec<ChatMessage> = (0..100)
        .map(|i| ChatMessage::user(format!("p{i}")))
        .collect();
    storage.append("s", &plain).await.unwrap();
    storage.append("s", &first).await.unwrap();
    assert_eq!(
        storage.load("s").await.unwrap().len(),
        103,
        "id-less messages push no id out"
    );
    let (known, skipped) = window(&mut raw, "s").await;
    assert_eq!(known, Some(ids(&first)));
    assert_eq!(skipped, Some(vec![1, 2]), "the retry left both out");

    let later = with_ids("later", DEDUP_WINDOW - 1);
    storage.append("s", &later).await.unwrap();
    let (known, skipped) = window(&mut raw, "s").await;
    let mut expected = ids(&first)[1..].to_vec();
    expected.extend(ids(&later));
    assert_eq!(known, Some(expected), "the oldest id rolled out, 64 kept");
    assert_eq!(
        skipped, None,
        "an append that stores all of its batch says so"
    );

    // The window's edge, which the contract allows: an id older than the last 64 ids is
    // stored again; the one after it is still known.
    storage.append("s", &first).await.unwrap();
    let history = storage.load("s").await.unwrap();
    assert_eq!(history.len(), 103 + DEDUP_WINDOW - 1 + 1);
    assert_eq!(history.last(), Some(&first[0]));
}

#[tokio::test]
async fn truncate_and_save_rewrite_the_window_from_what_they_keep() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    let mut raw = harness.raw().await;

    let saved = with_ids("s", DEDUP_WINDOW + 10);
    storage.save("s", &saved).await.unwrap();
    let last = &saved[10..];
    assert_eq!(window(&mut raw, "s").await.0, Some(ids(last)));

    let mut mixed = saved.clone();
    mixed.insert(70, ChatMessage::user("no id"));
    storage.save("s", &mixed).await.unwrap();
    storage.truncate("s", 72).await.unwrap();
    // The last 64 messages kept: 8..72, one of them without an id.
    let kept = &mixed[8..72];
    assert_eq!(window(&mut raw, "s").await.0, Some(ids(kept)));
    storage.append("s", &mixed[72..73]).await.unwrap();
    assert_eq!(
        storage.load("s").await.unwrap().len(),
        73,
        "what was cut is stored again"
    );

    storage.truncate("s", 1).await.unwrap();
    assert_eq!(window(&mut raw, "s").await.0, Some(ids(&saved[..1])));

    storage
        .save("p", &[ChatMessage::user("a"), ChatMessage::user("b")])
        .await
        .unwrap();
    storage.truncate("p", 1).await.unwrap();
    assert_eq!(
        window(&mut raw, "p").await.0,
        None,
        "sessions without ids keep none"
    );
}

#[tokio::test]
async fn an_id_need_not_be_a_uuid() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    let mut raw = harness.raw().await;
    let id: MessageId = "evt_01J9Z3:part-1.2".parse().unwrap();
    let message = ChatMessage::user("hi").with_id(id.clone());
    for _ in 0..2 {
        storage
            .append("s", std::slice::from_ref(&message))
            .await
            .unwrap();
    }
    storage
        .append("s", &[ChatMessage::user("cut")])
        .await
        .unwrap();
    // Read back from the stored text, punctuation and all.
    storage.truncate("s", 1).await.unwrap();
    assert_eq!(
        window(&mut raw, "s").await.0,
        Some(vec![id.as_str().to_string()])
    );
    storage.append("s", &[message]).await.unwrap();
    assert_eq!(storage.load("s").await.unwrap().len(), 1);
}
