//! The npm reference MCP servers for tests (feature `testing`):
//! `@modelcontextprotocol/server-everything` and `server-filesystem`, pinned, installed
//! once with the machine's `npm` into a cache directory and run with `node <script>`, so
//! no network is needed after the first install.
//!
//! A missing `npm` panics with what to install: a test that needs these servers fails,
//! it never skips.
//!
//! Also [`assert_process_ends`], for tests that a server's process does not outlive what
//! should stop it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `@modelcontextprotocol/server-everything` and its version, pinned: the one current
/// when these tests were written.
pub const EVERYTHING: (&str, &str) = ("@modelcontextprotocol/server-everything", "2026.8.31");
/// `@modelcontextprotocol/server-filesystem` and its pinned version.
pub const FILESYSTEM: (&str, &str) = ("@modelcontextprotocol/server-filesystem", "2026.8.31");

/// The entry script of an installed npm server, run with `node <script>`; installs the
/// servers first when they are not installed yet.
pub fn npm_server(package: (&str, &str)) -> PathBuf {
    let root = npm_servers_dir();
    let script = root
        .join("node_modules")
        .join(package.0)
        .join("dist/index.js");
    assert!(
        script.is_file(),
        "{} is missing after install",
        script.display()
    );
    script
}

/// Installs the reference servers with the machine's `npm` once, into
/// `$FUSION_MCP_SERVERS_DIR` or `<workspace>/target/mcp-servers/<versions>`.
///
/// Safe when several test binaries and threads race: each installs into its own temporary
/// directory and renames it into place; the first rename wins and the others discard
/// theirs. A finished install holds a marker file, so a half-written directory is never
/// taken for one.
fn npm_servers_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let versions = format!("everything-{}_filesystem-{}", EVERYTHING.1, FILESYSTEM.1);
        let dir = match std::env::var_os("FUSION_MCP_SERVERS_DIR") {
            Some(dir) => PathBuf::from(dir).join(&versions),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/mcp-servers")
                .join(&versions),
        };
        install(&dir);
        dir
    })
    .clone()
}

/// The file a finished install holds.
const MARKER: &str = ".fusion-installed";

fn install(dir: &Path) {
    if dir.join(MARKER).is_file() {
        return;
    }
    let parent = dir.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    let staging = tempfile::Builder::new()
        .prefix(".installing-")
        .tempdir_in(parent)
        .unwrap();
    let packages: Vec<String> = [EVERYTHING, FILESYSTEM]
        .iter()
        .map(|(name, version)| format!("{name}@{version}"))
        .collect();
    let output = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--prefix",
        ])
        .arg(staging.path())
        .args(&packages)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`npm` was not found: the MCP suites need Node.js 20 or newer with npm on PATH \
             (https://nodejs.org, or your package manager's `nodejs` and `npm`) to install \
             the reference servers {packages:?}"
        ),
        Err(e) => panic!("running `npm install` failed: {e}"),
    };
    assert!(
        output.status.success(),
        "`npm install {packages:?}` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(staging.path().join(MARKER), packages.join("\n")).unwrap();
    let staged = staging.keep();
    if std::fs::rename(&staged, dir).is_err() {
        // Another process finished first; its install is as good as ours.
        let _ = std::fs::remove_dir_all(&staged);
        assert!(
            dir.join(MARKER).is_file(),
            "{} exists but holds no finished install; remove it and run again",
            dir.display()
        );
    }
}

/// A bound for things that should happen promptly; generous for a busy CI machine. Only a
/// failure bound: nothing asserts how long anything took.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Whether process `pid` is gone (or a zombie, which runs nothing and is only waiting to
/// be reaped by its parent). Reads `/proc`: Linux only.
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses: "123 (sleep) S ...".
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Panics unless process `pid` is gone within [`PATIENCE`]. A killed process disappears
/// asynchronously, and nothing announces it to a process that is not its parent, so this
/// looks every few milliseconds.
pub fn assert_process_ends(pid: u32) {
    let deadline = Instant::now() + PATIENCE;
    while !process_gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}
