//! W1: per-turn append cost as one session's history grows to 10,000 messages.
//!
//! The raw-driver floor runs inside the same loop (see [`run`]), so both are measured
//! over the very same turns and windows.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde::Serialize;

use crate::backends::Backend;
use crate::raw::Raw;
use crate::sizes::Sizes;
use crate::stats::Stats;
use crate::workload;

/// The session W1 grows.
const SESSION: &str = "w1";

/// Turns per reported window.
const WINDOW: usize = 50;

/// The cost of one window of 50 turns (fewer at the start).
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// The history size the window ends at or above (0 for the "last turns reached" window).
    pub target: usize,
    /// First and last turn of the window (inclusive).
    pub turns: (usize, usize),
    /// History length before the first and after the last turn of the window.
    pub history: (usize, usize),
    /// Per-turn append times over the window.
    pub stats: Stats,
}

/// W1's result.
#[derive(Debug, Clone, Serialize)]
pub struct W1Report {
    /// Turns appended.
    pub turns: usize,
    /// Messages in the session at the end.
    pub messages: usize,
    /// Whether the 300 s cap stopped growth early.
    pub capped: bool,
    /// Sum of all timed appends, seconds.
    pub total_append_s: f64,
    /// One window per target reached.
    pub windows: Vec<Window>,
    /// With the cap hit: the last 50 turns reached.
    pub last_window: Option<Window>,
}

/// The message counts and per-turn times of one W1-shaped run (library or floor).
struct Timeline {
    /// Messages per turn, in order.
    sizes: Vec<usize>,
    /// Time of each turn's write.
    times: Vec<Duration>,
}

impl Timeline {
    fn with_capacity(turns: usize) -> Self {
        Self {
            sizes: Vec::with_capacity(turns),
            times: Vec::with_capacity(turns),
        }
    }

    fn push(&mut self, messages: usize, time: Duration) {
        self.sizes.push(messages);
        self.times.push(time);
    }

    /// History length after turn `t`.
    fn history_after(&self, t: usize) -> usize {
        self.sizes[..=t].iter().sum()
    }

    /// The window ending at the first turn after which the history is ≥ `target`.
    fn window(&self, target: usize) -> Option<Window> {
        let mut history = 0;
        let k = self.times.iter().enumerate().position(|(t, _)| {
            history += self.sizes[t];
            history >= target
        })?;
        Some(self.window_ending(k, target))
    }

    /// The window of up to 50 turns ending at turn `k`.
    fn window_ending(&self, k: usize, target: usize) -> Window {
        let first = k.saturating_sub(WINDOW - 1);
        let before = if first == 0 {
            0
        } else {
            self.history_after(first - 1)
        };
        Window {
            target,
            turns: (first, k),
            history: (before, self.history_after(k)),
            stats: Stats::of(&self.times[first..=k]),
        }
    }
}

/// W1 for the library and, interleaved with it, for the raw-driver floor.
#[derive(Debug, Default)]
pub struct W1Outcome {
    /// The library's W1, when asked for.
    pub library: Option<W1Report>,
    /// The floor's W1 over the same turns, when asked for.
    pub floor: Option<W1Report>,
}

/// Runs W1 in namespace `w1`: one timed `append` per canonical turn; with `raw`, the
/// floor writes each turn too, right before or after the library (alternating).
///
/// Interleaving makes the ratio library/floor fair: on a small VM, how the scheduler
/// places threads on cores shifts per-call latency by 2-4x for seconds at a time, and
/// library and floor must see the same shifts.
pub async fn run(
    backend: &Backend,
    sizes: &Sizes,
    library: bool,
    raw: Option<&Raw>,
) -> Result<W1Outcome> {
    // Built before timing: only the storage call is measured.
    let turns = workload::turns_reaching(sizes.w1_max);
    let storage = if library {
        Some(backend.open("w1").await?)
    } else {
        None
    };
    let mut lib = Timeline::with_capacity(turns.len());
    let mut floor = Timeline::with_capacity(turns.len());
    let loop_start = Instant::now();
    let mut capped = false;
    for (t, turn) in turns.iter().enumerate() {
        // The cap counts the floor's writes too: it is a safety net for a pathological
        // backend, far above the seconds a full W1 takes.
        if loop_start.elapsed() > sizes.w1_cap {
            capped = true;
            break;
        }
        for side in [t % 2, 1 - t % 2] {
            match (side, &storage, raw) {
                (0, Some(storage), _) => {
                    let started = Instant::now();
                    storage.append(SESSION, turn).await?;
                    lib.push(turn.len(), started.elapsed());
                }
                (1, _, Some(raw)) => {
                    let started = Instant::now();
                    raw.append(turn).await?;
                    floor.push(turn.len(), started.elapsed());
                }
                _ => {}
            }
        }
    }
    drop(storage);

    let mut outcome = W1Outcome::default();
    if library {
        // Untimed check on a fresh instance: every appended message is there.
        let expected: usize = lib.sizes.iter().sum();
        let loaded = backend.open("w1").await?.load(SESSION).await?;
        ensure!(
            loaded.len() == expected,
            "W1: a fresh instance loaded {} messages, expected {expected}",
            loaded.len()
        );
        outcome.library = Some(report(&lib, &sizes.w1_targets, capped));
    }
    if raw.is_some() {
        outcome.floor = Some(report(&floor, &sizes.w1_targets, capped));
    }
    Ok(outcome)
}

/// The windows of `targets` (those reached) and, if capped, of the last 50 turns.
fn report(timeline: &Timeline, targets: &[usize], capped: bool) -> W1Report {
    let windows = targets.iter().filter_map(|&t| timeline.window(t)).collect();
    let last_window = (capped && !timeline.times.is_empty())
        .then(|| timeline.window_ending(timeline.times.len() - 1, 0));
    W1Report {
        turns: timeline.times.len(),
        messages: timeline.sizes.iter().sum(),
        capped,
        total_append_s: timeline.times.iter().sum::<Duration>().as_secs_f64(),
        windows,
        last_window,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_match_the_published_turns_and_histories() {
        let turns = workload::turns_reaching(10_000);
        let timeline = Timeline {
            sizes: turns.iter().map(Vec::len).collect(),
            times: vec![Duration::from_micros(1); turns.len()],
        };
        let w100 = timeline.window(100).unwrap();
        assert_eq!(
            (w100.turns, w100.history, w100.stats.n),
            ((0, 45), (0, 101), 46)
        );
        let w1k = timeline.window(1000).unwrap();
        assert_eq!(w1k.history, (891, 1001));
        assert_eq!(w1k.stats.n, 50);
        let w10k = timeline.window(10_000).unwrap();
        assert_eq!((w10k.turns.1, w10k.history), (4545, (9891, 10_001)));
        assert!(timeline.window(20_000).is_none());
    }
}
