//! The retry layer: what it retries and what it returns at once, how it settles a
//! conditional write whose earlier attempt may have applied, and, on the memory and SQLite
//! backends behind [`LoseReplies`], that it stores one copy of each message whose reply
//! was lost whether it sits outside the encryption layer or inside it.
#![cfg(all(feature = "retry", feature = "encryption"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fusion_core::testkit::exactly_once::with_ids;
use fusion_core::testkit::faults::{LoseReplies, Lossy, cases};
use fusion_core::testkit::{Clones, StorageHarness};
use fusion_core::{
    Change, ChatMessage, ConversationStorage, DEDUP_WINDOW, Error, Expect, Intercept, Intercepted,
    Result, SessionMeta, SessionTimes, StorageExt,
};
use fusion_layers::RetryLayer;
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion_storage_memory::InMemoryStorage;
use fusion_storage_sqlite::SqliteStorage;

mod common;
use common::{Flaky, dropped};

fn retry() -> RetryLayer {
    RetryLayer::new()
        .max_attempts(4)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
}

fn encryption() -> EncryptionLayer {
    EncryptionLayer::new(EncryptionKeys::new("retry", &[9; 32]).expect("a valid key id"))
}

/// `flaky` behind the retry layer, and its count of calls.
fn retried(flaky: Flaky) -> (Arc<dyn ConversationStorage>, Arc<AtomicUsize>) {
    let calls = Arc::clone(&flaky.calls);
    (Arc::new(Intercepted(flaky)).layer(retry()), calls)
}

#[tokio::test]
async fn a_retryable_error_is_retried_until_the_call_passes() {
    let (store, calls) = retried(Flaky::new(3, dropped));
    store.append("s", &[ChatMessage::user("hi")]).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let history = store.load("s").await.unwrap();
    assert_eq!(history.len(), 1);
    assert!(history[0].id.is_some(), "the layer gave the message an id");
}

#[tokio::test]
async fn the_last_error_is_returned_when_the_attempts_run_out() {
    let (store, calls) = retried(Flaky::new(10, dropped));
    let err = store
        .append("s", &[ChatMessage::user("hi")])
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 4, "max_attempts(4)");
}

#[tokio::test]
async fn errors_a_retry_cannot_fix_and_conflicts_are_returned_at_once() {
    let errors: [fn() -> Error; 2] = [
        || Error::Config("bad".into()),
        || Expect::Generation(1).conflict("flaky", "s", 2, None),
    ];
    for error in errors {
        let (store, calls) = retried(Flaky::new(1, error));
        let result = store.append("s", &[ChatMessage::user("hi")]).await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{result:?}");
    }
}

#[tokio::test]
async fn a_conflict_after_an_attempt_that_did_not_apply_is_reported() {
    // The first attempt fails before writing, and meanwhile another writer appends: the
    // second attempt's expectation is stale, and the layer finds its messages absent.
    let mut flaky = Flaky::new(1, dropped);
    flaky.meddle = Some(ChatMessage::user("someone else"));
    let (store, _) = retried(flaky);
    let (_, revision) = store.load_revision("s").await.unwrap();
    let mine = [ChatMessage::user("mine")];
    let result = store
        .write_if("s", Expect::Exactly(revision), Change::Append(&mine))
        .await;
    assert!(matches!(result, Err(Error::Conflict { .. })), "{result:?}");
    let history = store.load("s").await.unwrap();
    assert_eq!(history.len(), 1, "only the other writer's message");
}

#[tokio::test]
async fn a_conditional_truncate_whose_reply_was_lost_reports_what_it_did() {
    let store = Arc::new(Intercepted(LoseReplies::new(InMemoryStorage::new())));
    let turns: Vec<ChatMessage> = (0..5).map(|i| ChatMessage::user(format!("m{i}"))).collect();
    store.append("s", &turns).await.unwrap();
    let layered = Arc::clone(&store).layer(retry());
    let (_, revision) = layered.load_revision("s").await.unwrap();

    // The truncate applies, its reply is lost, and the retry meets the session it made.
    store.0.arm();
    let generation = layered
        .write_if("s", Expect::Exactly(revision), Change::Truncate(3))
        .await
        .unwrap();
    assert_eq!(store.0.lost(), 1);
    let (history, now) = layered.load_revision("s").await.unwrap();
    assert_eq!(history, turns[..3]);
    assert_eq!(now.generation, generation);

    // Truncated to nothing (a deletion), the same.
    store.0.arm();
    layered
        .write_if("s", Expect::Exactly(now), Change::Truncate(0))
        .await
        .unwrap();
    assert!(layered.load("s").await.unwrap().is_empty());

    // Another writer's change in between is still a conflict: the session does not hold
    // what the truncate keeps.
    let mut flaky = Flaky::new(1, dropped);
    flaky.meddle = Some(ChatMessage::user("someone else"));
    flaky.inner.append("u", &turns).await.unwrap();
    let (meddled, _) = retried(flaky);
    let (_, at) = meddled.load_revision("u").await.unwrap();
    let result = meddled
        .write_if("u", Expect::Exactly(at), Change::Truncate(2))
        .await;
    assert!(matches!(result, Err(Error::Conflict { .. })), "{result:?}");
    assert_eq!(
        meddled.load("u").await.unwrap().len(),
        6,
        "nothing truncated"
    );
}

#[tokio::test]
async fn an_undo_whose_reply_was_lost_before_another_writer_appended_is_done_not_a_conflict() {
    // The truncate applies, its reply is lost, and another writer appends before the
    // retry, which meets a conflict: the session holds what the truncate kept, then that
    // writer's message, and none of what it removed, so the undo happened.
    let turns = with_ids("turn", 5);
    let mut flaky = Flaky::new(1, dropped);
    flaky.applies = true;
    flaky.meddle = Some(ChatMessage::user("someone else").with_new_id());
    flaky.inner.append("s", &turns).await.unwrap();
    let (store, _) = retried(flaky);
    let (_, revision) = store.load_revision("s").await.unwrap();
    let generation = store
        .write_if("s", Expect::Exactly(revision), Change::Truncate(3))
        .await
        .unwrap();
    let (history, now) = store.load_revision("s").await.unwrap();
    assert_eq!(history[..3], turns[..3]);
    assert_eq!(history[3].content, "someone else");
    assert_eq!(history.len(), 4);
    assert_eq!(now.generation, generation);

    // Had it not applied, what it removes would still follow what it keeps: a conflict.
    let mut flaky = Flaky::new(1, dropped);
    flaky.meddle = Some(ChatMessage::user("someone else").with_new_id());
    flaky.inner.append("u", &turns).await.unwrap();
    let (store, _) = retried(flaky);
    let (_, at) = store.load_revision("u").await.unwrap();
    let result = store
        .write_if("u", Expect::Exactly(at), Change::Truncate(3))
        .await;
    assert!(matches!(result, Err(Error::Conflict { .. })), "{result:?}");
    assert_eq!(store.load("u").await.unwrap().len(), 6, "nothing truncated");
}

#[tokio::test]
async fn an_undo_that_did_not_apply_is_a_conflict_though_its_messages_lost_their_ids() {
    // The truncate fails before reaching the storage; meanwhile another writer rewrites
    // the session to the same messages without their ids (a client that does not keep
    // them). What the undo removes is still there: a conflict, not an undo done.
    let turns = with_ids("turn", 5);
    let mut flaky = Flaky::new(1, dropped);
    let stripped: Vec<ChatMessage> = turns
        .iter()
        .map(|m| ChatMessage {
            id: None,
            ..m.clone()
        })
        .collect();
    let mut rewritten = turns[..3].to_vec();
    rewritten.extend_from_slice(&stripped[3..]);
    flaky.rewrite = Some(rewritten.clone());
    flaky.inner.append("s", &turns).await.unwrap();
    let (store, _) = retried(flaky);
    let (_, revision) = store.load_revision("s").await.unwrap();
    let result = store
        .write_if(
            "s",
            Expect::Generation(revision.generation),
            Change::Truncate(3),
        )
        .await;
    assert!(matches!(result, Err(Error::Conflict { .. })), "{result:?}");
    assert_eq!(
        store.load("s").await.unwrap(),
        rewritten,
        "nothing truncated"
    );
}

#[tokio::test]
async fn a_rewrite_whose_reply_was_lost_before_another_writer_appended_is_done() {
    // The rewrite (a compaction: a summary, then the last turn) applies, its reply is
    // lost, and another writer appends before the retry, which meets a conflict: the
    // session holds the rewritten history, then that writer's message only.
    let turns = with_ids("turn", 5);
    let mut compacted = vec![ChatMessage::user("summary").with_new_id()];
    compacted.push(turns[4].clone());
    for exact in [false, true] {
        for rewrite in [false, true] {
            let mut flaky = Flaky::new(1, dropped);
            flaky.applies = true;
            flaky.meddle = Some(ChatMessage::user("someone else").with_new_id());
            flaky.inner.append("s", &turns).await.unwrap();
            let (store, _) = retried(flaky);
            let (_, revision) = store.load_revision("s").await.unwrap();
            let expected = match exact {
                true => Expect::Exactly(revision),
                false => Expect::Generation(revision.generation),
            };
            let change = match rewrite {
                true => Change::Rewrite(&compacted),
                false => Change::Replace(&compacted),
            };
            let generation = store.write_if("s", expected, change).await.unwrap();
            let (history, now) = store.load_revision("s").await.unwrap();
            assert_eq!(history[..2], compacted);
            assert_eq!(history[2].content, "someone else");
            assert_eq!(history.len(), 3);
            assert_eq!(now.generation, generation);
        }
    }
}

#[tokio::test]
async fn a_rewrite_that_did_not_apply_is_a_conflict_whatever_followed() {
    let turns = with_ids("turn", 5);
    let kept = &turns[..3];
    // Another writer's append alone (the session as it was, then that message): the
    // rewrite to a start of the history did not apply.
    let mut flaky = Flaky::new(1, dropped);
    flaky.meddle = Some(ChatMessage::user("someone else").with_new_id());
    flaky.inner.append("s", &turns).await.unwrap();
    let (store, _) = retried(flaky);
    let (_, revision) = store.load_revision("s").await.unwrap();
    let result = store
        .write_if("s", Expect::Exactly(revision), Change::Rewrite(kept))
        .await;
    assert!(matches!(result, Err(Error::Conflict { .. })), "{result:?}");
    assert_eq!(store.load("s").await.unwrap().len(), 6, "nothing rewritten");

    // Another writer's rewrite that edits what this one drops, keeping its id, or drops
    // its id: still there, so not this rewrite.
    let mut edited = turns.clone();
    edited[3].content = "redacted".into();
    let mut stripped = turns.clone();
    stripped[3].id = None;
    for theirs in [edited, stripped] {
        let mut flaky = Flaky::new(1, dropped);
        flaky.rewrite = Some(theirs.clone());
        flaky.inner.append("s", &turns).await.unwrap();
        let (store, _) = retried(flaky);
        let (_, revision) = store.load_revision("s").await.unwrap();
        let result = store
            .write_if(
                "s",
                Expect::Generation(revision.generation),
                Change::Replace(kept),
            )
            .await;
        assert!(matches!(result, Err(Error::Conflict { .. })), "{result:?}");
        assert_eq!(store.load("s").await.unwrap(), theirs, "nothing replaced");
    }
}

#[tokio::test]
async fn a_conflict_that_cannot_be_settled_is_an_unknown_outcome_not_a_conflict() {
    // The append applies and its reply is lost; the next attempt meets the session it
    // changed (a conflict), and the read that would tell is cut too. A conflict would say
    // nothing was written, and a caller would write its message again.
    let mut flaky = Flaky::new(1, dropped);
    flaky.applies = true;
    flaky.cut_reads_after = true;
    flaky
        .inner
        .append("s", &with_ids("before", 2))
        .await
        .unwrap();
    let inner = Arc::clone(&flaky.inner);
    let (_, at) = inner.load_revision("s").await.unwrap();
    let (store, _) = retried(flaky);
    let mine = with_ids("mine", 1);
    let err = store
        .write_if("s", Expect::Exactly(at), Change::Append(&mine))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Backend {
                retryable: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("unknown"), "{err}");
    assert_eq!(
        inner.load("s").await.unwrap().len(),
        3,
        "the append applied"
    );
}

/// A storage that loses the reply of every write: the first attempt applies, and each
/// next finds the batch stored by reading the session and sends its last message again
/// (for the backend to redo what may have failed after the write: `retry_echo.rs`), its
/// reply lost too. The batch is stored once; the last attempt's error is returned, the
/// backend's work after the write not known done.
#[tokio::test]
async fn a_reply_lost_on_every_attempt_still_stores_one_copy() {
    let store = Arc::new(Intercepted(LoseReplies::new(InMemoryStorage::new())));
    store.0.lose_with_probability(1.0, 1);
    let batch = [ChatMessage::user("a"), ChatMessage::user("b")];
    let err = Arc::clone(&store)
        .layer(retry())
        .append("s", &batch)
        .await
        .expect_err("the resent last message's reply was lost on every attempt");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(
        store.0.lost(),
        4,
        "the write and three resends, every reply lost"
    );
    assert_eq!(store.load("s").await.unwrap().len(), 2, "stored once");
}

#[tokio::test]
async fn a_copy_with_times_whose_reply_was_lost_is_created_once_with_its_times() {
    let store = Arc::new(Intercepted(LoseReplies::new(InMemoryStorage::new())));
    store.0.arm();
    let at = |secs| std::time::UNIX_EPOCH + Duration::from_secs(secs);
    let times = SessionTimes::new(at(1_700_000_000), at(1_700_000_060));
    let retried = Arc::clone(&store).layer(retry());
    retried
        .create_session_with_times("s", &SessionMeta::new(), &[ChatMessage::user("a")], times)
        .await
        .expect("the lost reply's creation is settled as done");
    assert_eq!(store.0.lost(), 1);
    let info = store.session_info("s").await.unwrap().unwrap();
    assert_eq!(
        (info.message_count, SessionTimes::of(&info)),
        (1, Some(times))
    );
}

/// A batch longer than [`DEDUP_WINDOW`] whose reply was lost, appended again by the
/// retry layer (outside the encryption layer and inside it), by `append` and by a
/// conditional append that keeps the generation, on `raw`. The backend looks for ids in
/// the session's last `DEDUP_WINDOW` messages only, so resending the batch as it was
/// stored its first messages a second time, after the rest.
async fn long_batches_whose_replies_were_lost_are_stored_once<S>(raw: LoseReplies<S>)
where
    S: ConversationStorage + 'static,
{
    let lossy = Arc::new(Intercepted(raw));
    let batch = |tag: &str| -> Vec<ChatMessage> {
        let texts = (0..DEDUP_WINDOW + 36).map(|i| format!("{tag} {i}"));
        texts.map(ChatMessage::user).collect()
    };
    for (session, retry_outside) in [("retry-outside", true), ("retry-inside", false)] {
        let inner: Arc<dyn ConversationStorage> = lossy.clone();
        let store = if retry_outside {
            inner.layer(encryption()).layer(retry())
        } else {
            inner.layer(retry()).layer(encryption())
        };
        let appended = batch("append");
        lossy.0.arm();
        store.append(session, &appended).await.unwrap();
        let (_, revision) = store.load_revision(session).await.unwrap();
        let expected = Expect::Generation(revision.generation);
        let conditional = batch("write_if");
        lossy.0.arm();
        let generation = store
            .write_if(session, expected, Change::Append(&conditional))
            .await
            .unwrap();

        let texts = |history: &[ChatMessage]| -> Vec<String> {
            history.iter().map(|m| m.content.clone()).collect()
        };
        let (history, now) = store.load_revision(session).await.unwrap();
        let sent = [appended, conditional].concat();
        assert_eq!(
            texts(&history),
            texts(&sent),
            "{session}: each message once"
        );
        assert_eq!(generation, now.generation, "{session}");
    }
    assert_eq!(lossy.0.lost(), 4, "every write lost its reply");
}

#[tokio::test]
async fn long_batches_whose_replies_were_lost_are_stored_once_on_memory() {
    long_batches_whose_replies_were_lost_are_stored_once(LoseReplies::new(InMemoryStorage::new()))
        .await;
}

#[tokio::test]
async fn long_batches_whose_replies_were_lost_are_stored_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    let sqlite = SqliteStorage::connect(&url).await.unwrap();
    long_batches_whose_replies_were_lost_are_stored_once(LoseReplies::new(sqlite)).await;
}

/// An append whose first attempt applied and whose reply was lost, after which other
/// writers appended more than [`DEDUP_WINDOW`] messages before the retry, by `append` and
/// by a conditional append that keeps the generation: the backend no longer sees the
/// message's id when the retry comes, so resent as it was, it was stored twice (a stress
/// run on SQLite met it: six writers appended 67 messages in the 175 ms of a turn's answer
/// that lost four replies).
#[tokio::test]
async fn an_append_retried_after_others_appended_past_the_window_is_stored_once() {
    for conditional in [false, true] {
        let mut flaky = Flaky::new(1, dropped);
        flaky.applies = true;
        flaky.meddle = Some(ChatMessage::user("someone else"));
        flaky.meddles = DEDUP_WINDOW + 6;
        let inner = Arc::clone(&flaky.inner);
        let store = Arc::new(Intercepted(flaky)).layer(retry());
        inner
            .append("s", &[ChatMessage::user("first")])
            .await
            .unwrap();
        let (_, revision) = inner.load_revision("s").await.unwrap();
        let mine = [ChatMessage::assistant("mine")];
        if conditional {
            let expected = Expect::Generation(revision.generation);
            let change = Change::Append(&mine);
            store.write_if("s", expected, change).await.unwrap();
        } else {
            store.append("s", &mine).await.unwrap();
        }
        let history = store.load("s").await.unwrap();
        let copies = history.iter().filter(|m| m.content == "mine").count();
        assert_eq!(copies, 1, "conditional: {conditional}");
        assert_eq!(history.len(), 1 + 1 + DEDUP_WINDOW + 6);
    }
}

/// An append whose first attempt applied, its reply lost, in a session that the read
/// before another attempt cannot read (a damaged message elsewhere in it, or one the
/// encryption layer inside cannot open: an error no retry fixes). The append itself does
/// not need that read, so the batch is sent again whole and the backend's window stores it
/// once, by `append` and by a conditional append that keeps the generation. (The read's
/// error was returned instead, failing an append that had applied.)
#[tokio::test]
async fn an_append_retried_in_a_session_it_cannot_read_is_sent_again_whole() {
    for conditional in [false, true] {
        let mut flaky = Flaky::new(1, dropped);
        flaky.applies = true;
        flaky.cut_reads_after = true;
        flaky.read_error = Some(damaged);
        let inner = Arc::clone(&flaky.inner);
        inner.append("s", &[ChatMessage::user("a")]).await.unwrap();
        let (_, at) = inner.load_revision("s").await.unwrap();
        let (store, calls) = retried(flaky);
        let mine = [ChatMessage::assistant("mine")];
        if conditional {
            let expected = Expect::Generation(at.generation);
            let generation = store.write_if("s", expected, Change::Append(&mine));
            assert_eq!(generation.await.unwrap(), at.generation);
        } else {
            store.append("s", &mine).await.unwrap();
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "conditional: {conditional}"
        );
        let history = inner.load("s").await.unwrap();
        let contents: Vec<&str> = history.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["a", "mine"], "conditional: {conditional}");
    }
}

/// A damaged session: an error no retry fixes.
fn damaged() -> Error {
    Error::Corrupt {
        backend: "flaky",
        session_id: "s".into(),
        detail: "line 1: not JSON".into(),
    }
}

/// An empty conditional append stores nothing, so its answer is the check of what it
/// expects and nothing else: retried after a dropped first attempt, it is sent again as it
/// is, and a session that no longer meets the expectation is a conflict. (Taken for an
/// append whose messages were all stored, it was answered the session's generation
/// without that check: a stale revision passed for the current one.)
#[tokio::test]
async fn an_empty_conditional_append_retried_still_checks_what_it_expects() {
    let flaky = Flaky::new(1, dropped);
    let inner = Arc::clone(&flaky.inner);
    inner.append("s", &[ChatMessage::user("a")]).await.unwrap();
    let (_, stale) = inner.load_revision("s").await.unwrap();
    inner.append("s", &[ChatMessage::user("b")]).await.unwrap();
    let (store, calls) = retried(flaky);
    let err = store
        .write_if("s", Expect::Exactly(stale), Change::Append(&[]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "sent again, and refused");
}

/// A conditional append whose first attempt applied, its reply lost, after which another
/// writer rewrote the session keeping the message (a summary of what came before): the
/// retry finds the message stored and answers the generation the append left, the one it
/// expected, which an append keeps. Answered the rewrite's, the caller took its own
/// history and the message for what the session holds under it, and its next conditional
/// write (an undo's truncate, a summary's replace) would have applied to the rewrite.
#[tokio::test]
async fn an_append_found_stored_after_a_rewrite_answers_the_generation_it_left() {
    for exactly in [false, true] {
        let mine = ChatMessage::assistant("mine").with_new_id();
        let mut flaky = Flaky::new(1, dropped);
        flaky.applies = true;
        flaky.rewrite = Some(vec![ChatMessage::system("summary"), mine.clone()]);
        let inner = Arc::clone(&flaky.inner);
        let before = [ChatMessage::user("a"), ChatMessage::user("b")];
        inner.append("s", &before).await.unwrap();
        let (_, at) = inner.load_revision("s").await.unwrap();
        let expected = match exactly {
            true => Expect::Exactly(at),
            false => Expect::Generation(at.generation),
        };
        let (store, _) = retried(flaky);
        let change = Change::Append(std::slice::from_ref(&mine));
        let generation = store.write_if("s", expected, change).await.unwrap();
        let (history, now) = inner.load_revision("s").await.unwrap();
        assert_eq!(history.len(), 2, "the rewrite, the message in it once");
        assert_ne!(now.generation, at.generation, "the rewrite gave it another");
        assert_eq!(generation, at.generation, "exactly: {exactly}");
    }
}

/// A database file; every instance is a new pool on it.
struct Sqlite {
    _dir: tempfile::TempDir,
    url: String,
}

#[async_trait]
impl StorageHarness for Sqlite {
    type Storage = SqliteStorage;
    async fn open(&self) -> Result<SqliteStorage> {
        SqliteStorage::connect(&self.url).await
    }
}

#[tokio::test]
async fn retry_outside_or_inside_encryption_stores_one_copy_on_memory() {
    let harness = Lossy::new(Clones(InMemoryStorage::new()));
    cases::retry_outside_or_inside_encryption_stores_one_copy(&harness, &retry(), &encryption())
        .await;
}

#[tokio::test]
async fn retry_outside_or_inside_encryption_stores_one_copy_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    let harness = Lossy::new(Sqlite { _dir: dir, url });
    cases::retry_outside_or_inside_encryption_stores_one_copy(&harness, &retry(), &encryption())
        .await;
}

/// Applies `update_session` and then loses its reply, once.
struct LoseUpdateReply {
    inner: InMemoryStorage,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Intercept for LoseUpdateReply {
    fn inner(&self) -> &dyn ConversationStorage {
        &self.inner
    }

    async fn update_session(
        &self,
        session_id: &str,
        update: &fusion_core::MetaUpdate,
    ) -> Result<Option<fusion_core::SessionInfo>> {
        let result = self.inner.update_session(session_id, update).await?;
        if self.armed.swap(false, Ordering::SeqCst) {
            return Err(Error::Backend {
                backend: "lossy",
                message: "applied, but the reply was lost (injected fault)".into(),
                retryable: true,
                source: None,
            });
        }
        Ok(result)
    }
}

/// Session "s" created with `meta` in a store whose updates can lose their reply (armed
/// by the test), and that store under the retry layer.
async fn losing_update_replies(
    meta: fusion_core::SessionMeta,
) -> (
    Arc<Intercepted<LoseUpdateReply>>,
    Arc<dyn ConversationStorage>,
) {
    let store = Arc::new(Intercepted(LoseUpdateReply {
        inner: InMemoryStorage::new(),
        armed: false.into(),
    }));
    store
        .create_session("s", &meta, &[ChatMessage::user("hi")])
        .await
        .unwrap();
    let layered = Arc::clone(&store).layer(retry());
    (store, layered)
}

/// Found by an audit on Redis and PostgreSQL: the retry of an owner change on condition of
/// the old owner met its own change and reported `NotOwner`, although the session was
/// the new owner's.
#[tokio::test]
async fn an_owner_change_whose_reply_was_lost_reports_that_it_applied() {
    use fusion_core::{MetaUpdate, SessionMeta};
    let (store, layered) = losing_update_replies(SessionMeta::new().owner("alice")).await;

    store.0.armed.store(true, Ordering::SeqCst);
    // An expiry to the nanosecond, which backends keep to the microsecond (review).
    let at = std::time::SystemTime::UNIX_EPOCH + Duration::new(4_000_000_000, 123_456_789);
    let hand_over = MetaUpdate::new()
        .owner(Some("bob"))
        .title(Some("handed over"))
        .expiry(Some(fusion_core::Expiry::At(at)))
        .if_owner("alice");
    let info = layered
        .update_session("s", &hand_over)
        .await
        .unwrap()
        .expect("the session");
    assert_eq!(info.meta.owner.as_deref(), Some("bob"));
    assert!(!store.0.armed.load(Ordering::SeqCst), "the reply was lost");

    // Refused for real (the session is bob's, and this update would change it): still
    // NotOwner, after an attempt whose reply was lost or not.
    for armed in [true, false] {
        store.0.armed.store(armed, Ordering::SeqCst);
        let take = MetaUpdate::new().owner(Some("carol")).if_owner("alice");
        let err = layered.update_session("s", &take).await.unwrap_err();
        assert!(matches!(err, Error::NotOwner { .. }), "{err}");
    }
    let info = layered.session_info("s").await.unwrap().unwrap();
    assert_eq!(info.meta.owner.as_deref(), Some("bob"));
    assert_eq!(info.meta.title.as_deref(), Some("handed over"));
}

/// The same for a rename on condition of the old title (`if_title`): its retry meets its
/// own title, which is not the one it requires.
#[tokio::test]
async fn a_conditional_rename_whose_reply_was_lost_reports_that_it_applied() {
    use fusion_core::{MetaUpdate, SessionMeta};
    let (store, layered) = losing_update_replies(SessionMeta::new().title("draft")).await;

    store.0.armed.store(true, Ordering::SeqCst);
    let rename = MetaUpdate::new()
        .title(Some("final"))
        .if_title(Some("draft"));
    let info = layered.update_session("s", &rename).await.unwrap();
    assert_eq!(
        info.expect("the session").meta.title.as_deref(),
        Some("final")
    );
    assert!(!store.0.armed.load(Ordering::SeqCst), "the reply was lost");

    // Refused for real (renamed by someone else, to another title): still TitleChanged,
    // after an attempt whose reply was lost or not; a refused change of tags alone too.
    for armed in [true, false] {
        store.0.armed.store(armed, Ordering::SeqCst);
        let stale = MetaUpdate::new()
            .title(Some("other"))
            .if_title(Some("draft"));
        let err = layered.update_session("s", &stale).await.unwrap_err();
        assert!(matches!(err, Error::TitleChanged { .. }), "{err}");
        let tag = MetaUpdate::new().add_tag("t").if_title(Some("draft"));
        let err = layered.update_session("s", &tag).await.unwrap_err();
        assert!(matches!(err, Error::TitleChanged { .. }), "{err}");
    }
    let info = layered.session_info("s").await.unwrap().unwrap();
    assert_eq!(info.meta.title.as_deref(), Some("final"));
    assert!(info.meta.tags.is_empty());
}

#[tokio::test]
async fn a_rewrite_whose_first_read_failed_is_unknown_not_a_conflict_after_a_lost_reply() {
    // The read before the first attempt fails on every try, the rewrite then applies,
    // its reply is lost, and another writer appends: what it removed is unknown, so
    // whether the session holds what it leaves cannot be told. A conflict would say
    // nothing was written, and the caller would compact (or undo) again.
    let turns = with_ids("turn", 5);
    let compacted = [ChatMessage::user("summary").with_new_id(), turns[4].clone()];
    for truncate in [false, true] {
        let mut flaky = Flaky::new(1, dropped);
        flaky.applies = true;
        flaky.meddle = Some(ChatMessage::user("someone else").with_new_id());
        flaky.first_reads_cut = AtomicUsize::new(4);
        flaky.inner.append("s", &turns).await.unwrap();
        let inner = Arc::clone(&flaky.inner);
        let (_, revision) = inner.load_revision("s").await.unwrap();
        let (store, _) = retried(flaky);
        let change = match truncate {
            true => Change::Truncate(3),
            false => Change::Replace(&compacted),
        };
        let err = store
            .write_if("s", Expect::Exactly(revision), change)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Backend {
                    retryable: true,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("unknown"), "{err}");
        assert_eq!(
            inner.load("s").await.unwrap().len(),
            if truncate { 4 } else { 3 }
        );
    }
    // Without the write's lost reply, a refusal stays a conflict.
    let flaky = Flaky::new(0, dropped);
    flaky.first_reads_cut.store(4, Ordering::SeqCst);
    flaky.inner.append("s", &turns).await.unwrap();
    let (store, _) = retried(flaky);
    let result = store
        .write_if("s", Expect::Generation(7), Change::Truncate(3))
        .await;
    assert!(matches!(result, Err(Error::Conflict { .. })), "{result:?}");
}
