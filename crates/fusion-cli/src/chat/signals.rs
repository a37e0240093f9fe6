//! The signals that stop `fusion chat` from outside. Ctrl-C (SIGINT) on a terminal stops
//! the current turn or command and the chat goes on. SIGTERM (`kill PID`, a service
//! manager stopping it) and SIGHUP (its terminal closed) stop the turn the same way, then
//! end the chat: the MCP servers are shut down as at `/exit`, and the process exits with
//! 128 + the signal's number (143, 129), the status a shell reports for a process the
//! signal killed.
//!
//! Without a listener either signal would end the process at once, running no cleanup:
//! its MCP servers would be left running, a turn cut wherever it was.

use std::io::Write;

#[cfg(unix)]
use tokio::signal::unix::{Signal, SignalKind, signal};

#[cfg(unix)]
use anyhow::Context;
use anyhow::Result;

/// A signal that ends the chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// SIGTERM.
    Terminate,
    /// SIGHUP.
    HangUp,
}

impl Ending {
    /// The exit status: 128 + the signal's number.
    pub fn status(self) -> i32 {
        match self {
            Ending::Terminate => 128 + 15,
            Ending::HangUp => 128 + 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Ending::Terminate => "SIGTERM",
            Ending::HangUp => "SIGHUP",
        }
    }
}

/// What stopped a turn or a command from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Ctrl-C: the turn stops, the chat goes on.
    Interrupt,
    /// The turn stops, then the chat.
    End(Ending),
}

/// The listeners for SIGTERM and SIGHUP, made once for the rest of the run.
///
/// From then on neither signal ends the process by itself, and one arriving while no one
/// waits for it (the session being opened) is kept until [`next`](Self::next) is polled.
///
/// A signal the process was started with ignored (`nohup fusion chat`, a service manager
/// that ignores SIGHUP) is left ignored: a listener would replace that disposition, and
/// the chat meant to outlive its terminal would end with it.
pub struct Endings {
    #[cfg(unix)]
    terminate: Option<Signal>,
    #[cfg(unix)]
    hang_up: Option<Signal>,
}

impl Endings {
    /// Starts listening.
    pub fn listen() -> Result<Self> {
        #[cfg(unix)]
        let ignored = ignored_signals();
        Ok(Endings {
            #[cfg(unix)]
            terminate: if ignored.contains(&15) {
                None
            } else {
                Some(signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?)
            },
            #[cfg(unix)]
            hang_up: if ignored.contains(&1) {
                None
            } else {
                Some(signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?)
            },
        })
    }

    /// The next SIGTERM or SIGHUP. Cancel-safe: the chat waits for it beside the prompt,
    /// a turn and a command, and drops the wait when they end first.
    pub async fn next(&mut self) -> Ending {
        #[cfg(unix)]
        tokio::select! {
            Some(()) = recv(&mut self.terminate) => return Ending::Terminate,
            Some(()) = recv(&mut self.hang_up) => return Ending::HangUp,
            // Both streams ended with the runtime, or neither is listened for: nothing
            // more will arrive.
            else => {}
        }
        std::future::pending().await
    }
}

/// The next delivery of `listener`, or `None` at once when there is none.
#[cfg(unix)]
async fn recv(listener: &mut Option<Signal>) -> Option<()> {
    match listener {
        Some(listener) => listener.recv().await,
        None => None,
    }
}

/// The numbers of the signals this process ignores, as the kernel reports them
/// (`SigIgn` in `/proc/self/status`, a hexadecimal mask whose bit `n - 1` is signal `n`).
/// Read rather than asked of `sigaction`, which this workspace's ban on `unsafe` rules
/// out; where there is no `/proc` (other Unixes) nothing is known to be ignored.
#[cfg(unix)]
fn ignored_signals() -> Vec<u32> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap_or(0);
    (1..=64).filter(|n| mask & (1 << (n - 1)) != 0).collect()
}

/// Resolves when a turn or a command must stop: at Ctrl-C on a terminal, or at SIGTERM or
/// SIGHUP. Ctrl-C is listened for anew each time, so one pressed between turns does not
/// stop the next.
pub async fn stop(interactive: bool, endings: &mut Endings) -> Stop {
    tokio::select! {
        biased;
        ending = endings.next() => Stop::End(ending),
        () = ctrl_c(interactive) => Stop::Interrupt,
    }
}

/// Resolves at Ctrl-C on a terminal. In a script it never does: Ctrl-C keeps its default
/// meaning there (end the process; everything acknowledged is already stored), which a
/// listener, once made, would take away for the rest of the run.
async fn ctrl_c(interactive: bool) {
    if interactive && tokio::signal::ctrl_c().await.is_ok() {
        return;
    }
    std::future::pending().await
}

/// Says on stderr which signal ended the chat and ends the process with its status. Call
/// it once the servers are shut down.
///
/// Exits here rather than returning from `main`: a read of the terminal or of stdin still
/// waiting on its blocking thread would hold the runtime's shutdown until a line came.
/// After a hangup stderr may be gone, so nothing here can fail.
pub fn exit(ending: Ending) -> ! {
    let _ = writeln!(std::io::stderr(), "fusion: chat ended by {}", ending.name());
    std::process::exit(ending.status())
}
