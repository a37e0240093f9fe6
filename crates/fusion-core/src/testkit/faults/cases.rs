//! The exactly-once scenarios behind a fault that loses replies: each backend's
//! `tests/exactly_once.rs` runs them on its storage behind [`LoseReplies`](super::LoseReplies)
//! (in-process backends, through [`Lossy`](super::Lossy)) or a
//! [`FaultProxy`](super::FaultProxy) (server backends).
//!
//! The harness is also the fault ([`ReplyFault`]): every instance it opens is behind it.
//! The retry and encryption layers live in `fusion-layers`, which depends on this crate,
//! so the scenarios take them from the caller as [`Layer`]s. Give the retry layer a
//! short backoff and enough attempts for the random case (at 1 loss in 5, ten attempts
//! all fail once in ten million).

use std::sync::Arc;

use super::ReplyFault;
use crate::testkit::exactly_once::{lost_replies_are_retried_exactly_once, with_ids};
use crate::testkit::{StorageHarness, assert_nothing_lost_in_writer_order, info, open};
use crate::{Change, ChatMessage, ConversationStorage, Expect, Layer, SessionMeta};

fn contents(history: &[ChatMessage]) -> Vec<&str> {
    history.iter().map(|m| m.content.as_str()).collect()
}

/// A new instance of `harness`'s storage, shared.
async fn instance<H: StorageHarness>(harness: &H) -> Arc<dyn ConversationStorage> {
    Arc::new(open(harness).await)
}

/// Appends through `retry` whose replies were lost store each message once, in order
/// ([`lost_replies_are_retried_exactly_once`]); every armed fault lost a reply.
pub async fn lost_append_replies_are_retried_exactly_once<H>(harness: &H, retry: &dyn Layer)
where
    H: StorageHarness + ReplyFault,
{
    let store = retry.layer(instance(harness).await);
    let before = harness.replies_lost();
    let arm = || harness.lose_next_reply("lost-appends");
    lost_replies_are_retried_exactly_once(store.as_ref(), &arm, "lost-appends").await;
    assert_eq!(
        harness.replies_lost() - before,
        5,
        "each armed fault lost a reply"
    );
}

/// Without a retry layer, an append whose reply was lost fails with a retryable error,
/// and the caller appending the same batch (same ids) again stores nothing twice.
pub async fn a_lost_append_reply_fails_retryably_and_the_same_batch_again_stores_once<H>(
    harness: &H,
) where
    H: StorageHarness + ReplyFault,
{
    const SESSION: &str = "lost-by-hand";
    let store = open(harness).await;
    let first = with_ids("first", 1);
    store.append(SESSION, &first).await.unwrap();
    let batch = with_ids("lost", 3);
    harness.lose_next_reply(SESSION);
    let err = store
        .append(SESSION, &batch)
        .await
        .expect_err("the reply was lost");
    assert!(err.is_retryable(), "a lost reply is retryable: {err}");
    assert_eq!(harness.replies_lost(), 1);
    // What a caller does with a retryable error: the same batch again, a few times if the
    // connection takes a moment to come back.
    let mut again = store.append(SESSION, &batch).await;
    for _ in 0..5 {
        match again {
            Err(err) if err.is_retryable() => again = store.append(SESSION, &batch).await,
            _ => break,
        }
    }
    again.expect("appending the same batch again");
    let history = store.load(SESSION).await.unwrap();
    let expected: Vec<ChatMessage> = first.into_iter().chain(batch).collect();
    assert_eq!(history, expected, "one copy of each, ids kept");
    assert_eq!(info(&store, SESSION).await.message_count, 4);
}

/// A creation, a conditional append and a conditional replace whose replies were lost
/// succeed through `retry` (its check of what an uncertain attempt applied), each
/// written once.
pub async fn lost_replies_of_conditional_writes_and_creations_are_retried_to_success<H>(
    harness: &H,
    retry: &dyn Layer,
) where
    H: StorageHarness + ReplyFault,
{
    const SESSION: &str = "lost-conditional";
    let store = retry.layer(instance(harness).await);
    let before = harness.replies_lost();
    let opening = with_ids("open", 2);
    harness.lose_next_reply(SESSION);
    let meta = SessionMeta::new().title("created once");
    let created = store
        .create_session(SESSION, &meta, &opening)
        .await
        .expect("a creation whose reply was lost succeeds on retry");
    let (history, revision) = store.load_revision(SESSION).await.unwrap();
    assert_eq!(history, opening, "created once");
    assert_eq!(revision.generation, created);
    assert_eq!(
        info(&*store, SESSION).await.meta.title.as_deref(),
        Some("created once")
    );

    let more = with_ids("more", 2);
    harness.lose_next_reply(SESSION);
    let appended = store
        .write_if(SESSION, Expect::Exactly(revision), Change::Append(&more))
        .await
        .expect("a conditional append whose reply was lost succeeds on retry");
    assert_eq!(appended, created, "an append keeps the generation");
    let (history, revision) = store.load_revision(SESSION).await.unwrap();
    assert_eq!(contents(&history), ["open-0", "open-1", "more-0", "more-1"]);
    assert_eq!(revision.len, 4);
    assert_eq!(info(&*store, SESSION).await.message_count, 4);

    let replacement = with_ids("new", 1);
    harness.lose_next_reply(SESSION);
    let replaced = store
        .write_if(
            SESSION,
            Expect::Exactly(revision),
            Change::Replace(&replacement),
        )
        .await
        .expect("a conditional replace whose reply was lost succeeds on retry");
    let (history, revision) = store.load_revision(SESSION).await.unwrap();
    assert_eq!(history, replacement);
    assert_eq!(revision.generation, replaced);
    assert_eq!(
        harness.replies_lost() - before,
        3,
        "each armed fault lost a reply"
    );
}

/// Several writers, each with its own instance behind `retry`, append tagged messages
/// `w{k}-{i}` to one session while replies are lost at random (seeded): nothing is lost
/// or stored twice, and each writer's order holds. Returns how many replies were lost
/// (at least one, or the case proved nothing).
///
/// The writers go in rounds, each appending its `i`-th message (with every retry it
/// takes) before any starts its next: exactly-once holds while fewer than
/// [`DEDUP_WINDOW`](crate::DEDUP_WINDOW) messages are appended by others between an
/// attempt and its retry, and unpaced writers on a busy machine exceed that: one retrying
/// a run of lost replies can be kept waiting for SQLite's write lock while the others
/// append dozens (unpaced, under a CI build, 2 runs in 25 stored a message again 107 and
/// 71 positions after its first copy). In rounds, at most `WRITERS - 1` come between.
pub async fn writers_losing_replies_at_random_store_every_message_once<H>(
    harness: &H,
    retry: &dyn Layer,
    seed: u64,
) -> usize
where
    H: StorageHarness + ReplyFault,
{
    const SESSION: &str = "lossy-writers";
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 40;
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        writers.push(retry.layer(instance(harness).await));
    }
    let before = harness.replies_lost();
    harness.lose_replies_at_random(SESSION, 0.2, seed);
    let rounds = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for (k, store) in writers.into_iter().enumerate() {
        let rounds = rounds.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let message = [ChatMessage::user(format!("w{k}-{i}"))];
                store
                    .append(SESSION, &message)
                    .await
                    .unwrap_or_else(|err| panic!("writer {k}, message {i}: {err}"));
                rounds.wait().await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a writer panicked");
    }
    harness.lose_replies_at_random(SESSION, 0.0, 0);
    let lost = harness.replies_lost() - before;
    let reader = retry.layer(instance(harness).await);
    let history = reader.load(SESSION).await.unwrap();
    let tags: Vec<String> = (0..WRITERS).map(|k| format!("w{k}")).collect();
    assert_nothing_lost_in_writer_order(&history, &tags, PER_WRITER);
    assert_eq!(
        info(&*reader, SESSION).await.message_count,
        WRITERS * PER_WRITER
    );
    assert!(lost > 0, "no reply was lost: the case proved nothing");
    lost
}

/// Retry outside encryption (each attempt encrypts afresh) and inside it (attempts
/// resend the same envelopes) both store one copy of each message whose reply was lost,
/// encrypted at rest and readable with the key.
pub async fn retry_outside_or_inside_encryption_stores_one_copy<H>(
    harness: &H,
    retry: &dyn Layer,
    encryption: &dyn Layer,
) where
    H: StorageHarness + ReplyFault,
{
    for (session, retry_outside) in [("retry-outside", true), ("retry-inside", false)] {
        let inner = instance(harness).await;
        let store = if retry_outside {
            retry.layer(encryption.layer(inner))
        } else {
            encryption.layer(retry.layer(inner))
        };
        let before = harness.replies_lost();
        let arm = || harness.lose_next_reply(session);
        lost_replies_are_retried_exactly_once(store.as_ref(), &arm, session).await;
        assert_eq!(
            harness.replies_lost() - before,
            5,
            "{session}: replies lost"
        );

        let reader = encryption.layer(instance(harness).await);
        let history = reader.load(session).await.unwrap();
        let stored = open(harness).await.load(session).await.unwrap();
        assert_eq!(stored.len(), history.len(), "{session}: one copy at rest");
        let plain = contents(&history);
        assert!(
            stored.iter().all(|m| !plain.contains(&m.content.as_str())),
            "{session}: encrypted at rest"
        );
        let ids = |h: &[ChatMessage]| h.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&stored), ids(&history), "{session}: ids kept in clear");

        // Messages given without ids: the retry layer gives them ids, and the encryption
        // layer binds an id into what it seals, so under either order every attempt must
        // send the same ids, and every message must still decrypt.
        let session = format!("{session}-no-ids");
        let mut expected = Vec::new();
        for turn in 0..4 {
            let batch = [
                ChatMessage::user(format!("{session} {turn} question")),
                ChatMessage::assistant(format!("{session} {turn} answer")),
            ];
            if turn % 2 == 0 {
                harness.lose_next_reply(&session);
            }
            store
                .append(&session, &batch)
                .await
                .unwrap_or_else(|err| panic!("{session} turn {turn}: {err}"));
            expected.extend(batch);
        }
        let history = reader.load(&session).await.unwrap();
        assert_eq!(
            contents(&history),
            contents(&expected),
            "{session}: every message once, in order, and readable"
        );
    }
}
