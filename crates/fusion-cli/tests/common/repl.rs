//! `Repl`: a `fusion chat` process used as a person uses it, with a pseudo-terminal as its
//! stdin, driven one line at a time, waiting for what it prints before the next step.
//!
//! A terminal is what makes chat interactive: a failed turn is reported and the
//! conversation goes on (in a script the first failure ends the run), and Ctrl-C (SIGINT)
//! interrupts the running turn. `TERM=dumb` makes the line editor read plain lines, and
//! stdout and stderr stay pipes, so no spinner or escape sequence gets in the way.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::pty::{PtyMaster, grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::signal::{Signal, kill};
use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

/// How long a wait for output lasts before failing the test: never reached when the
/// process behaves, it turns a missing line into a failure that shows the output, not a
/// hang.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// A running `fusion chat` on a pseudo-terminal.
pub struct Repl {
    child: tokio::process::Child,
    /// The terminal's master side: what is written here is typed.
    terminal: PtyMaster,
    stdout: Captured,
    stderr: Captured,
}

/// Everything a stream printed so far, and how far the test has read it.
struct Captured {
    text: watch::Receiver<String>,
    read_to: usize,
}

impl Repl {
    /// Starts `fusion chat ARGS` in `data_dir` against the LLM at `llm_url`.
    pub fn start(data_dir: &Path, llm_url: &str, args: &[&str]) -> Repl {
        // Both ends close on exec: tests run in parallel, and a terminal end leaked into
        // another test's child would keep that terminal open after its test ended.
        let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let terminal = posix_openpt(flags).expect("a pseudo-terminal");
        grantpt(&terminal).unwrap();
        unlockpt(&terminal).unwrap();
        let stdin = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(OFlag::O_NOCTTY.bits())
            .open(ptsname_r(&terminal).unwrap())
            .expect("the terminal's slave side opens");
        // Nobody reads what the terminal echoes, so it must not echo (its buffer is small).
        let mut settings = tcgetattr(&stdin).unwrap();
        settings.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &settings).unwrap();

        let mut command = super::chat_command(data_dir, llm_url);
        command
            .args(args)
            .env("TERM", "dumb")
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = tokio::process::Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .expect("fusion chat starts");
        let stdout = Captured::spawn(child.stdout.take().unwrap());
        let stderr = Captured::spawn(child.stderr.take().unwrap());
        Repl {
            child,
            terminal,
            stdout,
            stderr,
        }
    }

    /// Types `line` and Enter.
    pub fn send(&mut self, line: &str) {
        writeln!(self.terminal, "{line}").expect("the terminal takes input");
    }

    /// Waits until stdout shows `text` after what was already waited for; returns
    /// everything up to and including it.
    pub async fn stdout(&mut self, text: &str) -> String {
        let found = self.stdout.wait_for(text).await;
        found.unwrap_or_else(|()| self.fail(text, "stdout"))
    }

    /// Waits until stderr shows `text` after what was already waited for, and for the
    /// end of its line; returns that line.
    pub async fn stderr(&mut self, text: &str) -> String {
        let before = self.stderr.wait_for(text).await;
        let before = before.unwrap_or_else(|()| self.fail(text, "stderr"));
        let line_start = before.rfind('\n').map_or(0, |at| at + 1);
        let through = self.stderr.wait_for("\n").await;
        let through = through.unwrap_or_else(|()| self.fail("\n", "stderr"));
        through[line_start..].trim_end().to_string()
    }

    /// Fails the test for `text` missing on stream `name`, showing both streams and how
    /// the process ended, if it did.
    fn fail(&mut self, text: &str, name: &str) -> ! {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!("it ended: {status}"),
            _ => "it is still running".to_string(),
        };
        panic!(
            "fusion chat never printed {text:?} on {name}; {status}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.stdout.text.borrow().as_str(),
            self.stderr.text.borrow().as_str()
        );
    }

    /// Sends SIGINT, what Ctrl-C sends.
    pub fn interrupt(&self) {
        let pid = self.child.id().expect("the process is running");
        kill(Pid::from_raw(pid as i32), Signal::SIGINT).expect("SIGINT is delivered");
    }

    /// Types `/exit` and waits for the process to end; returns its status and stderr.
    pub async fn exit(mut self) -> (ExitStatus, String) {
        self.send("/exit");
        let status = tokio::time::timeout(HANG_GUARD, self.child.wait())
            .await
            .expect("fusion chat ends after /exit")
            .unwrap();
        // The readers finish at end of file, which the process's exit brings.
        let mut stderr = self.stderr.text.clone();
        let _ = tokio::time::timeout(HANG_GUARD, stderr.wait_for(|_| false)).await;
        let stderr = stderr.borrow().clone();
        (status, stderr)
    }
}

impl Captured {
    /// Collects `stream` into a watched string until its end.
    fn spawn(mut stream: impl AsyncRead + Unpin + Send + 'static) -> Captured {
        let (sender, text) = watch::channel(String::new());
        tokio::spawn(async move {
            let mut buffer = [0; 4096];
            while let Ok(read @ 1..) = stream.read(&mut buffer).await {
                let chunk = String::from_utf8_lossy(&buffer[..read]).into_owned();
                sender.send_modify(|text| text.push_str(&chunk));
            }
        });
        Captured { text, read_to: 0 }
    }

    /// Waits until `needle` appears after `read_to`, moves `read_to` past it, and returns
    /// the text up to it; `Err` if the stream ends first (or the hang guard fires).
    async fn wait_for(&mut self, needle: &str) -> Result<String, ()> {
        let from = self.read_to;
        let mut text = self.text.clone();
        // `wait_for` returns a borrow, which holds the text's lock: it is dropped at the
        // end of this statement, before the text is borrowed again below.
        let found = matches!(
            tokio::time::timeout(
                HANG_GUARD,
                text.wait_for(|text| text[from..].contains(needle)),
            )
            .await,
            Ok(Ok(_))
        );
        if !found {
            return Err(());
        }
        let text = self.text.borrow().clone();
        let end = from + text[from..].find(needle).unwrap() + needle.len();
        self.read_to = end;
        Ok(text[..end].to_string())
    }
}
