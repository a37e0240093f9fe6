//! `fusion-stress`: the randomized multi-process check of shared sessions.
//!
//! `fusion-stress run --backend fs|sqlite|redis|redis-cluster|postgres [--seed N]
//! [--workers 4] [--sessions 3] [--ops 40 | --seconds S] [--redis-url URL]
//! [--redis-cluster-url URL] [--postgres-url URL]
//! [--layer none|encryption|observability|retry] [--keep]` coordinates one run and exits 1
//! when the checker finds a violation (2 when the run itself could not be made). The
//! `worker` role is what the coordinator starts, re-executing this binary; it is not for
//! people.
//!
//! The last line of a run is `counts: key=value ...`, which `cargo xtask stress` reads.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use fusion_bench::layer::StorageLayer;
use fusion_stress::backend::{Backend, Location};
use fusion_stress::coordinator::{self, RunConfig};
use fusion_stress::worker::{self, WorkerConfig};

#[derive(Parser)]
#[command(
    name = "fusion-stress",
    about = "Randomized multi-process check of shared sessions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs workers on fresh storage and checks what they left.
    Run(RunArgs),
    /// One worker process (started by `run`).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(Args)]
struct RunArgs {
    /// fs, sqlite, redis, redis-cluster or postgres.
    #[arg(long)]
    backend: Backend,
    /// The seed of every worker's choices; random (and printed) unless given.
    #[arg(long)]
    seed: Option<u64>,
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Shared sessions.
    #[arg(long, default_value_t = 3)]
    sessions: usize,
    /// Operations per worker.
    #[arg(long, conflicts_with = "seconds")]
    ops: Option<usize>,
    /// Run the workers for this long instead of a number of operations.
    #[arg(long)]
    seconds: Option<f64>,
    /// The Redis server of `--backend redis`.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The Redis Cluster of `--backend redis-cluster`: `redis+cluster://HOST:PORT,...`.
    #[arg(long, env = "FUSION_REDIS_CLUSTER_URL")]
    redis_cluster_url: Option<String>,
    /// The PostgreSQL server of `--backend postgres`; the run makes a schema of its own there
    /// and drops it afterwards.
    #[arg(
        long,
        env = "FUSION_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres_url: String,
    /// The storage layer every process wraps its storage in.
    #[arg(long, value_enum, default_value_t = StorageLayer::None)]
    layer: StorageLayer,
    /// The probability that each storage reply of a worker is lost after its request
    /// applied (a cut connection through a proxy on Redis and PostgreSQL, a write
    /// reported failed on fs and SQLite), under the retry layer; 0 for none. Not on
    /// redis-cluster.
    #[arg(long, default_value_t = 0.0)]
    faults: f64,
    /// Keep the run directory (journals, worker stderr, stored.json) even when it passes.
    #[arg(long)]
    keep: bool,
}

#[derive(Args)]
struct WorkerArgs {
    #[arg(long)]
    backend: Backend,
    #[arg(long)]
    target: String,
    #[arg(long)]
    prefix: Option<String>,
    #[arg(long, value_enum)]
    layer: StorageLayer,
    #[arg(long)]
    llm_url: String,
    #[arg(long)]
    index: usize,
    #[arg(long)]
    seed: u64,
    #[arg(long)]
    sessions: usize,
    #[arg(long)]
    ops: Option<usize>,
    #[arg(long)]
    deadline_ns: Option<u64>,
    #[arg(long)]
    journal: PathBuf,
    #[arg(long)]
    workspace: PathBuf,
    #[arg(long, default_value_t = 0.0)]
    faults: f64,
    #[arg(long)]
    idle_cutoff_ns: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Worker(args) => {
            let config = WorkerConfig {
                location: Location {
                    backend: args.backend,
                    target: args.target,
                    prefix: args.prefix,
                    layer: args.layer,
                },
                llm_url: args.llm_url,
                index: args.index,
                seed: args.seed,
                sessions: args.sessions,
                ops: args.ops,
                deadline_ns: args.deadline_ns,
                journal: args.journal,
                workspace: args.workspace,
                faults: args.faults,
                idle_cutoff_ns: args.idle_cutoff_ns,
            };
            match worker::run(config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("fusion-stress worker: {err:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

async fn run(args: RunArgs) -> ExitCode {
    if let Err(err) = fusion_stress::faults::check(args.backend, args.faults) {
        eprintln!("fusion-stress: error: {err:#}");
        return ExitCode::from(2);
    }
    let server_url = match args.backend {
        Backend::Fs | Backend::Sqlite => String::new(),
        Backend::Redis => args.redis_url,
        Backend::Postgres => args.postgres_url,
        Backend::RedisCluster => match args.redis_cluster_url {
            Some(url) => url,
            None => {
                eprintln!(
                    "fusion-stress: error: --backend redis-cluster needs --redis-cluster-url or \
                     FUSION_REDIS_CLUSTER_URL (redis+cluster://HOST:PORT,...)"
                );
                return ExitCode::from(2);
            }
        },
    };
    let config = RunConfig {
        backend: args.backend,
        seed: args.seed.unwrap_or_else(rand::random),
        workers: args.workers.max(1),
        sessions: args.sessions.max(1),
        ops: match (args.ops, args.seconds) {
            (None, None) => Some(40),
            (ops, _) => ops,
        },
        seconds: args.seconds,
        server_url,
        layer: args.layer,
        faults: args.faults,
        keep: args.keep,
    };
    let plan = match (config.ops, config.seconds) {
        (_, Some(seconds)) => format!("{seconds} s"),
        (Some(ops), None) => format!("{ops} ops each"),
        (None, None) => String::new(),
    };
    println!(
        "fusion-stress: backend={} layer={}{} seed={} workers={} sessions={} ({plan})",
        config.backend,
        config.layer.name(),
        faults_note(config.faults),
        config.seed,
        config.workers,
        config.sessions
    );
    let outcome = match coordinator::run(&config).await {
        Ok(outcome) => outcome,
        Err(err) => {
            eprintln!("fusion-stress: error: {err:#}");
            return ExitCode::from(2);
        }
    };
    let report = &outcome.report;
    println!("{}", report.counts);
    for violation in &report.violations {
        println!("VIOLATION {violation}");
    }
    if let Some(dir) = &outcome.kept {
        println!("run files kept in {}", dir.display());
    }
    println!(
        "{}: {} violations (backend={} layer={}{} seed={})",
        if report.passed() { "PASS" } else { "FAIL" },
        report.violations.len(),
        config.backend,
        config.layer.name(),
        faults_note(config.faults),
        config.seed
    );
    println!("counts: {}", report.counts.line());
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// ` faults=P (+retry)` when faults are on: they put the retry layer over `--layer`.
fn faults_note(faults: f64) -> String {
    if faults > 0.0 {
        format!(" faults={faults} (+retry)")
    } else {
        String::new()
    }
}
