//! `fusion migrate` carrying session metadata (expiry included), run as a process between
//! real file-system and SQLite storage: a copy is created with the source's metadata, an
//! existing target gets what it lacks, and a target holding different metadata is reported
//! diverged and left as it is unless `--force` is given.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{block_on, conversation, load, run, text};
use fusion::storage::{Expiry, SessionMeta, StorageType};

fn open_and<T>(
    url: &str,
    f: impl AsyncFnOnce(&dyn fusion::storage::ConversationStorage) -> T,
) -> T {
    let storage: StorageType = url.parse().unwrap();
    block_on(async {
        let store = storage.open().await.expect("storage opens");
        f(store.as_ref()).await
    })
}

fn create(url: &str, id: &str, meta: &SessionMeta, messages: &[fusion::ChatMessage]) {
    open_and(url, async |store| {
        store
            .create_session(id, meta, messages)
            .await
            .expect("creates");
    });
}

fn meta(url: &str, id: &str) -> SessionMeta {
    open_and(url, async |store| {
        store
            .session_info(id)
            .await
            .expect("reads")
            .expect("exists")
            .meta
    })
}

fn migrate(dir: &Path, from: &str, to: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["migrate", "--from", from, "--to", to];
    args.extend_from_slice(extra);
    let output = run(dir, args);
    let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
    (output.status.success(), all)
}

fn migrate_carries_metadata(from: &str, to: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let messages = &conversation(1)[..3];
    let source_meta = SessionMeta::new()
        .owner("alice")
        .title("From the source")
        .tags(["a", "shared"])
        .data("n", 1)
        .expiry(Expiry::Idle(Duration::from_secs(30 * 86_400)));
    for id in ["new", "prefix", "retitled"] {
        create(from, id, &source_meta, messages);
    }
    // The target already holds the start of "prefix", with no metadata, and all of
    // "retitled", titled differently and with a tag of its own.
    open_and(to, async |store| {
        store.save("prefix", &messages[..1]).await.unwrap();
    });
    let renamed = SessionMeta::new()
        .owner("alice")
        .title("Renamed in the target")
        .tags(["mine"]);
    create(to, "retitled", &renamed, messages);

    let (success, out) = migrate(dir, from, to, &["--dry-run"]);
    assert!(!success, "a diverged session fails the run: {out}");
    assert!(out.contains("1 to copy, 1 to extend"), "{out}");
    let to_storage: StorageType = to.parse().unwrap();
    assert!(
        load(&to_storage, "new").is_empty(),
        "a dry run writes nothing"
    );
    assert!(meta(to, "prefix").is_empty());

    let (success, out) = migrate(dir, from, to, &[]);
    assert!(!success, "{out}");
    assert!(
        out.contains(
            "diverged retitled: the metadata differs (title: source \"From the source\", \
             target \"Renamed in the target\"); left as it is (--force replaces it)"
        ),
        "{out}"
    );
    assert!(
        out.contains("1 copied, 1 extended, 0 up to date, 1 diverged"),
        "{out}"
    );
    assert_eq!(
        meta(to, "new"),
        source_meta,
        "a copy is created with the metadata"
    );
    assert_eq!(load(&to_storage, "prefix"), messages);
    assert_eq!(
        meta(to, "prefix"),
        source_meta,
        "what the target lacked is filled in"
    );
    assert_eq!(
        meta(to, "retitled"),
        renamed,
        "a diverged session is left as it is"
    );

    // Re-running changes nothing more; --force makes the target's metadata the source's.
    let (success, out) = migrate(dir, from, to, &[]);
    assert!(
        !success && out.contains("2 up to date, 1 diverged"),
        "{out}"
    );
    let (success, out) = migrate(dir, from, to, &["--force"]);
    assert!(success, "{out}");
    assert!(
        out.contains("replaced the metadata of retitled: the target held different metadata"),
        "{out}"
    );
    assert_eq!(meta(to, "retitled"), source_meta);
    let (success, out) = migrate(dir, from, to, &[]);
    assert!(success && out.contains("3 up to date"), "{out}");
}

#[test]
fn migrate_from_fs_to_sqlite_carries_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let from = format!("file://{}", tmp.path().join("sessions").display());
    let to = format!("sqlite://{}", tmp.path().join("target.db").display());
    migrate_carries_metadata(&from, &to);
}

#[test]
fn migrate_from_sqlite_to_sqlite_carries_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let from = format!("sqlite://{}", tmp.path().join("source.db").display());
    let to = format!("sqlite://{}", tmp.path().join("target.db").display());
    migrate_carries_metadata(&from, &to);
}
