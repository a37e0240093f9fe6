//! The window of id fingerprints as this backend keeps it on the session's row
//! (`recent_ids int4[]`, migration 0004): what enters it, what rolls out, what a truncate
//! and a save leave in it, that appends without ids never touch it, and that a fingerprint
//! matching an id that is not stored (a collision, forced here by writing the window by
//! hand) costs the exact check and never a message, and that a retry whose messages were
//! all stored already changes nothing, not even `updated_at`. The conformance suite checks the
//! contract; these check the column behind it, through a raw connection.

mod support;

use fusion_core::testkit::StorageHarness;
use fusion_core::testkit::exactly_once::with_ids;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, DEDUP_WINDOW, Expect, Expiry, MessageId, SessionMeta,
};
use sqlx::PgConnection;
use support::harness;

/// The session's `recent_ids`.
async fn window(raw: &mut PgConnection, session: &str) -> Option<Vec<i32>> {
    sqlx::query_scalar("SELECT recent_ids FROM sessions WHERE id = $1")
        .bind(session)
        .fetch_one(raw)
        .await
        .unwrap()
}

/// Sets the session's `recent_ids` by hand.
async fn set_window(raw: &mut PgConnection, session: &str, window: &[i32]) {
    sqlx::query("UPDATE sessions SET recent_ids = $2 WHERE id = $1")
        .bind(session)
        .bind(window)
        .execute(raw)
        .await
        .unwrap();
}

fn fingerprint(id: &MessageId) -> i32 {
    id.fingerprint().cast_signed()
}

/// The fingerprints of the ids of `messages`, in order.
fn fingerprints(messages: &[ChatMessage]) -> Vec<i32> {
    messages
        .iter()
        .filter_map(|m| m.id.as_ref().map(fingerprint))
        .collect()
}

#[tokio::test]
async fn the_window_holds_the_last_fingerprints_and_rolls_the_oldest_out() {
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
        Some(vec![]),
        "no ids, an empty window"
    );

    let first = with_ids("first", 2);
    storage.append("s", &first).await.unwrap();
    let plain: Vec<ChatMessage> = (0..10)
        .map(|i| ChatMessage::user(format!("p{i}")))
        .collect();
    storage.append("s", &plain).await.unwrap();
    assert_eq!(window(&mut raw, "s").await, Some(fingerprints(&first)));
    storage.append("s", &first).await.unwrap();
    assert_eq!(
        storage.load("s").await.unwrap().len(),
        13,
        "the retry stored nothing"
    );
    assert_eq!(
        window(&mut raw, "s").await,
        Some(fingerprints(&first)),
        "rebuilt by the exact check from the last messages' ids"
    );

    let later = with_ids("later", DEDUP_WINDOW - 1);
    storage.append("s", &later).await.unwrap();
    let mut expected = fingerprints(&first)[1..].to_vec();
    expected.extend(fingerprints(&later));
    assert_eq!(
        window(&mut raw, "s").await,
        Some(expected),
        "the oldest rolled out, 64 kept"
    );

    // The window's edge, which the contract allows: an id older than the last 64 ids is
    // stored again.
    storage.append("s", &first[..1]).await.unwrap();
    let history = storage.load("s").await.unwrap();
    assert_eq!(history.len(), 13 + DEDUP_WINDOW - 1 + 1);
    assert_eq!(history.last(), Some(&first[0]));
}

#[tokio::test]
async fn the_contract_is_the_last_messages_whatever_the_fingerprints_say() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    let mut raw = harness.raw().await;
    let first = with_ids("first", 2);
    storage.append("s", &first).await.unwrap();
    let plain: Vec<ChatMessage> = (0..DEDUP_WINDOW)
        .map(|i| ChatMessage::user(format!("p{i}")))
        .collect();
    storage.append("s", &plain).await.unwrap();
    // Still fingerprinted (id-less messages push none out), but no longer among the
    // last 64 messages: the exact check stores them again, as `DEDUP_WINDOW` allows.
    assert_eq!(window(&mut raw, "s").await, Some(fingerprints(&first)));
    storage.append("s", &first).await.unwrap();
    let history = storage.load("s").await.unwrap();
    assert_eq!(history.len(), 2 + DEDUP_WINDOW + 2);
    assert_eq!(history[2 + DEDUP_WINDOW..], first);
    assert_eq!(window(&mut raw, "s").await, Some(fingerprints(&first)));
}

#[tokio::test]
async fn a_fingerprint_of_an_id_not_stored_costs_a_check_and_no_message() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    let mut raw = harness.raw().await;
    let stored = with_ids("stored", 3);
    storage.append("s", &stored).await.unwrap();
    let fresh = with_ids("fresh", 2);
    // As if an id stored earlier shared the fresh ids' fingerprints.
    let mut crafted = fingerprints(&stored);
    crafted.extend(fingerprints(&fresh));
    set_window(&mut raw, "s", &crafted).await;

    storage.append("s", &fresh[..1]).await.unwrap();
    let mut expected = stored.clone();
    expected.push(fresh[0].clone());
    assert_eq!(storage.load("s").await.unwrap(), expected, "stored once");
    let mut rebuilt = fingerprints(&stored);
    rebuilt.push(fingerprint(fresh[0].id.as_ref().unwrap()));
    assert_eq!(
        window(&mut raw, "s").await,
        Some(rebuilt),
        "the window rebuilt from the stored ids: the stray fingerprint is gone"
    );

    // A conditional append takes the same check under the lock it holds.
    set_window(&mut raw, "s", &crafted).await;
    let (_, revision) = storage.load_revision("s").await.unwrap();
    let generation = storage
        .write_if("s", Expect::Exactly(revision), Change::Append(&fresh))
        .await
        .unwrap();
    assert_eq!(generation, revision.generation);
    expected.push(fresh[1].clone());
    assert_eq!(
        storage.load("s").await.unwrap(),
        expected,
        "only the new one"
    );
    let retried = storage
        .write_if("s", Expect::Generation(generation), Change::Append(&fresh))
        .await
        .unwrap();
    assert_eq!(retried, generation);
    assert_eq!(
        storage.load("s").await.unwrap(),
        expected,
        "a retry adds none"
    );
}

#[tokio::test]
async fn truncate_forgets_the_window_and_save_rewrites_it() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    let mut raw = harness.raw().await;

    let saved = with_ids("s", DEDUP_WINDOW + 10);
    storage.save("s", &saved).await.unwrap();
    assert_eq!(
        window(&mut raw, "s").await,
        Some(fingerprints(&saved[10..]))
    );

    let mut mixed = saved.clone();
    mixed.insert(70, ChatMessage::user("no id"));
    storage.save("s", &mixed).await.unwrap();
    storage.truncate("s", 72).await.unwrap();
    assert_eq!(
        window(&mut raw, "s").await,
        None,
        "unknown after a truncate"
    );
    // The cut message goes in again; the one before the cut is found by the exact check.
    storage.append("s", &mixed[71..73]).await.unwrap();
    assert_eq!(storage.load("s").await.unwrap(), mixed[..73]);
    // Rebuilt from the ids of the last 64 messages (one has none) and the new one.
    assert_eq!(
        window(&mut raw, "s").await,
        Some(fingerprints(&mixed[8..73]))
    );

    storage.truncate("s", 1).await.unwrap();
    storage.append("s", &saved[..1]).await.unwrap();
    assert_eq!(storage.load("s").await.unwrap(), saved[..1]);
    assert_eq!(window(&mut raw, "s").await, Some(fingerprints(&saved[..1])));

    // Appends without ids leave an unknown window unknown: they never read it.
    let plain = [ChatMessage::user("plain")];
    storage.append("s", &plain).await.unwrap();
    storage.truncate("s", 1).await.unwrap();
    storage.append("s", &plain).await.unwrap();
    assert_eq!(window(&mut raw, "s").await, None);
}

/// A window edited into something no write makes, an array of two dimensions, is unknown
/// as a NULL one is: the append takes the exact check and rebuilds it. It failed every
/// append with ids instead ("cannot concatenate incompatible arrays", not retryable).
#[tokio::test]
async fn a_window_of_two_dimensions_is_unknown_and_rebuilt() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    let mut raw = harness.raw().await;
    let batch = with_ids("d", 3);
    storage.append("s", &batch[..2]).await.unwrap();
    sqlx::query("UPDATE sessions SET recent_ids = '{{1,2},{3,4}}' WHERE id = 's'")
        .execute(&mut raw)
        .await
        .unwrap();
    storage.append("s", &batch).await.unwrap();
    assert_eq!(
        storage.load("s").await.unwrap(),
        batch,
        "the third stored once"
    );
    assert_eq!(window(&mut raw, "s").await, Some(fingerprints(&batch)));
}

#[tokio::test]
async fn an_id_need_not_be_a_uuid() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
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
    // Read back from the stored text, punctuation and all, by the exact check.
    storage.truncate("s", 1).await.unwrap();
    storage.append("s", &[message]).await.unwrap();
    assert_eq!(storage.load("s").await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_longest_id_is_read_back_from_a_long_message() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    // The longest id, and a text far past the row's size, stored out of line.
    let id: MessageId = "x".repeat(MessageId::MAX_LEN).parse().unwrap();
    let long = ChatMessage::user("y".repeat(100_000)).with_id(id);
    storage
        .append("s", std::slice::from_ref(&long))
        .await
        .unwrap();
    storage
        .append("s", &[ChatMessage::user("cut")])
        .await
        .unwrap();
    storage.truncate("s", 1).await.unwrap();
    storage.append("s", &[long]).await.unwrap();
    assert_eq!(
        storage.load("s").await.unwrap().len(),
        1,
        "its id was found"
    );
}

/// A retry whose first attempt applied (every id of the batch among the session's last
/// messages) stores nothing and leaves `updated_at` and an idle expiry where they were,
/// as the other backends do: whether the plain append, a retry of the batch's tail or a
/// conditional append finds them. The row's times are set a day back by hand first, so
/// that any write would visibly move them, whatever the clock does meanwhile.
#[tokio::test]
async fn a_retry_of_messages_already_stored_leaves_updated_at_and_the_expiry_alone() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    let mut raw = harness.raw().await;
    let week = std::time::Duration::from_secs(7 * 24 * 3600);
    let meta = SessionMeta::new().expiry(Expiry::Idle(week));
    let batch = with_ids("b", 3);
    storage.create_session("s", &meta, &batch).await.unwrap();
    sqlx::query(
        "UPDATE sessions SET updated_at = updated_at - interval '1 day', \
            expires_at = expires_at - 86400000000 WHERE id = 's'",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    let before = storage.session_info("s").await.unwrap().unwrap();

    storage.append("s", &batch).await.unwrap();
    storage.append("s", &batch[1..]).await.unwrap();
    let generation = storage
        .write_if(
            "s",
            Expect::Generation(before.generation),
            Change::Append(&batch),
        )
        .await
        .unwrap();
    assert_eq!(generation, before.generation);
    let after = storage.session_info("s").await.unwrap().unwrap();
    assert_eq!(
        after, before,
        "nothing changed, updated_at and expiry included"
    );

    // A retry that stores one message more is a write: the times move.
    let more = [batch.as_slice(), &with_ids("more", 1)].concat();
    storage.append("s", &more).await.unwrap();
    let written = storage.session_info("s").await.unwrap().unwrap();
    assert_eq!(written.message_count, 4);
    assert!(written.updated_at > before.updated_at, "{written:?}");
    assert!(written.expires_at > before.expires_at, "{written:?}");
}
