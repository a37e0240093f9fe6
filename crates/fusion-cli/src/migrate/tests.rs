//! Unit tests of one session's migration ([`migrate_one`]) against in-process storages
//! that misbehave on purpose: a target whose clock runs ahead (in [`expiry`]), another
//! writer between two reads of the source, a write whose reply is lost.

mod expiry;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fusion::layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion::storage::{Expiry, InMemoryStorage, Intercept, Intercepted};
use fusion_core::testkit::faults::LoseReplies;

use super::*;
use crate::testing::{
    ClockAhead, DropsNextWrite, Generationless, LosesNextReply, MeddlesAfterFirstRead, Meddling,
    ReadsFailAfter, conversation, views,
};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// A real run's options: no dry run, no force, no `--encrypt`.
fn args() -> MigrateArgs {
    MigrateArgs {
        from: "source".into(),
        to: "target".into(),
        dry_run: false,
        force: false,
        encrypt: false,
    }
}

/// Session `id` in `storage`, created with `meta` an hour before its last write,
/// `idle_for` ago.
async fn created(
    storage: &dyn ConversationStorage,
    id: &str,
    meta: &SessionMeta,
    idle_for: Duration,
) -> SessionTimes {
    let now = SystemTime::now();
    let times = SessionTimes::new(now - idle_for - HOUR, now - idle_for);
    storage
        .create_session_with_times(id, meta, &conversation(), times)
        .await
        .unwrap();
    times
}

/// The times the copy gets are read after its messages: a message another writer appends
/// in between is not copied this time, and the copy's last write is not older than any
/// message it holds.
#[tokio::test]
async fn the_copys_last_write_is_never_older_than_the_messages_it_copies() {
    let inner = InMemoryStorage::new();
    let meta = SessionMeta::new().title("Busy");
    let written = created(&inner, "s", &meta, 24 * HOUR).await.updated_at;
    let later = ChatMessage::user("One more thing.");
    let source = Intercepted(MeddlesAfterFirstRead::new(inner, Meddling::Append(later)));
    let target = Arc::new(InMemoryStorage::new());

    let outcome = migrate_one(&source, &views(target.clone()), "s", &args()).await;
    assert!(matches!(outcome, Ok(Outcome::Copied(_))), "{outcome:?}");
    let copied = target.load("s").await.unwrap();
    let copy = target.session_info("s").await.unwrap().unwrap();
    let appended_at = source.session_info("s").await.unwrap().unwrap().updated_at;
    // The last write of the last message the copy holds, in the source.
    let newest_copied = if copied.len() == 3 {
        appended_at
    } else {
        Some(written)
    };
    assert!(
        copy.updated_at >= newest_copied,
        "the copy holds {} messages, last written {:?} in the source, yet its last write is {:?}",
        copied.len(),
        newest_copied,
        copy.updated_at
    );
    assert_eq!(copy.meta, meta);

    // A re-run brings the appended message.
    let outcome = migrate_one(&source, &views(target.clone()), "s", &args()).await;
    assert!(matches!(outcome, Ok(Outcome::Extended(1))), "{outcome:?}");
}

/// A rewrite between the reads of the messages and of the facts would pair the old
/// history with the new one's facts: both are read again, and the copy is the new one.
#[tokio::test]
async fn a_source_rewritten_between_its_two_reads_is_read_again() {
    let inner = InMemoryStorage::new();
    created(&inner, "s", &SessionMeta::new(), HOUR).await;
    let rewritten = vec![ChatMessage::user(
        "Start over: what is the capital of Spain?",
    )];
    let meddling = Meddling::Rewrite(rewritten.clone());
    let source = Intercepted(MeddlesAfterFirstRead::new(inner, meddling));
    let target = Arc::new(InMemoryStorage::new());

    let outcome = migrate_one(&source, &views(target.clone()), "s", &args()).await;
    assert!(matches!(outcome, Ok(Outcome::Copied(1))), "{outcome:?}");
    assert_eq!(target.load("s").await.unwrap(), rewritten);
    let source_times = SessionTimes::of(&source.session_info("s").await.unwrap().unwrap());
    let copy_times = SessionTimes::of(&target.session_info("s").await.unwrap().unwrap());
    assert_eq!(copy_times, source_times, "the rewritten session's times");
}

/// Deleted between the reads of its messages and of its facts: gone, as a session deleted
/// before it was read, and nothing is written.
#[tokio::test]
async fn a_source_deleted_between_its_two_reads_is_gone() {
    let inner = InMemoryStorage::new();
    created(&inner, "s", &SessionMeta::new(), HOUR).await;
    let source = Intercepted(MeddlesAfterFirstRead::new(inner, Meddling::Delete));
    let target = Arc::new(InMemoryStorage::new());

    let outcome = migrate_one(&source, &views(target.clone()), "s", &args()).await;
    assert!(matches!(outcome, Ok(Outcome::Gone)), "{outcome:?}");
    assert!(target.list_sessions().await.unwrap().is_empty());
}

/// The extension of a target holding a prefix, whose reply was lost: settled by reading
/// back ([`copies::write_once`]), appended once and reported extended.
#[tokio::test]
async fn an_extension_whose_reply_was_lost_is_appended_once() {
    let source = InMemoryStorage::new();
    let history = conversation();
    source.append("s", &history).await.unwrap();
    let target = Arc::new(Intercepted(LoseReplies::new(InMemoryStorage::new())));
    target.append("s", &history[..1]).await.unwrap();
    target.0.arm();

    let outcome = migrate_one(&source, &views(target.clone()), "s", &args()).await;
    assert!(matches!(outcome, Ok(Outcome::Extended(1))), "{outcome:?}");
    assert_eq!(target.0.lost(), 1, "the append applied and lost its reply");
    assert_eq!(target.load("s").await.unwrap(), history, "appended once");
}

/// The same, on a target that fails every read after the two the migration needs: its
/// read of the target, and the read back that settles the lost reply. That read back
/// already shows the append landed, and checks the copy; the target is not read a third
/// time to check it again.
#[tokio::test]
async fn an_extension_whose_reply_was_lost_is_checked_on_its_read_back() {
    let source = InMemoryStorage::new();
    let history = conversation();
    source.append("s", &history).await.unwrap();
    let losing = Intercepted(LoseReplies::new(InMemoryStorage::new()));
    losing.append("s", &history[..1]).await.unwrap();
    losing.0.arm();
    let target = Arc::new(Intercepted(ReadsFailAfter::new(losing, 2)));

    let outcome = migrate_one(&source, &views(target.clone()), "s", &args()).await;
    assert!(matches!(outcome, Ok(Outcome::Extended(1))), "{outcome:?}");
    let losing = target.0.inner();
    assert_eq!(losing.load("s").await.unwrap(), history, "appended once");
}

/// That `outcome` is a replace of a target of `previous` messages by the source's two.
fn assert_replaced(outcome: &Result<Outcome>, previous: usize) {
    let replaced = matches!(
        outcome,
        Ok(Outcome::Replaced { previous: p, written: 2 }) if *p == previous
    );
    assert!(replaced, "{outcome:?}");
}

/// `--force` over a target holding the source's history and more (an application's
/// messages after a switch), read and written through `encryption`, whose replace fails
/// before it applies, another writer doing `meanwhile` to the target right after: the
/// outcome, and what the target holds then.
async fn replace_dropped_before_it_applied(
    encryption: EncryptionLayer,
    meanwhile: Option<Meddling>,
) -> (Result<Outcome>, Vec<ChatMessage>) {
    let source = InMemoryStorage::new();
    source.append("s", &conversation()).await.unwrap();
    let mut dropping = DropsNextWrite::new(InMemoryStorage::new());
    if let Some(meddling) = meanwhile {
        dropping = dropping.meanwhile(meddling);
    }
    let target = Arc::new(Intercepted(dropping));
    let after_the_switch = ChatMessage::user("Written after the switch.");
    let longer = [conversation(), vec![after_the_switch]].concat();
    target.0.inner().append("s", &longer).await.unwrap();
    let force = MigrateArgs {
        force: true,
        ..args()
    };
    let views = Layers::new(encryption, true).views(target.clone());
    let outcome = migrate_one(&source, &views, "s", &force).await;
    (outcome, views.storage.load("s").await.unwrap())
}

/// [`replace_dropped_before_it_applied`] alone: the target read back still starts with
/// the source's history, yet is as it was read, so the replace did not apply and is made
/// again, rather than be taken for done and reported diverged.
#[tokio::test]
async fn a_forced_replace_that_did_not_apply_is_made_again() {
    let keyless = EncryptionLayer::without_keys();
    let (outcome, stored) = replace_dropped_before_it_applied(keyless, None).await;
    assert_replaced(&outcome, 3);
    assert_eq!(stored, conversation(), "replaced");
}

/// An extension whose every write was lost before it applied, the target reading back
/// unchanged each time: the session fails saying so, not with the bare error of the last
/// write, which reads as if nothing had been tried.
#[tokio::test]
async fn an_extension_whose_replies_were_all_lost_fails_saying_so() {
    let source = InMemoryStorage::new();
    let history = conversation();
    source.append("s", &history).await.unwrap();
    let target = Arc::new(Intercepted(DropsNextWrite::times(
        InMemoryStorage::new(),
        usize::MAX,
    )));
    target.0.inner().append("s", &history[..1]).await.unwrap();

    let err = migrate_one(&source, &views(target.clone()), "s", &args())
        .await
        .unwrap_err();
    let said = crate::one_line(&err);
    assert!(
        said.starts_with(
            "cannot write the target: memory: the reply to each of 3 writes was lost, and the \
             session read back unchanged after each: memory: the connection dropped"
        ) && said.ends_with("(injected fault)"),
        "{said}"
    );
    assert!(storage_failure(&err), "counted as a failing storage's");
    assert_eq!(
        target.load("s").await.unwrap(),
        history[..1],
        "nothing written"
    );
}

/// [`replace_dropped_before_it_applied`] while another writer appends to the target: the
/// target read back starts with the source's history, under the generation it was read
/// at, which a replace that applied would have changed. So the replace did not apply:
/// decided anew, as after a conflict, the target (the appended message seen) is replaced,
/// rather than be taken for done and reported diverged ("the target gained messages while
/// it was migrated").
#[tokio::test]
async fn a_forced_replace_that_did_not_apply_while_another_writer_appended_is_decided_anew() {
    let appended = ChatMessage::user("Appended while the replace was on its way.");
    let keyless = EncryptionLayer::without_keys();
    let meddling = Some(Meddling::Append(appended));
    let (outcome, stored) = replace_dropped_before_it_applied(keyless, meddling).await;
    assert_replaced(&outcome, 4);
    assert_eq!(stored, conversation(), "replaced");
}

/// [`replace_dropped_before_it_applied`] while `sessions rekey` encrypts the target (a
/// key given): the target reads back holding just what it held, under a fresh
/// generation, as a replace that applied would leave it only with the source's history.
/// So the replace did not apply: decided anew, as after a conflict, the target is
/// replaced, rather than be taken for done and reported diverged ("the target gained
/// messages while it was migrated"), which it did not.
#[tokio::test]
async fn a_forced_replace_that_did_not_apply_while_a_rekey_rewrote_the_target_is_decided_anew() {
    let keys = EncryptionKeys::new("k1", &[7; 32]).unwrap();
    let encryption = EncryptionLayer::new(keys);
    let meddling = Some(Meddling::Rekey(encryption.clone()));
    let (outcome, stored) = replace_dropped_before_it_applied(encryption, meddling).await;
    assert_replaced(&outcome, 3);
    assert_eq!(stored, conversation(), "replaced");
}

/// A `--force` replace on a backend that keeps no generations (a user-written one on the
/// trait's defaults), which applied and lost its reply, another writer appending after it
/// before the read back: every session is at one generation there, so the target reads
/// back under the generation it was read at, starting with the source's history. Taken
/// for not applied (a replace would have changed the generation elsewhere), it would be
/// decided anew and replaced again, wiping the message appended after the copy; it is
/// taken for done, and reported diverged with that message kept. With the target as long
/// as it was read (one message replaced away, one appended), its revision is the one read
/// too: only its messages show that it changed, and it is not written again either.
#[tokio::test]
async fn a_forced_replace_on_a_backend_without_generations_keeps_a_message_appended_after_it() {
    let source = InMemoryStorage::new();
    let history = conversation();
    source.append("s", &history).await.unwrap();
    let appended = ChatMessage::user("Appended after the copy.");
    let kept = [&history[..], std::slice::from_ref(&appended)].concat();
    for (targets_own, previous) in [(2, 4), (1, 3)] {
        let target = Arc::new(Intercepted(LosesNextReply::meanwhile(
            Generationless::default(),
            Meddling::Append(appended.clone()),
        )));
        let own =
            (0..targets_own).map(|n| ChatMessage::user(format!("Written after the switch, {n}.")));
        let longer: Vec<_> = history.iter().cloned().chain(own).collect();
        assert_eq!(longer.len(), previous);
        target.0.inner().save("s", &longer).await.unwrap();

        let force = MigrateArgs {
            force: true,
            ..args()
        };
        let outcome = migrate_one(&source, &views(target.clone()), "s", &force).await;
        assert!(
            matches!(outcome, Ok(Outcome::Diverged(_))),
            "{previous} before: {outcome:?}"
        );
        assert_eq!(
            target.load("s").await.unwrap(),
            kept,
            "{previous} before: replaced once"
        );
    }
}

/// A target that refuses the second message of every write, as a storage refuses one it
/// could not read back.
struct RefusesSecondMessage(InMemoryStorage);

#[async_trait::async_trait]
impl Intercept for RefusesSecondMessage {
    fn inner(&self) -> &dyn ConversationStorage {
        &self.0
    }

    async fn write_if(&self, id: &str, _: Expect, _: Change<'_>) -> fusion::Result<u64> {
        Err(fusion::Error::InvalidMessage {
            backend: "test",
            session_id: id.to_string(),
            index: 1,
            detail: "refused".into(),
        })
    }
}

/// A message the target refuses while an extension is written is named by its place in
/// the source: the storage's "message 2 (index 1) of the write" counts from the first
/// message the target lacked, which is the source's third here.
#[tokio::test]
async fn a_message_the_target_refuses_is_named_by_its_place_in_the_source() {
    let source = InMemoryStorage::new();
    let history = [conversation(), conversation()].concat();
    source.append("s", &history).await.unwrap();
    let target = Arc::new(Intercepted(RefusesSecondMessage(InMemoryStorage::new())));
    target.0.0.append("s", &history[..1]).await.unwrap();

    let err = migrate_one(&source, &views(target), "s", &args())
        .await
        .unwrap_err();
    let said = crate::one_line(&err);
    assert!(
        said.starts_with(
            "cannot write the target: it refused the source's message 3: test: \
                          refused to store message 2 (index 1) of the write"
        ),
        "{said}"
    );
}
