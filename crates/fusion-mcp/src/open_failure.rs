//! Why a connection could not be opened ([`OpenFailure`]), worded for the person running
//! the server and, apart, for the model, and the notes on a stdio server's end those
//! words use: its exit status and the last lines of its stderr.

use std::time::Duration;

use crate::process::ChildProcess;

/// How long to wait for a server whose pipe closed to report its exit status.
pub const EXIT_REPORT_BOUND: Duration = Duration::from_secs(5);

/// Why a connection could not be opened: the reason, and apart from it the last lines of a
/// stdio server's stderr ([`stderr_note`], or nothing), which are for the person running
/// the server and the log, never for the model: a call that restarts the server tells the
/// model the reason alone, as `for_model` words it (see
/// [`Connection::describe_end`](crate::connection::Connection::describe_end)).
pub struct OpenFailure {
    /// For the person: the start's error, the log.
    pub reason: String,
    /// The reason for the model, which its provider is sent and its session stores: a
    /// stdio server's command named by its program alone ([`NamedCommand`]).
    pub for_model: String,
    pub stderr: String,
}

impl From<String> for OpenFailure {
    fn from(reason: String) -> Self {
        let (for_model, stderr) = (reason.clone(), String::new());
        Self {
            reason,
            for_model,
            stderr,
        }
    }
}

/// How a stdio server's failures to open name its command: in full for the person, by its
/// program alone for the model, since its arguments may hold a key (`--api-key sk-…`,
/// `docker run -e TOKEN=…`).
pub struct NamedCommand {
    pub full: String,
    pub program: String,
}

impl NamedCommand {
    /// The failure whose reason `why` words, given the command as it is to be shown.
    pub fn failure(&self, why: impl Fn(&str) -> String, stderr: String) -> OpenFailure {
        OpenFailure {
            reason: why(&self.full),
            for_model: why(&self.program),
            stderr,
        }
    }
}

/// "exited (exit status: 3)", or "closed its output" for a process still running.
pub async fn exit_status_text(process: &ChildProcess) -> String {
    match process.exit_within(EXIT_REPORT_BOUND).await {
        Some(status) => format!("exited ({status})"),
        None => "closed its output (exit status unknown)".to_owned(),
    }
}

/// "; its stderr ended with: …" and the last stderr lines, or nothing.
pub fn stderr_note(process: &ChildProcess) -> String {
    let tail = process.stderr_tail();
    if tail.is_empty() {
        return String::new();
    }
    format!(". Its stderr ended with:\n  {}", tail.join("\n  "))
}
