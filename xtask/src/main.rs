//! Project tasks, run as `cargo xtask <task>` (matklad's cargo-xtask pattern).
//!
//! - `test-all-backends`: the whole workspace test suite with every backend feature on,
//!   against real servers (found or started here); a backend that cannot run fails.
//! - `bench [ARGS]`: the shared benchmark workload (see `crates/fusion-bench`).
//! - `stress --seconds N [--backends ..] [--faults P]`: the randomized multi-process
//!   check of shared sessions (see `crates/fusion-stress`), N seconds per backend, with
//!   storage replies lost after they applied when asked.
//! - `ui-screenshots`: the PNGs of the web app's pages in docs/ui/, taken in headless
//!   Chromium (see `crates/fusion-ui/tests/browser.rs`).
//! - `ui-speed [ARGS]`: the web app's speed figures in docs/performance.md (see
//!   `crates/fusion-ui/examples/ui_speed`).
//! - `tidy`: file docs, file lengths, import circles, references outside the repo.
//! - `ci`: formatting, clippy, tidy, docs, `cargo package` and `test-all-backends`, as
//!   `.ci/run` does.

mod bench;
mod services;
mod stress;
mod test_all_backends;
mod tidy;
mod ui_screenshots;
mod ui_speed;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test-all-backends") => test_all_backends::run(),
        Some("bench") => bench::run(&args[1..]),
        Some("stress") => stress::run(&args[1..]),
        Some("tidy") => tidy::run(),
        Some("ui-screenshots") => ui_screenshots::run(),
        Some("ui-speed") => ui_speed::run(&args[1..]),
        Some("ci") => ci(),
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown task `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  test-all-backends   run every test with every backend enabled, against real servers
  bench [ARGS]        run the benchmark workload (cargo xtask bench --help for ARGS)
  stress --seconds N [--backends fs,sqlite,redis,redis-cluster,postgres] [--seed S]
         [--workers W] [--sessions K] [--layer L] [--faults P]
                      randomized multi-process check of shared sessions, N s per backend
                      (--faults P: lose that share of storage replies, under retries)
  ui-screenshots      write PNGs of the web app's pages to docs/ui/ (headless Chromium)
  ui-speed [ARGS]     time the web app: the sessions page over 1M SQLite sessions, a
                      10,000-message transcript in headless Chromium (ARGS: --help)
  tidy                file docs, file lengths, import circles, paths outside the repo
  ci                  fmt --check, clippy -D warnings, tidy, docs -D warnings, cargo package,
                      test-all-backends";

fn ci() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])?;
    tidy::run()?;
    docs()?;
    package()?;
    test_all_backends::run()
}

/// The workspace's crates `cargo xtask ci` does not package (each named as its folder is):
/// fusion-stress, an unpublished harness built on fusion-bench (itself unpublished), which
/// no registry could resolve; and xtask, never published, which compiles fusion-core's
/// `redact.rs` in by its path in the repository (`services::core_redact`), a file its package
/// leaves out.
pub(crate) const NOT_PACKAGED: &[&str] = &["fusion-stress", "xtask"];

/// Packages every crate and builds each from its packaged files only, as a release would.
///
/// In a target dir of its own each run: cargo keeps the unpacked sources of its temporary
/// registry in CARGO_HOME keyed by the registry's path, so a second run in the same target
/// dir would verify against our crates as the first one packaged them. [`NOT_PACKAGED`]
/// are left out.
fn package() -> Result<()> {
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("fusion-package-{}-{unique}", std::process::id()));
    let dir_arg = dir.to_string_lossy().into_owned();
    let mut args = vec!["package", "--workspace"];
    for name in NOT_PACKAGED {
        args.extend(["--exclude", name]);
    }
    args.extend(["--allow-dirty", "--target-dir", &dir_arg]);
    let result = cargo(&args);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Builds the API docs of every crate with warnings (broken links, bad HTML) as errors.
fn docs() -> Result<()> {
    let args = ["doc", "--workspace", "--no-deps", "--all-features"];
    eprintln!("xtask: RUSTDOCFLAGS=-D warnings cargo {}", args.join(" "));
    let status = Command::new(cargo_bin())
        .args(args)
        .env("RUSTDOCFLAGS", "-D warnings")
        .current_dir(workspace_root())
        .status()
        .context("running cargo doc")?;
    if !status.success() {
        bail!("cargo doc failed ({status})");
    }
    Ok(())
}

/// Runs `cargo ARGS` from the workspace root with inherited stdio; fails on a non-zero exit.
pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    cargo_with_env(args, &[])
}

/// [`cargo`] with the environment variables `env` set for it.
pub(crate) fn cargo_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(cargo_bin())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The cargo that runs this xtask, so toolchain overrides carry through.
pub(crate) fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// The workspace root: xtask's manifest lives one level below it.
pub(crate) fn workspace_root() -> std::path::PathBuf {
    let manifest_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}
