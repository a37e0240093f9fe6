//! W5's multi-process configuration: this same binary re-executed as worker processes
//! (`--w5-worker <spec>`), all on the parent's namespace.
//!
//! Start barrier: each worker opens its storage, prints `ready` and waits for a `go`
//! line on stdin, so process start-up and connecting are not counted. The parent starts
//! the workers one at a time (each reports ready before the next starts, so no two set up
//! a schema or pool at the same moment), then sends `go` to all. Each worker writes its
//! counts and latency samples as JSON ([`Outcome`]); the parent merges them.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::outcome::Outcome;
use super::{Client, Limit, Side, Work, drive};
use crate::backends::{Backend, Kind, Servers};
use crate::json_file;

use fusion_bench::layer::StorageLayer;

/// What a worker prints once it is ready to start.
const READY: &str = "ready";
/// What the parent sends to start every worker at once.
const GO: &str = "go";
/// How long a worker may take to start and connect.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One multi-process measurement.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Which side runs.
    pub side: Side,
    /// Worker processes.
    pub processes: usize,
    /// Tasks in each.
    pub tasks_per_process: usize,
    /// Sessions to pick from.
    pub sessions: usize,
    /// How long the tasks run.
    pub limit: Limit,
}

/// What one worker is to do, passed as JSON in its `--w5-worker` argument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// The backend.
    pub kind: Kind,
    /// The parent's [`Backend::root_id`].
    pub root: String,
    /// The parent's layer, so both sides of a comparison run through the same one.
    pub layer: StorageLayer,
    /// Which side runs.
    pub side: Side,
    /// Sessions to pick from.
    pub sessions: usize,
    /// The first of this worker's task numbers (which fix the session picks).
    pub first_task: usize,
    /// Tasks in this worker.
    pub tasks: usize,
    /// Turns each task runs ...
    pub turns_per_task: usize,
    /// ... unless it runs this long first, ms.
    pub run_ms: u64,
    /// Where to write the [`Outcome`].
    pub out: PathBuf,
}

/// Runs `plan` in worker processes on `backend`'s namespaces; returns their merged outcome.
pub async fn run(backend: &Backend, servers: &Servers, plan: &Plan) -> Result<Outcome> {
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut workers = Vec::with_capacity(plan.processes);
    for p in 0..plan.processes {
        let spec = WorkerSpec {
            kind: backend.kind,
            root: backend.root_id(),
            layer: backend.layer,
            side: plan.side,
            sessions: plan.sessions,
            first_task: p * plan.tasks_per_process,
            tasks: plan.tasks_per_process,
            turns_per_task: plan.limit.turns_per_task,
            run_ms: u64::try_from(plan.limit.run_for.as_millis())?,
            out: scratch.path().join(format!("worker-{p}.json")),
        };
        let mut command = Command::new(&exe);
        command
            .arg("--w5-worker")
            .arg(serde_json::to_string(&spec)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        servers.pass_to(command.as_std_mut());
        let mut child = command.spawn().context("starting a W5 worker")?;
        let stdout = child.stdout.take().context("the worker's stdout")?;
        let ready = tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).lines().next_line())
            .await
            .with_context(|| format!("W5 worker {p} not ready within {START_TIMEOUT:?}"))??;
        ensure!(
            ready.as_deref() == Some(READY),
            "W5 worker {p} failed to start (see its error above)"
        );
        workers.push((child, spec.out));
    }
    for (child, _) in &mut workers {
        let stdin = child.stdin.as_mut().context("the worker's stdin")?;
        stdin.write_all(format!("{GO}\n").as_bytes()).await?;
        stdin.flush().await?;
    }
    let mut merged = Outcome::default();
    for (p, (mut child, out)) in workers.into_iter().enumerate() {
        let status = child.wait().await?;
        ensure!(status.success(), "W5 worker {p} failed ({status})");
        let text = std::fs::read_to_string(&out)
            .with_context(|| format!("W5 worker {p} wrote no outcome"))?;
        merged.merge(serde_json::from_str(&text).context("a W5 worker's outcome")?);
    }
    Ok(merged)
}

/// The worker side: runs the tasks `spec` (JSON) describes once the parent says go.
pub async fn worker(spec: &str, servers: &Servers) -> Result<()> {
    let spec: WorkerSpec = serde_json::from_str(spec).context("parsing --w5-worker")?;
    let backend = Backend::attach(spec.kind, servers, &spec.root)?.wrapped_in(spec.layer);
    let client = Arc::new(Client::open(&backend, spec.side, false).await?);
    let work = Arc::new(Work::new(spec.sessions));
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{READY}")?;
        stdout.flush()?;
    }
    // Tokio's stdin needs a feature the workspace does not enable; a blocking read off the
    // runtime's threads does the same.
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await??;
    ensure!(line.trim() == GO, "expected {GO:?} on stdin, got {line:?}");
    let tasks = spec.first_task..spec.first_task + spec.tasks;
    let limit = Limit {
        turns_per_task: spec.turns_per_task,
        run_for: Duration::from_millis(spec.run_ms),
    };
    let outcome = drive(client, work, tasks, limit).await?;
    json_file::write(&outcome, &spec.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_specs_round_trip_through_json() {
        let spec = WorkerSpec {
            kind: Kind::RedisCluster,
            root: "fusion-bench:00ff".into(),
            layer: StorageLayer::Encryption,
            side: Side::Floor,
            sessions: 1000,
            first_task: 48,
            tasks: 16,
            turns_per_task: 157,
            run_ms: 1500,
            out: PathBuf::from("/tmp/x/worker-3.json"),
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains(r#""kind":"redis-cluster""#), "{json}");
        assert!(json.contains(r#""side":"floor""#), "{json}");
        assert!(json.contains(r#""layer":"encryption""#), "{json}");
        assert_eq!(serde_json::from_str::<WorkerSpec>(&json).unwrap(), spec);
    }
}
