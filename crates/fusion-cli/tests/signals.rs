//! `fusion chat` ended from outside, with an MCP server running: SIGTERM (mid-reply) and
//! SIGHUP (at the prompt) stop the turn as Ctrl-C does, shut the server down and exit
//! with 143 and 129; SIGKILL, which nothing can catch, still leaves no server behind.
//!
//! The server is a small Node script written by the test: it records its pid and its
//! child's, and keeps running after its stdin closes, so only a signal ends it, as some
//! real servers (and the `node` that `npx` starts) need. The chat is scripted through a
//! pipe kept open, so it is waiting for its next line, or for the model, when the signal
//! arrives.

mod common;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use common::load_async;
use common::repl::Captured;
use fusion::storage::StorageType;
use fusion_agent::testing::{MockDelta, MockLlmServer, MockStreamEnd};
use fusion_mcp::testing::assert_process_ends;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};

/// How long a test waits for something that happens at once when chat works: it turns a
/// hang into a failure.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// A stdio MCP server with no tools that writes `PID CHILD_PID` to the file named by its
/// argument. Its child (`sleep`) stands for what a launcher such as `npx` starts; the
/// timer keeps it running after its stdin closes.
const PID_SERVER: &str = r#"
const fs = require('fs');
const child = require('child_process').spawn('sleep', ['600'], { stdio: 'ignore' });
fs.writeFileSync(process.argv[2], `${process.pid} ${child.pid}`);
setInterval(() => {}, 60000);
let pending = '';
process.stdin.on('data', (chunk) => {
  pending += chunk;
  let end;
  while ((end = pending.indexOf('\n')) >= 0) {
    const line = pending.slice(0, end).trim();
    pending = pending.slice(end + 1);
    if (!line) continue;
    const message = JSON.parse(line);
    if (message.id === undefined) continue;
    let result = {};
    if (message.method === 'initialize') {
      result = {
        protocolVersion: message.params.protocolVersion,
        capabilities: { tools: {} },
        serverInfo: { name: 'pids', version: '1.0.0' },
      };
    } else if (message.method === 'tools/list') {
      result = { tools: [] };
    }
    process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id: message.id, result }) + '\n');
  }
});
"#;

/// A piped `fusion chat` with the pid server, and the file the server writes its pids to.
struct Chat {
    child: Child,
    /// Held open: the chat waits for its next line rather than ending.
    stdin: ChildStdin,
    stdout: Captured,
    stderr: Captured,
    pids: PathBuf,
}

impl Chat {
    /// Starts session `id` in `dir`, stored there, talking to `llm`.
    fn start(dir: &Path, llm: &MockLlmServer, id: &str) -> Chat {
        Chat::start_with(dir, llm, id, |command| command)
    }

    /// [`start`](Self::start), the command passed through `wrap` first.
    fn start_with(
        dir: &Path,
        llm: &MockLlmServer,
        id: &str,
        wrap: impl FnOnce(std::process::Command) -> std::process::Command,
    ) -> Chat {
        hangups_reach_children();
        let script = dir.join("pid_server.js");
        std::fs::write(&script, PID_SERVER).unwrap();
        let pids = dir.join("pids");
        let mcp = format!("node '{}' '{}'", script.display(), pids.display());
        let mut command = common::chat_command(dir, &llm.base_url());
        command
            .args(["--session", id, "--storage"])
            .arg(dir.join("sessions"))
            .args(["--mcp", &mcp]);
        let mut command = wrap(command);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = common::spawn_chat(command);
        Chat {
            stdin: child.stdin.take().unwrap(),
            stdout: Captured::spawn(child.stdout.take().unwrap()),
            stderr: Captured::spawn(child.stderr.take().unwrap()),
            child,
            pids,
        }
    }

    async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// Waits until stdout shows `text`.
    async fn stdout(&mut self, text: &str) {
        if self.stdout.wait_for(text).await.is_err() {
            panic!(
                "fusion chat never printed {text:?}\n--- stdout:\n{}\n--- stderr:\n{}",
                self.stdout.text(),
                self.stderr.text()
            );
        }
    }

    /// The MCP server's pid and its child's. The chat starts its servers before it reads
    /// its first line, so this is for after the chat has answered one.
    fn server_pids(&self) -> [u32; 2] {
        let text = std::fs::read_to_string(&self.pids).expect("the MCP server wrote its pids");
        let pids: Vec<u32> = text.split(' ').map(|pid| pid.parse().unwrap()).collect();
        [pids[0], pids[1]]
    }

    fn signal(&self, signal: Signal) {
        let pid = self.child.id().expect("fusion chat is running");
        kill(Pid::from_raw(pid as i32), signal).expect("the signal is delivered");
    }

    /// Waits for the process to end; its status and stderr.
    async fn ended(mut self) -> (ExitStatus, String) {
        let status = tokio::time::timeout(HANG_GUARD, self.child.wait())
            .await
            .expect("fusion chat ends")
            .unwrap();
        (status, self.stderr.all().await)
    }
}

/// Every stored message of session `id`, as `role: content`.
async fn stored(storage: &StorageType, id: &str) -> Vec<String> {
    load_async(storage, id)
        .await
        .iter()
        .map(|message| format!("{}: {}", message.role.as_str(), message.content))
        .collect()
}

fn storage(dir: &Path) -> StorageType {
    dir.join("sessions").display().to_string().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_reply_stops_the_turn_shuts_the_mcp_server_down_and_exits_143() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = MockLlmServer::start().await;
    llm.push_partial([MockDelta::text("Partial answer ")], MockStreamEnd::Stall);
    let mut chat = Chat::start(tmp.path(), &llm, "term");
    chat.send("first question").await;
    chat.stdout("Partial answer").await;
    let pids = chat.server_pids();

    chat.signal(Signal::SIGTERM);
    let (status, stderr) = chat.ended().await;
    assert_eq!(status.code(), Some(143), "{status}\n--- stderr:\n{stderr}");
    assert!(stderr.contains("chat ended by SIGTERM"), "{stderr}");
    for pid in pids {
        assert_process_ends(pid);
    }
    // As after Ctrl-C: the question is stored, the reply cut off mid-stream is not.
    let stored = stored(&storage(tmp.path()), "term").await;
    assert_eq!(stored.last().unwrap(), "user: first question", "{stored:?}");
    assert!(
        !stored.iter().any(|m| m.contains("Partial answer")),
        "{stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_at_the_prompt_shuts_the_mcp_server_down_and_exits_129() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = MockLlmServer::start().await;
    let mut chat = Chat::start(tmp.path(), &llm, "hangup");
    chat.send("/history").await;
    chat.stdout("in session hangup").await;
    let pids = chat.server_pids();

    chat.signal(Signal::SIGHUP);
    let (status, stderr) = chat.ended().await;
    assert_eq!(status.code(), Some(129), "{status}\n--- stderr:\n{stderr}");
    for pid in pids {
        assert_process_ends(pid);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chat_killed_outright_leaves_no_mcp_server_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = MockLlmServer::start().await;
    let mut chat = Chat::start(tmp.path(), &llm, "killed");
    chat.send("/history").await;
    chat.stdout("in session killed").await;
    let pids = chat.server_pids();

    chat.signal(Signal::SIGKILL);
    let (status, _) = chat.ended().await;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    for pid in pids {
        assert_process_ends(pid);
    }
}

/// Makes SIGHUP reach the chats these tests start, however this process was started:
/// run under `nohup` (a CI job may be), it ignores SIGHUP, and children inherit that,
/// which the chat keeps (see `a_chat_started_with_sighup_ignored_keeps_it_ignored`). A
/// handler, unlike an ignored signal, is reset to the default by `exec`; tokio's stays
/// installed for the life of the process once made.
fn hangups_reach_children() {
    let listener = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    drop(listener.expect("a SIGHUP listener in the test process"));
}

/// `command` run by a shell that ignores SIGHUP first, as `nohup` does: the chat inherits
/// that disposition across `exec`.
fn with_sighup_ignored(command: std::process::Command) -> std::process::Command {
    let mut shell = std::process::Command::new("sh");
    shell
        .args(["-c", "trap '' HUP; exec \"$@\"", "sh"])
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => shell.env(key, value),
            None => shell.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        shell.current_dir(dir);
    }
    shell
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chat_started_with_sighup_ignored_keeps_it_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = MockLlmServer::start().await;
    let mut chat = Chat::start_with(tmp.path(), &llm, "nohup", with_sighup_ignored);
    chat.send("/history").await;
    chat.stdout("in session nohup").await;

    // `nohup fusion chat`: a hangup does not end it, the next line is answered.
    chat.signal(Signal::SIGHUP);
    llm.push_text("Still here.");
    chat.send("are you there").await;
    chat.stdout("Still here.").await;
    chat.signal(Signal::SIGTERM);
    let (status, stderr) = chat.ended().await;
    assert_eq!(status.code(), Some(143), "{status}\n--- stderr:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_at_a_terminal_prompt_leaves_the_terminal_as_it_was_and_keeps_the_history() {
    let tmp = tempfile::tempdir().unwrap();
    let llm = MockLlmServer::start().await;
    hangups_reach_children();
    let sessions = tmp.path().join("sessions").display().to_string();
    let args = ["--session", "tty", "--storage", &sessions];
    let mut repl =
        common::repl::Repl::start_on_screen_as(tmp.path(), &llm.base_url(), &args, "xterm");
    repl.send("/history");
    repl.stdout("in session tty").await;
    // The prompt is read again: the line editor holds the terminal.
    repl.stdout("> ").await;
    repl.signal(Signal::SIGTERM);
    let (status, screen) = repl.ended().await;
    assert_eq!(
        status.code(),
        Some(143),
        "{status}\n--- screen:\n{screen:?}"
    );
    // Bracketed paste, which the line editor turns on for each read, is off at the end.
    let on = screen
        .rfind("\x1b[?2004h")
        .expect("the line editor turned it on");
    assert!(screen[on..].contains("\x1b[?2004l"), "{screen:?}");
    // The line typed is in the line-editing history, though no exit saved it.
    let history = std::fs::read_to_string(tmp.path().join("fusion/chat_history.txt"))
        .expect("the history file");
    assert!(
        history.lines().any(|line| line == "/history"),
        "{history:?}"
    );
}
