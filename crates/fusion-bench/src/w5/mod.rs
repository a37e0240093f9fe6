//! W5: many clients. 1,000 sessions served by many concurrent tasks, as a multi-user
//! service would: each task runs turns on sessions it picks at random, a turn being one
//! append of a user+assistant pair plus, every 10th turn, a full load of that session.
//!
//! Measured for 1, 8 and 64 tasks in this process and, on the backends several processes
//! can share, for 4 worker processes x 16 tasks ([`workers`]); each time for the library
//! (one `Arc<dyn ConversationStorage>` per process, shared by its tasks, as a service
//! holds one) and for the raw drivers doing the same ([`floor`]), the side that goes
//! first alternating from one round to the next so both see the same machine drift.
//!
//! Each measurement runs a fixed number of turns (`Sizes::w5_turns`, split evenly between
//! its tasks), so both sides do the very same work, unless it reaches a time limit first
//! (`Sizes::w5_run`), so a slow backend cannot stretch the run. A configuration measures
//! each side `Sizes::w5_rounds` times (3; 1 with `--quick`), the sides taking turns, and
//! pools the rounds: appends/s over their summed walls, percentiles over all their
//! samples. One round of 1.5 s moves by up to ±40% from run to run on a busy 2-core
//! machine; pooled, interleaved rounds give both sides the same drift. The sessions keep
//! what earlier measurements of the same side appended: with 10,000 turns a measurement,
//! a session grows by about 20 messages each time.

mod drive;
mod floor;
mod outcome;
mod workers;

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::backends::{Backend, Servers};
use crate::sizes::Sizes;
use crate::workload;
use drive::{Client, Limit, Work, drive};
pub use outcome::{GROWTH, SideReport};
use outcome::{Outcome, saturation};
pub use workers::worker;

/// Task counts measured in this process.
const IN_PROCESS_TASKS: [usize; 3] = [1, 8, 64];
/// Worker processes of the multi-process configuration.
const PROCESSES: usize = 4;
/// Tasks in each worker process.
const TASKS_PER_PROCESS: usize = 16;
/// Every this many turns, a task also loads the session it just appended to.
const LOAD_EVERY: usize = 10;
/// Each session is seeded with the first 8 canonical messages: turns 0-3, no tool call.
const SEED_MESSAGES: usize = 8;
/// The target: every ratio library/floor at most this.
pub const TARGET_RATIO: f64 = 1.5;
/// Tasks of the untimed warm-up.
const WARM_UP_TASKS: usize = 8;
/// Sessions seeded (and counted in the final check) at once.
const SET_UP_CONCURRENCY: usize = 64;

/// Which side of the comparison a measurement drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Fusion's storage.
    Library,
    /// The raw driver calls of [`floor`].
    Floor,
}

impl Side {
    /// The side that is not this one.
    fn other(self) -> Side {
        match self {
            Side::Library => Side::Floor,
            Side::Floor => Side::Library,
        }
    }

    /// Each side has its own namespace.
    fn ns(self) -> &'static str {
        match self {
            Side::Library => "w5",
            Side::Floor => "w5-floor",
        }
    }
}

/// One configuration's figures for both sides.
#[derive(Debug, Clone, Serialize)]
pub struct W5Run {
    /// Processes (1: this one).
    pub processes: usize,
    /// Tasks in each process.
    pub tasks_per_process: usize,
    /// The library's figures.
    pub library: SideReport,
    /// The floor's figures.
    pub floor: SideReport,
    /// Wall time per append, library/floor (= floor appends/s / library appends/s).
    pub ratio_time_per_append: Option<f64>,
    /// Append p50, library/floor.
    pub ratio_p50: Option<f64>,
    /// Append p99, library/floor.
    pub ratio_p99: Option<f64>,
}

impl W5Run {
    fn new(processes: usize, tasks_per_process: usize, library: Outcome, floor: Outcome) -> Self {
        let (library, floor) = (library.summary(), floor.summary());
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        Self {
            processes,
            tasks_per_process,
            ratio_time_per_append: ratio(floor.appends_per_s, library.appends_per_s),
            ratio_p50: ratio(library.append.p50_ms, floor.append.p50_ms),
            ratio_p99: ratio(library.append.p99_ms, floor.append.p99_ms),
            library,
            floor,
        }
    }

    /// All tasks of the configuration.
    pub fn tasks(&self) -> usize {
        self.processes * self.tasks_per_process
    }

    /// Whether every ratio library/floor is within [`TARGET_RATIO`].
    pub fn within_target(&self) -> bool {
        [self.ratio_time_per_append, self.ratio_p50, self.ratio_p99]
            .iter()
            .all(|r| r.is_none_or(|r| r <= TARGET_RATIO))
    }

    /// `64` for tasks in this process, `4x16` for worker processes.
    pub fn label(&self) -> String {
        if self.processes == 1 {
            self.tasks_per_process.to_string()
        } else {
            format!("{}x{}", self.processes, self.tasks_per_process)
        }
    }
}

/// W5's result.
#[derive(Debug, Clone, Serialize)]
pub struct W5Report {
    /// Sessions the tasks pick from.
    pub sessions: usize,
    /// Messages each session was seeded with.
    pub seeded_messages: usize,
    /// Turns of each measurement, between all its tasks.
    pub turns: usize,
    /// Time limit of each measurement, s.
    pub run_s: f64,
    /// Measurements of each side per configuration, pooled.
    pub rounds: usize,
    /// Every this many turns a task also loads its session.
    pub load_every: usize,
    /// What the floor does.
    pub floor_driver: String,
    /// 1, 8 and 64 tasks in one process, then (shared backends) 4 processes x 16 tasks.
    pub runs: Vec<W5Run>,
    /// In-process task count after which the library's appends/s grow by less than 10%
    /// (`None`: still growing at 64 tasks).
    pub saturation_library: Option<usize>,
    /// The same for the floor.
    pub saturation_floor: Option<usize>,
    /// Messages the library's sessions hold at the end (loaded untimed).
    pub stored_messages: usize,
    /// Seeded plus twice the library's successful appends: what they should hold.
    pub expected_messages: usize,
}

/// Runs W5 on `backend` (worker processes reach the servers through `servers`).
pub async fn run(backend: &Backend, servers: &Servers, sizes: &Sizes) -> Result<W5Report> {
    let work = Arc::new(Work::new(sizes.w5_sessions));
    let seed = workload::messages(SEED_MESSAGES);
    let raw = floor::Floor::open(backend, Side::Floor.ns(), true).await?;
    let floor_driver = raw.describe();
    let library = Arc::new(Client::open(backend, Side::Library, true).await?);
    let floor = Arc::new(Client::Floor(raw));
    for client in [&library, &floor] {
        futures::stream::iter(&work.ids)
            .map(|id| client.append(id, &seed))
            .buffer_unordered(SET_UP_CONCURRENCY)
            .try_collect::<()>()
            .await
            .context("seeding the sessions")?;
    }

    let warm_up_appends = warm_up(&library, &work, sizes).await?;
    warm_up(&floor, &work, sizes).await?;

    let mut configurations: Vec<(usize, usize)> =
        IN_PROCESS_TASKS.iter().map(|&tasks| (1, tasks)).collect();
    if backend.kind.is_shared() {
        configurations.push((PROCESSES, TASKS_PER_PROCESS));
    }
    let mut runs = Vec::new();
    let mut first = Side::Library;
    for &(processes, tasks) in &configurations {
        let limit = Limit::new(sizes, processes * tasks);
        let (mut lib, mut raw) = (Outcome::default(), Outcome::default());
        for _round in 0..sizes.w5_rounds {
            for side in [first, first.other()] {
                let (client, outcome) = match side {
                    Side::Library => (&library, &mut lib),
                    Side::Floor => (&floor, &mut raw),
                };
                outcome.then(if processes == 1 {
                    drive(client.clone(), work.clone(), 0..tasks, limit).await?
                } else {
                    let plan = workers::Plan {
                        side,
                        processes,
                        tasks_per_process: tasks,
                        sessions: sizes.w5_sessions,
                        limit,
                    };
                    workers::run(backend, servers, &plan).await?
                });
            }
            first = first.other();
        }
        runs.push(W5Run::new(processes, tasks, lib, raw));
    }

    let in_process = |side: fn(&W5Run) -> &SideReport| -> Vec<(usize, f64)> {
        runs.iter()
            .filter(|r| r.processes == 1)
            .map(|r| (r.tasks(), side(r).appends_per_s))
            .collect()
    };
    let saturation_library = saturation(&in_process(|r| &r.library));
    let saturation_floor = saturation(&in_process(|r| &r.floor));
    let stored_messages = futures::stream::iter(&work.ids)
        .map(|id| library.load(id))
        .buffer_unordered(SET_UP_CONCURRENCY)
        .try_fold(0, |sum, n| async move { Ok(sum + n) })
        .await
        .context("counting the stored messages")?;
    let appended = warm_up_appends + runs.iter().map(|r| r.library.appends).sum::<u64>();
    Ok(W5Report {
        sessions: work.ids.len(),
        seeded_messages: seed.len(),
        turns: sizes.w5_turns,
        run_s: sizes.w5_run.as_secs_f64(),
        rounds: sizes.w5_rounds,
        load_every: LOAD_EVERY,
        floor_driver,
        runs,
        saturation_library,
        saturation_floor,
        stored_messages,
        expected_messages: work.ids.len() * seed.len() + 2 * usize::try_from(appended)?,
    })
}

/// The untimed warm-up of one side: 8 tasks run a tenth of a measurement, so the first
/// timed one does not pay for cold caches, lazily opened pool connections and first-touch
/// allocations. Returns how many appends it made.
async fn warm_up(client: &Arc<Client>, work: &Arc<Work>, sizes: &Sizes) -> Result<u64> {
    let limit = Limit {
        turns_per_task: Limit::new(sizes, WARM_UP_TASKS).turns_per_task / 10,
        run_for: sizes.w5_run / 10,
    };
    let outcome = drive(client.clone(), work.clone(), 0..WARM_UP_TASKS, limit).await?;
    if let Some(err) = outcome.first_error {
        bail!("warm-up: {} failed calls, first: {err}", outcome.errors);
    }
    Ok(outcome.appends)
}

/// What went wrong in `report`, each as one line for the backend's errors: failed calls
/// (the tasks carry on past them) and messages missing from the library's sessions.
pub fn problems(report: &W5Report) -> Vec<String> {
    let mut problems = Vec::new();
    for run in &report.runs {
        for (side, figures) in [("library", &run.library), ("floor", &run.floor)] {
            if figures.errors > 0 {
                problems.push(format!(
                    "W5 {}x{} {side}: {} failed calls, first: {}",
                    run.processes,
                    run.tasks_per_process,
                    figures.errors,
                    figures.first_error.as_deref().unwrap_or("?")
                ));
            }
        }
    }
    if report.stored_messages != report.expected_messages {
        problems.push(format!(
            "W5: the sessions hold {} messages, expected {}",
            report.stored_messages, report.expected_messages
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_compare_the_library_with_the_floor() {
        let outcome = |appends: u64, latency_ns: u64| Outcome {
            appends,
            span_ns: Some((5, 1_000_000_005)),
            append_ns: vec![latency_ns; 10],
            ..Outcome::default()
        };
        let run = W5Run::new(1, 8, outcome(1000, 3_000_000), outcome(2000, 2_000_000));
        assert_eq!(run.ratio_time_per_append, Some(2.0));
        assert_eq!(run.ratio_p50, Some(1.5));
        assert!(!run.within_target());
        let close = W5Run::new(4, 16, outcome(1500, 3_000_000), outcome(2000, 2_000_000));
        assert!(close.within_target());
        assert_eq!((close.tasks(), close.label().as_str()), (64, "4x16"));
        // No floor samples: no ratio, nothing to miss.
        let empty = W5Run::new(1, 1, outcome(10, 1), Outcome::default());
        assert_eq!(empty.ratio_p99, None);
    }
}
