//! `fusion migrate` between the file-system and SQLite backends, run as a process.

mod common;

use common::{conversation, fails, ids, load, ok, seed};
use fusion::storage::StorageType;

#[test]
fn migrates_100_sessions_from_fs_to_sqlite_and_back_with_identical_histories() {
    let tmp = tempfile::tempdir().unwrap();
    let fs_url = format!("file://{}", tmp.path().join("sessions").display());
    let sqlite_url = format!("sqlite://{}", tmp.path().join("sessions.db").display());
    let back_url = tmp.path().join("back").display().to_string();
    let (fs, sqlite, back): (StorageType, StorageType, StorageType) = (
        fs_url.parse().unwrap(),
        sqlite_url.parse().unwrap(),
        back_url.parse().unwrap(),
    );
    let session_ids: Vec<String> = (0..100).map(|n| format!("user-{n:03}")).collect();
    for (n, id) in session_ids.iter().enumerate() {
        // Varying lengths, so a count mix-up between sessions cannot go unnoticed.
        seed(&fs, id, &conversation(n)[..1 + n % 7]);
    }

    let out = ok(
        tmp.path(),
        ["migrate", "--from", &fs_url, "--to", &sqlite_url],
    );
    assert!(
        out.contains("100 sessions")
            && out.contains("100 copied, 0 unchanged, 0 replaced, 0 failed"),
        "{out}"
    );
    let out = ok(
        tmp.path(),
        ["migrate", "--from", &sqlite_url, "--to", &back_url],
    );
    assert!(
        out.contains("100 copied, 0 unchanged, 0 replaced, 0 failed"),
        "{out}"
    );

    assert_eq!(ids(&sqlite), session_ids);
    assert_eq!(ids(&back), session_ids);
    for id in &session_ids {
        let original = load(&fs, id);
        assert_eq!(load(&sqlite, id), original, "{id} in sqlite");
        assert_eq!(load(&back, id), original, "{id} back in fs");
    }

    // Re-running changes nothing and says so.
    for (from, to) in [(&fs_url, &sqlite_url), (&sqlite_url, &back_url)] {
        let out = ok(tmp.path(), ["migrate", "--from", from, "--to", to]);
        assert!(
            out.contains("0 copied, 100 unchanged, 0 replaced, 0 failed"),
            "{out}"
        );
    }
    assert_eq!(ids(&sqlite), session_ids);
    assert_eq!(
        load(&sqlite, "user-006").len(),
        7,
        "re-running must not append duplicates"
    );
}

#[test]
fn a_differing_target_session_is_replaced_and_reported_and_dry_run_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let from_url = tmp.path().join("from").display().to_string();
    let to_url = format!("sqlite://{}", tmp.path().join("to.db").display());
    let (from, to): (StorageType, StorageType) =
        (from_url.parse().unwrap(), to_url.parse().unwrap());
    seed(&from, "same", &conversation(1));
    seed(&to, "same", &conversation(1));
    seed(&from, "changed", &conversation(2));
    seed(&to, "changed", &conversation(9)[..2]);
    seed(&from, "new", &conversation(3));
    seed(&to, "only-in-target", &conversation(4));

    let out = ok(
        tmp.path(),
        ["migrate", "--from", &from_url, "--to", &to_url, "--dry-run"],
    );
    assert!(out.contains("would replace changed"), "{out}");
    assert!(
        out.contains("1 to copy, 1 unchanged, 1 to replace, 0 failed"),
        "{out}"
    );
    assert!(load(&to, "new").is_empty(), "a dry run wrote to the target");
    assert_eq!(load(&to, "changed"), conversation(9)[..2]);

    let out = ok(
        tmp.path(),
        ["migrate", "--from", &from_url, "--to", &to_url],
    );
    assert!(
        out.contains("replaced changed: the target held a different history (2 messages)"),
        "{out}"
    );
    assert!(
        out.contains("1 copied, 1 unchanged, 1 replaced, 0 failed"),
        "{out}"
    );
    assert!(out.contains("1 session only in"), "{out}");
    for id in ["same", "changed", "new"] {
        assert_eq!(load(&to, id), load(&from, id), "{id}");
    }
    assert_eq!(load(&to, "only-in-target"), conversation(4));
}

#[test]
fn one_unreadable_session_fails_alone_and_the_exit_code_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("from");
    let from_url = dir.display().to_string();
    let to_url = tmp.path().join("to").display().to_string();
    let (from, to): (StorageType, StorageType) =
        (from_url.parse().unwrap(), to_url.parse().unwrap());
    for id in ["a", "broken", "c"] {
        seed(&from, id, &conversation(1));
    }
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("broken")
        })
        .unwrap();
    let stored = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, stored.replacen("{", "{{{", 1)).unwrap();

    let output = common::run(
        tmp.path(),
        ["migrate", "--from", &from_url, "--to", &to_url],
    );
    assert!(!output.status.success());
    let stdout = common::text(&output.stdout);
    assert!(
        stdout.contains("failed broken:") && stdout.contains("corrupt"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 copied, 0 unchanged, 0 replaced, 1 failed"),
        "{stdout}"
    );
    let stderr = common::text(&output.stderr);
    assert!(
        stderr.starts_with("fusion: error: 1 of 3 sessions failed to migrate"),
        "{stderr}"
    );
    assert_eq!(ids(&to), ["a", "c"]);
}

#[test]
fn migrating_a_storage_onto_itself_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("s").display().to_string();
    let err = fails(
        tmp.path(),
        ["migrate", "--from", &url, "--to", &format!("file://{url}")],
    );
    assert!(err.contains("same storage"), "{err}");
}
