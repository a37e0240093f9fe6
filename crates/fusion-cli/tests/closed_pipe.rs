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
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    fusion(dir)
        .args(args)
        .stdout(writer)
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
            if full {
                chat.stdout(std::fs::File::create("/dev/full").unwrap());
            } else {
                let (reader, writer) = std::io::pipe().unwrap();
                drop(reader);
                chat.stdout(writer);
            }
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
            .stdout(std::fs::File::create("/dev/full").unwrap())
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
            .stdin(stdin);
        if full {
            chat.stdout(std::fs::File::create("/dev/full").unwrap());
        } else {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            chat.stdout(writer);
        }
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

/// `[v]iew` prints the call whole: when the reader of stdout has gone by then, the chat
/// ends quietly, as a script's does. It panicked (`println!`), exit 101; and a failed
/// write in a turn on a terminal is reported and the chat goes on, which here would have
/// been an error line for a write nobody could read.
#[tokio::test(flavor = "multi_thread")]
async fn viewing_a_call_whole_after_the_reader_went_away_ends_the_chat_quietly() {
    use std::io::{Read as _, Write as _};
    use std::time::Duration;
    const HANG_GUARD: Duration = Duration::from_secs(120);
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("sessions").display().to_string();
    // Long enough for the question to cut it and offer `[v]iew`.
    let content = "Meeting notes. ".repeat(20);
    let arguments = serde_json::json!({"path": "notes.txt", "content": content}).to_string();
    let server = fusion_agent::testing::MockLlmServer::start().await;
    server
        .push_tool_call("write_file", &arguments)
        .push_text("Not written.");
    let (mut terminal, stdin) = common::repl::pseudo_terminal();
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut chat = common::chat_command(tmp.path(), &server.base_url());
    chat.args(["--session", "v", "--storage", &url, "--approve", "ask"])
        .env("TERM", "dumb")
        .stdin(stdin)
        .stdout(writer)
        .stderr(std::process::Stdio::piped());
    // The command, holding the pipe's write end too, is dropped once the child starts.
    let child = common::spawn_chat(chat);
    writeln!(terminal, "write the notes").unwrap();

    // stdout is read until the question is on it; then its only reader closes.
    let question = tokio::task::spawn_blocking(move || {
        let (mut seen, mut buffer) = (Vec::new(), [0; 4096]);
        while !String::from_utf8_lossy(&seen).contains("[v]iew it whole: ") {
            match reader.read(&mut buffer).unwrap() {
                0 => break,
                read => seen.extend_from_slice(&buffer[..read]),
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let shown = tokio::time::timeout(HANG_GUARD, question)
        .await
        .expect("the question is asked")
        .unwrap();
    assert!(shown.contains("[v]iew it whole: "), "{shown}");
    writeln!(terminal, "v").unwrap();

    let output = tokio::time::timeout(HANG_GUARD, child.wait_with_output())
        .await
        .expect("the chat ends")
        .unwrap();
    assert_no_panic(&output);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert_eq!(stderr, "");
    assert!(!tmp.path().join("notes.txt").exists(), "nothing approved");
    assert_eq!(server.request_count(), 1, "the turn went no further");
}
