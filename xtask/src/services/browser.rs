//! The browser suite's tools (`crates/fusion-ui/tests/browser.rs`): Chromium and
//! chromedriver from Debian's `chromium` and `chromium-driver`, and axe-core from npm.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{apt_install, on_path};

const INSTALL_HINT: &str = "install Chromium and its WebDriver (Debian: `apt-get install \
    chromium chromium-driver`; elsewhere a Chromium or Chrome with the matching \
    chromedriver on PATH); the UI's browser tests drive them";

/// axe-core's npm package, at the major version the accessibility checks were written
/// for.
const AXE_PACKAGE: &str = "axe-core@4";

/// Checks that `chromium` and `chromedriver` are on the PATH, installing Debian's packages
/// when they are missing and this runs as root; fails naming what to install otherwise.
pub fn chromium_and_driver() -> Result<()> {
    for (program, package) in [
        ("chromium", "chromium"),
        ("chromedriver", "chromium-driver"),
    ] {
        if !on_path(program) {
            apt_install(package, INSTALL_HINT)?;
        }
        if !on_path(program) {
            bail!("`{program}` is still not on the PATH: {INSTALL_HINT}");
        }
    }
    Ok(())
}

/// The path of axe-core's `axe.min.js`, installed with npm into `<target>/axe-core` the
/// first time (the tests read it from `FUSION_AXE_JS`). Needs npm ([`super::node_and_npm`]).
pub fn axe_core() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    let prefix = target.join("axe-core");
    let script = prefix.join("node_modules/axe-core/axe.min.js");
    if script.is_file() {
        return Ok(script);
    }
    eprintln!("xtask: installing {AXE_PACKAGE} into {}", prefix.display());
    std::fs::create_dir_all(&prefix)?;
    let status = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--prefix",
        ])
        .arg(&prefix)
        .arg(AXE_PACKAGE)
        .status()
        .context("running npm install (is npm on the PATH?)")?;
    if !status.success() || !script.is_file() {
        bail!(
            "npm install {AXE_PACKAGE} failed ({status}); the accessibility checks need {}",
            script.display()
        );
    }
    Ok(script)
}
