//! What a write conditional on the last write ([`Expect::UnwrittenSince`], what
//! `fusion sessions purge --older-than` deletes with) compares on the file-system
//! backend: the `updated_at` that `session_info` reports, to the microsecond, where the
//! counters describe the session file (their time); where they are stale or were lost,
//! the latest the last write may have been (the later of their time and the file's
//! modification time plus the 2 s by which file times may fall before a write's own,
//! while `session_info` reports the file's time itself); and that a metadata write racing
//! such a delete is never lost with the session.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, MetaUpdate, Revision, SessionInfo,
    SessionQuery,
};
use fusion_storage_fs::{FileSystemOptions, FileSystemStorage, SyncPolicy};

fn said(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::user(text)]
}

async fn info(storage: &FileSystemStorage, id: &str) -> SessionInfo {
    storage.session_info(id).await.unwrap().unwrap()
}

/// The revision and the last write `session_info` reports.
async fn listed(storage: &FileSystemStorage, id: &str) -> (Revision, SystemTime) {
    let info = info(storage, id).await;
    let revision = Revision {
        generation: info.generation,
        len: info.message_count,
    };
    (revision, info.updated_at.unwrap())
}

fn assert_conflict(outcome: fusion_core::Result<u64>) {
    assert!(
        matches!(outcome, Err(Error::Conflict { .. })),
        "{outcome:?}"
    );
}

/// On the blocking pool (the conformance suite's harness without inline calls makes only
/// deletes and creations this way), an append and a truncation alike.
#[tokio::test]
async fn the_last_write_is_compared_to_the_microsecond_on_the_blocking_pool() {
    let tmp = tempfile::tempdir().unwrap();
    let options = FileSystemOptions::new().inline_calls(false);
    let storage = FileSystemStorage::connect_with(tmp.path(), options)
        .await
        .unwrap();
    storage.append("s", &said("a")).await.unwrap();
    let (revision, written) = listed(&storage, "s").await;
    let unwritten = |revision, since| Expect::UnwrittenSince { revision, since };

    let at_the_instant = unwritten(revision, written);
    assert_conflict(
        storage
            .write_if("s", at_the_instant, Change::Append(&said("b")))
            .await,
    );
    let just_after = unwritten(revision, written + Duration::from_nanos(1));
    let kept = storage
        .write_if("s", just_after, Change::Append(&said("b")))
        .await
        .unwrap();
    assert_eq!(kept, revision.generation);

    let (revision, written) = listed(&storage, "s").await;
    assert_eq!(revision.len, 2);
    let title = MetaUpdate::new().title(Some("renamed"));
    storage.update_session("s", &title).await.unwrap();
    let retitled = unwritten(revision, written + Duration::from_micros(1));
    assert_conflict(storage.write_if("s", retitled, Change::Truncate(0)).await);
    let (_, written) = listed(&storage, "s").await;
    let since = unwritten(revision, written + Duration::from_nanos(1));
    assert_eq!(
        storage
            .write_if("s", since, Change::Truncate(0))
            .await
            .unwrap(),
        0
    );
    assert!(storage.session_info("s").await.unwrap().is_none());
}

/// A session whose lock file holds no counters (an earlier version's, or lost) was last
/// written, for `session_info`, when its file was modified, and for the comparison up to
/// [`SLACK`] later; one whose counters describe an earlier length (a line appended by
/// hand) then too, if that is later than they say.
#[tokio::test]
async fn without_counters_the_files_modification_time_is_compared() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    let line = serde_json::to_string(&ChatMessage::user("old")).unwrap() + "\n";
    std::fs::write(tmp.path().join("old.jsonl"), &line).unwrap();
    std::fs::write(tmp.path().join(".old.lock"), "").unwrap();
    let modified = SystemTime::UNIX_EPOCH + Duration::from_micros(1_600_000_000_123_456);
    common::set_modified(&tmp.path().join("old.jsonl"), modified);
    let (revision, written) = listed(&storage, "old").await;
    assert_eq!(written, modified);
    let unwritten = |since| Expect::UnwrittenSince { revision, since };
    assert_conflict(
        storage
            .write_if("old", unwritten(modified + SLACK), Change::Truncate(0))
            .await,
    );
    let since = unwritten(modified + SLACK + Duration::from_micros(1));
    assert_eq!(
        storage
            .write_if("old", since, Change::Truncate(0))
            .await
            .unwrap(),
        0
    );

    storage.append("stale", &said("a")).await.unwrap();
    let (_, written) = listed(&storage, "stale").await;
    let path = tmp.path().join("stale.jsonl");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(line.as_bytes());
    std::fs::write(&path, bytes).unwrap();
    // Modified after the counters' time: that is the last write.
    let later = written + Duration::from_secs(3600);
    common::set_modified(&path, later);
    let (revision, reported) = listed(&storage, "stale").await;
    assert_eq!((revision.len, reported), (2, later));
    assert_conflict(
        storage
            .write_if(
                "stale",
                unwritten_at(revision, later + SLACK),
                Change::Truncate(0),
            )
            .await,
    );
    let since = unwritten_at(revision, later + SLACK + Duration::from_micros(1));
    assert_eq!(
        storage
            .write_if("stale", since, Change::Truncate(0))
            .await
            .unwrap(),
        0
    );
}

fn unwritten_at(revision: Revision, since: SystemTime) -> Expect {
    Expect::UnwrittenSince { revision, since }
}

/// How much later than its file's time the lost last write of a session may have been.
const SLACK: Duration = Duration::from_secs(2);

/// Under `EveryWrite` an append fsyncs its lines and its journal line, not its counters: a
/// power loss may leave the counters of an earlier write (here faked an hour older, as a
/// slow session's would be) beside the appends it kept. The last write is then no older
/// than the file's modification time, for `session_info` and for a purge of sessions not
/// written since a cutoff after the counters' time, which keeps the session; a listing
/// places it at its last append's line and stores counters of that time.
#[tokio::test]
async fn after_a_power_loss_of_an_appends_counters_the_session_is_no_older_than_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let options = FileSystemOptions::new().sync_policy(SyncPolicy::EveryWrite);
    let storage = FileSystemStorage::connect_with(tmp.path(), options)
        .await
        .unwrap();
    storage.append("other", &said("x")).await.unwrap();
    storage.append("s", &said("a")).await.unwrap();
    let lock = tmp.path().join(".s.lock");
    let before = std::fs::read_to_string(&lock).unwrap();
    let (_, first) = listed(&storage, "s").await;
    storage.append("s", &said("b")).await.unwrap();
    let (_, last) = listed(&storage, "s").await;
    // The counters of the first append, an hour older.
    let micros = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    };
    let old = first - Duration::from_secs(3600);
    let (old_us, first_us) = (micros(old), micros(first));
    std::fs::write(
        &lock,
        before.replace(&format!("{first_us:+020}"), &format!("{old_us:+020}")),
    )
    .unwrap();

    // The file's time may be the line's or either side of it (the clock file times are
    // read from lags the one a line's time is read from by up to a tick); here later,
    // as where the write landed a tick after its stamp.
    let modified = last + Duration::from_millis(5);
    common::set_modified(&tmp.path().join("s.jsonl"), modified);
    let (revision, reported) = listed(&storage, "s").await;
    assert_eq!(revision.len, 2);
    assert_eq!(reported, modified);
    let cutoff = old + Duration::from_secs(60);
    assert_conflict(
        storage
            .write_if("s", unwritten_at(revision, cutoff), Change::Truncate(0))
            .await,
    );

    let page = storage.list_page(&SessionQuery::new()).await.unwrap();
    let ids: Vec<&str> = page.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["s", "other"], "listed once, at its last write");
    assert_eq!(page.sessions[0].updated_at, Some(last));
    assert_eq!(info(&storage, "s").await.updated_at, Some(last), "repaired");
}

/// Titles written while the conditional delete runs either land first, and the delete
/// conflicts, or find the session gone: none is ever written to a session deleted after
/// it. A retitler writes one title after another while the delete runs, so that one would
/// land between a check and a delete that did not hold the session's lock throughout;
/// each round passes whichever comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_title_written_during_the_delete_is_never_deleted_with_it() {
    const ROUNDS: usize = 40;
    const TITLES: usize = 50;
    let tmp = tempfile::tempdir().unwrap();
    let storage = Arc::new(FileSystemStorage::new(tmp.path()));
    for round in 0..ROUNDS {
        let id = format!("s{round}");
        storage.append(&id, &said("a")).await.unwrap();
        let (revision, written) = listed(&storage, &id).await;
        // Met until a title is written: that is stamped at least a microsecond later.
        let expected = Expect::UnwrittenSince {
            revision,
            since: written + Duration::from_nanos(1),
        };
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let delete = tokio::spawn({
            let (storage, barrier, id) = (storage.clone(), barrier.clone(), id.clone());
            async move {
                barrier.wait().await;
                storage.write_if(&id, expected, Change::Truncate(0)).await
            }
        });
        let retitle = tokio::spawn({
            let (storage, barrier, id) = (storage.clone(), barrier.clone(), id.clone());
            async move {
                barrier.wait().await;
                let mut written = 0;
                for n in 0..TITLES {
                    let title = MetaUpdate::new().title(Some(format!("title {n}")));
                    match storage.update_session(&id, &title).await.unwrap() {
                        Some(_) => written += 1,
                        None => break,
                    }
                }
                written
            }
        });
        let (deleted, titles) = (delete.await.unwrap(), retitle.await.unwrap());
        let now = storage.session_info(&id).await.unwrap();
        match deleted {
            Ok(0) => {
                assert_eq!(titles, 0, "round {round}: titles written, then deleted");
                assert!(now.is_none(), "{now:?}");
            }
            Err(Error::Conflict { .. }) => {
                let now = now.expect("kept");
                assert!(titles > 0, "round {round}: a conflict without a title");
                let last = format!("title {}", titles - 1);
                assert_eq!(now.meta.title.as_deref(), Some(last.as_str()));
            }
            other => panic!("round {round}: {other:?}, now {now:?}"),
        }
    }
}
