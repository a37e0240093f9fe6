//! `fusion-bench`: runs docs/benchmarks.md's workload (W1-W5, the raw-driver floor and the agent
//! overhead) on Fusion's storage backends; usually started with `cargo xtask bench`.
//!
//! Every backend runs in a child process of its own (this same binary with `--in-process`),
//! so one backend's heap, threads and lingering connections cannot skew the next one's
//! numbers, and a backend that fails (Redis not running, say), even by crashing, is
//! reported and makes the exit status non-zero while the others still run. W5 starts more
//! copies of it (`--w5-worker`) for its multi-process configuration.

mod agent_overhead;
mod backends;
mod first_delta;
mod floor;
mod json_file;
mod raw;
mod report;
mod run;
mod sizes;
mod stats;
mod w1;
mod w2;
mod w3;
mod w4;
mod w5;
mod w6;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

use fusion_bench::workload;

use crate::backends::{Kind, Servers};
use crate::report::Report;
use crate::run::Workload;
use crate::sizes::Sizes;
use fusion_bench::layer::StorageLayer;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    about = "Runs the shared benchmark workload (docs/benchmarks.md) on Fusion's storage backends",
    after_help = "Prints one table per backend and writes the same as JSON under target/bench/."
)]
struct Args {
    /// Backends to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "memory,fs,sqlite,redis,redis-cluster,postgres"
    )]
    backends: Vec<Kind>,
    /// Workloads to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "w1,w2,w3,w4,w5,floor,agent,first-delta"
    )]
    workloads: Vec<Workload>,
    /// The layer every backend's storage is wrapped in (library side only: the raw-driver
    /// floor stays bare). Run `none` beside it in the same sitting to see what it costs.
    #[arg(long, value_enum, default_value = "none")]
    layer: StorageLayer,
    /// Give every workload message an id (made with the messages, before anything is
    /// timed), as an agent session does: what ids cost storage, beside a run without.
    #[arg(long)]
    message_ids: bool,
    /// Smaller sizes for a smoke run: W1 to 1,000, W2 1k only, W3 100 sessions, W4 8x50,
    /// W5 2,000 turns (or 0.25 s) per measurement.
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON report (default: target/bench/fusion-bench-<unix time>.json).
    #[arg(long)]
    json: Option<PathBuf>,
    /// The Redis server for the redis backend; each run uses a fresh random key prefix.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The Redis Cluster for the redis-cluster backend, as `redis+cluster://host:port,...`
    /// (seed nodes); each run uses a fresh random key prefix.
    #[arg(
        long,
        env = "FUSION_REDIS_CLUSTER_URL",
        default_value = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002"
    )]
    redis_cluster_url: String,
    /// The PostgreSQL server and database for the postgres backend; each run uses fresh
    /// schemas and drops them.
    #[arg(
        long,
        env = "FUSION_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres_url: String,
    /// Commit with `synchronous_commit = off` on the postgres backend (`Durability::Relaxed`):
    /// a server crash may lose the last moments' acknowledged writes.
    #[arg(long)]
    postgres_relaxed: bool,
    /// Make every redis and redis-cluster write wait for this many replicas
    /// (`RedisOptions::replica_acks`, 1 s timeout): measures what failover-safe writes cost.
    #[arg(long, value_name = "N")]
    redis_replica_acks: Option<usize>,
    /// Run the backends in this process and write only their JSON (used for the children).
    #[arg(long, hide = true, requires = "json")]
    in_process: bool,
    /// Run as one of W5's worker processes, doing what the JSON spec says (see src/w5/workers.rs).
    #[arg(long, hide = true, value_name = "SPEC")]
    w5_worker: Option<String>,
}

impl Args {
    /// The servers the shared backends run against.
    fn servers(&self) -> Servers {
        Servers {
            redis_url: self.redis_url.clone(),
            redis_cluster_url: self.redis_cluster_url.clone(),
            postgres_url: self.postgres_url.clone(),
            postgres_relaxed: self.postgres_relaxed,
            redis_replica_acks: self.redis_replica_acks,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(err) = workload::verify() {
        eprintln!("fusion-bench: {err:#}");
        return ExitCode::FAILURE;
    }
    // After the check: the published check values are of the messages without ids.
    workload::give_message_ids(args.message_ids);
    let result = if let Some(spec) = &args.w5_worker {
        w5::worker(spec, &args.servers()).await.map(|()| true)
    } else if args.in_process {
        in_process(&args).await
    } else {
        orchestrate(&args)
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("fusion-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs each backend in a child process, then prints the anchors and writes the combined
/// JSON. Returns whether every backend succeeded.
fn orchestrate(args: &Args) -> Result<bool> {
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;
    let exe = std::env::current_exe().context("finding this executable")?;
    let workloads = names(&args.workloads);
    let mut backends = Vec::new();
    let mut failing = Vec::new();
    for &kind in &args.backends {
        eprintln!("fusion-bench: running {} ...", kind.name());
        let json = scratch.path().join(format!("{}.json", kind.name()));
        let mut child = Command::new(&exe);
        child
            .args(["--in-process", "--backends", kind.name()])
            .args(["--workloads", &workloads])
            .args(["--layer", args.layer.name()])
            .arg("--json")
            .arg(&json);
        args.servers().pass_to(&mut child);
        if args.quick {
            child.arg("--quick");
        }
        if args.message_ids {
            child.arg("--message-ids");
        }
        let status = child.status().context("starting a benchmark process")?;
        match read_child(&json) {
            Ok(reports) if status.success() => backends.extend(reports),
            Ok(reports) => {
                failing.push(kind.name());
                backends.extend(reports);
            }
            Err(err) => {
                failing.push(kind.name());
                let error = format!("the benchmark process failed ({status}): {err:#}");
                println!("\n== {} ==\nERROR: {error}", kind.name());
                backends.push(json!({"backend": kind.name(), "errors": [error]}));
            }
        }
    }
    println!("\n{}", report::ANCHORS);

    let report = json!({
        "started_unix": started_unix,
        // A Redis URL given as an argument may hold a password.
        "args": std::env::args().skip(1).map(|a| fusion_core::redact_url(&a)).collect::<Vec<_>>(),
        "quick": args.quick,
        "layer": args.layer.name(),
        "message_ids": args.message_ids,
        "cpus": std::thread::available_parallelism().map_or(1, usize::from),
        "backends": backends,
    });
    let path = args.json.clone().unwrap_or_else(|| {
        report::target_dir()
            .join("bench")
            .join(format!("fusion-bench-{started_unix}.json"))
    });
    json_file::write(&report, &path)?;
    println!("\nJSON report: {}", path.display());
    if !failing.is_empty() {
        eprintln!("fusion-bench: FAILED on: {}", failing.join(", "));
    }
    Ok(failing.is_empty())
}

/// The backend reports a child wrote.
fn read_child(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).context("it wrote no report")?;
    let report: Value = serde_json::from_str(&text).context("its report is not JSON")?;
    match report.get("backends") {
        Some(Value::Array(backends)) => Ok(backends.clone()),
        _ => anyhow::bail!("its report has no backends"),
    }
}

/// Runs `args.backends` here, printing each table; returns whether all succeeded.
async fn in_process(args: &Args) -> Result<bool> {
    let sizes = Sizes::new(args.quick);
    let servers = args.servers();
    let mut report = Report {
        quick: args.quick,
        backends: Vec::new(),
    };
    for &kind in &args.backends {
        let backend = run::backend(kind, args.layer, &args.workloads, &sizes, &servers).await;
        print!("{}", report::render(&backend));
        report.backends.push(backend);
    }
    if let Some(path) = &args.json {
        json_file::write(&report, path)?;
    }
    Ok(report.backends.iter().all(|b| b.errors.is_empty()))
}

/// The command-line spelling of `values`, comma-separated.
fn names<T: ValueEnum>(values: &[T]) -> String {
    let names: Vec<String> = values
        .iter()
        .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
        .collect();
    names.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w5_and_redis_cluster_are_on_the_command_line() {
        let args = Args::try_parse_from(["fusion-bench"]).unwrap();
        assert!(args.workloads.contains(&Workload::W5));
        assert_eq!(
            names(&args.workloads),
            "w1,w2,w3,w4,w5,floor,agent,first-delta"
        );
        let args = Args::try_parse_from([
            "fusion-bench",
            "--backends",
            "redis,redis-cluster",
            "--workloads",
            "w5",
            "--redis-cluster-url",
            "redis+cluster://127.0.0.1:7100",
        ])
        .unwrap();
        assert_eq!(args.backends, [Kind::Redis, Kind::RedisCluster]);
        assert_eq!(names(&args.backends), "redis,redis-cluster");
        assert_eq!(args.workloads, [Workload::W5]);
        assert_eq!(
            args.servers().redis_cluster_url,
            "redis+cluster://127.0.0.1:7100"
        );
        assert!(Args::try_parse_from(["fusion-bench", "--w5-worker", "{}"]).is_ok());
    }

    #[test]
    fn the_layer_is_none_unless_asked_for() {
        let args = Args::try_parse_from(["fusion-bench"]).unwrap();
        assert_eq!(args.layer, StorageLayer::None);
        for (name, layer) in [
            ("encryption", StorageLayer::Encryption),
            ("observability", StorageLayer::Observability),
            ("retry", StorageLayer::Retry),
        ] {
            let args = Args::try_parse_from(["fusion-bench", "--layer", name]).unwrap();
            assert_eq!(args.layer, layer);
            // What the parent passes to its children parses back to the same layer.
            assert_eq!(args.layer.name(), name);
        }
        assert!(Args::try_parse_from(["fusion-bench", "--layer", "tls"]).is_err());
    }
}
