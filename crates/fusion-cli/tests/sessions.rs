//! `fusion sessions ...` run as a process against real file-system and SQLite storage.

mod common;

use common::{conversation, fails, ids, load, ok, seed};
use fusion::storage::StorageType;

fn fs_storage(dir: &std::path::Path) -> (String, StorageType) {
    let url = format!("file://{}", dir.join("sessions").display());
    let storage = url.parse().unwrap();
    (url, storage)
}

#[test]
fn list_show_and_delete_work_on_stored_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = fs_storage(tmp.path());
    seed(&storage, "alice@example.com", &conversation(1));
    seed(&storage, "tenant:42:chat-7", &conversation(2)[..2]);

    let table = ok(tmp.path(), ["sessions", "list", "--storage", &url]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID"), "{table}");
    assert!(
        lines[1].starts_with("alice@example.com") && lines[1].contains(" 7 "),
        "{table}"
    );
    assert!(
        lines[2].starts_with("tenant:42:chat-7") && lines[2].contains(" 2 "),
        "{table}"
    );

    let json: serde_json::Value = serde_json::from_str(&ok(
        tmp.path(),
        ["sessions", "list", "--json", "--storage", &url],
    ))
    .unwrap();
    assert_eq!(json[0]["id"], "alice@example.com");
    assert_eq!(json[0]["message_count"], 7);
    assert_eq!(json[1]["message_count"], 2);

    let shown = ok(
        tmp.path(),
        ["sessions", "show", "alice@example.com", "--storage", &url],
    );
    for expected in [
        "session alice@example.com (7 messages)",
        "[2] user\n    Session 1: what is in /tmp?\n    And ünïcödé 🦀",
        r#"-> list_directory({"path":"/tmp"})  [call call_1]"#,
        "-> read_file({not json)  [call call_2]",
        "[4] tool result (list_directory, call call_1)\n    notes.txt\n    todo.txt",
        "[7] system <summary>",
    ] {
        assert!(
            shown.contains(expected),
            "missing {expected:?} in:\n{shown}"
        );
    }

    let deleted = ok(
        tmp.path(),
        ["sessions", "delete", "alice@example.com", "--storage", &url],
    );
    assert!(
        deleted.contains("deleted session alice@example.com (7 messages)"),
        "{deleted}"
    );
    assert_eq!(ids(&storage), ["tenant:42:chat-7"]);
    let err = fails(
        tmp.path(),
        ["sessions", "show", "alice@example.com", "--storage", &url],
    );
    assert!(
        err.contains("session \"alice@example.com\" not found"),
        "{err}"
    );
    let err = fails(
        tmp.path(),
        ["sessions", "delete", "alice@example.com", "--storage", &url],
    );
    assert!(err.contains("not found"), "{err}");
    ok(
        tmp.path(),
        [
            "sessions",
            "delete",
            "alice@example.com",
            "--force",
            "--storage",
            &url,
        ],
    );
}

#[test]
fn storage_comes_from_the_environment_or_the_user_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = fs_storage(tmp.path());
    seed(&storage, "from-env", &conversation(1));
    let listed = common::fusion(tmp.path())
        .args(["sessions", "list"])
        .env("FUSION_STORAGE", &url)
        .output()
        .unwrap();
    assert!(common::text(&listed.stdout).contains("from-env"));

    // No --storage and no FUSION_STORAGE: the default directory under the data dir.
    let default: StorageType = tmp
        .path()
        .join("fusion")
        .join("sessions")
        .display()
        .to_string()
        .parse()
        .unwrap();
    seed(&default, "in-default", &conversation(1));
    let listed = ok(tmp.path(), ["sessions", "list"]);
    assert!(
        listed.contains("in-default") && !listed.contains("from-env"),
        "{listed}"
    );
}

#[test]
fn export_then_import_gives_an_identical_history_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let (fs_url, fs) = fs_storage(tmp.path());
    let sqlite_url = format!("sqlite://{}", tmp.path().join("imported.db").display());
    let sqlite: StorageType = sqlite_url.parse().unwrap();
    let original = conversation(7);
    seed(&fs, "user-123", &original);

    for format in ["json", "jsonl"] {
        let file = tmp.path().join(format!("export.{format}"));
        let file = file.to_str().unwrap();
        ok(
            tmp.path(),
            [
                "sessions",
                "export",
                "user-123",
                "--format",
                format,
                "-o",
                file,
                "--storage",
                &fs_url,
            ],
        );
        let id = format!("from-{format}");
        let out = ok(
            tmp.path(),
            [
                "sessions",
                "import",
                file,
                "--id",
                &id,
                "--storage",
                &sqlite_url,
            ],
        );
        assert!(
            out.contains(&format!("imported session {id} (7 messages)")),
            "{out}"
        );
        assert_eq!(load(&sqlite, &id), original, "{format}");
    }

    // Without --id a json export brings its own id, and stdout is a valid export too.
    let stdout = ok(
        tmp.path(),
        ["sessions", "export", "user-123", "--storage", &fs_url],
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["id"], "user-123");
    assert_eq!(doc["messages"].as_array().unwrap().len(), 7);
    let file = tmp.path().join("stdout.json");
    std::fs::write(&file, stdout).unwrap();
    ok(
        tmp.path(),
        [
            "sessions",
            "import",
            file.to_str().unwrap(),
            "--storage",
            &sqlite_url,
        ],
    );
    assert_eq!(load(&sqlite, "user-123"), original);

    // A jsonl file without --id is named after the file.
    let jsonl = ok(
        tmp.path(),
        [
            "sessions",
            "export",
            "user-123",
            "-f",
            "jsonl",
            "--storage",
            &fs_url,
        ],
    );
    assert_eq!(jsonl.lines().count(), 7);
    let file = tmp.path().join("named-by-file.jsonl");
    std::fs::write(&file, jsonl).unwrap();
    ok(
        tmp.path(),
        [
            "sessions",
            "import",
            file.to_str().unwrap(),
            "--storage",
            &sqlite_url,
        ],
    );
    assert_eq!(load(&sqlite, "named-by-file"), original);

    let markdown = ok(
        tmp.path(),
        [
            "sessions",
            "export",
            "user-123",
            "-f",
            "markdown",
            "--storage",
            &fs_url,
        ],
    );
    for expected in [
        "# Session `user-123`",
        "## 2. user",
        "Tool call `list_directory` (id `call_1`)",
        "```json\n{\"path\":\"/tmp\"}\n```",
        "## 4. tool result (list_directory, call call_1)",
    ] {
        assert!(
            markdown.contains(expected),
            "missing {expected:?} in:\n{markdown}"
        );
    }
}

#[test]
fn import_refuses_to_overwrite_a_session_unless_told_to_replace_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = fs_storage(tmp.path());
    seed(&storage, "taken", &conversation(1));
    seed(&storage, "source", &conversation(2)[..3]);
    let file = tmp.path().join("source.json");
    ok(
        tmp.path(),
        [
            "sessions",
            "export",
            "source",
            "-o",
            file.to_str().unwrap(),
            "--storage",
            &url,
        ],
    );

    let err = fails(
        tmp.path(),
        [
            "sessions",
            "import",
            file.to_str().unwrap(),
            "--id",
            "taken",
            "--storage",
            &url,
        ],
    );
    assert!(
        err.contains("session \"taken\" already exists") && err.contains("--replace"),
        "{err}"
    );
    assert_eq!(load(&storage, "taken"), conversation(1));

    let out = ok(
        tmp.path(),
        [
            "sessions",
            "import",
            file.to_str().unwrap(),
            "--id",
            "taken",
            "--replace",
            "--storage",
            &url,
        ],
    );
    assert!(out.contains("replaced session taken (3 messages)"), "{out}");
    assert_eq!(load(&storage, "taken"), conversation(2)[..3]);
}
