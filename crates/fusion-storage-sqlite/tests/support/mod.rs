//! What the tests that race several OS processes on one database share: starting the
//! children (this same test binary, re-executed to run one test), the barrier that lines
//! them up, and the patient options they open with.
//!
//! The barrier is made of files: in each round every child creates `ready-<round>-<tag>`
//! and then polls for `go-<round>`, which the parent creates once every child is ready.
//! No sleep decides when anything happens; the pauses only keep the polls from spinning.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use fusion_storage_sqlite::SqliteOptions;

/// Each child waits far longer than the default: these tests are about what happens under
/// contention, not about how long a loaded CI machine takes.
pub fn patient() -> SqliteOptions {
    SqliteOptions::new().busy_timeout(Duration::from_secs(60))
}

fn ready_file(dir: &Path, round: usize, tag: &str) -> PathBuf {
    dir.join(format!("ready-{round}-{tag}"))
}

fn go_file(dir: &Path, round: usize) -> PathBuf {
    dir.join(format!("go-{round}"))
}

/// In a child: says it is ready for `round`, then waits until the parent lets every child
/// go. Gives up when the directory is gone: the parent test ended without it.
pub fn arrive_and_wait(dir: &Path, round: usize, tag: &str) {
    std::fs::write(ready_file(dir, round, tag), b"").unwrap();
    let go = go_file(dir, round);
    while !go.exists() {
        assert!(
            dir.exists(),
            "the parent test ended before {}",
            go.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The child processes, killed if the parent fails before they finish, so that none is
/// left polling for a barrier file that will never come.
pub struct Children(Vec<Child>);

impl Children {
    /// Starts one child per tag, each running only the test `test` with `env` set to
    /// `<dir>|<tag>`.
    pub fn spawn(test: &str, env: &str, dir: &Path, tags: &[String]) -> Self {
        let exe = std::env::current_exe().unwrap();
        Self(
            tags.iter()
                .map(|tag| {
                    Command::new(&exe)
                        .args(["--exact", test, "--nocapture"])
                        .env(env, format!("{}|{tag}", dir.display()))
                        .spawn()
                        .expect("starting a child test process")
                })
                .collect(),
        )
    }

    /// Waits until every child is ready for `round`; one that exits before that failed.
    pub fn wait_until_ready(&mut self, dir: &Path, round: usize, tags: &[String]) {
        while !tags.iter().all(|tag| ready_file(dir, round, tag).exists()) {
            for child in &mut self.0 {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("a child process exited before round {round}: {status}");
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets every child waiting in [`arrive_and_wait`] for `round` go at once.
    pub fn go(&self, dir: &Path, round: usize) {
        std::fs::write(go_file(dir, round), b"").unwrap();
    }

    /// Waits for every child to exit, and fails unless each succeeded.
    pub fn wait_all_succeeded(&mut self) {
        for child in &mut self.0 {
            let status = child.wait().unwrap();
            assert!(status.success(), "a child process failed: {status}");
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // Errors only mean the child has already been reaped.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
