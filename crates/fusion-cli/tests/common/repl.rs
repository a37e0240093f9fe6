//! `Repl`: a `fusion chat` process used as a person uses it, with a pseudo-terminal as its
//! stdin, driven one line at a time, waiting for what it prints before the next step.
//!
//! A terminal is what makes chat interactive: a failed turn is reported and the
//! conversation goes on (in a script the first failure ends the run), and Ctrl-C (SIGINT)
//! interrupts the running turn. [`Repl::start`] sets `TERM=dumb`, which makes the line
//! editor read plain lines, and leaves stdout and stderr pipes, so no spinner or escape
//! sequence gets in the way.
//!
//! [`Repl::start_on_screen`] is for seeing the spinner: stdout and stderr share a second
//! pseudo-terminal, as on a person's screen, captured as one stream in the order the
//! process wrote it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
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
pub struct Captured {
    text: watch::Receiver<String>,
    read_to: usize,
}

impl Repl {
    /// Starts `fusion chat ARGS` in `data_dir` against the LLM at `llm_url`, with stdout
    /// and stderr on pipes.
    pub fn start(data_dir: &Path, llm_url: &str, args: &[&str]) -> Repl {
        let (terminal, stdin) = pseudo_terminal();
        let mut command = super::chat_command(data_dir, llm_url);
        command
            .args(args)
            .env("TERM", "dumb")
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = super::spawn_chat(command);
        let stdout = Captured::spawn(child.stdout.take().unwrap());
        let stderr = Captured::spawn(child.stderr.take().unwrap());
        Repl {
            child,
            terminal,
            stdout,
            stderr,
        }
    }

    /// Starts `fusion chat ARGS` like [`start`](Self::start), but with stdout and stderr
    /// both on a second pseudo-terminal, the screen, so the spinner is drawn.
    ///
    /// [`stdout`](Self::stdout) and [`stderr`](Self::stderr) then both wait on the screen,
    /// each from where it last stopped. The screen's bytes are in the order the process
    /// wrote them, so what one wait returns shows what was written before `text`, on
    /// either stream; the terminal turns each `\n` into `\r\n`.
    pub fn start_on_screen(data_dir: &Path, llm_url: &str, args: &[&str]) -> Repl {
        // The line editor reads plain lines under `emacs` as under `dumb`, but the
        // spinner draws under anything but `dumb` (or no `TERM`).
        Repl::start_on_screen_as(data_dir, llm_url, args, "emacs")
    }

    /// [`start_on_screen`](Self::start_on_screen) with `TERM` set to `term` (under
    /// `xterm` the line editor takes the terminal into raw mode and bracketed paste).
    pub fn start_on_screen_as(data_dir: &Path, llm_url: &str, args: &[&str], term: &str) -> Repl {
        let (terminal, stdin) = pseudo_terminal();
        let (screen, screen_slave) = pseudo_terminal();
        let stderr = screen_slave
            .try_clone()
            .expect("the screen's slave side dups");
        let mut command = super::chat_command(data_dir, llm_url);
        command
            .args(args)
            .env("TERM", term)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(screen_slave))
            .stderr(Stdio::from(stderr));
        let child = super::spawn_chat(command);
        // `command` is gone: the child holds the only slave descriptors, so the screen's
        // reader sees the end once the child has exited.
        let stdout = Captured::read_terminal(screen);
        let stderr = Captured {
            text: stdout.text.clone(),
            read_to: 0,
        };
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

    /// Presses Ctrl-D (end of input) on an empty line.
    pub fn end_of_input(&mut self) {
        self.terminal
            .write_all(b"\x04")
            .expect("the terminal takes input");
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

    /// Waits until stderr shows `text` after what was already waited for; returns
    /// everything up to and including it. Unlike [`stderr`](Self::stderr) it does not
    /// wait for the end of the line, which the spinner never writes: it redraws its line.
    pub async fn stderr_through(&mut self, text: &str) -> String {
        let found = self.stderr.wait_for(text).await;
        found.unwrap_or_else(|()| self.fail(text, "stderr"))
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
        self.signal(Signal::SIGINT);
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: Signal) {
        let pid = self.child.id().expect("the process is running");
        kill(Pid::from_raw(pid as i32), signal).expect("the signal is delivered");
    }

    /// Waits for the process to end (without typing anything); its status and everything
    /// its stdout showed.
    pub async fn ended(mut self) -> (ExitStatus, String) {
        let status = tokio::time::timeout(HANG_GUARD, self.child.wait())
            .await
            .expect("fusion chat ends")
            .unwrap();
        (status, self.stdout.all().await)
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

/// A new pseudo-terminal: its master side, and its slave side opened as a file (not
/// echoing), for a chat's stdin that is a terminal.
pub fn pseudo_terminal() -> (PtyMaster, File) {
    // Both ends close on exec: tests run in parallel, and a terminal end leaked into
    // another test's child would keep that terminal open after its test ended.
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = posix_openpt(flags).expect("a pseudo-terminal");
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(OFlag::O_NOCTTY.bits())
        .open(ptsname_r(&master).unwrap())
        .expect("the terminal's slave side opens");
    // Nobody reads what the terminal echoes, so it must not echo (its buffer is small).
    let mut settings = tcgetattr(&slave).unwrap();
    settings.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&slave, SetArg::TCSANOW, &settings).unwrap();
    (master, slave)
}

impl Captured {
    /// Collects `stream` into a watched string until its end.
    pub fn spawn(mut stream: impl AsyncRead + Unpin + Send + 'static) -> Captured {
        let (sender, text) = watch::channel(String::new());
        tokio::spawn(async move {
            let mut buffer = [0; 4096];
            let mut pending = Vec::new();
            while let Ok(read @ 1..) = stream.read(&mut buffer).await {
                pending.extend_from_slice(&buffer[..read]);
                let chunk = whole_characters(&mut pending);
                sender.send_modify(|text| text.push_str(&chunk));
            }
        });
        Captured { text, read_to: 0 }
    }

    /// Collects what is written to `terminal`'s slave side until the last slave
    /// descriptor closes.
    ///
    /// A thread of its own, with blocking reads: a terminal master is not a pipe tokio's
    /// process types can wrap. The read that finds every slave closed fails with `EIO`,
    /// which ends the thread as the end of a pipe would.
    fn read_terminal(terminal: PtyMaster) -> Captured {
        let (sender, text) = watch::channel(String::new());
        let mut terminal = File::from(OwnedFd::from(terminal));
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            let mut pending = Vec::new();
            while let Ok(read @ 1..) = terminal.read(&mut buffer) {
                pending.extend_from_slice(&buffer[..read]);
                let chunk = whole_characters(&mut pending);
                sender.send_modify(|text| text.push_str(&chunk));
            }
        });
        Captured { text, read_to: 0 }
    }

    /// Everything the stream printed so far, read or not.
    pub fn text(&self) -> String {
        self.text.borrow().clone()
    }

    /// Waits for the end of the stream (or the hang guard) and returns everything it
    /// printed.
    pub async fn all(&self) -> String {
        let mut text = self.text.clone();
        // Never true: the wait ends when the reader drops its sender, at the end.
        let _ = tokio::time::timeout(HANG_GUARD, text.wait_for(|_| false)).await;
        self.text()
    }

    /// Waits until `needle` appears after `read_to`, moves `read_to` past it, and returns
    /// the text up to it; `Err` if the stream ends first (or the hang guard fires).
    pub async fn wait_for(&mut self, needle: &str) -> Result<String, ()> {
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

/// Takes the text out of `pending`, leaving a character cut off by the end of a read
/// (the first bytes of `…`, say) for the next read to complete; bytes that can never be
/// UTF-8 become `\u{FFFD}`.
fn whole_characters(pending: &mut Vec<u8>) -> String {
    let whole = match std::str::from_utf8(pending) {
        Err(error) if error.error_len().is_none() => error.valid_up_to(),
        _ => pending.len(),
    };
    let rest = pending.split_off(whole);
    let text = String::from_utf8_lossy(pending).into_owned();
    *pending = rest;
    text
}
