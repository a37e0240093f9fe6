//! The child process of a stdio server: started in its own process group with the part of
//! this program's environment its configuration allows, its stderr drained into a short
//! tail for error messages, its exit watched, and the whole group killed when it is
//! dropped; and, when it cannot be started, why ([`spawn_error`]).
//!
//! Killing the group rather than the child matters for launchers: `npx` runs the server as
//! a grandchild `node`, which would outlive a killed `npx`. Dropping kills synchronously
//! (a signal, no task), so it works while a runtime shuts down. If the program itself is
//! killed outright, the server sees its stdin close, which the MCP specification tells
//! servers to treat as the end, and on Unix the group's [`watchdog`](crate::watchdog)
//! stops what does not.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;

use crate::server_config::{StdioServerConfig, shown, shown_within};

/// How many of the last stderr lines are kept for error messages.
const TAIL_LINES: usize = 20;

/// The longest stderr line kept; the rest of a longer line is dropped.
const TAIL_LINE_CHARS: usize = 400;

/// A running (or exited) server process.
pub struct ChildProcess {
    pid: u32,
    status: watch::Receiver<Option<ExitStatus>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    stdio: Option<(ChildStdout, ChildStdin)>,
    /// Holds the watchdog's pipe open while the server runs; `None` without one.
    _watchdog: Option<tokio::process::Child>,
}

impl ChildProcess {
    /// Starts `config`'s command with piped stdio, as the leader of a new process group,
    /// given the variables `config.inherit_env` selects and `config.env` over them.
    ///
    /// Must be called inside a tokio runtime: two tasks watch the process.
    pub fn spawn(server: &str, config: &StdioServerConfig) -> std::io::Result<Self> {
        let mut command = Command::new(program(config));
        command.args(&config.args);
        if let Some(inherited) = config.inherit_env.select(std::env::vars_os()) {
            command.env_clear().envs(inherited);
        }
        command
            .envs(&config.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A backstop for the direct child; `Drop` below kills the whole group.
            .kill_on_drop(true);
        if let Some(dir) = &config.cwd {
            command.current_dir(dir);
        }
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command.spawn()?;
        let pid = child.id().unwrap_or_default();
        // Before anything can reap the server: its group lasts until then, so the watchdog
        // can join it even if the server has exited already.
        #[cfg(unix)]
        let watchdog = crate::watchdog::start(server, pid);
        #[cfg(not(unix))]
        let watchdog = None;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (Some(stdin), Some(stdout), Some(stderr)) = (stdin, stdout, stderr) else {
            return Err(std::io::Error::other("the child's stdio pipes are missing"));
        };
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(drain_stderr(server.to_owned(), stderr, tail.clone()));
        let (report, status) = watch::channel(None);
        let name = server.to_owned();
        tokio::spawn(async move {
            // The task owns the child so its exit is reaped as soon as it happens.
            match child.wait().await {
                Ok(status) => {
                    tracing::debug!(server = %name, %status, "MCP server process exited");
                    let _ = report.send(Some(status));
                }
                Err(e) => {
                    tracing::warn!(server = %name, error = %e, "waiting for MCP server failed")
                }
            }
        });
        Ok(Self {
            pid,
            status,
            tail,
            stdio: Some((stdout, stdin)),
            _watchdog: watchdog,
        })
    }

    /// The pipes to talk MCP over: the child's stdout and stdin. Once only.
    pub fn take_stdio(&mut self) -> Option<(ChildStdout, ChildStdin)> {
        self.stdio.take()
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, once the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.status.borrow()
    }

    /// The exit status, waiting up to `bound` for the process to exit. A process that
    /// closed its stdout is usually exiting; this gives it the moment it needs.
    pub async fn exit_within(&self, bound: Duration) -> Option<ExitStatus> {
        let mut status = self.status.clone();
        let exited = tokio::time::timeout(bound, status.wait_for(Option::is_some)).await;
        exited.ok().and_then(|r| r.ok().and_then(|s| *s))
    }

    /// The last lines the process wrote to stderr, oldest first.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Stops the process: waits up to `grace` for it to exit by itself (its stdin should be
    /// closed by now), then kills its group and waits for the exit.
    pub async fn stop(&self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exit_within(grace).await {
            self.kill_group();
            return Some(status);
        }
        self.kill_group();
        self.exit_within(grace).await
    }

    /// Sends SIGKILL to the process group. Harmless when the group is gone. A group id is
    /// the leader's pid, and pids are handed out cyclically, so the id cannot name another
    /// group before the kernel wraps around `pid_max`.
    fn kill_group(&self) {
        #[cfg(unix)]
        if let Ok(pid) = i32::try_from(self.pid)
            && pid > 0
        {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// Why `config`'s command could not be started. The system says "not found" (`ENOENT`)
/// for three different mistakes: a working directory that does not exist, a script whose
/// `#!` interpreter does not exist, and the command itself missing; each is named.
///
/// The command is looked for where the child looks for it: a path (`./bin/server`) in the
/// working directory the child is given, a bare name in the directories of the `PATH` the
/// child is given. A file found there that could not be run is one whose interpreter is
/// missing: the system would have said "permission denied" for any other reason.
pub fn spawn_error(config: &StdioServerConfig, error: &std::io::Error) -> String {
    if error.kind() == std::io::ErrorKind::InvalidInput
        && let Some(part) = holding_nul(config)
    {
        return format!("{part} holds a NUL byte, which no program can be given");
    }
    if error.kind() != std::io::ErrorKind::NotFound {
        return error.to_string();
    }
    // Shown escaped ([`shown`]), but looked for as configured: escaped, a name holding a
    // control character is a file that does not exist.
    let path_shown = |path: &Path| shown(&path.display().to_string());
    if let Some(dir) = &config.cwd
        && !dir.is_dir()
    {
        return format!(
            "its working directory `{}` does not exist or is not a directory",
            path_shown(dir)
        );
    }
    let command = &config.display_program();
    let interpreter = "the interpreter it names was not found (a script's `#!` line, or a \
                       program's dynamic loader)";
    let program = Path::new(&config.command);
    if program.components().count() > 1 {
        // The child changes to its working directory before it runs the command.
        let file = config
            .cwd
            .as_ref()
            .map_or(program.to_owned(), |d| d.join(program));
        if file.is_file() {
            return format!("`{command}` exists, but {interpreter}");
        }
        return match &config.cwd {
            Some(dir) if program.is_relative() => format!(
                "`{command}` not found (a relative path is taken from its working directory, \
                 `{}`)",
                path_shown(dir)
            ),
            _ => format!("`{command}` not found"),
        };
    }
    match on_path(config, program) {
        Some(found) => format!(
            "`{command}` is on PATH (`{}`), but {interpreter}",
            path_shown(&found)
        ),
        None => format!("command `{command}` not found (is it installed and on PATH?)"),
    }
}

/// The part of `config` that holds a NUL byte, which std refuses to start a program with
/// ("nul byte found in provided data", naming none): an `env` value by its variable's
/// name, never by its text.
fn holding_nul(config: &StdioServerConfig) -> Option<String> {
    let nul = |text: &str| text.contains('\0');
    if nul(&config.command) {
        return Some("its command".to_owned());
    }
    if let Some(at) = config.args.iter().position(|arg| nul(arg)) {
        return Some(format!("its argument {}", at + 1));
    }
    if let Some((name, _)) = config.env.iter().find(|(_, value)| nul(value)) {
        return Some(format!(
            "the value of its `env` variable `{}`",
            name.escape_debug()
        ));
    }
    let cwd = config.cwd.as_deref().map(Path::as_os_str);
    cwd.filter(|dir| dir.as_encoded_bytes().contains(&0))
        .map(|_| "its working directory".to_owned())
}

/// Where the child finds `program` on its `PATH`: the one `config.env` sets, else this
/// program's (which the child inherits).
fn on_path(config: &StdioServerConfig, program: &Path) -> Option<PathBuf> {
    let path = match config.env.get("PATH") {
        Some(path) => path.into(),
        None => std::env::var_os("PATH")?,
    };
    std::env::split_paths(&path)
        .map(|dir| match &config.cwd {
            // A relative entry (`bin`, or an empty one for `.`) is relative to where the
            // child runs.
            Some(cwd) if dir.is_relative() => cwd.join(dir).join(program),
            _ => dir.join(program),
        })
        .find(|candidate| candidate.is_file())
}

/// The program to start for `config.command`. On Windows a bare name without an
/// extension is looked for with the extensions of `PATHEXT` (`npx` is `npx.cmd`) in the
/// `PATH` the child is given, since std would try `.exe` alone ([`pathext`](crate::pathext)
/// says why); anything else, and a name not found so, is std's to find, as on every other
/// platform.
#[cfg(windows)]
fn program(config: &StdioServerConfig) -> std::ffi::OsString {
    crate::pathext::program(config, |name| std::env::var_os(name))
        .map_or_else(|| config.command.clone().into(), Into::into)
}

/// The program to start for `config.command`: std finds a bare name on the `PATH` the
/// child is given.
#[cfg(not(windows))]
fn program(config: &StdioServerConfig) -> std::ffi::OsString {
    config.command.clone().into()
}

/// Reads `stderr` to its end, logging each line and keeping the last [`TAIL_LINES`].
///
/// Reads raw bytes rather than lines of text so that invalid UTF-8 or a line without end
/// never stops the draining: a server blocked on a full stderr pipe would hang.
async fn drain_stderr(server: String, mut stderr: ChildStderr, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut buffer = [0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let push = |line: &mut Vec<u8>| {
        let (text, kept) = (stderr_text(line), tail_line(line));
        line.clear();
        if text.is_empty() {
            return;
        }
        tracing::debug!(server = %server, "stderr: {text}");
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(kept);
        }
    };
    loop {
        let n = match stderr.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &buffer[..n] {
            if byte == b'\n' {
                push(&mut line);
            } else if line.len() < TAIL_LINE_CHARS * 4 {
                line.push(byte);
            }
        }
    }
    push(&mut line);
}

/// A line of a server's stderr for the log: trailing space trimmed, each control
/// character escaped ([`shown`]). A server's colours (`\x1b[31m`), a `\r` of a progress
/// bar, or bytes it was fed would otherwise reach the terminal or the log collector of the
/// person running Fusion as they are, where they redraw the screen or forge lines.
fn stderr_text(line: &[u8]) -> String {
    shown(String::from_utf8_lossy(line).trim_end())
}

/// A line of a server's stderr as its tail keeps it, for the notes that quote it:
/// [`stderr_text`] cut to [`TAIL_LINE_CHARS`] characters between escapes
/// ([`shown_within`]).
fn tail_line(line: &[u8]) -> String {
    shown_within(String::from_utf8_lossy(line).trim_end(), TAIL_LINE_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by a review: a server's stderr went to the log and to the person's messages
    /// (the tail quoted when it exits) with its control characters raw.
    #[test]
    fn a_stderr_line_is_shown_with_its_control_characters_escaped() {
        let line = b"\x1b[2J\x1b[31merror\x1b[0m: half\rdone\0\tend \r";
        assert_eq!(
            stderr_text(line),
            r"\u{1b}[2J\u{1b}[31merror\u{1b}[0m: half\rdone\u{0}\tend"
        );
        assert_eq!(stderr_text("plain – ünïcode".as_bytes()), "plain – ünïcode");
    }

    /// Found by a review: a line separator or a bidirectional override in a server's stderr
    /// (no control characters) reached the log raw, where a viewer breaking lines at the
    /// one showed a forged line, and the other showed the rest of the line reversed.
    #[test]
    fn a_stderr_line_can_neither_break_nor_reorder_the_line_it_is_shown_in() {
        let line = "ok\u{2028}ERROR forged\u{2029} \u{202e}txt.exe\u{202c} \u{2067}x\u{2069}";
        assert_eq!(
            stderr_text(line.as_bytes()),
            r"ok\u{2028}ERROR forged\u{2029} \u{202e}txt.exe\u{202c} \u{2067}x\u{2069}"
        );
        assert_eq!(stderr_text("שלום, عالم".as_bytes()), "שלום, عالم");
    }

    /// Found by a review: a long stderr line was cut to its first 400 characters after
    /// its control characters were escaped, so the cut could fall inside an escape and
    /// leave `\u{20` of `\u{202e}` at the end of the line. It falls between escapes now.
    #[test]
    fn a_long_stderr_line_is_cut_between_escapes() {
        for (escaped, raw) in [
            (r"\u{202e}", "\u{202e}"),
            (r"\u{1b}", "\x1b"),
            (r"\u{0}", "\0"),
        ] {
            for before in TAIL_LINE_CHARS - escaped.len()..TAIL_LINE_CHARS + 1 {
                let line = format!("{}{raw}{raw}", "a".repeat(before));
                let cut = tail_line(line.as_bytes());
                let fits = (TAIL_LINE_CHARS - before.min(TAIL_LINE_CHARS)) / escaped.len();
                let expected = format!(
                    "{}{}",
                    "a".repeat(before.min(TAIL_LINE_CHARS)),
                    escaped.repeat(fits)
                );
                assert_eq!(cut, expected, "{before} characters before {escaped}");
            }
        }
    }

    /// Found by a review: the command escaped for the message was also what was looked
    /// for, so a script whose name holds a control character (here a tab), found there
    /// but whose interpreter is missing, was said not to exist, as a path or on PATH. It is
    /// looked for as configured and shown escaped, as are the working directory and the
    /// place on PATH it was found in.
    #[cfg(unix)]
    #[test]
    fn a_command_holding_a_control_character_is_looked_for_as_it_is_and_shown_escaped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("b\x1bin");
        std::fs::create_dir(&bin).unwrap();
        let script = bin.join("serv\ter");
        std::fs::write(&script, "#!/nonexistent/interpreter\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let not_found = std::io::Error::from(std::io::ErrorKind::NotFound);
        let raw = |message: &str| message.contains(['\t', '\x1b']);

        let by_path = StdioServerConfig::new(script.to_str().unwrap());
        let message = spawn_error(&by_path, &not_found);
        assert!(
            message.contains(r"serv\ter` exists, but the interpreter"),
            "{message}"
        );
        assert!(!raw(&message), "{message:?}");

        let on_path = StdioServerConfig::new("serv\ter").env("PATH", bin.to_str().unwrap());
        let message = spawn_error(&on_path, &not_found);
        assert!(
            message.starts_with(r"`serv\ter` is on PATH (`"),
            "{message}"
        );
        assert!(
            message.contains(r"b\u{1b}in/serv\ter`), but the interpreter"),
            "{message}"
        );
        assert!(!raw(&message), "{message:?}");

        let nowhere = StdioServerConfig::new("x").cwd(dir.path().join("no\x1bdir"));
        let message = spawn_error(&nowhere, &not_found);
        assert!(
            message.contains(r"no\u{1b}dir` does not exist"),
            "{message}"
        );
        assert!(!raw(&message), "{message:?}");
    }
}
