//! `redis-server` as a node of a throwaway cluster a test starts itself.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

/// The command that starts `binary` as a cluster node on 127.0.0.1:`port` (its cluster bus
/// on `bus_port`), its files in `dir`, nothing kept on disk, its output dropped, and killed
/// when its `Child` is dropped. A caller adds what else it needs (an address to announce)
/// before it spawns it.
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

/// An empty directory for the files of the node on `port`, named after `kind`. A run
/// killed before its nodes were dropped left theirs: a `nodes.conf` there would make the
/// node rejoin that cluster.
pub fn fresh_dir(kind: &str, port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{kind}-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the node's directory");
    dir
}
