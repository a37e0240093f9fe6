//! What `tests/hostile_environment.rs` needs to build the environment it tests: another
//! process holding a lock on the database, a child test run as a user that file
//! permissions apply to, and a small file system to fill.
//!
//! The child processes are the test binary itself, re-executed to run one test with an
//! environment variable that tells it what to do, the way `support/mod.rs` runs its
//! children. Without the variable those child tests do nothing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub use fusion_core::testkit::child::{NOBODY, run_test_in_child, running_as_root};

/// Gives `nobody` the directory `tmp` (a temporary directory, which only its owner may
/// enter) to pass through, and every path in `owned` to own.
pub fn hand_to_nobody(tmp: &Path, owned: &[&Path]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    for path in owned {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
}

/// A child process holding a transaction open on a database until released: what
/// another application (or a `sqlite3` shell left open) does to this one.
pub struct Holder {
    child: Child,
    stdin: ChildStdin,
    /// Kept open, so that what the child prints after [`HELD`] does not fail on a
    /// closed pipe.
    stdout: BufReader<ChildStdout>,
}

impl Holder {
    /// Starts the test `test` of this binary with `env` set to `value`, and returns once
    /// it has printed [`HELD`]: it then holds what it was asked to.
    pub fn start(test: &str, env: &str, value: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(env, value)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the child test process");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut holder = Self {
            child,
            stdin,
            stdout,
        };
        let mut line = String::new();
        while holder.stdout.read_line(&mut line).unwrap() > 0 {
            // libtest prints the test's name on the same line, before its output.
            if line.contains(HELD) {
                return holder;
            }
            line.clear();
        }
        let status = holder.child.wait().unwrap();
        panic!("the holding child exited before holding anything: {status}");
    }

    /// Tells the child to let go, and waits for it to end successfully.
    pub fn release(mut self) {
        self.stdin.write_all(b"release\n").unwrap();
        self.stdin.flush().unwrap();
        std::io::copy(&mut self.stdout, &mut std::io::sink()).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the holding child failed: {status}");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Errors only mean the child has already been reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a holding child prints once it holds its transaction.
const HELD: &str = "holding-it-now";

/// In a holding child: says it holds, then waits for the parent's word on stdin.
pub fn hold_until_released() {
    println!("{HELD}");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
}

/// Runs the test `test` of this binary in a child process with `env` set to `value`,
/// limited to writing files of at most `kib` KiB (`ulimit -f`, `RLIMIT_FSIZE`), with
/// `SIGXFSZ` ignored so that a write past it fails (`EFBIG`) instead of killing the
/// process: a full disk for a user who may not mount one. Fails unless the child passed.
pub fn run_child_test_with_file_size_limit(test: &str, env: &str, value: &str, kib: u64) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {}; exec \"$0\" \"$@\"",
            kib * 1024 / 512
        ))
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture"])
        .env(env, value)
        .status()
        .expect("starting the child test process");
    assert!(status.success(), "the child test {test} failed: {status}");
}

/// A small tmpfs mounted for as long as this lives: a disk that fills up. Unmounted when
/// dropped, also when the test panics.
pub struct SmallDisk {
    pub dir: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`mount`'s syntax, `1m`) at a new directory under `parent`,
    /// or `None` where that is not allowed: not root, or root without `CAP_SYS_ADMIN` (a
    /// container's usual root).
    pub fn mount(parent: &Path, size: &str) -> Option<Self> {
        if !running_as_root() {
            return None;
        }
        let dir = parent.join("small-disk");
        std::fs::create_dir(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            std::fs::remove_dir(&dir).unwrap();
            return None;
        }
        Some(Self { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a storage the test has not dropped yet may still hold a file there.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Fills the disk `path` is on with the file at `path`, until no byte more fits.
pub fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xf1_u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) if err.raw_os_error() == Some(28) => return,
            Err(err) => panic!("filling {path:?}: {err}"),
        }
    }
}
