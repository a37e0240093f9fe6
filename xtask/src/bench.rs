//! `cargo xtask bench [ARGS]`: the shared benchmark workload, run by `fusion-bench` in release.
//!
//! ARGS go to `fusion-bench` unchanged (`--backends`, `--workloads`, `--quick`, `--json`);
//! `cargo xtask bench -- --help` lists them. Release mode because debug-build timings say
//! nothing about the library. The servers the shared backends need are found or started
//! as `test-all-backends` does ([`services`]) and passed on as `REDIS_URL`,
//! `FUSION_REDIS_CLUSTER_URL` and `FUSION_POSTGRES_URL`, unless ARGS name them.

use anyhow::Result;

use crate::services;

/// Runs `cargo run --release -p fusion-bench -- ARGS` with inherited stdio; fails when the
/// benchmark exits non-zero (a backend failed or W4 lost messages).
pub fn run(args: &[String]) -> Result<()> {
    // `cargo xtask bench -- --quick` and `cargo xtask bench --quick` both work.
    let args = args.strip_prefix(&["--".to_string()]).unwrap_or(args);
    let mut cargo_args = vec!["run", "--release", "-p", "fusion-bench", "--"];
    cargo_args.extend(args.iter().map(String::as_str));
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return crate::cargo_with_env(&cargo_args, &[]);
    }
    // Held until the benchmark ends: each stops the server it started when dropped.
    let redis = services::redis()?;
    let cluster = services::redis_cluster()?;
    let postgres = services::postgres()?;
    eprintln!("xtask: Redis at {} ({})", redis.url, redis.origin);
    eprintln!(
        "xtask: Redis Cluster at {} ({})",
        cluster.url, cluster.origin
    );
    eprintln!(
        "xtask: PostgreSQL at {} ({})",
        postgres.shown(),
        postgres.origin
    );
    let env = [
        ("REDIS_URL", redis.url.as_str()),
        ("FUSION_REDIS_CLUSTER_URL", cluster.url.as_str()),
        ("FUSION_POSTGRES_URL", postgres.url.as_str()),
    ];
    crate::cargo_with_env(&cargo_args, &env)
}
