//! `cargo xtask ui-screenshots`: the PNGs of the UI's pages shown in docs/ui.md, taken in
//! headless Chromium by the browser suite's screenshot tests and written to docs/ui/.
//!
//! The same tests run in every `cargo test`, checking the shots without writing them;
//! here `FUSION_UI_SCREENSHOTS_DIR` tells it where to write, and `FUSION_REQUIRE_BACKENDS`
//! turns a missing browser into a failure instead of a skip.

use anyhow::Result;

use crate::{cargo_with_env, services, workspace_root};

/// What the names of the tests that take screenshots hold, in
/// `crates/fusion-ui/tests/browser.rs` (the pages) and `browser/chat.rs` (the chat).
const TESTS: &str = "screenshot";

pub fn run() -> Result<()> {
    services::chromium_and_driver()?;
    let dir = workspace_root().join("docs/ui");
    let dir_arg = dir.to_string_lossy().into_owned();
    cargo_with_env(
        &["test", "-p", "fusion-ui", "--test", "browser", TESTS],
        &[
            ("FUSION_UI_SCREENSHOTS_DIR", &dir_arg),
            ("FUSION_REQUIRE_BACKENDS", "1"),
        ],
    )?;
    eprintln!("xtask: screenshots written to {}", dir.display());
    Ok(())
}
