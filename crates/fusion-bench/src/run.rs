//! Running the selected workloads on one backend, collecting failures rather than stopping.

use std::time::Instant;

use anyhow::Result;

use crate::backends::{Backend, Kind, Servers};
use crate::report::BackendReport;
use crate::sizes::Sizes;
use crate::{agent_overhead, first_delta, floor, raw, w1, w2, w3, w4, w5, w6, workload};
use fusion_bench::layer::StorageLayer;

/// The parts of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Per-turn append cost vs history length.
    W1,
    /// Full-history load on a fresh instance.
    W2,
    /// 1,000 sessions written turn by turn, then listed.
    W3,
    /// 8 concurrent writers to one session.
    W4,
    /// Many clients: 1, 8, 64 tasks (and 4 processes x 16) on 1,000 sessions, with its floor.
    W5,
    /// A million sessions with owners: paged listing at 10k, 100k and 1M sessions. Only
    /// when asked (`--workloads w6`): it takes minutes per backend.
    W6,
    /// The raw driver doing W1's writes and W2's loads (interleaved with them).
    Floor,
    /// The agent loop's own time per iteration (memory and SQLite).
    Agent,
    /// Time to the first streamed text, library against a raw read (memory).
    FirstDelta,
}

/// Runs `workloads` on backend `kind`, its storage wrapped in `layer`; every failure lands
/// in the report's `errors`.
pub async fn backend(
    kind: Kind,
    layer: StorageLayer,
    workloads: &[Workload],
    sizes: &Sizes,
    servers: &Servers,
) -> BackendReport {
    let started = Instant::now();
    let mut report = BackendReport {
        backend: kind.name().to_string(),
        layer: layer.name().to_string(),
        ..BackendReport::default()
    };
    workloads_on(kind, layer, workloads, sizes, servers, &mut report).await;
    report.elapsed_s = started.elapsed().as_secs_f64();
    report
}

async fn workloads_on(
    kind: Kind,
    layer: StorageLayer,
    workloads: &[Workload],
    sizes: &Sizes,
    servers: &Servers,
    report: &mut BackendReport,
) {
    let backend = match Backend::setup(kind, servers).await {
        Ok(backend) => backend.wrapped_in(layer),
        Err(err) => {
            report.errors.push(format!("setup: {err:#}"));
            return;
        }
    };
    report.durability = backend.durability.clone();
    if let Err(err) = warm_up(&backend).await {
        report.errors.push(format!("warm-up: {err:#}"));
        cleanup(&backend, report).await;
        return;
    }
    let wants = |w| workloads.contains(&w);
    // The floor runs interleaved with W1 and W2 (see w1.rs), so it is opened first.
    let mut raw = None;
    if wants(Workload::Floor) {
        match raw::Raw::open(&backend).await {
            Ok(opened) => raw = Some(opened),
            Err(err) => report.errors.push(format!("floor: {err:#}")),
        }
    }
    let (mut floor_w1, mut floor_w2) = (None, None);
    if wants(Workload::W1) || raw.is_some() {
        let result = w1::run(&backend, sizes, wants(Workload::W1), raw.as_ref()).await;
        record(report, "W1", result, |r, v| {
            r.w1 = v.library;
            floor_w1 = v.floor;
        });
    }
    if wants(Workload::W2) || raw.is_some() {
        let result = w2::run(&backend, &sizes.w2_sizes, wants(Workload::W2), raw.as_ref()).await;
        record(report, "W2", result, |r, v| {
            r.w2 = v.library;
            floor_w2 = v.floor;
        });
    }
    if wants(Workload::W3) {
        let result = w3::run(&backend, sizes.w3_sessions).await;
        record(report, "W3", result, |r, v| r.w3 = Some(v));
    }
    if wants(Workload::W4) {
        let result = w4::run(&backend, sizes.w4_per_writer).await;
        if let Ok(w4) = &result
            && (w4.lost + w4.duplicates + w4.order_violations + w4.errors) > 0
        {
            report.errors.push(format!(
                "W4: lost {} duplicates {} order_violations {} errors {}",
                w4.lost, w4.duplicates, w4.order_violations, w4.errors
            ));
        }
        record(report, "W4", result, |r, v| r.w4 = Some(v));
    }
    if wants(Workload::W5) {
        let result = w5::run(&backend, servers, sizes).await;
        if let Ok(w5) = &result {
            report.errors.extend(w5::problems(w5));
        }
        record(report, "W5", result, |r, v| r.w5 = Some(v));
    }
    if wants(Workload::W6) {
        let result = w6::run(&backend, sizes).await;
        record(report, "W6", result, |r, v| r.w6 = Some(v));
    }
    if let Some(raw) = &raw {
        let probes = match raw.probes().await {
            Ok(probes) => probes,
            Err(err) => {
                report.errors.push(format!("floor probes: {err:#}"));
                Vec::new()
            }
        };
        report.floor = Some(floor::compare(
            raw,
            probes,
            floor_w1.as_ref(),
            report.w1.as_ref(),
            floor_w2.as_deref(),
            report.w2.as_deref(),
        ));
    }
    // docs/benchmarks.md asks for the agent overhead on memory and SQLite only.
    if wants(Workload::Agent) && matches!(kind, Kind::Memory | Kind::Sqlite) {
        let result = agent_overhead::run(&backend, &sizes.agent_plan).await;
        record(report, "agent", result, |r, v| r.agent = Some(v));
    }
    // What streaming adds before the first words; storage is one append, so memory says it.
    if wants(Workload::FirstDelta) && kind == Kind::Memory {
        let result = first_delta::run(&backend, &sizes.agent_plan).await;
        record(report, "first delta", result, |r, v| {
            r.first_delta = Some(v)
        });
    }
    cleanup(&backend, report).await;
}

/// The untimed warm-up: session `warmup` in namespace `warmup` gets the first turn,
/// is loaded, and its storage is closed.
async fn warm_up(backend: &Backend) -> Result<()> {
    let first_turn = workload::turns_reaching(1).remove(0);
    let storage = backend.open("warmup").await?;
    storage.append("warmup", &first_turn).await?;
    let loaded = storage.load("warmup").await?;
    // Compared by the check lines, which leave ids out: `--layer retry` gives the
    // messages ids on their way in.
    anyhow::ensure!(
        workload::check_hash(&loaded) == workload::check_hash(&first_turn),
        "warm-up: loaded history differs"
    );
    Ok(())
}

fn record<T>(
    report: &mut BackendReport,
    name: &str,
    result: Result<T>,
    store: impl FnOnce(&mut BackendReport, T),
) {
    match result {
        Ok(value) => store(report, value),
        Err(err) => report.errors.push(format!("{name}: {err:#}")),
    }
}

async fn cleanup(backend: &Backend, report: &mut BackendReport) {
    if let Err(err) = backend.cleanup().await {
        report.errors.push(format!("cleanup: {err:#}"));
    }
}
