//! `fusion chat` printing the model's reply as it is written (issue #14), played with the
//! real `fusion` binary against `MockLlmServer` on loopback, with file-system storage.
//!
//! Where a test must see text on screen before the server has sent the rest, the server
//! holds its stream ([`MockLlmServer::hold_next_stream`]) until the test has seen it, so
//! the order is fixed by the test, never by how fast the machine is; the timeouts here are
//! hang guards, never reached when chat works. The spinner's tests put stdout and stderr
//! on one pseudo-terminal ([`Repl::start_on_screen`]), whose bytes arrive in the order
//! chat wrote them, so "the spinner, then the answer" is read off one stream rather than
//! raced between two.

mod common;

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use common::load_async;
use common::repl::{Captured, Repl};
use fusion::storage::StorageType;
use fusion_agent::testing::{MockDelta, MockLlmServer, MockReply, MockStreamEnd, MockToolCall};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};

/// How long a test waits for something that happens at once when chat works: it turns a
/// hang into a failure.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// The system prompt of every chat here, so tests can name the stored messages.
const SYSTEM: &str = "You are the streaming test assistant.";

/// The line chat prints when the model turns out not to support native tool calling.
const SWITCHED: &str = "(the model does not support native tool calling; this session now \
                        describes its tools in the prompt instead)";

/// A file-system storage in `dir`: its URL for `--storage`, and the same for loading.
fn storage(dir: &Path) -> (String, StorageType) {
    let url = dir.join("sessions").display().to_string();
    let storage = url.parse().unwrap();
    (url, storage)
}

/// The options of every chat here: session `id` on storage `url`, with [`SYSTEM`].
fn chat_args<'a>(id: &'a str, url: &'a str) -> [&'a str; 6] {
    ["--session", id, "--storage", url, "--system", SYSTEM]
}

/// A scripted `fusion chat`: stdin and stdout are pipes the test writes and reads while
/// the process runs.
struct Piped {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Captured,
    stderr: Captured,
}

impl Piped {
    /// Starts `fusion chat ARGS` in `data_dir` against `server`.
    fn start(data_dir: &Path, server: &MockLlmServer, args: &[&str]) -> Piped {
        Self::start_with_env(data_dir, server, args, &[])
    }

    /// [`start`](Self::start), with the environment variables `env` set too.
    fn start_with_env(
        data_dir: &Path,
        server: &MockLlmServer,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Piped {
        let mut command = common::chat_command(data_dir, &server.base_url());
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = common::spawn_chat(command);
        Piped {
            stdin: child.stdin.take(),
            stdout: Captured::spawn(child.stdout.take().unwrap()),
            stderr: Captured::spawn(child.stderr.take().unwrap()),
            child,
        }
    }

    /// Writes `line` and a line break to stdin.
    async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is still open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// Waits until stdout shows `text` after what was already waited for; returns
    /// everything up to and including it.
    async fn stdout(&mut self, text: &str) -> String {
        match self.stdout.wait_for(text).await {
            Ok(through) => through,
            Err(()) => panic!(
                "fusion chat never printed {text:?}\n--- stdout:\n{}\n--- stderr:\n{}",
                self.stdout.text(),
                self.stderr.text()
            ),
        }
    }

    /// Closes stdin, which ends the chat, and waits for the process; returns its status,
    /// all its stdout and all its stderr.
    async fn finish(mut self) -> (ExitStatus, String, String) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(HANG_GUARD, self.child.wait())
            .await
            .expect("fusion chat ends when its input does")
            .unwrap();
        // The readers stop at the end of the pipes, which the exit brings.
        let stdout = self.stdout.all().await;
        let stderr = self.stderr.all().await;
        (status, stdout, stderr)
    }
}

/// Runs `fusion chat ARGS` with `input` on stdin to its end; returns its stdout after
/// checking that it succeeded.
async fn script(data_dir: &Path, server: &MockLlmServer, args: &[&str], input: &str) -> String {
    script_with_env(data_dir, server, args, &[], input).await
}

/// [`script`], with the environment variables `env` set too.
async fn script_with_env(
    data_dir: &Path,
    server: &MockLlmServer,
    args: &[&str],
    env: &[(&str, &str)],
    input: &str,
) -> String {
    let mut chat = Piped::start_with_env(data_dir, server, args, env);
    for line in input.lines() {
        chat.send(line).await;
    }
    let (status, stdout, stderr) = chat.finish().await;
    assert!(status.success(), "{status}\n--- stderr:\n{stderr}");
    stdout
}

/// Whether a recorded request asked for a streamed reply.
fn streamed(request: &Value) -> bool {
    request["stream"] == Value::Bool(true)
}

/// The names of the tools a recorded request offered.
fn tools_offered(request: &Value) -> Vec<String> {
    request["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|tool| tool["function"]["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Every stored message of session `id`, as `role: content`.
async fn stored(storage: &StorageType, id: &str) -> Vec<String> {
    load_async(storage, id)
        .await
        .iter()
        .map(|message| format!("{}: {}", message.role.as_str(), message.content))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_piped_chat_prints_the_first_words_before_the_server_sends_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    let gate = server.hold_next_stream();
    server.push_text("First words of a longer answer that comes later.");

    let mut chat = Piped::start(tmp.path(), &server, &chat_args("pipe", &url));
    chat.send("hello").await;
    tokio::time::timeout(HANG_GUARD, gate.first_part_sent())
        .await
        .expect("the server sends the first part of its reply");
    // The gate is still shut: the server has sent "First " and nothing more.
    let shown = chat.stdout("First").await;
    assert!(!shown.contains("words"), "{shown}");
    gate.release();
    chat.stdout(" words of a longer answer that comes later.\n")
        .await;

    let (status, stdout, stderr) = chat.finish().await;
    assert!(status.success(), "{status}\n--- stderr:\n{stderr}");
    assert_eq!(
        stdout, "First words of a longer answer that comes later.\n",
        "a piped chat prints only the answer"
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(streamed(&requests[0]), "{}", requests[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chat_on_a_terminal_prints_the_first_words_before_the_server_sends_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    let gate = server.hold_next_stream();
    server.push_text("First words of a longer answer that comes later.");

    let mut repl = Repl::start(tmp.path(), &server.base_url(), &chat_args("tty", &url));
    repl.stdout("type /help").await;
    repl.send("hello");
    tokio::time::timeout(HANG_GUARD, gate.first_part_sent())
        .await
        .expect("the server sends the first part of its reply");
    let shown = repl.stdout("First").await;
    assert!(!shown.contains("words"), "{shown}");
    gate.release();
    repl.stdout("words of a longer answer that comes later.\n")
        .await;

    let (status, stderr) = repl.exit().await;
    assert!(status.success(), "{status}\n--- stderr:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_stream_or_fusion_stream_false_asks_for_whole_replies_and_prints_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    let mut flag = chat_args("flag", &url).to_vec();
    flag.push("--no-stream");
    let variable = chat_args("variable", &url);
    let off = [("FUSION_STREAM", "false")];
    for (args, env) in [(&flag[..], &[][..]), (&variable[..], &off[..])] {
        server.push_text("A whole answer at once.");
        let stdout = script_with_env(tmp.path(), &server, args, env, "hello\n").await;
        assert_eq!(stdout, "A whole answer at once.\n", "{args:?} {env:?}");
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for request in &requests {
        assert!(!streamed(request), "{request}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_refuses_streaming_is_asked_again_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    server.reject_streaming(true);
    server.push_text("Answered without streaming.");
    server.push_text("Still without streaming.");

    let stdout = script(
        tmp.path(),
        &server,
        &chat_args("refused", &url),
        "hello\nagain\n",
    )
    .await;
    assert_eq!(
        stdout,
        "Answered without streaming.\nStill without streaming.\n"
    );
    let asked: Vec<bool> = server.requests().iter().map(streamed).collect();
    // Once refused, the client does not ask for a stream again.
    assert_eq!(asked, [true, false, false]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_without_tool_calling_switches_the_session_to_tools_in_the_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    server.reject_tools(true);
    server.push_text("Thought: I know this.\nFinal Answer: The answer is 42.");
    server.push_text("Final Answer: Still 42.");

    let stdout = script(
        tmp.path(),
        &server,
        &chat_args("react", &url),
        "What is the answer?\nAnd now?\n",
    )
    .await;
    // The switch is said once, before the answer; only the answer is for the user, not
    // the model's thoughts or its `Final Answer:` label.
    assert_eq!(
        stdout,
        format!("  {SWITCHED}\nThe answer is 42.\nStill 42.\n")
    );

    let requests = server.requests();
    let offered: Vec<Vec<String>> = requests.iter().map(tools_offered).collect();
    // The refused request offered the tools; its retry and the next turn describe them in
    // the prompt instead.
    assert_eq!(offered.len(), 3, "{requests:?}");
    assert!(
        offered[0].iter().any(|name| name == "list_directory"),
        "{offered:?}"
    );
    assert!(
        offered[1].is_empty() && offered[2].is_empty(),
        "{offered:?}"
    );
    let next_turn = requests[2].to_string();
    assert!(next_turn.contains("list_directory"), "{next_turn}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_spinner_shows_while_the_first_words_are_slow_and_is_gone_before_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    server.push_delayed(
        Duration::from_secs(2),
        MockReply::text("Slow but sure, here it is."),
    );

    let mut repl = Repl::start_on_screen(tmp.path(), &server.base_url(), &chat_args("slow", &url));
    repl.stdout("type /help").await;
    repl.send("hello");
    // One screen for both streams, in the order chat wrote them: the spinner drew its
    // line before the answer's first word.
    let screen = repl.stdout("Slow but sure, here it is.").await;
    let spinner = screen
        .find("thinking…")
        .unwrap_or_else(|| panic!("no spinner before the answer:\n{screen:?}"));
    let answer = screen.rfind("Slow").unwrap();
    // The answer starts on a clean line: the spinner's line was erased
    // (carriage return, then "erase line") before the text was written.
    let between = &screen[spinner..answer];
    assert!(between.contains("\r\u{1b}[2K"), "{screen:?}");
    assert!(!screen[answer..].contains("thinking"), "{screen:?}");

    let (status, _) = repl.exit().await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_spinner_shows_again_while_tool_results_go_back_to_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    // The text alongside the call takes the first spinner away.
    server.push(MockReply::ToolCalls {
        content: "Let me look.".to_string(),
        calls: vec![MockToolCall::new("list_directory", r#"{"path":"."}"#)],
    });
    server.push_delayed(
        Duration::from_secs(2),
        MockReply::text("The folder is listed."),
    );

    let mut repl = Repl::start_on_screen(tmp.path(), &server.base_url(), &chat_args("again", &url));
    repl.stdout("type /help").await;
    repl.send("what is here?");
    repl.stdout("Let me look.").await;
    let screen = repl.stdout("The folder is listed.").await;
    let result = screen
        .find("     <- ")
        .unwrap_or_else(|| panic!("no tool result line:\n{screen:?}"));
    let answer = screen.rfind("The folder").unwrap();
    assert!(
        screen[result..answer].contains("thinking…"),
        "no spinner between the tool's result and the answer:\n{screen:?}"
    );

    let (status, _) = repl.exit().await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_mid_reply_cancels_the_turn_and_the_session_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    server.push_partial([MockDelta::text("Partial answer ")], MockStreamEnd::Stall);
    server.push_text("The second answer.");

    let mut repl = Repl::start(tmp.path(), &server.base_url(), &chat_args("ctrlc", &url));
    repl.stdout("type /help").await;
    repl.send("first question");
    repl.stdout("Partial answer").await;
    repl.interrupt();
    let after = repl.stdout("(interrupted)\n").await;
    // The interrupt ends the cut-off line first, so the note stands on a line of its own.
    assert!(
        after.ends_with("Partial answer \n(interrupted)\n"),
        "{after:?}"
    );
    tokio::time::timeout(HANG_GUARD, server.replies_finished())
        .await
        .expect("chat hangs up the stalled stream");

    repl.send("second question");
    repl.stdout("The second answer.\n").await;
    let (status, stderr) = repl.exit().await;
    assert!(status.success(), "{status}\n--- stderr:\n{stderr}");

    assert_eq!(
        stored(&storage, "ctrlc").await,
        [
            format!("system: {SYSTEM}"),
            "user: first question".to_string(),
            "user: second question".to_string(),
            "assistant: The second answer.".to_string(),
        ]
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let second = requests[1].to_string();
    assert!(second.contains("first question"), "{second}");
    assert!(!second.contains("Partial answer"), "{second}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_before_the_first_words_erases_the_spinner_and_the_session_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    // A held tool call has sent its opening and nothing the screen shows.
    let gate = server.hold_next_stream();
    server.push_tool_call("list_directory", r#"{"path":"."}"#);
    server.push_text("Asked again.");

    let mut repl = Repl::start_on_screen(tmp.path(), &server.base_url(), &chat_args("quiet", &url));
    repl.stdout("type /help").await;
    repl.send("hello");
    tokio::time::timeout(HANG_GUARD, gate.first_part_sent())
        .await
        .expect("the server sends the first part of its reply");
    repl.stderr_through("thinking…").await;
    repl.interrupt();
    let screen = repl.stdout("(interrupted)").await;
    assert!(
        screen.ends_with("\r\u{1b}[2K(interrupted)"),
        "the spinner's line is not erased before the note:\n{screen:?}"
    );
    tokio::time::timeout(HANG_GUARD, server.replies_finished())
        .await
        .expect("chat hangs up the held stream");

    repl.send("again");
    let screen = repl.stdout("Asked again.").await;
    assert!(!screen.contains("list_directory"), "{screen:?}");
    let (status, _) = repl.exit().await;
    assert!(status.success(), "{status}");
    assert_eq!(
        stored(&storage, "quiet").await,
        [
            format!("system: {SYSTEM}"),
            "user: hello".to_string(),
            "user: again".to_string(),
            "assistant: Asked again.".to_string(),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_lines_stand_on_their_own_lines_between_streamed_text() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _) = storage(tmp.path());
    std::fs::create_dir(tmp.path().join("docs")).unwrap();
    std::fs::write(tmp.path().join("docs").join("notes.txt"), "hello\n").unwrap();
    let server = MockLlmServer::start().await;
    server.push(MockReply::ToolCalls {
        content: "Let me look in docs.".to_string(),
        calls: vec![MockToolCall::new("list_directory", r#"{"path":"docs"}"#)],
    });
    server.push_text("The docs folder holds notes.txt.");

    let stdout = script(
        tmp.path(),
        &server,
        &chat_args("tools", &url),
        "What is in docs?\n",
    )
    .await;
    assert_eq!(
        stdout,
        "Let me look in docs.\n\
         \x20 -> list_directory({\"path\":\"docs\"})\n\
         \x20    <- notes.txt (6 bytes)\n\
         The docs folder holds notes.txt.\n"
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_stream_in_a_script_is_one_error_line_and_a_non_zero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    server.push_partial(
        [MockDelta::text("Half an ")],
        MockStreamEnd::Error("the model crashed".to_string()),
    );

    let mut chat = Piped::start(tmp.path(), &server, &chat_args("broken", &url));
    // One write: the chat may be gone, and its stdin with it, by the time a second
    // write came.
    chat.send("hello\nnot reached").await;
    let (status, stdout, stderr) = chat.finish().await;
    assert!(!status.success(), "{stdout}");
    // What was shown stays, and the line is ended before the error.
    assert_eq!(stdout, "Half an \n");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("fusion: error: ") && stderr.contains("the model crashed"),
        "{stderr}"
    );
    assert_eq!(server.request_count(), 1);
    let kept = stored(&storage, "broken").await;
    assert!(!kept.iter().any(|m| m.contains("Half an")), "{kept:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_starts_from_what_another_front_end_stored_meanwhile() {
    use fusion::ChatMessage;

    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    let gate = server.hold_next_stream();
    server
        .push_text("First answer.")
        .push_text("Second answer.");

    let mut chat = Piped::start(tmp.path(), &server, &chat_args("shared", &url));
    chat.send("first").await;
    tokio::time::timeout(HANG_GUARD, gate.first_part_sent())
        .await
        .expect("the server sends the first part of its reply");
    // Another front end (`fusion ui`, say) stores a turn while this chat's reply is held.
    let other = storage.open().await.unwrap();
    let turn = [
        ChatMessage::user("from the other front end"),
        ChatMessage::assistant("its answer"),
    ];
    other.append("shared", &turn).await.unwrap();
    gate.release();
    chat.stdout("First answer.\n").await;

    chat.send("/history").await;
    chat.stdout("5 messages in session shared\n").await;
    chat.send("second").await;
    chat.stdout("Second answer.\n").await;
    let (status, _, stderr) = chat.finish().await;
    assert!(status.success(), "{status}\n--- stderr:\n{stderr}");
    let second = &server.requests()[1];
    let contents: Vec<&str> = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or(""))
        .collect();
    assert!(
        contents.contains(&"from the other front end"),
        "{contents:?}"
    );
    assert_eq!(contents.last(), Some(&"second"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_whose_session_another_writer_rewrites_mid_turn_stops_saying_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    let gate = server.hold_next_stream();
    server.push_text("An answer nobody will store.");

    let mut chat = Piped::start(tmp.path(), &server, &chat_args("rewritten", &url));
    chat.send("first").await;
    tokio::time::timeout(HANG_GUARD, gate.first_part_sent())
        .await
        .expect("the server sends the first part of its reply");
    // Another front end deletes the session while the reply is held.
    storage
        .open()
        .await
        .unwrap()
        .delete("rewritten")
        .await
        .unwrap();
    gate.release();
    chat.send("not for the changed conversation").await;
    let (status, _, stderr) = chat.finish().await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("changed by another writer") && stderr.contains("the script stops here"),
        "{stderr}"
    );
    assert_eq!(server.request_count(), 1, "the next line was not sent");
}
