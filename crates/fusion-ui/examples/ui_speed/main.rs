//! The web UI's speed, measured the same way on any machine (`cargo xtask ui-speed`, which
//! runs this in release): the sessions page over a 1,000,000-session SQLite store, and a
//! 10,000-message transcript in headless Chromium. Prints markdown tables for
//! docs/performance.md.
//!
//! ```text
//! cargo run --release -p fusion-ui --example ui_speed -- [--sessions N] [--messages N]
//!     [--runs N] [--browser-runs N] [--dir DIR] [--no-browser] [--profile]
//! ```
//!
//! - The sessions page (`sessions.rs`): a SQLite store of `--sessions` sessions (default
//!   1,000,000) kept in `DIR` (default `target/ui-speed`) and reused while it holds
//!   exactly that many; then `GET /sessions` with each filter, through `router` and
//!   `tower::ServiceExt::oneshot` (server time only: no socket, no browser), `--runs`
//!   times each (default 30), beside the storage's own `list_page` for the same query.
//! - The transcript (`transcript.rs`): a session of `--messages` messages (default
//!   10,000) shaped like the shared benchmark workload, its `GET` timed the same way, then
//!   served by `bind` + `serve` on loopback and opened `--browser-runs` times (default 5)
//!   in headless Chromium: navigation timing, first paint, the longest main-thread task,
//!   and "Load earlier messages". `--profile` then loads it once more under V8's
//!   profiler (`profile.rs`) and prints where the page's script time goes.
//!
//! Chromium and chromedriver are found as the browser tests find them
//! (`tests/browser/chromium.rs`, shared by `#[path]`, with the tests' WebDriver client).

mod profile;
mod sessions;
mod timing;
mod transcript;

#[path = "../../tests/browser/chromium.rs"]
mod chromium;
// The browser tests' client; this program uses only some of its commands.
#[allow(dead_code)]
#[path = "../../tests/browser/webdriver.rs"]
mod webdriver;

use std::path::PathBuf;

const USAGE: &str = "usage: ui_speed [--sessions N] [--messages N] [--runs N] \
    [--browser-runs N] [--dir DIR] [--no-browser] [--profile]

  --sessions N      sessions in the SQLite store of the sessions page (1000000)
  --messages N      messages in the transcript (10000)
  --runs N          timed requests of each kind on the server (30)
  --browser-runs N  loads of the transcript in Chromium (5)
  --dir DIR         where the stores are kept (target/ui-speed)
  --no-browser      server times only
  --profile         profile the page's script in one more load (files in DIR)";

/// What the command line asks for.
struct Args {
    sessions: usize,
    messages: usize,
    runs: usize,
    browser_runs: usize,
    dir: PathBuf,
    browser: bool,
    profile: bool,
}

impl Args {
    /// The arguments, or `None` after printing the usage for `--help`.
    fn parse() -> Result<Option<Args>, String> {
        let mut args = Args {
            sessions: 1_000_000,
            messages: 10_000,
            runs: 30,
            browser_runs: 5,
            dir: default_dir(),
            browser: true,
            profile: false,
        };
        let mut given = std::env::args().skip(1);
        while let Some(flag) = given.next() {
            let mut value = || given.next().ok_or(format!("{flag} needs a value"));
            let number = |text: String| {
                text.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("{flag}: {text:?} is not a positive number"))
            };
            match flag.as_str() {
                "--sessions" => args.sessions = number(value()?)?,
                "--messages" => args.messages = number(value()?)?,
                "--runs" => args.runs = number(value()?)?,
                "--browser-runs" => args.browser_runs = number(value()?)?,
                "--dir" => args.dir = PathBuf::from(value()?),
                "--no-browser" => args.browser = false,
                "--profile" => args.profile = true,
                "--help" | "-h" => {
                    println!("{USAGE}");
                    return Ok(None);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(Some(args))
    }
}

/// `target/ui-speed` of the workspace (or of `CARGO_TARGET_DIR`).
fn default_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    target.join("ui-speed")
}

/// The workspace root: this crate's manifest is two levels below it.
fn workspace() -> PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// The CPU's model name and how many CPUs run this, for the report's header.
fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cpus} CPUs, {}", std::env::consts::OS)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(args) = Args::parse().map_err(|err| format!("ui_speed: {err}\n\n{USAGE}"))? else {
        return Ok(());
    };
    std::fs::create_dir_all(&args.dir)?;
    println!("# fusion-ui speed\n\nMachine: {}\n", machine());
    sessions::run(&args.dir, args.sessions, args.runs).await?;
    transcript::run(&args).await?;
    Ok(())
}
