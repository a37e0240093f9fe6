//! A session whose lock file lost the counters of its last appends (which no policy
//! fsyncs: a power loss may keep the fsynced lines and an earlier write's counters, here
//! written by hand an hour older) is taken for written when its file was modified, if
//! that is later: its idle expiry counts from then (up to the 2 s by which file times may
//! fall before a write's), and a rewrite keeping its times leaves it listed.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, Expiry, Revision, SessionMeta,
    SessionQuery,
};
use fusion_storage_fs::{FileSystemOptions, FileSystemStorage, SyncPolicy};

fn said(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::user(text)]
}

fn micros(t: SystemTime) -> i64 {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    i64::try_from(since.as_micros()).unwrap()
}

/// `counters` (a lock file's contents) with every time stored in it an hour earlier.
fn an_hour_older(counters: &str) -> String {
    let (generation, line) = counters.split_once('\n').unwrap();
    let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
    for at in 0..words.len().saturating_sub(1) {
        if ["created", "updated", "expires", "indexed"].contains(&words[at].as_str()) {
            let t: i64 = words[at + 1].parse().unwrap();
            words[at + 1] = format!("{:+020}", t - 3_600_000_000);
        }
    }
    format!("{generation}\n{}", words.join(" "))
}

async fn every_write(root: &Path) -> FileSystemStorage {
    let options = FileSystemOptions::new().sync_policy(SyncPolicy::EveryWrite);
    FileSystemStorage::connect_with(root, options)
        .await
        .unwrap()
}

/// The idle span of [`lost_append`]'s session.
const IDLE: Duration = Duration::from_secs(1800);

/// Session `s` in `root`, created with an idle expiry of [`IDLE`] and appended to once,
/// whose lock file then lost the append's counters (it holds the creation's, an hour
/// older); and when the append was, as `session_info` reported it before that loss.
async fn lost_append(root: &Path) -> (FileSystemStorage, SystemTime) {
    let storage = every_write(root).await;
    let meta = SessionMeta::new().expiry(Expiry::Idle(IDLE));
    storage
        .create_session("s", &meta, &said("a"))
        .await
        .unwrap();
    let lock = root.join(".s.lock");
    let before = std::fs::read_to_string(&lock).unwrap();
    storage.append("s", &said("b")).await.unwrap();
    let info = storage.session_info("s").await.unwrap().unwrap();
    std::fs::write(&lock, an_hour_older(&before)).unwrap();
    (storage, info.updated_at.unwrap())
}

/// An idle expiry of half an hour, which the older counters say ran out half an hour ago:
/// the session is alive, and a write keeps what it holds (where the write removed it as
/// expired, and its acknowledged appends with it).
#[tokio::test]
async fn an_idle_expiry_counts_from_the_files_last_append() {
    let tmp = tempfile::tempdir().unwrap();
    let (storage, _) = lost_append(tmp.path()).await;

    let modified = std::fs::metadata(tmp.path().join("s.jsonl"))
        .unwrap()
        .modified()
        .unwrap();
    let info = storage.session_info("s").await.unwrap().expect("alive");
    assert_eq!(info.message_count, 2);
    // From the latest the append may have been: file times may fall up to 2 s before
    // the write's own.
    let expires = micros(info.expires_at.unwrap());
    let slack = Duration::from_secs(2);
    assert_eq!(
        expires,
        micros(modified + slack) + micros(SystemTime::UNIX_EPOCH + IDLE)
    );
    assert_eq!(storage.load("s").await.unwrap().len(), 2);
    storage.append("s", &said("c")).await.unwrap();
    let texts: Vec<_> = storage.load("s").await.unwrap();
    assert_eq!(texts.len(), 3, "{texts:?}");
}

/// A rewrite keeping the session's times (`Change::Rewrite`) would store the file's
/// modification time, later than its last line here, as a recorded write: the listing,
/// finding the session at no line of that time, would leave it out. It records a write.
#[tokio::test]
async fn a_rewrite_keeping_the_times_of_such_a_session_leaves_it_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = every_write(tmp.path()).await;
    storage.append("other", &said("x")).await.unwrap();
    storage.append("s", &said("a")).await.unwrap();
    let lock = tmp.path().join(".s.lock");
    let before = std::fs::read_to_string(&lock).unwrap();
    storage.append("s", &said("b")).await.unwrap();
    let last = storage.session_info("s").await.unwrap().unwrap();
    std::fs::write(&lock, an_hour_older(&before)).unwrap();
    // Later than the last line, as where the write landed a tick after its stamp.
    let modified = last.updated_at.unwrap() + Duration::from_millis(5);
    common::set_modified(&tmp.path().join("s.jsonl"), modified);

    let history = storage.load("s").await.unwrap();
    let generation = storage.session_info("s").await.unwrap().unwrap().generation;
    storage
        .write_if(
            "s",
            Expect::Generation(generation),
            Change::Rewrite(&history),
        )
        .await
        .unwrap();
    let page = storage.list_page(&SessionQuery::new()).await.unwrap();
    let ids: Vec<&str> = page.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["s", "other"]);
    let now = storage.session_info("s").await.unwrap().unwrap();
    assert_eq!(page.sessions[0].updated_at, now.updated_at);
    assert!(now.updated_at.unwrap() >= modified);
}

/// Found by a review: a file's time may fall a tick before the stamp of the write that
/// set it (the kernel's clock for file times lags the one the stamp is read from), so
/// once such an append's counters were lost, a delete conditional on no write since a
/// cutoff inside that tick ([`Expect::UnwrittenSince`], what a purge deletes with) took
/// the session for unwritten since, and deleted the append with it; its idle expiry
/// counted from before the append too. The file's time counts as up to 2 s later there
/// (as coarse as file times get): the delete conflicts, and the idle expiry is no
/// earlier than the append's.
#[tokio::test]
async fn a_file_time_a_tick_before_its_write_keeps_the_session_from_a_cutoff_in_that_tick() {
    let tmp = tempfile::tempdir().unwrap();
    let (storage, appended) = lost_append(tmp.path()).await;
    common::set_modified(
        &tmp.path().join("s.jsonl"),
        appended - Duration::from_millis(4),
    );

    let info = storage.session_info("s").await.unwrap().expect("alive");
    let expires = info.expires_at.unwrap();
    assert!(
        expires >= appended + IDLE,
        "{expires:?}, appended {appended:?}"
    );
    let revision = Revision {
        generation: info.generation,
        len: info.message_count,
    };
    let since = Expect::UnwrittenSince {
        revision,
        since: appended,
    };
    let outcome = storage.write_if("s", since, Change::Truncate(0)).await;
    assert!(
        matches!(outcome, Err(Error::Conflict { .. })),
        "{outcome:?}"
    );
    assert_eq!(storage.load("s").await.unwrap().len(), 2);
}
