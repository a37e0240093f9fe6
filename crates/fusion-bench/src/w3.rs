//! W3: writing 1,000 sessions of 20 messages turn by turn, then listing them.
//!
//! An application holds one storage for all its sessions, and a Fusion "session object"
//! is just its id, so constructing and closing a session costs nothing here; the storage
//! is opened once, before the timed loop.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{Result, ensure};
use serde::Serialize;

use crate::backends::Backend;
use crate::stats::millis;
use crate::workload;

/// W3's result.
#[derive(Debug, Clone, Serialize)]
pub struct W3Report {
    /// Sessions written.
    pub sessions: usize,
    /// The whole write loop, seconds.
    pub total_write_s: f64,
    /// The `list_sessions` call, ms.
    pub list_ms: f64,
    /// How many ids it returned (checked to be exactly the written ones).
    pub listed: usize,
}

/// Runs W3 in namespace `w3` with `sessions` sessions.
pub async fn run(backend: &Backend, sessions: usize) -> Result<W3Report> {
    let batches = workload::w3_batches();
    let ids: Vec<String> = (0..sessions).map(|s| format!("w3-{s:04}")).collect();
    let storage = backend.open("w3").await?;

    let started = Instant::now();
    for id in &ids {
        for batch in &batches {
            storage.append(id, batch).await?;
        }
    }
    let total_write = started.elapsed();

    let started = Instant::now();
    let listed = storage.list_sessions().await?;
    let list = started.elapsed();

    let got: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
    let want: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    ensure!(
        listed.len() == ids.len() && got == want,
        "W3: list_sessions returned {} ids ({} distinct), expected exactly the {} written",
        listed.len(),
        got.len(),
        ids.len()
    );
    Ok(W3Report {
        sessions,
        total_write_s: total_write.as_secs_f64(),
        list_ms: millis(list),
        listed: listed.len(),
    })
}
