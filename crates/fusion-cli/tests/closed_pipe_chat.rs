//! A chat whose stdout reader went away during a turn or at its approval question (`[v]iew`,
//! Ctrl-C), in a test binary of its own whose tests run one at a time.
//!
//! So, because each test needs the pipe's read end gone from every process when the chat
//! writes: a process that another test is starting holds a copy of every descriptor of
//! the test process from its fork to its exec, and a write while one does succeeds (the
//! chat then asks again and waits, or goes on to the next turn). Here nothing else starts
//! a process meanwhile: the read end is closed before the chat starts, or once the chat's
//! own start is over (it printed the question).

mod common;

use std::io::{Read as _, Write as _};
use std::process::Output;
use std::time::Duration;

use common::text;
use fusion_agent::testing::MockLlmServer;
use nix::pty::PtyMaster;
use tempfile::TempDir;
use tokio::process::Child;
use tokio::sync::{Mutex, MutexGuard};

/// Long enough for a failing run to be a hang rather than a slow machine.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// Held for the whole of a test (see the module's documentation).
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

fn assert_no_panic(output: &Output) {
    let stderr = text(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A chat on a terminal asking whether to write a file, its question read from stdout,
/// whose only reader then closes.
struct Asked {
    _alone: MutexGuard<'static, ()>,
    tmp: TempDir,
    server: MockLlmServer,
    terminal: PtyMaster,
    child: Child,
}

impl Asked {
    async fn start(session: &str) -> Asked {
        let alone = ONE_AT_A_TIME.lock().await;
        let tmp = tempfile::tempdir().unwrap();
        let url = tmp.path().join("sessions").display().to_string();
        // Long enough for the question to cut it and offer `[v]iew`.
        let content = "Meeting notes. ".repeat(20);
        let arguments = serde_json::json!({"path": "notes.txt", "content": content}).to_string();
        let server = MockLlmServer::start().await;
        server
            .push_tool_call("write_file", &arguments)
            .push_text("Not written.");
        let (mut terminal, stdin) = common::repl::pseudo_terminal();
        let (mut reader, writer) = std::io::pipe().unwrap();
        let mut chat = common::chat_command(tmp.path(), &server.base_url());
        chat.args(["--session", session, "--storage", &url, "--approve", "ask"])
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
        Asked {
            _alone: alone,
            tmp,
            server,
            terminal,
            child,
        }
    }

    /// Waits for the chat to end, and checks it ended quietly, the call neither approved
    /// nor the model asked again.
    async fn ends_quietly(self) {
        let output = tokio::time::timeout(HANG_GUARD, self.child.wait_with_output())
            .await
            .expect("the chat ends")
            .unwrap();
        assert_no_panic(&output);
        let stderr = text(&output.stderr);
        assert!(output.status.success(), "{:?}: {stderr}", output.status);
        assert_eq!(stderr, "");
        assert!(
            !self.tmp.path().join("notes.txt").exists(),
            "nothing approved"
        );
        assert_eq!(self.server.request_count(), 1, "the turn went no further");
    }
}

/// `[v]iew` prints the call whole: when the reader of stdout has gone by then, the chat
/// ends quietly, as a script's does. It panicked (`println!`), exit 101; and a failed
/// write in a turn on a terminal is reported and the chat goes on, which here would have
/// been an error line for a write nobody could read.
#[tokio::test(flavor = "multi_thread")]
async fn viewing_a_call_whole_after_the_reader_went_away_ends_the_chat_quietly() {
    let mut asked = Asked::start("v").await;
    writeln!(asked.terminal, "v").unwrap();
    asked.ends_quietly().await;
}

/// Ctrl-C while the question waits ends its line on stdout, which fails with the reader
/// gone and so ends the chat, with the question's read still open on its thread. The
/// runtime's shutdown at the end of `main` waited for that read: the chat hung, its
/// terminal left in raw mode, until a line was typed.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_at_a_question_after_the_reader_went_away_ends_the_chat_without_a_line() {
    let asked = Asked::start("c").await;
    let pid = nix::unistd::Pid::from_raw(asked.child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    asked.ends_quietly().await;
}

/// A script's chat whose reader went away while the model's answer streamed in (`fusion
/// chat < script | head -1`) stores that turn whole, then ends quietly: the answer was
/// dropped with the turn at the first failed write, leaving the session with a question
/// and no answer (the model's work, paid for, lost). The script's later lines are not
/// sent: nobody reads their answers.
#[tokio::test]
async fn a_chat_whose_reader_went_away_mid_answer_stores_the_turn_and_ends() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("sessions").display().to_string();
    let storage: fusion::storage::StorageType = url.parse().unwrap();
    let server = MockLlmServer::start().await;
    server
        .push_text("The first answer.")
        .push_text("Never asked.");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut chat = common::chat_command(tmp.path(), &server.base_url());
    chat.args(["--session", "s", "--storage", &url])
        .stdin(std::process::Stdio::piped())
        .stdout(writer)
        .stderr(std::process::Stdio::piped());
    let mut child = common::spawn_chat(chat);
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"first\nsecond\n")
        .await
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert_no_panic(&output);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert_eq!(stderr, "");
    assert_eq!(
        common::load_async(&storage, "s")
            .await
            .iter()
            .map(|message| message.content.as_str())
            .collect::<Vec<_>>()[1..],
        ["first", "The first answer."],
        "the system prompt, then the turn"
    );
    assert_eq!(server.request_count(), 1, "the second line is not sent");
}

/// A chat on a terminal whose stdout's only reader closes once the line prompt is on it,
/// then is sent `message`: the turn's first line then fails.
struct Unread {
    _alone: MutexGuard<'static, ()>,
    tmp: TempDir,
    storage: fusion::storage::StorageType,
    child: Child,
    _terminal: PtyMaster,
}

impl Unread {
    async fn start(server: &MockLlmServer, approve: &str, message: &str) -> Unread {
        let alone = ONE_AT_A_TIME.lock().await;
        let tmp = tempfile::tempdir().unwrap();
        let url = tmp.path().join("sessions").display().to_string();
        let storage = url.parse().unwrap();
        let (mut terminal, stdin) = common::repl::pseudo_terminal();
        let (mut reader, writer) = std::io::pipe().unwrap();
        let mut chat = common::chat_command(tmp.path(), &server.base_url());
        chat.args(["--session", "s", "--storage", &url, "--approve", approve])
            .env("TERM", "dumb")
            .stdin(stdin)
            .stdout(writer)
            .stderr(std::process::Stdio::piped());
        let child = common::spawn_chat(chat);
        let prompt = tokio::task::spawn_blocking(move || {
            let (mut seen, mut buffer) = (Vec::new(), [0; 4096]);
            while !String::from_utf8_lossy(&seen).contains("leave\n> ") {
                match reader.read(&mut buffer).unwrap() {
                    0 => break,
                    read => seen.extend_from_slice(&buffer[..read]),
                }
            }
            String::from_utf8_lossy(&seen).into_owned()
        });
        let shown = tokio::time::timeout(HANG_GUARD, prompt)
            .await
            .expect("the prompt is shown")
            .unwrap();
        assert!(shown.contains("leave\n> "), "{shown}");
        writeln!(terminal, "{message}").unwrap();
        Unread {
            _alone: alone,
            tmp,
            storage,
            child,
            _terminal: terminal,
        }
    }

    async fn ends(self) -> (Output, Vec<fusion::ChatMessage>, TempDir) {
        let output = tokio::time::timeout(HANG_GUARD, self.child.wait_with_output())
            .await
            .expect("the chat ends")
            .unwrap();
        assert_no_panic(&output);
        let stored = common::load_async(&self.storage, "s").await;
        (output, stored, self.tmp)
    }
}

/// A question arriving once the reader went away mid-turn is not asked (97623b5; its
/// prompt would fail too): the call is not run, the turn stops there with the model's
/// message stored, its call unanswered, and the chat ends quietly. As the agent's
/// contract for a cancelled turn has it, the next turn answers that call "interrupted"
/// before its own message, so the conversation stays one a model takes. A guard: it
/// passes with and without `pause`'s own check.
#[tokio::test(flavor = "multi_thread")]
async fn a_question_after_the_reader_went_away_mid_turn_is_not_asked_nor_the_call_run() {
    let server = MockLlmServer::start().await;
    let arguments = serde_json::json!({"path": "notes.txt", "content": "x"}).to_string();
    server
        .push_tool_call("write_file", &arguments)
        .push_text("Later.");
    let chat = Unread::start(&server, "ask", "write the notes").await;
    let (output, stored, tmp) = chat.ends().await;
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert_eq!(stderr, "");
    assert!(!tmp.path().join("notes.txt").exists(), "nothing approved");
    assert_eq!(server.request_count(), 1, "the turn went no further");
    let calls: Vec<_> = stored
        .iter()
        .map(|m| {
            (
                m.content.as_str(),
                m.tool_calls.len(),
                m.tool_call_id.is_some(),
            )
        })
        .collect();
    assert_eq!(
        calls[1..],
        [("write the notes", 0, false), ("", 1, false)],
        "the call stored, unanswered"
    );

    // The next chat on the session answers the call before its own message.
    let url = tmp.path().join("sessions").display().to_string();
    let mut next = common::chat_command(tmp.path(), &server.base_url());
    next.args(["--session", "s", "--storage", &url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = common::spawn_chat(next);
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"go on\n")
        .await
        .unwrap();
    drop(stdin);
    let output = tokio::time::timeout(HANG_GUARD, child.wait_with_output())
        .await
        .expect("the next chat ends")
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let storage: fusion::storage::StorageType = url.parse().unwrap();
    let stored = common::load_async(&storage, "s").await;
    let answer = &stored[3];
    assert_eq!(
        answer.tool_call_id.as_deref(),
        Some(stored[2].tool_calls[0].id.as_str())
    );
    assert!(answer.content.contains("interrupted"), "{answer:?}");
    assert_eq!(stored[4].content, "go on");
    assert!(
        !tmp.path().join("notes.txt").exists(),
        "nothing run later either"
    );
}

/// A turn that fails once the reader went away mid-turn (its tool call's line failed,
/// the call ran unseen) still says so on stderr, stores what it did, and the chat ends
/// at its next prompt, nobody reading it. A guard of 97623b5's "a turn that fails
/// meanwhile says so as before".
#[tokio::test(flavor = "multi_thread")]
async fn a_turn_failing_after_the_reader_went_away_says_so_and_ends_the_chat() {
    let server = MockLlmServer::start().await;
    let arguments = serde_json::json!({"path": "missing.txt"}).to_string();
    server
        .push_tool_call("read_file", &arguments)
        .push(fusion_agent::testing::MockReply::status(400));
    let chat = Unread::start(&server, "all", "read it").await;
    let (output, stored, _tmp) = chat.ends().await;
    let stderr = text(&output.stderr);
    assert!(stderr.contains("HTTP 400"), "{stderr}");
    // On a terminal a failed turn is said and the chat goes on; what ends it here is the
    // reader gone, which is no failure.
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert_eq!(server.request_count(), 2, "the call's result was sent");
    let last = stored.last().unwrap();
    assert!(
        last.tool_call_id.is_some(),
        "the call's result stored: {last:?}"
    );
}
