//! Bad input gives one clear `fusion: error: ...` line on stderr and a non-zero exit code.

mod common;

use std::path::Path;

use common::{conversation, fails, ids, seed};

/// Writes `contents` to the file `name` in `dir` and imports it into `url` as session
/// `x`, which must fail: the file's path and the error.
fn import_fails(dir: &Path, name: &str, contents: &str, url: &str) -> (String, String) {
    let file = dir.join(name);
    std::fs::write(&file, contents).unwrap();
    let file = file.to_str().unwrap().to_owned();
    let args = ["sessions", "import", &file, "--id", "x", "--storage", url];
    let err = fails(dir, args);
    (file, err)
}

#[test]
fn hostile_session_ids_are_refused_before_touching_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("sessions").display().to_string();
    for args in [
        vec!["sessions", "show", "../x"],
        vec!["sessions", "delete", "../x"],
        vec!["sessions", "export", "a/b"],
        vec!["sessions", "delete", "k*"],
    ] {
        let err = fails(tmp.path(), args.iter().copied().chain(["--storage", &url]));
        assert!(
            err.starts_with("fusion: error: invalid session id"),
            "{args:?}: {err}"
        );
    }
    // A hostile id inside an import is refused the same way.
    let file = tmp.path().join("x.jsonl");
    std::fs::write(&file, "{\"role\":\"user\",\"content\":\"hi\"}\n").unwrap();
    let err = fails(
        tmp.path(),
        [
            "sessions",
            "import",
            file.to_str().unwrap(),
            "--id",
            "../x",
            "--storage",
            &url,
        ],
    );
    assert!(err.contains("invalid session id"), "{err}");
    assert!(!tmp.path().join("x").exists() && !tmp.path().join("x.jsonl.jsonl").exists());
}

#[test]
fn unknown_storage_schemes_are_named_without_leaking_passwords() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(
        tmp.path(),
        [
            "sessions",
            "list",
            "--storage",
            "mongodb://admin:hunter2@db/x",
        ],
    );
    assert!(err.contains("unknown storage scheme `mongodb://`"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let err = fails(
        tmp.path(),
        ["migrate", "--from", "ftp://h/x", "--to", "memory://"],
    );
    assert!(err.contains("--from") && err.contains("ftp://"), "{err}");
}

#[test]
fn missing_and_corrupt_import_files_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("sessions").display().to_string();
    let missing = tmp.path().join("missing.json");
    let err = fails(
        tmp.path(),
        [
            "sessions",
            "import",
            missing.to_str().unwrap(),
            "--storage",
            &url,
        ],
    );
    assert!(
        err.contains("cannot read import file") && err.contains("missing.json"),
        "{err}"
    );

    let cases = [
        (
            "truncated.json",
            "{\n  \"id\": \"x\",\n  \"messages\": [\n    {\"role\": \"user\"",
            "not a valid json export",
        ),
        (
            "bad-line.jsonl",
            "{\"role\":\"user\",\"content\":\"hi\"}\n{\"role\":\"robot\",\"content\":\"x\"}\n",
            "line 2 is not a valid message",
        ),
        (
            "binary.json",
            "\u{1}\u{2}garbage",
            "not a valid json export",
        ),
        ("empty.json", "", "empty"),
    ];
    for (name, contents, expected) in cases {
        let file = tmp.path().join(name);
        std::fs::write(&file, contents).unwrap();
        let err = fails(
            tmp.path(),
            [
                "sessions",
                "import",
                file.to_str().unwrap(),
                "--storage",
                &url,
            ],
        );
        assert!(
            err.contains(&format!("cannot import {}", file.display())),
            "{name}: {err}"
        );
        assert!(err.contains(expected), "{name}: {err}");
    }
    assert!(
        ids(&url.parse().unwrap()).is_empty(),
        "nothing may be imported from a broken file"
    );
}

/// A JSON array of messages is neither export format, and the refusal says what it is and
/// what to make of it: read as a json export, its first message was taken for the version
/// ("invalid type: map, expected u64").
#[test]
fn an_import_of_a_bare_array_of_messages_says_what_to_make_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("sessions").display().to_string();
    for (name, contents) in [
        (
            "one-line.json",
            "[{\"role\":\"user\",\"content\":\"hi\"}]\n",
        ),
        (
            "pretty.json",
            "[\n  {\"role\": \"user\", \"content\": \"hi\"}\n]\n",
        ),
    ] {
        let (_, err) = import_fails(tmp.path(), name, contents, &url);
        assert!(
            err.contains("the export is a JSON array") && !err.contains("expected u64"),
            "{name}: {err}"
        );
    }
    assert!(ids(&url.parse().unwrap()).is_empty(), "nothing imported");
}

/// `import -` reads stdin, and its errors say so: "cannot import -" named a file that
/// does not exist.
#[test]
fn an_import_from_stdin_that_fails_says_it_came_from_stdin() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("sessions").display().to_string();
    for (input, expected) in [
        ("not json\n", "not a valid json export"),
        (
            "{\"role\":\"user\",\"content\":\"hi\",\"reasoning\":\"r\"}\n",
            "line 1 holds \"reasoning\"",
        ),
        // Named as stdin, not as "the file", which there is none of.
        ("", "stdin held nothing (it ended before any message"),
        (" \n\n", "stdin held nothing"),
        ("{\"messages\":[]}", "the export holds no messages"),
        (
            "[{\"role\":\"user\",\"content\":\"hi\"}]",
            "the export is a JSON array",
        ),
        (
            "{\"version\":2,\"messages\":[]}",
            "an export written by a newer release needs that release",
        ),
        (
            "{\"id\":\"m1\",\"role\":\"user\",\"content\":\"a\"}\n\
             {\"id\":\"m1\",\"role\":\"user\",\"content\":\"b\"}\n",
            "fs refused to store line 2 (nothing was stored): its id m1 is the id of an earlier \
             message of the same write; correct line 2 of the input to import it",
        ),
    ] {
        let mut import = common::fusion(tmp.path())
            .args(["sessions", "import", "-", "--id", "x", "--storage", &url])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = import.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        let output = import.wait_with_output().unwrap();
        let err = common::text(&output.stderr);
        assert!(!output.status.success(), "{input}");
        assert!(
            err.starts_with("fusion: error: cannot import from stdin: ") && err.contains(expected),
            "{input}: {err}"
        );
        // No file to correct: "name the file to import" is the advice for stdin alone.
        assert!(
            !err.contains("the file holds") && !err.contains("to import the file"),
            "{input}: {err}"
        );
        // Nor is a format or a version said of a file ("or jsonl file", "the file is a
        // JSON array", "files without a version").
        let said = err.replace("name the file to import", "");
        assert!(!said.contains("file"), "{input}: {err}");
    }
}

/// A message field this release does not know (a newer release's, in a `jsonl` file,
/// which has no version, or in a `json` export's messages) refuses the import, naming the
/// field and where it is: read, it was dropped without a word. A field holding nothing
/// loses nothing, and imports.
#[test]
fn an_import_holding_a_message_field_this_release_does_not_know_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("sessions").display().to_string();
    let user = r#"{"role":"user","content":"hi"}"#;
    let cases = [
        (
            "newer.jsonl",
            format!(
                "{user}\n{{\"role\":\"assistant\",\"content\":\"yo\",\"reasoning\":\"short\"}}\n"
            ),
            "line 2 holds \"reasoning\"",
        ),
        (
            "newer-call.jsonl",
            format!(
                "{user}\n{{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{{\"id\":\"c\",\
                 \"type\":\"function\",\"function\":{{\"name\":\"ls\",\"arguments\":\"{{}}\",\
                 \"strict\":true}}}}]}}\n"
            ),
            "line 2 holds \"tool_calls[0].function.strict\"",
        ),
        (
            "newer.json",
            format!(
                "{{\"version\":1,\"id\":\"x\",\"messages\":[{user},{{\"role\":\"user\",\"content\":\"a\",\"lang\":\"en\"}}]}}"
            ),
            "message 2 holds \"lang\"",
        ),
    ];
    for (name, contents, expected) in cases {
        let (file, err) = import_fails(tmp.path(), name, &contents, &url);
        let file = file.as_str();
        assert!(
            err.contains(&format!("cannot import {file}")),
            "{name}: {err}"
        );
        assert!(
            err.contains(expected) && err.contains("does not know"),
            "{name}: {err}"
        );
    }
    assert!(ids(&url.parse().unwrap()).is_empty(), "nothing imported");

    let empty = tmp.path().join("empty-field.jsonl");
    std::fs::write(
        &empty,
        "{\"role\":\"user\",\"content\":\"hi\",\"later\":null}\n",
    )
    .unwrap();
    let file = empty.to_str().unwrap();
    common::ok(
        tmp.path(),
        ["sessions", "import", file, "--id", "x", "--storage", &url],
    );
}

/// A message the storage refuses (its id that of an earlier message) is named as the
/// import names messages, its line of a `jsonl` file (blank lines counted) or its place
/// in a `json` export's, from 1: the storage's own count, of the write from 0, named
/// the file's second message "message 1".
#[test]
fn a_message_the_storage_refuses_is_named_by_its_place_in_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("sessions").display().to_string();
    let (first, again) = (
        r#"{"id":"m1","role":"user","content":"a"}"#,
        r#"{"id":"m1","role":"assistant","content":"b"}"#,
    );
    let other = r#"{"role":"user","content":"c"}"#;
    let cases = [
        ("dup.jsonl", format!("{first}\n\n{again}\n"), "line 3"),
        (
            "dup.json",
            format!(r#"{{"messages":[{first},{other},{again}]}}"#),
            "message 3",
        ),
    ];
    for (name, contents, place) in cases {
        let (file, err) = import_fails(tmp.path(), name, &contents, &url);
        let file = file.as_str();
        assert!(
            err.contains(&format!(
                "cannot import {file}: fs refused to store {place} (nothing was stored): its id \
                 m1 is the id of an earlier message"
            )) && err.contains(&format!("correct {place} to import the file")),
            "{name}: {err}"
        );
        assert!(
            !err.contains("message 1") && !err.contains("message 2"),
            "{err}"
        );
    }
    assert!(ids(&url.parse().unwrap()).is_empty(), "nothing imported");
}

#[test]
fn a_corrupt_stored_session_is_an_error_for_that_session_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    let url = dir.display().to_string();
    seed(&url.parse().unwrap(), "good", &conversation(1));
    seed(&url.parse().unwrap(), "bad", &conversation(2));
    // Damage the middle of the stored file: the fs backend must call this corrupt.
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("bad")
        })
        .unwrap();
    let mut lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines[1] = "{broken".into();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();

    let err = fails(tmp.path(), ["sessions", "show", "bad", "--storage", &url]);
    assert!(err.contains("bad") && err.contains("corrupt"), "{err}");
    common::ok(tmp.path(), ["sessions", "show", "good", "--storage", &url]);
}

/// A storage URL given where clap expects no argument is quoted in clap's refusal, and its
/// password hidden there as everywhere else; the usage error's exit code is clap's.
#[test]
fn a_misplaced_url_is_quoted_without_its_password() {
    let url = "postgres://u:s3cret@127.0.0.1:1/db";
    refused_with_password_hidden(&["migrate", url, "--to", "memory://"]);
}

/// A `'` in a password ends no quote: the URL given after `--` is hidden whole.
#[test]
fn a_misplaced_url_with_a_quote_in_its_password_is_hidden_whole() {
    let url = "postgres://u:it's-s3cret@127.0.0.1:1/db";
    refused_with_password_hidden(&["sessions", "list", "--", url]);
}

/// Runs `args`, whose misplaced URL at 127.0.0.1:1 has a password holding `s3cret`, and
/// checks that clap refused it (exit 2) quoting the URL with the password hidden.
fn refused_with_password_hidden(args: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let output = common::run(tmp.path(), args);
    let stderr = common::text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unexpected argument 'postgres://u:***@127.0.0.1:1/db'"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}
