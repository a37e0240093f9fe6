//! A reader that went away (`fusion ... | head -1`) ends what a command prints, never its
//! work half done or with a panic.

mod common;

use std::path::Path;
use std::process::Output;

use common::{conversation, fusion, load, seed, text};
use fusion::ChatMessage;
use fusion::storage::StorageType;

/// `fusion ARGS` whose stdout is a pipe nobody reads any more: its read end is closed
/// before the command starts, so its first line already fails with EPIPE.
fn into_closed_pipe(dir: &Path, args: &[&str]) -> Output {
    fusion(dir)
        .args(args)
        .stdout(common::unwritable(false))
        .output()
        .expect("the fusion binary runs")
}

fn assert_no_panic(output: &Output) {
    let stderr = text(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_command_printing_one_line_to_a_closed_pipe_succeeds_having_done_its_work() {
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("sessions").display().to_string();
    let storage: StorageType = url.parse().unwrap();
    seed(&storage, "a", &conversation(1));
    seed(&storage, "b", &conversation(2));
    let file = tmp.path().join("c.jsonl");
    std::fs::write(&file, "{\"role\":\"user\",\"content\":\"hi\"}\n").unwrap();

    for args in [
        vec!["sessions", "retitle", "a", "Logs"],
        vec!["sessions", "tag", "a", "--add", "ops"],
        vec!["sessions", "delete", "b"],
        vec!["sessions", "import", file.to_str().unwrap()],
    ] {
        let output = into_closed_pipe(tmp.path(), &[&args[..], &["--storage", &url]].concat());
        assert_no_panic(&output);
        assert!(output.status.success(), "{args:?}: {:?}", output.status);
    }
    let info = common::block_on(async {
        let store = storage.open().await.unwrap();
        store.session_info("a").await.unwrap().unwrap()
    });
    assert_eq!(info.meta.title.as_deref(), Some("Logs"));
    assert_eq!(info.meta.tags, ["ops"]);
    assert!(load(&storage, "b").is_empty(), "b was deleted");
    assert_eq!(load(&storage, "c"), [ChatMessage::user("hi")]);
}

#[test]
fn a_migrate_whose_reader_went_away_still_migrates_every_session() {
    let tmp = tempfile::tempdir().unwrap();
    let from_url = tmp.path().join("from").display().to_string();
    let to_url = tmp.path().join("to").display().to_string();
    let (from, to): (StorageType, StorageType) =
        (from_url.parse().unwrap(), to_url.parse().unwrap());
    // Diverged sessions first (ids sort first), each one line of the report, then sessions
    // to copy, which get no line of their own.
    for n in 0..5 {
        seed(&from, &format!("a{n}"), &[ChatMessage::user("source")]);
        seed(&to, &format!("a{n}"), &[ChatMessage::user("target")]);
    }
    for n in 0..5 {
        seed(&from, &format!("b{n}"), &conversation(n));
    }

    let output = into_closed_pipe(
        tmp.path(),
        &["migrate", "--from", &from_url, "--to", &to_url],
    );
    assert_no_panic(&output);
    for n in 0..5 {
        assert_eq!(load(&to, &format!("b{n}")), conversation(n), "b{n} copied");
        assert_eq!(load(&to, &format!("a{n}")), [ChatMessage::user("target")]);
    }
    // The exit code still tells of the diverged sessions nobody read about.
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("5 of 10 sessions diverged"), "{stderr}");
}

/// chat's own lines (its slash commands' output) end quietly at a closed pipe, and fail
/// naming stdout when it is full: they panicked ("failed printing to stdout"), exit 101.
#[test]
fn a_chat_printing_to_a_closed_pipe_or_a_full_stdout_does_not_panic() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("sessions").display().to_string();
    for full in [false, true] {
        for command in ["/help", "/history", "/tools"] {
            // No model is asked: the commands answer from the session.
            let mut chat = common::chat_command(tmp.path(), "http://127.0.0.1:1");
            chat.args(["--session", "s", "--storage", &url]);
            chat.stdin(std::process::Stdio::piped());
            chat.stdout(common::unwritable(full));
            let mut child = chat.stderr(std::process::Stdio::piped()).spawn().unwrap();
            let mut stdin = child.stdin.take().unwrap();
            writeln!(stdin, "{command}").unwrap();
            drop(stdin);
            let output = child.wait_with_output().unwrap();
            assert_no_panic(&output);
            let stderr = text(&output.stderr);
            if full {
                assert!(!output.status.success(), "{command}");
                assert!(
                    stderr.contains("cannot write to stdout"),
                    "{command}: {stderr}"
                );
            } else {
                assert!(output.status.success(), "{command}: {stderr}");
            }
        }
    }
}

/// A closed pipe ends a command's output quietly (`list --json` too, whose serde_json
/// error hid the pipe's, so it said "Broken pipe" and exited 1). A stdout that fails
/// otherwise (a full disk) fails the command, saying the failed write was stdout's rather
/// than the storage's, whose errors can read the same.
#[test]
fn a_closed_pipe_ends_the_output_quietly_and_a_full_stdout_fails_naming_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("sessions").display().to_string();
    let storage: StorageType = url.parse().unwrap();
    seed(&storage, "a", &conversation(1));
    for args in [
        &["sessions", "list"][..],
        &["sessions", "list", "--json"],
        &["sessions", "show", "a"],
        &["sessions", "export", "a"],
        &["sessions", "export", "a", "-o", "-"],
        &["sessions", "retitle", "a", "A title"],
    ] {
        let output = into_closed_pipe(tmp.path(), &[args, &["--storage", &url]].concat());
        assert_no_panic(&output);
        assert!(output.status.success(), "{args:?}: {:?}", output.status);
        assert_eq!(text(&output.stderr), "", "{args:?}");

        let output = fusion(tmp.path())
            .args(args)
            .args(["--storage", &url])
            .stdout(common::unwritable(true))
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.starts_with("fusion: error: cannot write to stdout: ")
                && stderr.contains("No space left on device"),
            "{args:?}: {stderr}"
        );
    }
}

/// A chat on a terminal prints a banner before its first prompt: into a closed pipe
/// (`fusion chat | tee log`, tee gone) that ends it quietly, into a full stdout it fails
/// naming stdout. The banner went through `println!`, which panicked in both ("failed
/// printing to stdout"), exit 101.
#[test]
fn a_chat_on_a_terminal_whose_stdout_is_closed_or_full_does_not_panic() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("sessions").display().to_string();
    for full in [false, true] {
        let (mut terminal, stdin) = common::repl::pseudo_terminal();
        // Typed ahead: a chat that went on past its banner ends here rather than waiting.
        writeln!(terminal, "/exit").unwrap();
        let mut chat = common::chat_command(tmp.path(), "http://127.0.0.1:1");
        chat.args(["--session", "s", "--storage", &url])
            .env("TERM", "dumb")
            .stdin(stdin)
            .stdout(common::unwritable(full));
        let output = chat.output().expect("fusion chat runs");
        assert_no_panic(&output);
        let stderr = text(&output.stderr);
        if full {
            assert!(!output.status.success(), "{stderr}");
            assert!(stderr.contains("cannot write to stdout"), "{stderr}");
        } else {
            assert!(output.status.success(), "{:?}: {stderr}", output.status);
            assert_eq!(stderr, "");
        }
    }
}

/// A stderr nobody reads (`fusion ... 2>&1 | head -0`, or a full disk) loses the command's
/// notes and its error line, not its exit code: they went through `eprintln!`, which
/// panicked, exit 101 whether the command had succeeded, failed or been refused. A log
/// line too: the log subscriber reported its failed write with `eprintln!`.
#[test]
fn a_stderr_that_cannot_be_written_loses_the_lines_not_the_exit_code() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("sessions").display().to_string();
    let storage: StorageType = url.parse().unwrap();
    seed(&storage, "torn", &conversation(1));
    // An append cut short: a load skips it with a warning.
    std::fs::OpenOptions::new()
        .append(true)
        .open(tmp.path().join("sessions").join("torn.jsonl"))
        .unwrap()
        .write_all(br#"{"role":"assi"#)
        .unwrap();
    for full in [false, true] {
        for (args, code) in [
            // "no sessions in ...", a note.
            (&["sessions", "list"][..], 0),
            // The backend's warning of a torn tail, a log line.
            (&["sessions", "show", "torn"], 0),
            // "fusion: error: session \"nope\" not found ...".
            (&["sessions", "show", "nope"], 1),
            // clap's refusal.
            (&["sessions", "list", "--no-such-flag"], 2),
        ] {
            let mut command = fusion(tmp.path());
            command
                .args(args)
                .args(["--storage", &url])
                .stderr(common::unwritable(full));
            let output = command.output().expect("the fusion binary runs");
            assert_eq!(output.status.code(), Some(code), "{args:?}, full: {full}");
        }
    }
}

/// `--help` and `--version` into a full stdout fail as any command's output does: clap
/// printed them, ignored the failed write and exited 0, nothing printed. Into a closed
/// pipe (`fusion --help | head -0`) they still succeed, the reader's choice.
#[test]
fn help_and_version_into_a_full_stdout_fail_naming_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [&["--help"][..], &["--version"], &["sessions", "list", "-h"]] {
        let output = fusion(tmp.path())
            .args(args)
            .stdout(common::unwritable(true))
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("fusion: error: cannot write to stdout: ")
                && stderr.contains("No space left on device"),
            "{args:?}: {stderr}"
        );

        let output = into_closed_pipe(tmp.path(), args);
        assert_no_panic(&output);
        assert!(output.status.success(), "{args:?}: {:?}", output.status);
        assert_eq!(text(&output.stderr), "", "{args:?}");
    }
}
