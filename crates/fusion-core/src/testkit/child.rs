//! Tests that need another user: this test binary run again, for one test, in a child
//! process, as `nobody` when this process is root, whom file permissions and
//! `RLIMIT_NPROC` do not stop. The child test does its work only when the variable the
//! parent sets is there, and passes trivially otherwise (when the suite runs it itself).

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// The user and group `nobody`.
pub const NOBODY: u32 = 65534;

/// Whether this process runs as root: what it creates is owned by its effective user.
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let probe = std::env::temp_dir().join(format!(
        "fusion-root-probe-{}-{}",
        std::process::id(),
        PROBES.fetch_add(1, Ordering::Relaxed)
    ));
    let created = std::fs::File::create(&probe).expect("creating a file in the temp dir");
    let uid = created.metadata().expect("the probe's owner").uid();
    let _ = std::fs::remove_file(&probe);
    uid == 0
}

/// Runs the test `test` of this test binary alone in a child process with `env` set to
/// `value`, as `nobody` when this process is root, and fails unless it passed, showing
/// its output; a child that found no test by that name fails too.
pub fn run_test_in_child(test: &str, env: &str, value: &str) {
    let binary = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(binary);
    child
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, value);
    if running_as_root() {
        child.uid(NOBODY).gid(NOBODY);
    }
    let out = child.output().expect("starting the child test process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child test {test} failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test named {test}:\n{stdout}"
    );
}
