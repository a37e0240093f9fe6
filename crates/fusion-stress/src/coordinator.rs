//! The coordinator: prepares a fresh storage location and the loopback LLM, creates the
//! idle sessions ([`crate::idle`]) and, once their cutoff is past, the brief sessions
//! ([`crate::brief`]), starts the worker processes (this same binary, role
//! `worker`), waits for them and for every brief session's expiry, loads every session
//! and runs the checker.
//!
//! The coordinator opens the storage once before any worker starts, so a new SQLite
//! database is created and migrated by one process: the run tests shared sessions, not
//! opening races. When a run fails, its directory (journals, worker stderr, and the stored
//! histories as `stored.json`) is kept and its path printed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use fusion_agent::testing::MockLlmServer;
use fusion_bench::layer::StorageLayer;
use fusion_core::ChatMessage;

use crate::backend::{Backend, Location};
use crate::brief::Brief;
use crate::checker::{RunRecord, check};
use crate::idle::IdleRun;
use crate::journal::{self, Entry, Op, now_ns};
use crate::listing;
use crate::mock;
use crate::report::Report;
use crate::worker::{SYSTEM_PROMPT, shared_id};

/// How long past its planned end a worker may run before it is killed and reported: only a
/// guard against a hung worker, never part of what is checked.
const GRACE: Duration = Duration::from_secs(300);

/// What one coordinated run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The backend under test.
    pub backend: Backend,
    /// The run's seed (each worker derives its own from it).
    pub seed: u64,
    /// How many worker processes.
    pub workers: usize,
    /// How many shared sessions.
    pub sessions: usize,
    /// Operations per worker (when no duration is given).
    pub ops: Option<usize>,
    /// How long the workers run, instead of a count.
    pub seconds: Option<f64>,
    /// The server of a Redis, Redis Cluster or PostgreSQL run (unused by fs and SQLite).
    pub server_url: String,
    /// The layer every storage of the run is wrapped in.
    pub layer: StorageLayer,
    /// The probability that a worker's storage reply is lost ([`crate::faults`]); 0 for
    /// none. The coordinator's own storage, which creates the brief sessions and reads
    /// everything back, never loses one: the check reads what is stored.
    pub faults: f64,
    /// Keep the run directory even when the run passed.
    pub keep: bool,
}

/// The outcome of one run: the checker's report, and where the run's files were kept
/// when it failed (or `keep` was set).
pub struct Outcome {
    /// The checker's verdict.
    pub report: Report,
    /// The kept run directory, when the run failed or `keep` was set.
    pub kept: Option<PathBuf>,
}

/// Runs the workers and checks what they left.
pub async fn run(config: &RunConfig) -> Result<Outcome> {
    let dir = tempfile::Builder::new()
        .prefix("fusion-stress-")
        .tempdir()
        .context("creating the run directory")?;
    let location = Location::fresh(config.backend, dir.path(), &config.server_url, config.layer);
    let result = run_in(config, dir.path(), &location).await;
    let cleaned = location.cleanup().await;
    let outcome = result?;
    cleaned.context("removing what the run stored on the server")?;
    let kept = if outcome.passed() && !config.keep {
        None
    } else {
        Some(dir.keep())
    };
    Ok(Outcome {
        report: outcome,
        kept,
    })
}

async fn run_in(config: &RunConfig, dir: &Path, location: &Location) -> Result<Report> {
    let storage = location.open().await?;
    let server = MockLlmServer::start_with(mock::rule).await;
    // Nothing reads the bodies back; recording them would grow memory with every request.
    server.set_record_requests(false);
    // Before anything else is written, and waited past: rule 11 counts on every other
    // session being written first after the cutoff.
    let idle = IdleRun::create(&*storage).await?;
    tokio::time::sleep(idle.past()).await;
    let start_ns = now_ns();
    let deadline_ns = config
        .seconds
        .map(|s| start_ns.saturating_add((s * 1e9) as u64));
    let mut brief = Vec::new();
    for (index, at) in Brief::instants(start_ns, config.seconds)
        .into_iter()
        .enumerate()
    {
        brief.push(Brief::create(&*storage, index, at).await?);
    }
    let exe = std::env::current_exe().context("finding this binary to start workers")?;

    let mut children = Vec::new();
    for index in 0..config.workers {
        let workspace = dir.join(format!("workspace-{index}"));
        std::fs::create_dir_all(&workspace)?;
        std::fs::write(workspace.join("notes.txt"), "stress workspace\n")?;
        let mut command = tokio::process::Command::new(&exe);
        command
            .arg("worker")
            .args(location.to_args())
            .args(["--llm-url", &server.base_url()])
            .args(["--index", &index.to_string()])
            .args(["--seed", &config.seed.to_string()])
            .args(["--sessions", &config.sessions.to_string()])
            .args(["--idle-cutoff-ns", &idle.cutoff_ns.to_string()])
            .arg("--journal")
            .arg(journal_path(dir, index))
            .arg("--workspace")
            .arg(&workspace);
        if let Some(ops) = config.ops {
            command.args(["--ops", &ops.to_string()]);
        }
        if let Some(deadline) = deadline_ns {
            command.args(["--deadline-ns", &deadline.to_string()]);
        }
        if config.faults > 0.0 {
            command.args(["--faults", &config.faults.to_string()]);
        }
        let stderr = std::fs::File::create(dir.join(format!("worker-{index}.stderr")))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        children.push(command.spawn().context("starting a worker")?);
    }

    let mut violations = Vec::new();
    let limit = GRACE + Duration::from_secs_f64(config.seconds.unwrap_or(0.0));
    for (index, child) in children.iter_mut().enumerate() {
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    let stderr =
                        std::fs::read_to_string(dir.join(format!("worker-{index}.stderr")))
                            .unwrap_or_default();
                    violations.push(format!(
                        "worker {index} exited with {status}: {}",
                        tail(&stderr, 2_000)
                    ));
                }
            }
            Err(_) => {
                let _ = child.kill().await;
                violations.push(format!("worker {index} did not finish; killed"));
            }
        }
    }
    drop(server);
    // Rule 9 judges the brief sessions as expired: wait for the last instant when the
    // workers finished first.
    if let Some(last) = brief.iter().map(|b| b.expires_ns).max() {
        let left = last
            .saturating_add(crate::brief::MARGIN_NS)
            .saturating_sub(now_ns());
        tokio::time::sleep(Duration::from_nanos(left)).await;
    }

    let mut entries: Vec<Entry> = Vec::new();
    for index in 0..config.workers {
        let path = journal_path(dir, index);
        if path.exists() {
            entries.extend(journal::read(&path)?);
        }
    }
    let shared: Vec<String> = (0..config.sessions).map(shared_id).collect();
    let mut ids: BTreeSet<String> = shared.iter().cloned().collect();
    ids.extend(brief.iter().map(|b| b.id.clone()));
    ids.extend(idle.sessions.iter().map(|s| s.id.clone()));
    ids.extend(entries.iter().filter_map(|e| match &e.op {
        Op::Fork { new_id, .. } => Some(new_id.clone()),
        _ => None,
    }));
    // The workers are done: what the storage lists now is what it will list while the
    // sessions are loaded below, and names whatever else the run left.
    let listings = listing::read(&*storage, &ids).await?;
    ids.extend(listings.ids.iter().cloned());
    let mut stored: BTreeMap<String, Vec<ChatMessage>> = BTreeMap::new();
    for id in &ids {
        let history = storage
            .load(id)
            .await
            .with_context(|| format!("loading session {id} after the run"))?;
        if !history.is_empty() {
            stored.insert(id.clone(), history);
        }
    }
    let generations: BTreeMap<String, u64> = listings
        .infos
        .iter()
        .filter_map(|(id, info)| Some((id.clone(), info.as_ref()?.generation)))
        .collect();
    let mut report = check(&RunRecord {
        system_prompt: SYSTEM_PROMPT,
        shared: &shared,
        journal: &entries,
        brief: &brief,
        idle: &idle,
        stored: &stored,
        generations: &generations,
    });
    violations.append(&mut report.violations);
    violations.extend(listing::check(&listings, &stored));
    violations.extend(
        report
            .counts
            .too_little_checked(config.faults, entries.len()),
    );
    report.violations = violations;
    if !report.passed() || config.keep {
        std::fs::write(dir.join("stored.json"), serde_json::to_vec_pretty(&stored)?)?;
    }
    Ok(report)
}

fn journal_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("journal-{index}.jsonl"))
}

fn tail(text: &str, max: usize) -> &str {
    let start = text.len().saturating_sub(max);
    let start = text.ceil_char_boundary(start);
    text[start..].trim()
}
