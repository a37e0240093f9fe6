//! Summary statistics over timed samples, in milliseconds.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Mean, median, min and max of a set of timings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stats {
    /// How many samples.
    pub n: usize,
    /// Arithmetic mean, ms.
    pub mean_ms: f64,
    /// Median (mean of the middle two for an even count), ms.
    pub median_ms: f64,
    /// Fastest sample, ms.
    pub min_ms: f64,
    /// Slowest sample, ms.
    pub max_ms: f64,
}

impl Stats {
    /// The statistics of `samples`; all zeros when there are none.
    pub fn of(samples: &[Duration]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| millis(*d)).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        if n == 0 {
            return Self {
                n,
                mean_ms: 0.0,
                median_ms: 0.0,
                min_ms: 0.0,
                max_ms: 0.0,
            };
        }
        let median_ms = if n % 2 == 1 {
            ms[n / 2]
        } else {
            (ms[n / 2 - 1] + ms[n / 2]) / 2.0
        };
        Self {
            n,
            mean_ms: ms.iter().sum::<f64>() / n as f64,
            median_ms,
            min_ms: ms[0],
            max_ms: ms[n - 1],
        }
    }
}

/// A duration in fractional milliseconds.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median of `samples`, ms.
pub fn median_ms(samples: &[Duration]) -> f64 {
    Stats::of(samples).median_ms
}

/// One repetition's instants: open started, load started, load finished.
pub struct Timed {
    /// Messages loaded.
    pub len: usize,
    /// When construction of the fresh instance began.
    pub opened: Instant,
    /// When the load call began.
    pub loading: Instant,
    /// When the load call returned.
    pub done: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let samples: Vec<Duration> = [4, 1, 3, 2].map(Duration::from_millis).to_vec();
        let stats = Stats::of(&samples);
        assert_eq!(stats.n, 4);
        assert!((stats.median_ms - 2.5).abs() < 1e-9);
        assert!((stats.mean_ms - 2.5).abs() < 1e-9);
        assert!((stats.min_ms - 1.0).abs() < 1e-9);
        assert!((stats.max_ms - 4.0).abs() < 1e-9);
        assert_eq!(Stats::of(&[]).n, 0);
    }
}
