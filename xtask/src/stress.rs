//! `cargo xtask stress --seconds N [--backends fs,sqlite,redis,redis-cluster,postgres]
//! [--seed S] [--workers W] [--sessions K] [--layer none|encryption|observability|retry]
//! [--faults P]`: the randomized multi-process check of shared sessions, for N seconds per
//! backend, with every storage wrapped in the layer if one is given, and with `--faults`
//! each worker's storage replies lost with probability P after they applied, under the
//! retry layer (not on redis-cluster).
//!
//! Builds `fusion-stress` in release, then per backend runs rounds of at most
//! [`ROUND_SECONDS`] with successive seeds until its N seconds are used, each round on a
//! fresh location (directory, database file, key prefix, PostgreSQL schema), and adds up the
//! counts each round prints. Short rounds keep histories small enough that every round
//! checks many operations rather than a few long loads. Redis, the Redis Cluster and
//! PostgreSQL are found or started as `test-all-backends` does. Fails when any round
//! reports a violation (naming its seed, which replays the same choices with
//! `fusion-stress run --seed`), and when faults were asked for but a backend's rounds
//! injected none (a fault run that injected nothing tested nothing).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::{services, workspace_root};

/// The longest single round, in seconds.
const ROUND_SECONDS: f64 = 10.0;

const ALL_BACKENDS: &[&str] = &["fs", "sqlite", "redis", "redis-cluster", "postgres"];

struct Options {
    seconds: f64,
    backends: Vec<String>,
    seed: u64,
    workers: Option<String>,
    sessions: Option<String>,
    layer: Option<String>,
    faults: Option<String>,
}

/// What one backend's rounds added up to.
#[derive(Default)]
struct Totals {
    rounds: usize,
    counts: BTreeMap<String, u64>,
    failed_seeds: Vec<u64>,
}

pub fn run(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    crate::cargo(&["build", "--release", "-p", "fusion-stress"])?;
    let binary = target_dir().join("release").join("fusion-stress");
    // The servers the chosen backends need, each as an argument of every round; their
    // guards (which stop what was started here) live until the last round is done.
    let wanted = |name: &str| options.backends.iter().any(|b| b == name);
    let mut server_args = Vec::new();
    let redis = wanted("redis").then(services::redis).transpose()?;
    if let Some(redis) = &redis {
        eprintln!("xtask: Redis at {} ({})", redis.shown(), redis.origin);
        server_args.extend(["--redis-url".to_string(), redis.url.clone()]);
    }
    let cluster = wanted("redis-cluster")
        .then(services::redis_cluster)
        .transpose()?;
    if let Some(cluster) = &cluster {
        eprintln!(
            "xtask: Redis Cluster at {} ({})",
            cluster.shown(),
            cluster.origin
        );
        server_args.extend(["--redis-cluster-url".to_string(), cluster.url.clone()]);
    }
    let postgres = wanted("postgres").then(services::postgres).transpose()?;
    if let Some(postgres) = &postgres {
        eprintln!("xtask: PostgreSQL at {}", postgres.shown());
        server_args.extend(["--postgres-url".to_string(), postgres.url.clone()]);
    }

    let mut seed = options.seed;
    let mut results = Vec::new();
    for backend in &options.backends {
        let mut totals = Totals::default();
        let started = Instant::now();
        loop {
            let left = options.seconds - started.elapsed().as_secs_f64();
            if left <= 0.0 || (totals.rounds > 0 && left < 1.0) {
                break;
            }
            let round = left.min(ROUND_SECONDS);
            let mut command = Command::new(&binary);
            command.args(["run", "--backend", backend, "--seed", &seed.to_string()]);
            command.args(["--seconds", &format!("{round:.1}")]);
            if let Some(workers) = &options.workers {
                command.args(["--workers", workers]);
            }
            if let Some(sessions) = &options.sessions {
                command.args(["--sessions", sessions]);
            }
            if let Some(layer) = &options.layer {
                command.args(["--layer", layer]);
            }
            if let Some(faults) = &options.faults {
                command.args(["--faults", faults]);
            }
            command.args(&server_args);
            let passed = round_of(&mut command, &mut totals.counts)
                .with_context(|| format!("running fusion-stress on {backend}, seed {seed}"))?;
            totals.rounds += 1;
            if !passed {
                totals.failed_seeds.push(seed);
            }
            seed += 1;
        }
        results.push((backend.clone(), totals));
    }
    drop((redis, cluster, postgres));

    println!("\nstress: {} s per backend", options.seconds);
    let mut failures = Vec::new();
    for (backend, totals) in &results {
        println!("  {backend}: {} rounds", totals.rounds);
        for (key, value) in &totals.counts {
            println!("      {key:<18} {value}");
        }
        if !totals.failed_seeds.is_empty() {
            failures.push(format!(
                "{backend} failed with seeds {:?}",
                totals.failed_seeds
            ));
        }
        if let Some(faults) = &options.faults
            && totals.counts.get("faults").copied().unwrap_or(0) == 0
        {
            failures.push(format!(
                "{backend}: --faults {faults} injected no fault in {} rounds",
                totals.rounds
            ));
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// Runs one round, echoing its report, and adds its `counts:` line to `counts`; true when
/// it passed. A run that could not be made (exit 2) is an error.
fn round_of(command: &mut Command, counts: &mut BTreeMap<String, u64>) -> Result<bool> {
    let mut child = command.stdout(Stdio::piped()).spawn()?;
    let stdout = child
        .stdout
        .take()
        .context("capturing fusion-stress output")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        match line.strip_prefix("counts: ") {
            Some(pairs) => {
                for (key, value) in pairs.split(' ').filter_map(|p| p.split_once('=')) {
                    *counts.entry(key.to_string()).or_default() += value.parse::<u64>()?;
                }
            }
            None => println!("{line}"),
        }
    }
    let status = child.wait()?;
    match status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => bail!("fusion-stress exited with {status}"),
    }
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        seconds: 60.0,
        backends: ALL_BACKENDS.iter().map(|b| b.to_string()).collect(),
        // A different seed each invocation unless given; every round prints its own.
        seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
        workers: None,
        sessions: None,
        layer: None,
        faults: None,
    };
    let mut backends_given = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value"))
                .cloned()
        };
        match arg.as_str() {
            "--" => {}
            "--seconds" => options.seconds = value()?.parse().context("--seconds")?,
            "--backends" => {
                backends_given = true;
                options.backends = value()?.split(',').map(str::to_string).collect();
                if let Some(bad) = options
                    .backends
                    .iter()
                    .find(|b| !ALL_BACKENDS.contains(&b.as_str()))
                {
                    bail!("unknown backend `{bad}` ({})", ALL_BACKENDS.join(", "));
                }
            }
            "--seed" => options.seed = value()?.parse().context("--seed")?,
            "--workers" => options.workers = Some(value()?),
            "--sessions" => options.sessions = Some(value()?),
            "--layer" => options.layer = Some(value()?),
            "--faults" => {
                let faults = value()?;
                let p: f64 = faults.parse().context("--faults")?;
                if !(0.0..=1.0).contains(&p) {
                    bail!("--faults is a probability between 0 and 1, not {faults}");
                }
                options.faults = (p > 0.0).then_some(faults);
            }
            other => bail!(
                "unknown argument `{other}`; usage: cargo xtask stress --seconds N \
                 [--backends fs,sqlite,redis,redis-cluster,postgres] [--seed S] [--workers W] \
                 [--sessions K] [--layer none|encryption|observability|retry] [--faults P]"
            ),
        }
    }
    let cluster = options.backends.iter().any(|b| b == "redis-cluster");
    if options.faults.is_some() && cluster && !backends_given {
        eprintln!("xtask: --faults: skipping redis-cluster, which cannot have them");
        options.backends.retain(|b| b != "redis-cluster");
    } else if options.faults.is_some() && cluster {
        bail!(
            "--faults is not supported on redis-cluster (its nodes announce their own \
             addresses, so clients would go around a proxy); leave it out of --backends"
        );
    }
    Ok(options)
}

/// Where cargo puts build outputs: `CARGO_TARGET_DIR` if set, else `target/` at the root.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(
            || workspace_root().join("target"),
            |dir| {
                if dir.is_absolute() {
                    dir
                } else {
                    workspace_root().join(dir)
                }
            },
        )
}
