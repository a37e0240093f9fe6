//! `cargo xtask bench [ARGS]`: the shared benchmark workload, run by `fusion-bench` in release.
//!
//! ARGS go to `fusion-bench` unchanged (`--backends`, `--workloads`, `--quick`, `--json`);
//! `cargo xtask bench -- --help` lists them. Release mode because debug-build timings say
//! nothing about the library.

use anyhow::Result;

/// Runs `cargo run --release -p fusion-bench -- ARGS` with inherited stdio; fails when the
/// benchmark exits non-zero (a backend failed or W4 lost messages).
pub fn run(args: &[String]) -> Result<()> {
    // `cargo xtask bench -- --quick` and `cargo xtask bench --quick` both work.
    let args = args.strip_prefix(&["--".to_string()]).unwrap_or(args);
    let mut cargo_args = vec!["run", "--release", "-p", "fusion-bench", "--"];
    cargo_args.extend(args.iter().map(String::as_str));
    crate::cargo(&cargo_args)
}
