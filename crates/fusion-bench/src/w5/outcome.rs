//! What one W5 measurement counted, how processes' counts merge, and the figures
//! reported from them: appends per second, latency percentiles, where growth stops.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One side's (library or floor) raw counts from one process, or several merged. A
/// worker process writes this as JSON for its parent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Appends that succeeded (one per turn).
    pub appends: u64,
    /// Loads that succeeded (every 10th turn).
    pub loads: u64,
    /// Calls that returned an error (the task carries on).
    pub errors: u64,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// When the first task was released and when the last one ended, ns since the Unix
    /// epoch: wall-clock time, so that the spans of processes started a moment apart
    /// merge into the one they cover together.
    pub span_ns: Option<(u64, u64)>,
    /// Wall time of earlier rounds of the same measurement, which ran before `span_ns`
    /// (see [`Outcome::then`]), ns.
    #[serde(default)]
    pub earlier_rounds_ns: u64,
    /// Each successful append's latency, ns.
    pub append_ns: Vec<u64>,
    /// Each successful load's latency, ns.
    pub load_ns: Vec<u64>,
}

impl Outcome {
    /// Records one append that took `took`.
    pub fn append(&mut self, took: Duration, result: anyhow::Result<()>) {
        if self.succeeded(result) {
            self.appends += 1;
            self.append_ns.push(nanos(took));
        }
    }

    /// Records one load that took `took`.
    pub fn load(&mut self, took: Duration, result: anyhow::Result<()>) {
        if self.succeeded(result) {
            self.loads += 1;
            self.load_ns.push(nanos(took));
        }
    }

    /// Counts a failed call (its time is no sample); returns whether the call succeeded.
    fn succeeded(&mut self, result: anyhow::Result<()>) -> bool {
        let Err(err) = result else {
            return true;
        };
        self.errors += 1;
        self.first_error.get_or_insert_with(|| format!("{err:#}"));
        false
    }

    /// Adds `other`'s counts and samples to these. The parts ran at the same time, so the
    /// merged span runs from the earliest start to the latest end.
    pub fn merge(&mut self, other: Outcome) {
        self.appends += other.appends;
        self.loads += other.loads;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.span_ns = match (self.span_ns, other.span_ns) {
            (Some((s1, e1)), Some((s2, e2))) => Some((s1.min(s2), e1.max(e2))),
            (one, other) => one.or(other),
        };
        self.append_ns.extend(other.append_ns);
        self.load_ns.extend(other.load_ns);
    }

    /// Adds `later`'s counts and samples to these, `later` being another round of the
    /// same measurement that ran after these ended: the walls add up, and the time
    /// between the rounds (the other side's turn) does not count.
    pub fn then(&mut self, later: Outcome) {
        let earlier = self.wall_ns() + later.earlier_rounds_ns;
        let span = later.span_ns;
        self.merge(Outcome {
            span_ns: None,
            ..later
        });
        self.span_ns = span;
        self.earlier_rounds_ns = earlier;
    }

    /// Wall time of all rounds, ns.
    fn wall_ns(&self) -> u64 {
        let span = self
            .span_ns
            .map_or(0, |(start, end)| end.saturating_sub(start));
        self.earlier_rounds_ns + span
    }

    /// The reported figures.
    pub fn summary(mut self) -> SideReport {
        let wall_s = self.wall_ns() as f64 / 1e9;
        SideReport {
            appends: self.appends,
            loads: self.loads,
            errors: self.errors,
            first_error: self.first_error,
            wall_s,
            appends_per_s: if wall_s > 0.0 {
                self.appends as f64 / wall_s
            } else {
                0.0
            },
            append: Latency::of(&mut self.append_ns),
            load: Latency::of(&mut self.load_ns),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One side's figures for one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct SideReport {
    /// Appends that succeeded (= turns).
    pub appends: u64,
    /// Loads that succeeded.
    pub loads: u64,
    /// Calls that failed.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Wall time of the measurement, s.
    pub wall_s: f64,
    /// `appends / wall_s`; one append per turn, so also turns per second.
    pub appends_per_s: f64,
    /// Append latency.
    pub append: Latency,
    /// Full-load latency.
    pub load: Latency,
}

/// Latency percentiles (nearest rank) of a set of calls, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// How many calls.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latency {
    /// The percentiles of `samples_ns` (sorted in place); all zeros when there are none.
    pub fn of(samples_ns: &mut [u64]) -> Self {
        samples_ns.sort_unstable();
        let ms = |ns: u64| ns as f64 / 1e6;
        Self {
            n: samples_ns.len(),
            p50_ms: ms(percentile(samples_ns, 50.0)),
            p99_ms: ms(percentile(samples_ns, 99.0)),
            max_ms: ms(samples_ns.last().copied().unwrap_or(0)),
        }
    }
}

/// The nearest-rank `p`th percentile of ascending `sorted`: the smallest sample with at
/// least `p`% of the samples at or below it; 0 for no samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Throughput must grow by at least this fraction from one task count to the next to
/// count as still growing.
pub const GROWTH: f64 = 0.10;

/// Where throughput stops growing along `points` (task count, appends/s), in order of
/// task count: the first count whose next step gains less than [`GROWTH`]; `None` while
/// every step gains at least that much.
pub fn saturation(points: &[(usize, f64)]) -> Option<usize> {
    points
        .windows(2)
        .find(|pair| pair[1].1 < pair[0].1 * (1.0 + GROWTH))
        .map(|pair| pair[0].0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50.0), 50);
        assert_eq!(percentile(&samples, 99.0), 99);
        assert_eq!(percentile(&samples, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        // Ten samples: p99 is the largest, p50 the fifth.
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!((percentile(&ten, 50.0), percentile(&ten, 99.0)), (5, 10));
    }

    #[test]
    fn merged_processes_give_the_percentiles_of_all_their_samples() {
        let part = |appends: Vec<u64>, span_ns, error: Option<&str>| Outcome {
            appends: appends.len() as u64,
            errors: u64::from(error.is_some()),
            first_error: error.map(String::from),
            span_ns: Some(span_ns),
            append_ns: appends,
            ..Outcome::default()
        };
        let mut merged = Outcome::default();
        // Three processes, started up to 0.2 s apart: together they cover 2 s.
        merged.merge(part(vec![4_000_000, 1_000_000], (100, 1_800_000_000), None));
        merged.merge(part(vec![3_000_000], (0, 1_500_000_000), Some("first")));
        merged.merge(part(
            vec![2_000_000],
            (200_000_000, 2_000_000_000),
            Some("second"),
        ));
        assert_eq!(merged.appends, 4);
        assert_eq!(merged.errors, 2);
        assert_eq!(merged.first_error.as_deref(), Some("first"));
        assert_eq!(merged.span_ns, Some((0, 2_000_000_000)));

        let summary = merged.summary();
        assert!((summary.appends_per_s - 2.0).abs() < 1e-9);
        assert_eq!(summary.append.n, 4);
        assert!((summary.append.p50_ms - 2.0).abs() < 1e-9);
        assert!((summary.append.p99_ms - 4.0).abs() < 1e-9);
        assert_eq!(summary.load, Latency::default());
    }

    #[test]
    fn rounds_add_their_walls_but_not_the_time_between_them() {
        let round = |appends: u64, span_ns| Outcome {
            appends,
            span_ns: Some(span_ns),
            append_ns: vec![1_000_000; usize::try_from(appends).unwrap()],
            ..Outcome::default()
        };
        let mut pooled = Outcome::default();
        // Three rounds of 1 s, 0.5 s and 1 s, with the other side's rounds in between.
        pooled.then(round(100, (0, 1_000_000_000)));
        pooled.then(round(50, (3_000_000_000, 3_500_000_000)));
        pooled.then(round(150, (9_000_000_000, 10_000_000_000)));
        assert_eq!(pooled.appends, 300);
        let summary = pooled.summary();
        assert!((summary.wall_s - 2.5).abs() < 1e-9, "{}", summary.wall_s);
        assert!((summary.appends_per_s - 120.0).abs() < 1e-9);
        assert_eq!(summary.append.n, 300);
    }

    #[test]
    fn record_counts_successes_and_keeps_the_first_error() {
        let mut outcome = Outcome::default();
        outcome.append(Duration::from_micros(5), Ok(()));
        outcome.load(Duration::from_micros(9), Ok(()));
        outcome.append(Duration::ZERO, Err(anyhow::anyhow!("one")));
        outcome.load(Duration::ZERO, Err(anyhow::anyhow!("two")));
        assert_eq!((outcome.appends, outcome.loads, outcome.errors), (1, 1, 2));
        assert_eq!((outcome.append_ns[0], outcome.load_ns[0]), (5_000, 9_000));
        assert_eq!(outcome.first_error.as_deref(), Some("one"));
    }

    #[test]
    fn saturation_is_the_last_count_before_growth_stops() {
        assert_eq!(saturation(&[(1, 100.0), (8, 500.0), (64, 520.0)]), Some(8));
        assert_eq!(saturation(&[(1, 100.0), (8, 105.0), (64, 300.0)]), Some(1));
        assert_eq!(saturation(&[(1, 100.0), (8, 500.0), (64, 900.0)]), None);
        assert_eq!(saturation(&[(1, 100.0)]), None);
    }
}
