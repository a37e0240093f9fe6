//! A session whose lock file lost the counters of its last appends (which no policy
//! fsyncs: a power loss may keep the fsynced lines and an earlier write's counters, here
//! written by hand an hour older) is taken for written when its file was modified, if
//! that is later: its idle expiry counts from then, and a rewrite keeping its times
//! leaves it listed.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use fusion_core::{
    Change, ChatMessage, ConversationStorage, Expect, Expiry, SessionMeta, SessionQuery,
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

/// An idle expiry of half an hour, which the older counters say ran out half an hour ago:
/// the session is alive, and a write keeps what it holds (where the write removed it as
/// expired, and its acknowledged appends with it).
#[tokio::test]
async fn an_idle_expiry_counts_from_the_files_last_append() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = every_write(tmp.path()).await;
    let idle = Duration::from_secs(1800);
    let meta = SessionMeta::new().expiry(Expiry::Idle(idle));
    storage
        .create_session("s", &meta, &said("a"))
        .await
        .unwrap();
    let lock = tmp.path().join(".s.lock");
    let before = std::fs::read_to_string(&lock).unwrap();
    storage.append("s", &said("b")).await.unwrap();
    std::fs::write(&lock, an_hour_older(&before)).unwrap();

    let modified = std::fs::metadata(tmp.path().join("s.jsonl"))
        .unwrap()
        .modified()
        .unwrap();
    let info = storage.session_info("s").await.unwrap().expect("alive");
    assert_eq!(info.message_count, 2);
    let expires = micros(info.expires_at.unwrap());
    assert_eq!(
        expires,
        micros(modified) + micros(SystemTime::UNIX_EPOCH + idle)
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
