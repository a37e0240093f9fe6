//! `redis-server` as a node of a throwaway cluster a test starts itself, and what every
//! server a test starts keeps of its own: its process ([`Reaped`]) and its directory
//! ([`PrivateDir`]).

use std::ops::{Deref, DerefMut};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::process::{Child, Command};

/// The command that starts `binary` as a cluster node on 127.0.0.1:`port` (its cluster bus
/// on `bus_port`), its files in `dir`, nothing kept on disk, its output dropped. A caller
/// adds what else it needs (an address to announce) before it spawns it, and keeps the
/// child as a [`Reaped`].
pub fn command(binary: &Path, port: u16, bus_port: u16, dir: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", "nodes.conf"])
        .args(["--cluster-port", &bus_port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

/// A server process a test started, killed and waited for when this drops: once it has
/// dropped, the process has exited, so its ports are free and it writes no more files.
/// Killed only (tokio's `kill_on_drop`), a node was still exiting when its ports went
/// back to the range (`FUSION_REDIS_TEST_PORTS`) or their reservation ended, and another
/// test's server could be given them, or its directory, meanwhile. Holders keep this
/// before their [`PrivateDir`] and their ports, so it drops first.
pub struct Reaped(Child);

impl Reaped {
    /// `child`, to be killed and waited for.
    pub fn new(child: Child) -> Self {
        Self(child)
    }

    /// Kills the process, if it still runs, and waits until it has exited (and is
    /// reaped). A drop cannot await: the exit is polled, every millisecond, until the
    /// kernel has it; a process killed with SIGKILL takes no longer than its exit.
    pub fn stop(&mut self) {
        let _ = self.0.start_kill();
        while let Ok(None) = self.0.try_wait() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An empty directory of one server's own under the temp dir (`KIND-PID-N`, made here,
/// mode 0700: never one another run or server made, whose `nodes.conf` would make a node
/// rejoin that cluster), removed with what is in it when this drops. Fixed names
/// (`KIND-PORT`) were shared by every server given the same port, of this run and of
/// other runs and users.
pub struct PrivateDir(PathBuf);

impl PrivateDir {
    /// A new directory for a server of `kind`.
    ///
    /// # Panics
    ///
    /// When no directory can be made.
    pub fn new(kind: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o700);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("{kind}-{}-{n}", std::process::id()));
            match builder.create(&dir) {
                Ok(()) => return Self(dir),
                // Left by an earlier process of the same id: never reused.
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(err) => panic!("making {}: {err}", dir.display()),
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
