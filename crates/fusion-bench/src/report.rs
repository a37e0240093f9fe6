//! The results: one table per backend on the terminal, the same as JSON under `target/bench/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::agent_overhead::AgentPoint;
use crate::first_delta::FirstDeltaPoint;
use crate::floor::FloorReport;
use crate::w1::{W1Report, Window};
use crate::w2::W2Point;
use crate::w3::W3Report;
use crate::w4::W4Report;
use crate::w5::{GROWTH, TARGET_RATIO, W5Report};
use crate::w6::W6Report;

/// What one benchmark process measured (the parent combines its children's).
#[derive(Debug, Serialize)]
pub struct Report {
    /// Whether `--quick` sizes were used.
    pub quick: bool,
    /// One entry per backend, in the order run.
    pub backends: Vec<BackendReport>,
}

/// What one backend measured; a workload that failed is `None` with its error listed.
#[derive(Debug, Default, Serialize)]
pub struct BackendReport {
    /// `memory`, `fs`, `sqlite`, `redis`, `postgres` or `redis-cluster`.
    pub backend: String,
    /// The layer the library's storage was wrapped in (`none`, `encryption`,
    /// `observability`); the floor never is.
    pub layer: String,
    /// The durability settings in effect.
    pub durability: String,
    /// Failures, each prefixed with the workload.
    pub errors: Vec<String>,
    /// W1.
    pub w1: Option<W1Report>,
    /// W2.
    pub w2: Option<Vec<W2Point>>,
    /// W3.
    pub w3: Option<W3Report>,
    /// W4.
    pub w4: Option<W4Report>,
    /// W5, with its own floor.
    pub w5: Option<W5Report>,
    /// W6: paged listing at a million sessions.
    pub w6: Option<W6Report>,
    /// Raw-driver floor and ratios.
    pub floor: Option<FloorReport>,
    /// Agent overhead per history size.
    pub agent: Option<Vec<AgentPoint>>,
    /// Time to the first streamed text, library against raw.
    pub first_delta: Option<Vec<FirstDeltaPoint>>,
    /// Wall time of this backend's whole run, seconds.
    pub elapsed_s: f64,
}

/// Renders `report` as the terminal table.
pub fn render(report: &BackendReport) -> String {
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(o, "\n== {} ({:.1} s) ==", report.backend, report.elapsed_s);
    // Said on every table, so a layered run is never read as a plain one.
    let _ = writeln!(
        o,
        "layer: {} (library side only; the floor is bare)",
        report.layer
    );
    if !report.durability.is_empty() {
        let _ = writeln!(o, "durability: {}", report.durability);
    }
    if let Some(w1) = &report.w1 {
        let _ = writeln!(
            o,
            "W1 append per turn ({} turns -> {} msgs{}), ms:",
            w1.turns,
            w1.messages,
            if w1.capped { ", CAPPED at 300 s" } else { "" }
        );
        let _ = writeln!(
            o,
            "  {:<8} {:>14} {:>4} {:>9} {:>9} {:>9} {:>9}",
            "target", "history", "n", "mean", "median", "min", "max"
        );
        for window in w1.windows.iter().chain(&w1.last_window) {
            w1_row(o, window);
        }
        if let (Some(first), Some(last)) = (w1.windows.first(), w1.windows.last())
            && w1.windows.len() > 1
        {
            let _ = writeln!(
                o,
                "  growth: mean @{} / mean @{} = {:.2}x",
                last.target,
                first.target,
                last.stats.mean_ms / first.stats.mean_ms
            );
        }
    }
    if let Some(w2) = &report.w2 {
        let _ = writeln!(o, "W2 full-history load, ms (median of 5 fresh instances):");
        let _ = writeln!(
            o,
            "  {:>6} {:>15} {:>25}",
            "n", "load_median", "open_plus_load_median"
        );
        for p in w2 {
            let _ = writeln!(
                o,
                "  {:>6} {:>15.3} {:>25.3}",
                p.n, p.load_median_ms, p.open_plus_load_median_ms
            );
        }
    }
    if let Some(w3) = &report.w3 {
        let _ = writeln!(
            o,
            "W3 {} sessions x 20 msgs: total_write_s {:.3} ({:.3} ms/session), list_sessions {:.3} ms ({} ids, exact)",
            w3.sessions,
            w3.total_write_s,
            w3.total_write_s * 1000.0 / w3.sessions.max(1) as f64,
            w3.list_ms,
            w3.listed
        );
    }
    if let Some(w4) = &report.w4 {
        let _ = writeln!(
            o,
            "W4 {}x{} concurrent appends: present {} lost {} duplicates {} order_violations {} errors {} wall {:.3} s",
            w4.writers,
            w4.per_writer,
            w4.present,
            w4.lost,
            w4.duplicates,
            w4.order_violations,
            w4.errors,
            w4.wall_s
        );
        if let Some(err) = &w4.first_error {
            let _ = writeln!(o, "  first error: {err}");
        }
    }
    if let Some(w5) = &report.w5 {
        w5_table(o, w5);
    }
    if let Some(w6) = &report.w6 {
        crate::w6::table(o, w6);
    }
    if let Some(floor) = &report.floor {
        let _ = writeln!(o, "Floor ({}):", floor.driver);
        for f in &floor.w1 {
            let _ = writeln!(
                o,
                "  W1 @{:<6} floor mean {:>8.4} median {:>8.4} ms   library/floor mean {:>6}, median {:>6}",
                f.target,
                f.floor.mean_ms,
                f.floor.median_ms,
                ratio(f.ratio_mean),
                ratio(f.ratio_median)
            );
        }
        for f in &floor.w2 {
            let _ = writeln!(
                o,
                "  W2 {:<7} floor load {:>8.3} ms, open+load {:>8.3} ms   library/floor load {:>6}, open+load {:>6}",
                f.n,
                f.load_median_ms,
                f.open_plus_load_median_ms,
                ratio(f.ratio_load),
                ratio(f.ratio_open_plus_load)
            );
        }
        for probe in &floor.probes {
            let _ = writeln!(
                o,
                "  {}, {} calls: mean {:.4} median {:.4} min {:.4} ms",
                probe.call,
                probe.stats.n,
                probe.stats.mean_ms,
                probe.stats.median_ms,
                probe.stats.min_ms
            );
        }
    }
    if let Some(agent) = &report.agent {
        let _ = writeln!(
            o,
            "Agent overhead per iteration (turn time - mock server time), ms, reply in one body \
             | streamed, a chunk per event | streamed, the events in one body (as through a \
             buffering proxy):"
        );
        let _ = writeln!(
            o,
            "  {:>7} {:>6} {:>9} {:>9} {:>9} {:>9} {:>12} | {:>9} {:>9} {:>9} {:>7} | {:>9} {:>7}",
            "history",
            "iters",
            "mean",
            "median",
            "min",
            "max",
            "server mean",
            "median",
            "min",
            "max",
            "ratio",
            "median",
            "ratio"
        );
        for p in agent {
            let _ = writeln!(
                o,
                "  {:>7} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>12.3} | {:>9.3} {:>9.3} {:>9.3} {:>7.2} | {:>9.3} {:>7.2}",
                p.history,
                p.iterations,
                p.library.mean_ms,
                p.library.median_ms,
                p.library.min_ms,
                p.library.max_ms,
                p.server_mean_ms,
                p.streaming.median_ms,
                p.streaming.min_ms,
                p.streaming.max_ms,
                p.streaming.median_ms / p.library.median_ms,
                p.streaming_one_body.median_ms,
                p.streaming_one_body.median_ms / p.library.median_ms
            );
        }
    }
    if let Some(points) = &report.first_delta {
        let _ = writeln!(
            o,
            "Time to first text delta, ms (raw reqwest read of the same stream | send_message_stream):"
        );
        let _ = writeln!(
            o,
            "  {:>7} {:>6} {:>11} {:>15} {:>13} {:>11}",
            "history", "n", "raw median", "library median", "added median", "added min"
        );
        for p in points {
            let _ = writeln!(
                o,
                "  {:>7} {:>6} {:>11.3} {:>15.3} {:>13.3} {:>11.3}",
                p.history,
                p.added.n,
                p.raw.median_ms,
                p.library.median_ms,
                p.added.median_ms,
                p.added.min_ms
            );
        }
    }
    for err in &report.errors {
        let _ = writeln!(o, "ERROR: {err}");
    }
    out
}

/// W5: per configuration, the library's and the floor's appends/s (with the growth over
/// the row above) and append latency, the ratios library/floor against the target, then
/// the loads, where growth stops and the untimed count check.
fn w5_table(o: &mut String, w5: &W5Report) {
    let _ = writeln!(
        o,
        "W5 many clients: {} sessions seeded with {} msgs; a turn = 1 append of a user+assistant \
         pair, every {}th turn also a full load; {} turns per measurement or {:.2} s if sooner; \
         {} rounds per side, interleaved and pooled; appends/s = turns/s:",
        w5.sessions, w5.seeded_messages, w5.load_every, w5.turns, w5.run_s, w5.rounds
    );
    let _ = writeln!(o, "  floor: {}", w5.floor_driver);
    let groups = format!(
        "  {:<6} | {:^35} | {:^35} | {:^30}",
        "", "library", "floor", "library/floor"
    );
    let _ = writeln!(o, "{}", groups.trim_end());
    let _ = writeln!(
        o,
        "  {:<6} | {:>9} {:>7} {:>8} {:>8} | {:>9} {:>7} {:>8} {:>8} | {:>8} {:>6} {:>6} {:>6}",
        "tasks",
        "appends/s",
        "growth",
        "p50 ms",
        "p99 ms",
        "appends/s",
        "growth",
        "p50 ms",
        "p99 ms",
        "s/append",
        "p50",
        "p99",
        format!("<={TARGET_RATIO}x")
    );
    let growth = |now: f64, before: Option<f64>| {
        before.map_or_else(
            || "-".into(),
            |b| format!("{:+.0}%", (now / b - 1.0) * 100.0),
        )
    };
    let mut before: Option<(f64, f64)> = None;
    for run in &w5.runs {
        let (lib, floor) = (&run.library, &run.floor);
        let _ = writeln!(
            o,
            "  {:<6} | {:>9.0} {:>7} {:>8.3} {:>8.3} | {:>9.0} {:>7} {:>8.3} {:>8.3} | {:>8} {:>6} {:>6} {:>6}",
            run.label(),
            lib.appends_per_s,
            growth(lib.appends_per_s, before.map(|b| b.0)),
            lib.append.p50_ms,
            lib.append.p99_ms,
            floor.appends_per_s,
            growth(floor.appends_per_s, before.map(|b| b.1)),
            floor.append.p50_ms,
            floor.append.p99_ms,
            ratio(run.ratio_time_per_append),
            ratio(run.ratio_p50),
            ratio(run.ratio_p99),
            if run.within_target() { "yes" } else { "no" }
        );
        before = Some((lib.appends_per_s, floor.appends_per_s));
    }
    let loads: Vec<String> = w5
        .runs
        .iter()
        .map(|run| {
            format!(
                "{}: {:.3}/{:.3} | {:.3}/{:.3}",
                run.label(),
                run.library.load.p50_ms,
                run.library.load.p99_ms,
                run.floor.load.p50_ms,
                run.floor.load.p99_ms
            )
        })
        .collect();
    let _ = writeln!(
        o,
        "  full loads p50/p99 ms, library | floor, by tasks: {}",
        loads.join("; ")
    );
    let saturated = |at: Option<usize>| {
        at.map_or_else(
            || "still growing at 64 tasks".to_string(),
            |n| format!("saturates at {n} task{}", if n == 1 { "" } else { "s" }),
        )
    };
    let _ = writeln!(
        o,
        "  throughput in one process (saturated: <{:.0}% more with the next task count): library {}, floor {}",
        GROWTH * 100.0,
        saturated(w5.saturation_library),
        saturated(w5.saturation_floor)
    );
    let _ = writeln!(
        o,
        "  s/append = floor appends/s / library appends/s; check: the library's sessions hold {} messages ({} expected)",
        w5.stored_messages, w5.expected_messages
    );
}

fn w1_row(o: &mut String, w: &Window) {
    let target = if w.target == 0 {
        "last".to_string()
    } else {
        format!("@{}", w.target)
    };
    let _ = writeln!(
        o,
        "  {:<8} {:>14} {:>4} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
        target,
        format!("{}->{}", w.history.0, w.history.1),
        w.stats.n,
        w.stats.mean_ms,
        w.stats.median_ms,
        w.stats.min_ms,
        w.stats.max_ms
    );
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.2}x"))
}

/// docs/benchmarks.md's figures for Python session stores, printed for comparison.
pub const ANCHORS: &str = "\
Anchors from docs/benchmarks.md (Python stores, 2 vCPU VM, median of runs, noise up to +-50%):
  system                                W1 ms/turn @100 / @10k       W2 load 10k ms  W3 write s  W4 lost
  OpenAI Agents SDK SQLiteSession       0.57-0.98 / 0.43-0.62        56-128          9.9-15.0    0
  OpenAI Agents SDK RedisSession        0.81-1.56 / 0.76-0.83        100-165         7.8-10.9    0 (6.3 s)
  LangChain SQLChatMessageHistory       1.9-2.6 / 1.7-2.1            298-319         26-27       0
  LangChain FileChatMessageHistory      3.2 / 282 at 4.3k (O(n))     221             10.2        2,000 (corrupted)
  LangChain RedisChatMessageHistory     0.27-0.30 / 0.23-0.26        266-307         4.2-4.3     0
  OpenAI Agents SQLAlchemySession (PG)  2.5-7.4 / 2.3-3.9            93-134          38.6-40.5   0
  langchain-postgres PostgresChatMH     0.92-1.10 / 0.74-0.80        345-365         8.3-8.8     0
PostgreSQL floors there: SELECT 1 0.08-0.14 ms; one-row autocommit INSERT (synchronous_commit on)
0.23-0.32 ms.
Targets: >=10x faster than the best Python store of the same kind on W1 and W2; W1 @10k within
1.5x of @100; within 1.5x of the raw-driver floor; W4 lost/dup/order all 0; agent overhead
< 1 ms per iteration at 1,000 messages on memory.";

/// The workspace's target directory: `CARGO_TARGET_DIR`, else the nearest ancestor of
/// this executable holding cargo's `CACHEDIR.TAG`, else `./target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|dir| dir.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from("target"))
}
