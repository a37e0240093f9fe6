//! Session expiry and purging through the `fusion` command, run as a process against real
//! SQLite and file-system storage: what `sessions purge` lists, deletes and keeps and the
//! flags it refuses; `sessions expire` and the expiry in `show`, `list --json`, `export`
//! and `import`; and the expiry `chat` gives a session it creates.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{block_on, conversation, fails, ids, ok, run, seed, text};
use fusion::storage::{SessionMeta, StorageType};

fn sqlite(dir: &Path) -> (String, StorageType) {
    let url = format!("sqlite://{}", dir.join("sessions.db").display());
    let storage = url.parse().unwrap();
    (url, storage)
}

/// Blocks until the real clock has passed `instant`.
fn wait_past(instant: SystemTime) {
    while SystemTime::now() <= instant {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn purge_older_than_lists_in_a_dry_run_then_deletes_what_nobody_wrote_since() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = sqlite(tmp.path());
    seed(&storage, "old-a", &conversation(1));
    block_on(async {
        let store = storage.open().await.unwrap();
        let amy = SessionMeta::new().owner("amy").title("Amy's notes");
        store
            .create_session("old-b", &amy, &conversation(2)[..2])
            .await
            .unwrap();
    });
    wait_past(SystemTime::now() + Duration::from_secs(1));
    // Written within the second before each purge below, unless that purge started more
    // than a second after it (a very slow machine): `fresh` tells which, after the run.
    let new_written = SystemTime::now() - Duration::from_millis(10);
    seed(&storage, "new", &conversation(3));
    let fresh = || SystemTime::now() < new_written + Duration::from_secs(1);

    let purge = ["sessions", "purge", "--storage", &url, "--older-than", "1s"];
    let dry = ok(tmp.path(), purge.iter().chain(&["--dry-run"]));
    let lines: Vec<&str> = dry.lines().collect();
    assert!(
        lines[0].starts_with("ID ") && lines[0].ends_with("TITLE"),
        "{dry}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("old-a ") && l.contains(" 7 ")),
        "{dry}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("old-b ") && l.contains(" amy ") && l.ends_with("Amy's notes")),
        "{dry}"
    );
    let summary = lines.last().unwrap();
    assert!(summary.starts_with("would delete "), "{dry}");
    if fresh() {
        assert_eq!(lines.len(), 4, "{dry}");
        assert!(summary.starts_with("would delete 2 sessions last written before "));
    }
    assert_eq!(
        ids(&storage),
        ["new", "old-a", "old-b"],
        "a dry run deletes nothing"
    );

    let amy = ok(
        tmp.path(),
        purge.iter().chain(&["--dry-run", "--owner", "amy"]),
    );
    assert!(amy.contains("old-b") && !amy.contains("old-a"), "{amy}");
    assert!(
        amy.contains("\nwould delete 1 session last written before "),
        "{amy}"
    );

    let real = ok(tmp.path(), purge);
    assert!(real.starts_with("deleted "), "{real}");
    let left = ids(&storage);
    assert!(!left.contains(&"old-a".to_string()), "{left:?}");
    assert!(!left.contains(&"old-b".to_string()), "{left:?}");
    if fresh() {
        assert!(
            real.starts_with("deleted 2 sessions last written before ")
                && real.lines().count() == 1,
            "{real}"
        );
        assert_eq!(left, ["new"]);
    }

    // Nothing here expires: a purge of expired sessions finds none and keeps the rest.
    let expired = ok(
        tmp.path(),
        ["sessions", "purge", "--expired", "--storage", &url],
    );
    assert_eq!(expired, "purged 0 expired sessions\n");
    assert_eq!(ids(&storage), left);
}

#[test]
fn purge_refuses_flags_it_cannot_honour_and_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = sqlite(tmp.path());
    seed(&storage, "kept", &conversation(1));
    let purge = ["sessions", "purge", "--storage", &url];

    let err = fails(tmp.path(), purge.iter().chain(&["--expired", "--dry-run"]));
    assert!(
        err.contains("--dry-run cannot preview --expired")
            && err.contains("cannot be counted without purging"),
        "{err}"
    );
    let err = fails(
        tmp.path(),
        purge.iter().chain(&["--expired", "--owner", "amy"]),
    );
    assert!(err.contains("--owner cannot narrow --expired"), "{err}");
    let err = fails(
        tmp.path(),
        purge
            .iter()
            .chain(&["--older-than", "1d", "--owner", "../x"]),
    );
    assert!(err.contains("invalid owner"), "{err}");

    // Usage errors come from the argument parser: they name the flag and what it takes.
    for (args, expected) in [
        (vec!["--dry-run"], vec!["--older-than", "--expired"]),
        (vec!["--older-than", "0d"], vec!["--older-than", "zero"]),
        (
            vec!["--older-than", "30days"],
            vec!["--older-than", "45s, 90m, 12h, 30d or 2w"],
        ),
        (vec!["--expired", "--batch", "0"], vec!["--batch"]),
    ] {
        let output = run(tmp.path(), purge.iter().chain(&args));
        assert!(!output.status.success(), "{args:?}");
        let stderr = text(&output.stderr);
        for word in expected {
            assert!(stderr.contains(word), "{args:?}: {stderr}");
        }
    }
    assert_eq!(ids(&storage), ["kept"]);
}

#[test]
fn expire_fails_clearly_on_a_missing_session_or_a_bad_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = sqlite(tmp.path());
    seed(&storage, "here", &conversation(1));
    let expire = |args: &[&str]| -> Vec<String> {
        let argv = ["sessions", "expire"].iter().chain(args);
        argv.chain(&["--storage", url.as_str()])
            .map(|arg| arg.to_string())
            .collect()
    };

    let err = fails(tmp.path(), expire(&["ghost", "--in", "1d"]));
    assert!(
        err.contains("session \"ghost\" not found") && err.contains("sqlite://"),
        "{err}"
    );
    assert_eq!(ids(&storage), ["here"], "nothing was created");
    let err = fails(tmp.path(), expire(&["../x", "--never"]));
    assert!(err.contains("invalid session id"), "{err}");
    let err = fails(
        tmp.path(),
        expire(&["here", "--at", "2001-01-01T00:00:00Z"]),
    );
    assert!(err.contains("has passed"), "{err}");
    let err = fails(tmp.path(), expire(&["here", "--idle", "9999w"]));
    assert!(err.contains("idle expiry"), "{err}");

    for args in [
        vec!["here"],
        vec!["here", "--in", "1d", "--idle", "1d"],
        vec!["here", "--at", "2030-01-01"],
    ] {
        let output = run(tmp.path(), expire(&args));
        assert!(!output.status.success(), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains("--"), "{args:?}: {stderr}");
    }
    assert_eq!(common::load(&storage, "here"), conversation(1));

    // An export whose fixed expiry has passed would import as a session nobody can see.
    let stale = tmp.path().join("stale.json");
    let doc = r#"{"meta":{"expiry":{"at":"2001-01-01T00:00:00Z"}},"messages":[{"role":"user","content":"hi"}]}"#;
    std::fs::write(&stale, doc).unwrap();
    let err = fails(
        tmp.path(),
        [
            "sessions",
            "import",
            stale.to_str().unwrap(),
            "--storage",
            &url,
        ],
    );
    assert!(
        err.contains("expiry (2001-01-01T00:00:00Z) has passed"),
        "{err}"
    );
    assert_eq!(ids(&storage), ["here"]);
}

fn fs(dir: &Path) -> String {
    format!("file://{}", dir.join("sessions").display())
}

/// The metadata of session `id` in `url`.
fn meta(url: &str, id: &str) -> SessionMeta {
    block_on(async {
        let storage: StorageType = url.parse().unwrap();
        let store = storage.open().await.unwrap();
        store.session_info(id).await.unwrap().expect("exists").meta
    })
}

/// `sessions expire`, `show`, `list --json`, `export` and `import` all carry the expiry,
/// and `purge --expired` frees a session once its expiry has passed.
fn expiry_is_set_shown_listed_exported_and_purged(url: &str, dir: &Path) {
    let storage: StorageType = url.parse().unwrap();
    let with = |args: &[&str]| -> Vec<String> {
        let argv = ["sessions"].iter().chain(args);
        argv.chain(&["--storage", url])
            .map(|arg| arg.to_string())
            .collect()
    };
    seed(&storage, "s", &conversation(1));

    let set = ok(dir, with(&["expire", "s", "--idle", "30d"]));
    let at = set
        .strip_prefix("session s expires at ")
        .and_then(|rest| rest.strip_suffix(" (after 30d idle)\n"))
        .unwrap_or_else(|| panic!("{set}"))
        .to_string();
    let shown = ok(dir, with(&["show", "s"]));
    assert!(
        shown.contains(&format!("\nexpires: {at} (after 30d idle)\n")),
        "{shown}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(dir, with(&["list", "--json"]))).unwrap();
    assert_eq!(listed["sessions"][0]["expires_at"], at.as_str());

    let export = dir.join("s.json");
    ok(dir, with(&["export", "s", "-o", export.to_str().unwrap()]));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    assert_eq!(
        doc["meta"]["expiry"],
        serde_json::json!({"idle_seconds": 2_592_000})
    );
    ok(
        dir,
        with(&["import", export.to_str().unwrap(), "--id", "copy"]),
    );
    assert_eq!(meta(url, "copy").expiry, meta(url, "s").expiry);

    let fixed = ok(dir, with(&["expire", "s", "--at", "2100-01-01T00:00:00Z"]));
    assert_eq!(fixed, "session s expires at 2100-01-01T00:00:00Z\n");
    let shown = ok(dir, with(&["show", "s"]));
    assert!(
        shown.contains("\nexpires: 2100-01-01T00:00:00Z\n"),
        "{shown}"
    );
    assert_eq!(
        ok(dir, with(&["expire", "s", "--never"])),
        "session s never expires\n"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(dir, with(&["list", "--json"]))).unwrap();
    assert!(
        listed["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|entry| entry["id"] != "s" || entry["expires_at"].is_null()),
        "{listed}"
    );

    ok(dir, with(&["expire", "copy", "--in", "1s"]));
    wait_past(SystemTime::now() + Duration::from_secs(1));
    let err = fails(dir, with(&["show", "copy"]));
    assert!(err.contains("session \"copy\" not found"), "{err}");
    assert_eq!(
        ok(dir, with(&["purge", "--expired", "--batch", "1"])),
        "purged 1 expired session\n"
    );
    assert_eq!(ids(&storage), ["s"]);
}

#[test]
fn sqlite_expiry_is_set_shown_listed_exported_and_purged() {
    let tmp = tempfile::tempdir().unwrap();
    expiry_is_set_shown_listed_exported_and_purged(&sqlite(tmp.path()).0, tmp.path());
}

#[test]
fn fs_expiry_is_set_shown_listed_exported_and_purged() {
    let tmp = tempfile::tempdir().unwrap();
    expiry_is_set_shown_listed_exported_and_purged(&fs(tmp.path()), tmp.path());
}

#[test]
fn an_expiry_flag_past_what_an_expiry_holds_is_named_with_its_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = sqlite(tmp.path());
    seed(&storage, "here", &conversation(1));
    let expire = |flag: &str, span: &str| {
        let args = ["sessions", "expire", "here", flag, span, "--storage", &url];
        fails(tmp.path(), args)
    };
    // Past the year 9999 (yet within what the clock holds), and past 100 years idle.
    let err = expire("--in", "99999999999d");
    assert!(
        err.contains("--in 99999999999d reaches past the year 9999") && !err.contains("µs"),
        "{err}"
    );
    let err = expire("--idle", "99999d");
    assert!(
        err.contains("--idle 99999d is longer than the longest idle expiry, 36500d"),
        "{err}"
    );
    // --at: the last second of 9999 is the latest, a fraction past it is refused alike.
    let err = expire("--at", "9999-12-31T23:59:59.5Z");
    assert!(
        err.contains("--at lies past 9999-12-31T23:59:59Z, the latest an expiry can be")
            && !err.contains("µs"),
        "{err}"
    );
    let latest = "9999-12-31T23:59:59Z";
    let args = [
        "sessions",
        "expire",
        "here",
        "--at",
        latest,
        "--storage",
        &url,
    ];
    assert!(ok(tmp.path(), args).contains(latest));
    assert_eq!(common::load(&storage, "here"), conversation(1));

    // chat refuses them alike, before any model is asked.
    for (flag, says) in [
        (
            "--expire-in",
            "--expire-in 99999999999d reaches past the year 9999",
        ),
        ("--expire-idle", "--expire-idle 99999999999d is longer than"),
    ] {
        let output = common::chat_command(tmp.path(), "http://127.0.0.1:1")
            .args(["--session", "new", flag, "99999999999d", "--storage", &url])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{flag}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(says), "{flag}: {stderr}");
    }
    assert_eq!(ids(&storage), ["here"], "no session was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_gives_a_new_session_its_expiry_and_leaves_a_resumed_one_alone() {
    use fusion::storage::Expiry;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let url = fs(dir);
    let server = fusion_agent::testing::MockLlmServer::start().await;
    server.push_text("Sure.").push_text("Again.");
    let expiry = |url: String| async move {
        let storage: StorageType = url.parse().unwrap();
        let store = storage.open().await.unwrap();
        store.session_info("c").await.unwrap().unwrap().meta.expiry
    };

    let args = ["--session", "c", "--expire-idle", "2w", "--storage", &url];
    let first = common::chat_with_input(dir, &server, &args, "hello\n").await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    let two_weeks = Some(Expiry::Idle(Duration::from_secs(14 * 86_400)));
    assert_eq!(expiry(url.clone()).await, two_weeks);

    let again = ["--session", "c", "--expire-in", "1h", "--storage", &url];
    let second = common::chat_with_input(dir, &server, &again, "more\n").await;
    assert!(second.status.success(), "{}", text(&second.stderr));
    let stderr = text(&second.stderr);
    assert!(
        stderr.contains("session c already exists, so it keeps its expiry"),
        "{stderr}"
    );
    assert_eq!(expiry(url.clone()).await, two_weeks);
}
