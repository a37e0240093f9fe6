//! What a W5 process runs: its tasks, each doing turns on sessions it picks at random
//! through the library or the floor, released together and timed call by call.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use fusion_core::{ChatMessage, ConversationStorage};
use tokio::sync::Barrier;

use super::outcome::Outcome;
use super::{LOAD_EVERY, Side, floor};
use crate::backends::Backend;
use crate::sizes::Sizes;
use crate::workload;

/// The `seed` field of the session picks (docs/benchmarks.md uses fields 0-5).
const PICK_FIELD: u64 = 6;

/// What the tasks of one process call.
pub(super) enum Client {
    Library(Arc<dyn ConversationStorage>),
    Floor(floor::Floor),
}

impl Client {
    /// Opens `side` in its namespace of `backend`; `create` sets up the floor's tables.
    pub(super) async fn open(backend: &Backend, side: Side, create: bool) -> Result<Self> {
        Ok(match side {
            Side::Library => Client::Library(backend.open(side.ns()).await?),
            Side::Floor => Client::Floor(floor::Floor::open(backend, side.ns(), create).await?),
        })
    }

    pub(super) async fn append(&self, session: &str, turn: &[ChatMessage]) -> Result<()> {
        match self {
            Client::Library(storage) => Ok(storage.append(session, turn).await?),
            Client::Floor(floor) => floor.append(session, turn).await,
        }
    }

    /// Loads `session`; returns how many messages it holds.
    pub(super) async fn load(&self, session: &str) -> Result<usize> {
        Ok(match self {
            Client::Library(storage) => storage.load(session).await?.len(),
            Client::Floor(floor) => floor.load(session).await?.len(),
        })
    }
}

/// What every task of every process shares, built before timing.
pub(super) struct Work {
    /// Session ids `w5-0000`, `w5-0001`, ...
    pub(super) ids: Vec<String>,
    /// The user+assistant turns (no tool call) of the canonical sequence's first 1,000
    /// messages; a task's turn k appends pair `k mod len`.
    pairs: Vec<Vec<ChatMessage>>,
}

impl Work {
    pub(super) fn new(sessions: usize) -> Self {
        Self {
            ids: (0..sessions).map(|s| format!("w5-{s:04}")).collect(),
            // Without ids even under `--message-ids`: the pairs are appended again and
            // again, and with ids a session would store each pair once.
            pairs: workload::turns_reaching(1000)
                .into_iter()
                .filter(|turn| turn.len() == 2)
                .map(|turn| {
                    turn.into_iter()
                        .map(|m| ChatMessage { id: None, ..m })
                        .collect()
                })
                .collect(),
        }
    }

    /// The next session of a task whose pick stream is at `state`.
    fn pick(&self, state: &mut u64) -> &str {
        // `% len` of a u64 always fits the index.
        &self.ids[(workload::splitmix64(state) % self.ids.len() as u64) as usize]
    }
}

/// The start of task `task`'s pick stream: the same for a task number whichever process
/// runs it, so a run picks the same sessions in one process as in four.
fn pick_state(task: usize) -> u64 {
    workload::seed(2_000_000 + task as u64, PICK_FIELD)
}

/// How long a measurement runs: this many turns per task, unless it reaches the time first.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limit {
    pub(super) turns_per_task: usize,
    pub(super) run_for: Duration,
}

impl Limit {
    /// `sizes`'s turns per measurement split between `tasks` tasks (rounded up).
    pub(super) fn new(sizes: &Sizes, tasks: usize) -> Self {
        Self {
            turns_per_task: sizes.w5_turns.div_ceil(tasks),
            run_for: sizes.w5_run,
        }
    }
}

/// Runs the turns of `tasks` (task numbers) on `client` within `limit`, all released at
/// once; returns their merged outcome, spanning from the first release to the last
/// task's end.
pub(super) async fn drive(
    client: Arc<Client>,
    work: Arc<Work>,
    tasks: Range<usize>,
    limit: Limit,
) -> Result<Outcome> {
    let barrier = Arc::new(Barrier::new(tasks.len()));
    let handles: Vec<_> = tasks
        .map(|task| {
            let (client, work, barrier) = (client.clone(), work.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let started = Instant::now();
                let deadline = started + limit.run_for;
                let mut state = pick_state(task);
                let mut outcome = Outcome::default();
                let mut turn = 0;
                while turn < limit.turns_per_task && Instant::now() < deadline {
                    let session = work.pick(&mut state);
                    let pair = &work.pairs[turn % work.pairs.len()];
                    let call = Instant::now();
                    let result = client.append(session, pair).await;
                    outcome.append(call.elapsed(), result);
                    turn += 1;
                    if turn % LOAD_EVERY == 0 {
                        let call = Instant::now();
                        let result = client.load(session).await.map(drop);
                        outcome.load(call.elapsed(), result);
                    }
                    // Between turns a service's task awaits its next request; without this
                    // a task whose calls never wait (memory) would hold its thread to the end.
                    tokio::task::yield_now().await;
                }
                (started, Instant::now(), outcome)
            })
        })
        .collect();
    let mut merged = Outcome::default();
    let mut span: Option<(Instant, Instant)> = None;
    for handle in handles {
        let (started, ended, outcome) = handle.await.context("a W5 task panicked")?;
        merged.merge(outcome);
        span = Some(span.map_or((started, ended), |(s, e)| (s.min(started), e.max(ended))));
    }
    merged.span_ns = span.map(|(started, ended)| (unix_ns(started), unix_ns(ended)));
    Ok(merged)
}

/// The wall-clock time of `at`, ns since the Unix epoch.
fn unix_ns(at: Instant) -> u64 {
    let since = SystemTime::now() - at.elapsed();
    let ns = since
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    u64::try_from(ns).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_append_the_canonical_user_assistant_pairs() {
        let work = Work::new(1000);
        assert_eq!(work.pairs.len(), 364);
        assert!(work.pairs.iter().all(|pair| pair.len() == 2));
        assert_eq!(work.pairs[0], workload::messages(2));
        assert_eq!(
            (work.ids[0].as_str(), work.ids[999].as_str()),
            ("w5-0000", "w5-0999")
        );
    }

    #[test]
    fn a_task_picks_the_same_sessions_in_any_process() {
        let work = Work::new(1000);
        let picks = |task| {
            let mut state = pick_state(task);
            (0..5)
                .map(|_| work.pick(&mut state).to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(17), picks(17));
        assert_ne!(picks(17), picks(18));
    }

    #[test]
    fn a_measurement_splits_its_turns_between_its_tasks() {
        let sizes = Sizes::new(false);
        assert_eq!(Limit::new(&sizes, 1).turns_per_task, 10_000);
        assert_eq!(Limit::new(&sizes, 64).turns_per_task, 157);
    }
}
