//! `cargo xtask test-all-backends`: every test, every backend, real servers, no skips.
//!
//! Finds or starts Redis, two Redis Clusters and PostgreSQL ([`services`]) and passes
//! them to the tests as `REDIS_URL`, `FUSION_REDIS_CLUSTER_URL`,
//! `FUSION_REDIS_FAILOVER_CLUSTER_URL` and `FUSION_POSTGRES_URL`; makes sure of Chromium
//! and chromedriver and passes axe-core's script as `FUSION_AXE_JS` (the browser suite). Sets `FUSION_REQUIRE_BACKENDS=1` so a backend
//! whose server is missing fails instead of printing `skipped:`, runs `cargo test --workspace --all-features`, and reads libtest's
//! output to report, per backend, which conformance cases passed, and how the suites that
//! must run beside them went ([`SUITES`]: MCP, approval, the UI in a browser).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo_bin, services, workspace_root};

/// Backends whose conformance suite must run; each name is the `conformance_<name>` module.
const BACKENDS: &[&str] = &[
    "memory",
    "fs",
    "sqlite",
    "sqlite_memory",
    "redis",
    "redis_cluster",
    "postgres",
];

/// Conformance suites run through a layer or in another form that must run too
/// (`conformance_<name>`): the encryption layer on every backend, the observability layer,
/// a pass-through layer, Redis's write scripts in the form that publishes changes, and fs
/// with every call on the blocking pool.
const LAYERED: &[&str] = &[
    "encrypted_memory",
    "encrypted_fs",
    "encrypted_sqlite",
    "encrypted_redis",
    "encrypted_redis_cluster",
    "encrypted_postgres",
    "observed_memory",
    "layered_memory",
    "redis_publishing",
    "redis_cluster_publishing",
    "fs_blocking",
];

/// Suites beyond the conformance cases that must run, by test binary (`tests/<name>.rs`),
/// with what they cover: the MCP suites against the npm reference servers, the UI's
/// browser suite, the approval tests, the exactly-once suites (a write applied whose
/// reply is lost, retried) and the fixed-seed stress check (`fusion-stress`).
const SUITES: &[(&str, &str)] = &[
    (
        "mcp_npm_servers",
        "MCP: the npm server-everything and server-filesystem",
    ),
    ("mcp_faults", "MCP: faults, from an in-process rmcp server"),
    (
        "mcp_processes",
        "MCP: stdio servers that fail, crash and restart",
    ),
    ("mcp_session", "MCP: SessionBuilder::mcp_config"),
    ("mcp_chat", "MCP: fusion chat --mcp and --mcp-config"),
    ("mcp_tools", "MCP: examples/mcp_tools.rs"),
    (
        "browser",
        "UI: the pages in headless Chromium, XSS, CSP, axe-core",
    ),
    ("approval", "approval: the agent's policy and approver"),
    ("approval_chat", "approval: fusion chat --approve"),
    (
        "exactly_once_memory",
        "exactly-once: lost replies retried, memory",
    ),
    ("exactly_once_fs", "exactly-once: lost replies retried, fs"),
    (
        "exactly_once_sqlite",
        "exactly-once: lost replies retried, SQLite",
    ),
    (
        "exactly_once_redis",
        "exactly-once: replies cut by a TCP proxy, Redis",
    ),
    (
        "exactly_once_postgres",
        "exactly-once: replies cut by a TCP proxy, PostgreSQL",
    ),
    (
        "retry",
        "RetryLayer: layer order, writers under lost replies",
    ),
    (
        "changes",
        "Redis: changes published and followed (pub/sub), one server and a cluster",
    ),
    (
        "watch",
        "Redis: fusion sessions watch, one server and a cluster",
    ),
    (
        "random_writers",
        "stress: 4 processes of agents sharing sessions, each shared backend, 2 layers",
    ),
];

#[derive(Default)]
struct Outcome {
    passed: Vec<String>,
    failed: Vec<String>,
}

pub fn run() -> Result<()> {
    let redis = services::redis()?;
    eprintln!("xtask: Redis at {} ({})", redis.shown(), redis.origin);
    let cluster = services::redis_cluster()?;
    eprintln!(
        "xtask: Redis Cluster at {} ({})",
        cluster.shown(),
        cluster.origin
    );
    let failover = services::failover_cluster()?;
    eprintln!(
        "xtask: Redis Cluster for the failover test at {}",
        failover.shown()
    );
    services::node_and_npm()?;
    services::chromium_and_driver()?;
    let axe = services::axe_core()?;
    eprintln!(
        "xtask: Chromium and chromedriver on PATH; axe-core at {}",
        axe.display()
    );
    let postgres = services::postgres()?;
    eprintln!(
        "xtask: PostgreSQL at {} ({})",
        postgres.shown(),
        postgres.origin
    );

    let args = ["test", "--workspace", "--all-features", "--no-fail-fast"];
    eprintln!("xtask: cargo {}", args.join(" "));
    // cargo's `Running tests/x.rs` lines (stderr) and the tests' results (stdout) in one
    // stream, in the order they were written, so each result belongs to its binary.
    let (output, writer) = std::io::pipe().context("creating a pipe")?;
    let mut child = Command::new(cargo_bin())
        .args(args)
        .current_dir(workspace_root())
        .env("REDIS_URL", &redis.url)
        .env("FUSION_REDIS_CLUSTER_URL", &cluster.url)
        .env("FUSION_REDIS_FAILOVER_CLUSTER_URL", &failover.url)
        .env("FUSION_POSTGRES_URL", &postgres.url)
        .env("FUSION_AXE_JS", &axe)
        .env("FUSION_REQUIRE_BACKENDS", "1")
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .spawn()
        .context("running cargo test")?;

    let mut conformance: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut suites: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut binary: Option<String> = None;
    let mut failures = Failures::default();
    let (mut passed, mut failed) = (0usize, 0usize);
    for line in BufReader::new(output).lines() {
        let line = line?;
        println!("{line}");
        failures.read(&line);
        if let Some(name) = parse_running_line(&line) {
            binary = Some(name);
        }
        if let Some((p, f)) = parse_result_line(&line) {
            passed += p;
            failed += f;
            if let Some(name) = binary.take() {
                let counts = suites.entry(name).or_default();
                counts.0 += p;
                counts.1 += f;
            }
        }
        if let Some((backend, case, ok)) = parse_conformance_line(&line) {
            let outcome = conformance.entry(backend).or_default();
            if ok {
                &mut outcome.passed
            } else {
                &mut outcome.failed
            }
            .push(case);
        }
    }
    let status = child.wait()?;
    drop((redis, cluster, failover, postgres));

    let mut problems = report(&conformance);
    problems.extend(report_suites(&suites));
    failures.report();
    println!("\ntest-all-backends: {passed} passed, {failed} failed");
    if !status.success() || failed > 0 {
        bail!("cargo test failed ({status}); see the output above");
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

/// The tests that failed, with the output libtest printed for each, gathered so the end of
/// a long log says which test failed and why (a CI log is often read from its tail).
#[derive(Default)]
struct Failures {
    /// The test binary running now: `unittests src/lib.rs (target/debug/deps/x-1)`.
    binary: String,
    /// `(binary, test, its output)` for each failure, in the order libtest reported them.
    tests: Vec<(String, String, Vec<String>)>,
    /// Whether the lines being read belong to the last failure's `---- name stdout ----`.
    in_output: bool,
}

impl Failures {
    /// Longest output kept per failure; the whole of it is in the log above.
    const KEEP: usize = 40;

    fn read(&mut self, line: &str) {
        let trimmed = line.trim_start();
        if let Some(binary) = trimmed.strip_prefix("Running ") {
            self.binary = binary.to_string();
            self.in_output = false;
        } else if trimmed.starts_with("Doc-tests ") {
            self.binary = trimmed.to_string();
            self.in_output = false;
        } else if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            self.tests
                .push((self.binary.clone(), name.to_string(), Vec::new()));
            self.in_output = true;
        } else if line == "failures:" || line.starts_with("test result: ") {
            self.in_output = false;
        } else if self.in_output
            && let Some((_, _, output)) = self.tests.last_mut()
            && output.len() < Self::KEEP
        {
            output.push(line.to_string());
        }
    }

    fn report(&self) {
        if self.tests.is_empty() {
            return;
        }
        println!("\nfailed tests:");
        for (binary, test, output) in &self.tests {
            println!("  {test}   (in {binary})");
            for line in output {
                println!("      {line}");
            }
        }
    }
}

/// Prints the per-backend table and returns what is wrong with it.
fn report(conformance: &BTreeMap<String, Outcome>) -> Vec<String> {
    println!("\nconformance suite, per backend:");
    let mut problems = Vec::new();
    for backend in BACKENDS {
        match conformance.get(*backend) {
            None => problems.push(format!("no conformance case ran for backend `{backend}`")),
            Some(outcome) => {
                let mut cases: Vec<String> =
                    outcome.passed.iter().map(|c| format!("ok {c}")).collect();
                cases.extend(outcome.failed.iter().map(|c| format!("FAILED {c}")));
                cases.sort_by(|a, b| a.split(' ').nth(1).cmp(&b.split(' ').nth(1)));
                println!(
                    "  {backend:<14} {} passed, {} failed",
                    outcome.passed.len(),
                    outcome.failed.len()
                );
                for case in cases {
                    println!("      {case}");
                }
                if !outcome.failed.is_empty() {
                    problems.push(format!(
                        "backend `{backend}` failed {} case(s)",
                        outcome.failed.len()
                    ));
                }
            }
        }
    }
    for backend in conformance
        .keys()
        .filter(|b| !BACKENDS.contains(&b.as_str()))
    {
        let outcome = &conformance[backend];
        let layered = if LAYERED.contains(&backend.as_str()) {
            "layered suite"
        } else {
            "extra suite"
        };
        println!(
            "  {backend:<14} ({layered}) {} passed, {} failed",
            outcome.passed.len(),
            outcome.failed.len()
        );
        if !outcome.failed.is_empty() {
            problems.push(format!("suite `conformance_{backend}` failed"));
        }
    }
    for name in LAYERED.iter().filter(|n| !conformance.contains_key(**n)) {
        problems.push(format!(
            "no case of the layered suite `conformance_{name}` ran"
        ));
    }
    problems
}

/// Prints how each of [`SUITES`] went and returns what is wrong: a suite that did not run,
/// or ran no test.
fn report_suites(suites: &BTreeMap<String, (usize, usize)>) -> Vec<String> {
    println!("\nother suites that must run:");
    let mut problems = Vec::new();
    for (name, covers) in SUITES {
        let (passed, failed) = suites.get(*name).copied().unwrap_or_default();
        println!("  {name:<22} {passed} passed, {failed} failed   ({covers})");
        if passed + failed == 0 {
            problems.push(format!("suite `{name}` ({covers}) ran no test"));
        }
    }
    problems
}

/// `     Running tests/mcp_chat.rs (target/debug/deps/mcp_chat-0a1b)` → `mcp_chat`.
fn parse_running_line(line: &str) -> Option<String> {
    let path = line.trim_start().strip_prefix("Running ")?;
    let file = path.split_whitespace().next()?.strip_prefix("tests/")?;
    Some(file.strip_suffix(".rs")?.to_string())
}

/// `test path::conformance_fs::case ... ok` → `("fs", "case", true)`.
fn parse_conformance_line(line: &str) -> Option<(String, String, bool)> {
    let (name, status) = line.strip_prefix("test ")?.split_once(" ... ")?;
    let backend = name
        .split("::")
        .find_map(|p| p.strip_prefix("conformance_"))?
        .to_string();
    let case = name.rsplit("::").next()?.to_string();
    match status.trim() {
        "ok" => Some((backend, case, true)),
        s if s.starts_with("FAILED") => Some((backend, case, false)),
        _ => None,
    }
}

/// `test result: ok. 12 passed; 0 failed; ...` → `(12, 0)`.
fn parse_result_line(line: &str) -> Option<(usize, usize)> {
    let rest = line.strip_prefix("test result: ")?;
    let number_before = |label: &str| -> Option<usize> {
        rest.split(';').find_map(|part| {
            part.trim()
                .strip_suffix(label)?
                .trim()
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
    };
    Some((number_before("passed")?, number_before("failed")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libtest_lines() {
        assert_eq!(
            parse_conformance_line("test tests::conformance_fs::truncate_keeps_a_prefix ... ok"),
            Some(("fs".into(), "truncate_keeps_a_prefix".into(), true))
        );
        assert_eq!(
            parse_conformance_line("test conformance_sqlite_memory::x ... FAILED"),
            Some(("sqlite_memory".into(), "x".into(), false))
        );
        assert_eq!(parse_conformance_line("test other::thing ... ok"), None);
        assert_eq!(
            parse_running_line("     Running tests/mcp_chat.rs (target/debug/deps/mcp_chat-0a1b)"),
            Some("mcp_chat".into())
        );
        assert_eq!(
            parse_running_line("     Running unittests src/lib.rs (target/debug/deps/x-1)"),
            None
        );
        assert_eq!(
            parse_result_line(
                "test result: ok. 12 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
            ),
            Some((12, 1))
        );
    }

    #[test]
    fn gathers_each_failure_with_its_output() {
        let mut failures = Failures::default();
        for line in [
            "     Running tests/retry.rs (target/debug/deps/retry-1)",
            "test a ... FAILED",
            "failures:",
            "",
            "---- a stdout ----",
            "thread 'a' panicked at tests/retry.rs:3:5:",
            "lost a message",
            "",
            "failures:",
            "    a",
            "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        ] {
            failures.read(line);
        }
        assert_eq!(failures.tests.len(), 1);
        let (binary, test, output) = &failures.tests[0];
        assert_eq!(binary, "tests/retry.rs (target/debug/deps/retry-1)");
        assert_eq!(test, "a");
        assert_eq!(
            output,
            &[
                "thread 'a' panicked at tests/retry.rs:3:5:",
                "lost a message",
                ""
            ]
        );
    }
}
