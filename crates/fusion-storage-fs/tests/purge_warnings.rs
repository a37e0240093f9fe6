//! What a purge logs about a session it leaves out (a damaged one, one whose metadata
//! file cannot be read): one warning per purge, however many ways the purge reaches it.
//! In a binary of its own: the purge runs on a blocking thread, so its logs are captured
//! by a global subscriber, one for every test here (each looks for its own sessions).
#![cfg(unix)]

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use fusion_core::testkit::logs::Logs;
use fusion_core::testkit::{now_micros, said, wait_past};
use fusion_core::{ConversationStorage, Expiry, SessionMeta, SessionQuery};
use fusion_storage_fs::FileSystemStorage;

const WARNING: &str = "leaving a damaged session out of a purge";

/// The logs of every test in this binary, captured at warning level and above.
fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::new();
        tracing::subscriber::set_global_default(logs.subscriber(tracing::Level::WARN)).unwrap();
        logs
    })
}

/// Found by a review: a damaged session (a FIFO in place of its lock file) whose marker
/// the walk of the expiry markers met was warned about there, and again by the read of
/// every session's lock file that a bucket due but skipped (a symbolic link) brings on,
/// so twice per purge. It is now warned about once.
#[tokio::test]
async fn a_damaged_session_is_warned_about_once_per_purge_past_a_linked_bucket() {
    let logs = logs();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    let storage = FileSystemStorage::connect(&dir).await.unwrap();
    let soon = now_micros() + Duration::from_millis(200);
    let meta = SessionMeta::new().expiry(Expiry::At(soon));
    storage
        .create_session("d", &meta, &said("d"))
        .await
        .unwrap();
    storage.append("keep", &said("k")).await.unwrap();
    wait_past(soon).await;
    // The damage: a FIFO where the lock file of `d` belongs.
    let lock = dir.join(".d.lock");
    std::fs::remove_file(&lock).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&lock).status();
    assert!(made.unwrap().success());
    // A bucket due by now that is a link, beside the bucket of `d`'s marker.
    let elsewhere = tmp.path().join("outside");
    std::fs::create_dir(&elsewhere).unwrap();
    let linked = dir.join(".fusion-index/expiry/000000");
    std::os::unix::fs::symlink(&elsewhere, &linked).unwrap();

    assert_eq!(storage.purge_expired(10).await.unwrap(), 0);
    let text = logs.text();
    assert_eq!(text.matches(WARNING).count(), 1, "{text}");
    assert!(text.contains("session_id=d"), "{text}");
    assert!(
        std::fs::symlink_metadata(&lock)
            .unwrap()
            .file_type()
            .is_fifo(),
        "left as it is"
    );
}

const UNREADABLE: &str = "leaving a session whose metadata file cannot be read out of a purge";

/// Replaces the file at `path` with a symbolic link to itself, which no open gets past
/// (`ELOOP`, an I/O error, not damage); returns what it held.
fn loop_in_place_of(path: &Path) -> Vec<u8> {
    let held = std::fs::read(path).unwrap();
    std::fs::remove_file(path).unwrap();
    std::os::unix::fs::symlink(path, path).unwrap();
    held
}

/// Found by a review: since 68107b4 a removal reads the metadata file for the markers it
/// removes and fails if that file cannot be read (an I/O error), so a purge meeting one
/// expired session with such a file failed whole, every purge after it too, and no other
/// expired session was ever purged (before, it removed that session and left its owner's
/// and tags' markers behind). So did one whose lock file lost its counters, whose expiry
/// only that file records (c655475), whether the walk of the markers met it or, past a
/// bucket due but skipped (a symbolic link), the read of every lock file. Such a session
/// is now left as it is, with one warning per purge naming the file, as a damaged one is,
/// and the purge goes on; once the file reads again, the next purge removes it whole.
#[tokio::test]
async fn a_session_whose_metadata_file_cannot_be_read_holds_up_no_other_in_a_purge() {
    let logs = logs();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    let storage = FileSystemStorage::connect(&dir).await.unwrap();
    let hour = Duration::from_secs(3600);
    let expired = |ago: u32| {
        SessionMeta::new()
            .owner("o")
            .tags(["t"])
            .expiry(Expiry::At(SystemTime::now() - hour * ago))
    };
    // `u1` expired first, then `u2` (counters lost) and `v`.
    for (id, ago) in [("u1", 3), ("u2", 2), ("v", 1)] {
        let meta = expired(ago);
        storage.create_session(id, &meta, &said(id)).await.unwrap();
    }
    std::fs::write(dir.join(".u2.lock"), "0000000000000042").unwrap();
    let held: Vec<_> = ["u1", "u2"]
        .map(|id| loop_in_place_of(&dir.join(format!(".{id}.meta"))))
        .into();
    // A bucket due by now that is a link: every lock file is read too.
    let elsewhere = tmp.path().join("outside");
    std::fs::create_dir(&elsewhere).unwrap();
    let linked = dir.join(".fusion-index/expiry/000000");
    std::os::unix::fs::symlink(&elsewhere, &linked).unwrap();

    assert_eq!(storage.purge_expired(10).await.unwrap(), 1, "`v` purged");
    let text = logs.text();
    for id in ["u1", "u2"] {
        let warned = format!("session_id={id} ");
        let lines: Vec<_> = text.lines().filter(|l| l.contains(&warned)).collect();
        assert_eq!(lines.len(), 1, "{id}: {text}");
        assert!(lines[0].contains(UNREADABLE), "{id}: {text}");
        let meta = dir.join(format!(".{id}.meta"));
        assert!(lines[0].contains(&meta.display().to_string()), "{text}");
        assert!(
            dir.join(format!("{id}.jsonl")).exists(),
            "{id} left as it is"
        );
    }
    assert!(!dir.join("v.jsonl").exists());
    let owned = dir.join(".fusion-index/owner/o");
    let markers = || {
        let mut ids: Vec<_> = std::fs::read_dir(&owned)
            .map(|entries| {
                let names = entries.map(|e| e.unwrap().file_name().into_string().unwrap());
                names.collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    };
    assert_eq!(markers(), ["u1", "u2"], "their markers kept");

    // Readable again: the next purge removes both whole.
    for (id, held) in ["u1", "u2"].into_iter().zip(held) {
        let meta = dir.join(format!(".{id}.meta"));
        std::fs::remove_file(&meta).unwrap();
        std::fs::write(&meta, held).unwrap();
    }
    std::fs::remove_file(&linked).unwrap();
    assert_eq!(storage.purge_expired(10).await.unwrap(), 2);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != ".fusion-index")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(markers().is_empty(), "{:?}", markers());
    let owned = SessionQuery::new().owner("o");
    assert!(storage.list_page(&owned).await.unwrap().sessions.is_empty());
}

/// Found by a review: a purge took any I/O error on a session's metadata file for one
/// that cannot be read, its failed removal too (here a directory in its place, which a
/// read refuses as damage, counting as no metadata, but `unlink` cannot remove), which
/// came after the session file's: the session, half removed, was warned about as one
/// whose metadata file cannot be read, and the purge reported success. The failed
/// removal is now the purge's error, naming the file; the next purge tidies what is left.
#[tokio::test]
async fn a_purge_whose_removal_of_a_metadata_file_fails_reports_it() {
    let logs = logs();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    let storage = FileSystemStorage::connect(&dir).await.unwrap();
    let meta = SessionMeta::new().expiry(Expiry::At(SystemTime::now() - Duration::from_secs(60)));
    storage
        .create_session("rm", &meta, &said("rm"))
        .await
        .unwrap();
    let meta_path = dir.join(".rm.meta");
    std::fs::remove_file(&meta_path).unwrap();
    std::fs::create_dir(&meta_path).unwrap();

    let err = storage.purge_expired(10).await.unwrap_err();
    match &err {
        fusion_core::Error::Io { path, source } => {
            assert_eq!(path, &meta_path, "{err}");
            assert_eq!(source.kind(), std::io::ErrorKind::IsADirectory, "{err}");
        }
        other => panic!("{other:?}"),
    }
    let text = logs.text();
    let warned = text.lines().filter(|l| l.contains("session_id=rm "));
    assert_eq!(warned.count(), 0, "{text}");
    assert!(!dir.join("rm.jsonl").exists());

    assert_eq!(storage.purge_expired(10).await.unwrap(), 0);
    assert!(!dir.join(".rm.lock").exists(), "tidied");
    assert!(storage.list_sessions().await.unwrap().is_empty());
}
