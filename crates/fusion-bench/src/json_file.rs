//! Results as files: the JSON the runner leaves under `target/bench/`, and that each W5
//! worker process hands its parent.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// Writes `report` as pretty JSON to `path`, creating its directory.
pub fn write(report: &impl Serialize, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
}
