//! What a purge logs about a damaged session: one warning per purge, however many ways
//! the purge reaches it. In a binary of its own: the purge runs on a blocking thread, so
//! its logs are captured by a global subscriber.
#![cfg(unix)]

use std::os::unix::fs::FileTypeExt;
use std::time::Duration;

use fusion_core::testkit::logs::Logs;
use fusion_core::testkit::{now_micros, said, wait_past};
use fusion_core::{ConversationStorage, Expiry, SessionMeta};
use fusion_storage_fs::FileSystemStorage;

const WARNING: &str = "leaving a damaged session out of a purge";

/// Found by a review: a damaged session (a FIFO in place of its lock file) whose marker
/// the walk of the expiry markers met was warned about there, and again by the read of
/// every session's lock file that a bucket due but skipped (a symbolic link) brings on,
/// so twice per purge. It is now warned about once.
#[tokio::test]
async fn a_damaged_session_is_warned_about_once_per_purge_past_a_linked_bucket() {
    let logs = Logs::new();
    tracing::subscriber::set_global_default(logs.subscriber(tracing::Level::WARN)).unwrap();
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
