//! Where the page's script time goes: V8's sampling profiler (DevTools' `Profiler` domain)
//! around one step in the browser, summed by function, and the whole profile written as a
//! `.cpuprofile` file that Chromium's DevTools (Performance panel) open.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::webdriver::Session;

/// Starts sampling every 100 µs.
pub async fn start(browser: &Session) {
    browser.devtools("Profiler.enable", json!({})).await;
    browser
        .devtools("Profiler.setSamplingInterval", json!({ "interval": 100 }))
        .await;
    browser.devtools("Profiler.start", json!({})).await;
}

/// Stops sampling, writes the profile to `file`, and returns a table of the functions that
/// took the most time themselves (not counting what they called), with their script.
pub async fn stop(browser: &Session, file: &Path, what: &str) -> std::io::Result<String> {
    let profile = browser.devtools("Profiler.stop", json!({})).await["profile"].take();
    std::fs::write(file, profile.to_string())?;
    let mut self_ms: HashMap<String, f64> = HashMap::new();
    let nodes = profile["nodes"].as_array().cloned().unwrap_or_default();
    let by_id: HashMap<u64, &Value> = nodes
        .iter()
        .filter_map(|node| Some((node["id"].as_u64()?, node)))
        .collect();
    let samples = profile["samples"].as_array().cloned().unwrap_or_default();
    let deltas = profile["timeDeltas"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // Each sample's time is the delta that follows it.
    for (i, sample) in samples.iter().enumerate() {
        let Some(node) = sample.as_u64().and_then(|id| by_id.get(&id)) else {
            continue;
        };
        let micros = deltas.get(i + 1).and_then(Value::as_f64).unwrap_or(0.0);
        *self_ms.entry(name(&node["callFrame"])).or_default() += micros / 1e3;
    }
    let mut top: Vec<(String, f64)> = self_ms.into_iter().collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut table =
        format!("| {what}: self time, ms | function (script:line:column) |\n|---:|---|\n");
    for (function, ms) in top.iter().take(12) {
        table += &format!("| {ms:.1} | {function} |\n");
    }
    table += &format!("\nWhole profile: `{}`.\n\n", file.display());
    Ok(table)
}

/// `function (file:line)` of a profile's call frame; V8's own work keeps its `(name)`.
fn name(frame: &Value) -> String {
    let function = frame["functionName"].as_str().unwrap_or_default();
    let function = if function.is_empty() {
        "(anonymous)"
    } else {
        function
    };
    let url = frame["url"].as_str().unwrap_or_default();
    match url.rsplit('/').next().filter(|file| !file.is_empty()) {
        Some(file) => {
            // Minified scripts are one line: the column tells their functions apart.
            let line = frame["lineNumber"].as_i64().unwrap_or(-1) + 1;
            let column = frame["columnNumber"].as_i64().unwrap_or(-1) + 1;
            format!("`{function}` ({file}:{line}:{column})")
        }
        None => format!("`{function}`"),
    }
}
