//! The watchdog of a stdio server's process group: a `/bin/sh` inside the group that waits
//! for its stdin, a pipe only this program holds open, to end, and then stops the group.
//!
//! The pipe ends when this program does, however it ends. Killed outright (SIGKILL, the
//! OOM killer), a program runs no cleanup: without the watchdog a server that keeps
//! running after its stdin closes, or the `node` that `npx` started (which never had our
//! pipe), would be left behind. The group then gets SIGTERM, and SIGKILL two seconds later
//! for whatever ignored it. While the program runs the watchdog only waits; stopping the
//! server kills the group, the watchdog with it.
//!
//! Why not Linux's `PR_SET_PDEATHSIG`: it is set in a `pre_exec` hook, which is `unsafe`
//! (the workspace forbids it); it reaches only the direct child (`npx`, not its `node`);
//! and it fires when the *thread* that started the child ends, which in a tokio runtime
//! (blocking-pool threads, a runtime on a short-lived thread) can be long before the
//! program does. A pipe's end is the process's end, on every Unix.

use std::process::Stdio;

use tokio::process::{Child, Command};

/// Ignores SIGTERM so that it outlives its own `kill -TERM 0` to send the SIGKILL. Nothing
/// is ever written to the pipe: `read` returns at its end.
const SCRIPT: &str = "trap '' TERM; read -r line; kill -TERM 0; sleep 2; kill -KILL 0";

/// Starts the watchdog of process group `group` (a server just spawned as its leader).
/// `None` when it cannot start (no `/bin/sh`, or the group is already gone): the server
/// runs without it, stopped as before when the program exits normally.
///
/// The returned child holds the write end of the pipe: keep it as long as the server.
pub fn start(server: &str, group: u32) -> Option<Child> {
    let group = i32::try_from(group).ok().filter(|&group| group > 0)?;
    let mut command = Command::new("/bin/sh");
    command
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // In the server's group: killing the group (a shutdown, a restart) ends it too.
        .process_group(group);
    match command.spawn() {
        Ok(watchdog) => Some(watchdog),
        Err(e) => {
            tracing::debug!(server, error = %e, "no watchdog for the MCP server's process group");
            None
        }
    }
}
