//! Unit tests of a session's expiry in [`migrate_one`]: one that runs out as the copy
//! lands, and one a metadata sync leaves out of a target session that exists, with the
//! target's clock ahead of this machine's or behind it.

use super::*;

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

/// The source and the target share a clock 20 minutes behind this machine's (one server),
/// and the source's expiry instant, ten minutes ago by this machine's clock, is ten minutes
/// off by theirs: the target's session, extended, its last write (this run's) a reading of
/// the target's clock, takes the expiry with the rest of the metadata, rather than be kept
/// without it, never to expire, and be said expired by a clock that has not reached it.
#[tokio::test]
async fn a_metadata_sync_after_a_write_reads_a_target_clock_behind_this_machines() {
    let source = Intercepted(ClockAhead::behind(InMemoryStorage::new(), 20 * MINUTE));
    let at = SystemTime::now() - 10 * MINUTE;
    let meta = SessionMeta::new().title("Ending").expiry(Expiry::At(at));
    created(&source, "s", &meta, MINUTE).await;
    let target = Arc::new(Intercepted(ClockAhead::behind(
        InMemoryStorage::new(),
        20 * MINUTE,
    )));
    target
        .0
        .inner()
        .append("s", &conversation()[..1])
        .await
        .unwrap();

    let outcome = migrate_one(&source, &views(target.clone()), "s", &args()).await;
    assert!(matches!(outcome, Ok(Outcome::Extended(1))), "{outcome:?}");
    let synced = target.session_info("s").await.unwrap().expect("live");
    assert_eq!(synced.meta.title.as_deref(), Some("Ending"));
    assert!(
        matches!(synced.meta.expiry, Some(Expiry::At(_))),
        "{synced:?}"
    );
    assert_eq!(target.load("s").await.unwrap(), conversation());
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

/// The target's session, up to date, is deleted before its metadata is synced, and the
/// source's expiry instant (all its metadata) has passed by this machine's clock, ahead of
/// the source's: nothing is kept live to say so of. The sync fails saying the session was
/// deleted, as it does for any metadata, rather than report it kept live.
#[tokio::test]
async fn a_target_deleted_before_its_metadata_sync_is_not_said_kept_live() {
    let source = Intercepted(ClockAhead::behind(InMemoryStorage::new(), 20 * MINUTE));
    let at = SystemTime::now() - 10 * MINUTE;
    created(
        &source,
        "s",
        &SessionMeta::new().expiry(Expiry::At(at)),
        MINUTE,
    )
    .await;
    let inner = InMemoryStorage::new();
    inner.append("s", &conversation()).await.unwrap();
    let target = Arc::new(Intercepted(MeddlesAfterFirstRead::new(
        inner,
        Meddling::Delete,
    )));

    let outcome = migrate_one(&source, &views(target.clone()), "s", &args()).await;
    let err = outcome.expect_err("deleted, not kept live");
    assert_eq!(
        crate::one_line(&err),
        "the target session was deleted while its metadata was written; re-run to copy it"
    );
    assert!(target.session_info("s").await.unwrap().is_none());
}
