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

    // Newest first: the session written last leads.
    let table = ok(tmp.path(), ["sessions", "list", "--storage", &url]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID"), "{table}");
    assert!(
        lines[1].starts_with("tenant:42:chat-7") && lines[1].contains(" 2 "),
        "{table}"
    );
    assert!(
        lines[2].starts_with("alice@example.com") && lines[2].contains(" 7 "),
        "{table}"
    );

    let json: serde_json::Value = serde_json::from_str(&ok(
        tmp.path(),
        ["sessions", "list", "--json", "--storage", &url],
    ))
    .unwrap();
    assert_eq!(json["sessions"][0]["id"], "tenant:42:chat-7");
    assert_eq!(json["sessions"][0]["message_count"], 2);
    assert_eq!(json["sessions"][1]["message_count"], 7);
    assert_eq!(json["next"], serde_json::Value::Null);

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

#[test]
fn import_without_an_id_decodes_a_file_system_session_file_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, fs) = fs_storage(tmp.path());
    let sqlite_url = format!("sqlite://{}", tmp.path().join("imported.db").display());
    let sqlite: StorageType = sqlite_url.parse().unwrap();
    // `%41lice.jsonl`, and a long id whose readable name would be too long: `+base32...`.
    let long = format!("Tenant:{}", "Q".repeat(100));
    seed(&fs, "Alice", &conversation(1));
    seed(&fs, &long, &conversation(2));

    let mut names = Vec::new();
    for entry in std::fs::read_dir(tmp.path().join("sessions")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".jsonl") && !name.starts_with('.') {
            // Copied out of the sessions directory, as a user backing one up would.
            let copy = tmp.path().join(&name);
            std::fs::copy(&path, &copy).unwrap();
            let out = ok(
                tmp.path(),
                [
                    "sessions",
                    "import",
                    copy.to_str().unwrap(),
                    "--storage",
                    &sqlite_url,
                ],
            );
            assert!(out.starts_with("imported session "), "{out}");
            names.push(name);
        }
    }
    names.sort();
    assert!(
        names.contains(&"%41lice.jsonl".to_string()) && names.iter().any(|n| n.starts_with('+')),
        "the file names under test: {names:?}"
    );
    let mut expected = vec!["Alice".to_string(), long.clone()];
    expected.sort();
    assert_eq!(ids(&sqlite), expected);
    assert_eq!(load(&sqlite, "Alice"), conversation(1));
    assert_eq!(load(&sqlite, &long), conversation(2));

    // A name that is not an fs session file's keeps naming the session by its stem.
    let plain = tmp.path().join("Bob.jsonl");
    std::fs::copy(tmp.path().join("%41lice.jsonl"), &plain).unwrap();
    let out = ok(
        tmp.path(),
        [
            "sessions",
            "import",
            plain.to_str().unwrap(),
            "--storage",
            &sqlite_url,
        ],
    );
    assert!(out.contains("imported session Bob (7 messages)"), "{out}");
}

/// Six processes import six different histories under one new id at once: exactly one
/// creates it, the others are refused, and the session holds the winner's history whole.
fn concurrent_imports_create_the_session_once(tmp: &std::path::Path, url: &str) {
    let storage: StorageType = url.parse().unwrap();
    // Created (a SQLite file and its schema) before the race, which is about the session.
    assert!(ids(&storage).is_empty());
    let files: Vec<_> = (0..6)
        .map(|n| {
            let file = tmp.join(format!("history-{n}.json"));
            let export = serde_json::json!({"id": "ignored", "messages": conversation(n)});
            std::fs::write(&file, export.to_string()).unwrap();
            file
        })
        .collect();
    let children: Vec<_> = files
        .iter()
        .map(|file| {
            common::fusion(tmp)
                .args(["sessions", "import", file.to_str().unwrap()])
                .args(["--id", "contested", "--storage", url])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|child| child.wait_with_output().unwrap())
        .collect();

    let winners: Vec<usize> = (0..outputs.len())
        .filter(|&n| outputs[n].status.success())
        .collect();
    assert_eq!(winners.len(), 1, "exactly one import creates the session");
    let winner = winners[0];
    assert!(
        common::text(&outputs[winner].stdout).contains("imported session contested (7 messages)")
    );
    for (n, output) in outputs.iter().enumerate().filter(|(n, _)| *n != winner) {
        let err = common::text(&output.stderr);
        assert!(
            err.contains("session \"contested\" already exists") && err.contains("--replace"),
            "import {n}: {err}"
        );
    }
    assert_eq!(load(&storage, "contested"), conversation(winner));
}

#[test]
fn concurrent_imports_create_a_file_system_session_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _) = fs_storage(tmp.path());
    concurrent_imports_create_the_session_once(tmp.path(), &url);
}

#[test]
fn concurrent_imports_create_a_sqlite_session_once() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("s.db").display());
    concurrent_imports_create_the_session_once(tmp.path(), &url);
}

#[test]
fn concurrent_imports_create_a_redis_session_once() {
    let Some(url) = common::redis_url("import-race") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    concurrent_imports_create_the_session_once(tmp.path(), &url);
    common::clean_up(&url.parse().unwrap());
}

/// An export killed mid-write leaves no file a later import would take for a shorter
/// history: the file appears whole or not at all. The kill is the kernel's: past the
/// file size limit (`ulimit -f`) a process gets `SIGXFSZ` in the middle of its write.
#[cfg(unix)]
#[test]
fn an_export_killed_mid_write_leaves_no_half_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (fs_url, fs) = fs_storage(tmp.path());
    let long: Vec<fusion::ChatMessage> = (0..40)
        .map(|n| fusion::ChatMessage::user(format!("{n} {}", "x".repeat(1000))))
        .collect();
    seed(&fs, "big", &long);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();

    for format in ["json", "jsonl"] {
        let file = out.join(format!("big.{format}"));
        let limited = common::fusion(tmp.path());
        let status = std::process::Command::new("sh")
            .envs(limited.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .env_remove("FUSION_STORAGE")
            .args(["-c", "ulimit -f 16 && exec \"$@\"", "sh"])
            .arg(limited.get_program())
            .args(["sessions", "export", "big", "-f", format, "-o"])
            .arg(&file)
            .args(["--storage", &fs_url])
            .status()
            .unwrap();
        assert!(!status.success(), "the export was not stopped by the limit");
        assert!(!file.exists(), "a half-written {format} export was left");
    }
    // What the killed runs left (temporary files) stands in no later export's way.
    let file = out.join("big.jsonl");
    ok(
        tmp.path(),
        [
            "sessions",
            "export",
            "big",
            "-f",
            "jsonl",
            "-o",
            file.to_str().unwrap(),
            "--storage",
            &fs_url,
        ],
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 40);
}

/// `--format md` is the markdown transcript, as the facade's `ExportFormat` reads it and
/// as its file extension is: clap refused it ("invalid value 'md'").
#[test]
fn an_export_in_md_is_the_markdown_transcript() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, fs) = fs_storage(tmp.path());
    seed(&fs, "s", &conversation(2));
    let export = |format: &str| {
        ok(
            tmp.path(),
            [
                "sessions",
                "export",
                "s",
                "--format",
                format,
                "--storage",
                &url,
            ],
        )
    };
    let markdown = export("markdown");
    assert!(markdown.starts_with("# "), "{markdown}");
    assert_eq!(export("md"), markdown);
}
