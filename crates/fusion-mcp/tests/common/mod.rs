//! Shared support for the MCP suites: the npm reference servers installed once into a
//! cache directory, the stdio test server of this crate, an agent session on the loopback
//! LLM server, and a check that a process is gone.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fusion_agent::testing::MockLlmServer;
use fusion_agent::{AgentSession, OpenAiConfig, ToolRegistry};
use fusion_storage_memory::InMemoryStorage;

/// The reference servers, pinned: the versions current when these tests were written.
pub const EVERYTHING: (&str, &str) = ("@modelcontextprotocol/server-everything", "2026.8.31");
pub const FILESYSTEM: (&str, &str) = ("@modelcontextprotocol/server-filesystem", "2026.8.31");

/// A bound for things that should happen promptly; generous for a busy CI machine. Only a
/// failure bound: nothing asserts how long anything took.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The entry script of an installed npm server, run with `node <script>`.
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

/// The stdio test server of this crate (`src/bin/test_server.rs`).
pub fn test_server() -> &'static str {
    env!("CARGO_BIN_EXE_fusion-mcp-test-server")
}

/// A session `SESSION` with `tools`, talking to `llm` (a scripted loopback server).
pub async fn session(llm: &MockLlmServer, tools: ToolRegistry) -> AgentSession {
    let client = OpenAiConfig::new("mock-model")
        .base_url(llm.base_url())
        .max_retries(0)
        .build()
        .unwrap();
    AgentSession::builder("mcp-user")
        .llm(Arc::new(client))
        .storage(Arc::new(InMemoryStorage::new()))
        .tools(tools)
        .system_prompt("You are a test agent.")
        .build()
        .await
        .unwrap()
}

/// The names of the tools offered in request `n` the LLM server received.
pub fn offered(llm: &MockLlmServer, n: usize) -> Vec<String> {
    llm.requests()[n]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Whether process `pid` is gone (or a zombie, which runs nothing and is only waiting to
/// be reaped by its parent).
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
