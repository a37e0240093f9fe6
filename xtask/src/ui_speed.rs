//! `cargo xtask ui-speed [ARGS]`: the web UI's speed figures of docs/performance.md, measured
//! by `crates/fusion-ui/examples/ui_speed` in release: the sessions page over a
//! 1,000,000-session SQLite store (seeded once into `target/ui-speed/` and reused), and a
//! 10,000-message transcript in headless Chromium.
//!
//! ARGS go to the example unchanged (`--sessions N`, `--messages N`, `--runs N`,
//! `--browser-runs N`, `--dir DIR`, `--no-browser`). Release mode because debug-build
//! timings say nothing about the app. Chromium and chromedriver are found, or installed
//! when this runs as root, as for the browser tests ([`services::chromium_and_driver`]).

use anyhow::Result;

use crate::{cargo_with_env, services};

pub fn run(args: &[String]) -> Result<()> {
    // `cargo xtask ui-speed -- --runs 5` and `cargo xtask ui-speed --runs 5` both work.
    let args = args.strip_prefix(&["--".to_string()]).unwrap_or(args);
    if !args.iter().any(|a| a == "--no-browser") {
        services::chromium_and_driver()?;
    }
    let mut cargo_args = vec![
        "run",
        "--release",
        "-p",
        "fusion-ui",
        "--example",
        "ui_speed",
        "--",
    ];
    cargo_args.extend(args.iter().map(String::as_str));
    cargo_with_env(&cargo_args, &[])
}
