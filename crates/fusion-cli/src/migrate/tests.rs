//! Unit tests of one session's migration ([`migrate_one`]) against in-process storages
//! that misbehave on purpose: a target whose clock runs ahead, another writer between two
//! reads of the source, a write whose reply is lost.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fusion::layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion::storage::{Expiry, InMemoryStorage, Intercept, Intercepted};
use fusion_core::testkit::faults::LoseReplies;

use super::*;
use crate::testing::{
    ClockAhead, DropsNextWrite, Generationless, LosesNextReply, MeddlesAfterFirstRead, Meddling,
    conversation, views,
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

#[tokio::test]
async fn a_copy_whose_idle_expiry_ran_out_on_the_targets_clock_is_reported_expired() {
    // Idle for 50 minutes of its hour: ten minutes left by the source's clock, none by
    // the target's, 20 minutes ahead.
    let source = InMemoryStorage::new();
    let meta = SessionMeta::new()
        .title("Nearly done")
        .expiry(Expiry::Idle(HOUR));
    let times = created(&source, "s", &meta, 50 * MINUTE).await;
    let target = Arc::new(Intercepted(ClockAhead::new(
        InMemoryStorage::new(),
        20 * MINUTE,
    )));

    let outcome = migrate_one(&source, &views(target.clone()), "s", &args()).await;
    let Ok(Outcome::Expired { why, kept: None }) = outcome else {
        panic!("expected the session reported expired, got {outcome:?}");
    };
    assert_eq!(why, copies::ran_out(Expiry::Idle(HOUR), Some(times)));
    assert!(why.starts_with("its idle expiry ran out at "), "{why}");
    assert!(target.session_info("s").await.unwrap().is_none());
    assert!(target.load("s").await.unwrap().is_empty());

    // Counted apart from the copies, with a line that says what happened, and left out of
    // `--encrypt`'s rekey: nothing of it can be read to encrypt.
    let outcome = Outcome::Expired { why, kept: None };
    assert!(outcome.left_alone());
    let mut summary = Summary::default();
    let line = summary.record("s", Ok(outcome), None, &args()).unwrap();
    assert_eq!((summary.expired, summary.copied, summary.failed), (1, 0, 0));
    assert!(
        line.starts_with("expired s: the copy was gone for every reader as soon as it was written, its idle expiry ran out at "),
        "{line}"
    );

    // With time to spare on both clocks, the same session is copied with its expiry.
    source.delete("s").await.unwrap();
    created(&source, "s", &meta, 10 * MINUTE).await;
    let outcome = migrate_one(&source, &views(target.clone()), "s", &args()).await;
    assert!(matches!(outcome, Ok(Outcome::Copied(2))), "{outcome:?}");
    let copy = target.session_info("s").await.unwrap().unwrap();
    assert_eq!(copy.meta, meta);
}

/// The source's expiry instant, ten minutes off by this machine's clock, has passed by the
/// target's, 20 minutes ahead (as its last write of the session shows), when the metadata
/// of a target session holding the source's history is synced: written, it would make
/// that session, live, gone for every reader at once. It is left out, the rest of the
/// metadata synced, and the session reported expired, kept.
#[tokio::test]
async fn a_metadata_sync_leaves_out_an_expiry_past_on_the_targets_clock() {
    let source = InMemoryStorage::new();
    let at = SystemTime::now() + 10 * MINUTE;
    let meta = SessionMeta::new().title("Ending").expiry(Expiry::At(at));
    created(&source, "s", &meta, MINUTE).await;
    let target = Arc::new(Intercepted(ClockAhead::new(
        InMemoryStorage::new(),
        20 * MINUTE,
    )));
    target.0.inner().append("s", &conversation()).await.unwrap();

    let outcome = migrate_one(&source, &views(target.clone()), "s", &args()).await;
    let Ok(Outcome::Expired {
        why,
        kept: Some(done),
    }) = outcome
    else {
        panic!("expected the session reported expired and kept, got {outcome:?}");
    };
    assert!(matches!(*done, Outcome::UpToDate), "{done:?}");
    assert_eq!(why, copies::ran_out(Expiry::At(at), None));
    let kept = target.session_info("s").await.unwrap().expect("kept live");
    assert_eq!(
        kept.meta,
        SessionMeta::new().title("Ending"),
        "all but the expiry"
    );
    assert_eq!(target.load("s").await.unwrap(), conversation());

    // Counted apart from the copies gone as they landed (and as up to date, which it is),
    // with a line that says the target's session is kept; `--encrypt` still rekeys it, as
    // a reader sees it.
    let kept = Some(done);
    let outcome = Outcome::Expired { why, kept };
    assert!(!outcome.left_alone());
    let mut summary = Summary::default();
    let line = summary.record("s", Ok(outcome), None, &args()).unwrap();
    let counts = (summary.expired_kept, summary.expired, summary.up_to_date);
    assert_eq!(counts, (1, 0, 1));
    assert!(
        line.starts_with("expired s: its expiry (")
            && line.ends_with(
                "has passed by the target's clock (the source's session is gone from then on \
                 too); the target's session, which existed, is kept live, its metadata synced \
                 but for that expiry, which would have made it gone for every reader at once"
            ),
        "{line}"
    );
    // A dry run with `--encrypt` says what the run would copy and encrypt, as for a copy.
    let dry = MigrateArgs {
        dry_run: true,
        encrypt: true,
        ..args()
    };
    let (why, plan) = (
        String::new(),
        Some("1 message to write encrypted".to_string()),
    );
    let kept = Some(Box::new(Outcome::Extended(1)));
    let outcome = Outcome::Expired { why, kept };
    let line = summary.record("s", Ok(outcome), plan, &dry).unwrap();
    assert!(
        line.contains("kept live, 1 message to be copied to it, its metadata to be synced")
            && line.ends_with("at once; 1 message to write encrypted"),
        "{line}"
    );
}

/// `--force` over a target whose metadata sync leaves out the source's expiry instant,
/// past by the target's clock (20 minutes ahead): the history it replaced (the target's own
/// message deleted), or the metadata it replaced, is still said and counted replaced,
/// beside the expiry left out; and a dry run with `--encrypt` counts none of the messages
/// the replace removes as ones to encrypt.
#[tokio::test]
async fn a_forced_replace_whose_expiry_is_left_out_is_still_reported_replaced() {
    let source = InMemoryStorage::new();
    let at = SystemTime::now() + 10 * MINUTE;
    let meta = SessionMeta::new().title("Ending").expiry(Expiry::At(at));
    created(&source, "s", &meta, MINUTE).await;
    created(&source, "m", &meta, MINUTE).await;
    let target = Arc::new(Intercepted(ClockAhead::new(
        InMemoryStorage::new(),
        20 * MINUTE,
    )));
    let own = ChatMessage::user("Written after the switch.");
    let longer = [conversation(), vec![own]].concat();
    target.0.inner().append("s", &longer).await.unwrap();
    let mine = SessionMeta::new().title("Mine");
    let inner = target.0.inner();
    inner
        .create_session("m", &mine, &conversation())
        .await
        .unwrap();
    let force = MigrateArgs {
        force: true,
        ..args()
    };

    let dry = MigrateArgs {
        dry_run: true,
        encrypt: true,
        force: true,
        ..args()
    };
    let outcome = migrate_one(&source, &views(target.clone()), "s", &dry).await;
    let outcome = outcome.unwrap();
    let key = EncryptionLayer::new(EncryptionKeys::new("k1", &[7; 32]).unwrap());
    let sealed = encrypt::would_seal(&key, target.as_ref(), "s", &outcome)
        .await
        .unwrap();
    assert_eq!(
        (sealed.encrypted, sealed.reencrypted),
        (0, 0),
        "all replaced"
    );
    let plan = Some(encrypt::plan(&key, &outcome, &sealed));
    let line = Summary::default()
        .record("s", Ok(outcome), plan, &dry)
        .unwrap();
    assert!(
        line.starts_with(
            "would replace s: the target held a different history (3 messages); expired s: "
        ) && line.ends_with("; 2 messages to write encrypted with key \"k1\""),
        "{line}"
    );

    let mut summary = Summary::default();
    for (id, said) in [
        (
            "s",
            "replaced s: the target held a different history (3 messages); expired s: ",
        ),
        (
            "m",
            "replaced the metadata of m: the target held different metadata (title: ",
        ),
    ] {
        let outcome = migrate_one(&source, &views(target.clone()), id, &force).await;
        let line = summary.record(id, outcome, None, &force).unwrap();
        assert!(
            line.starts_with(said) && line.contains("but for that expiry"),
            "{line}"
        );
        let kept = target.session_info(id).await.unwrap().expect("kept live");
        assert_eq!(kept.meta, SessionMeta::new().title("Ending"));
        assert_eq!(target.load(id).await.unwrap(), conversation());
    }
    let counts = (summary.replaced, summary.expired_kept, summary.up_to_date);
    assert_eq!(counts, (2, 2, 0));
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
    let replaced = matches!(
        outcome,
        Ok(Outcome::Replaced {
            previous: 3,
            written: 2
        })
    );
    assert!(replaced, "{outcome:?}");
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
    let replaced = matches!(
        outcome,
        Ok(Outcome::Replaced {
            previous: 4,
            written: 2
        })
    );
    assert!(replaced, "{outcome:?}");
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
    let replaced = matches!(
        outcome,
        Ok(Outcome::Replaced {
            previous: 3,
            written: 2
        })
    );
    assert!(replaced, "{outcome:?}");
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
