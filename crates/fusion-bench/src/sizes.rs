//! How big each workload is: the sizes docs/benchmarks.md gives, or smaller ones for a
//! smoke run (`--quick`).

use std::time::Duration;

/// How big each workload is; docs/benchmarks.md's sizes unless `--quick`.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// W1 grows the history until it holds at least this many messages.
    pub w1_max: usize,
    /// History sizes W1 reports windows at.
    pub w1_targets: Vec<usize>,
    /// W1 stops growing once its loop has run this long.
    pub w1_cap: Duration,
    /// W2's session sizes.
    pub w2_sizes: Vec<usize>,
    /// W3's session count.
    pub w3_sessions: usize,
    /// W4's messages per writer.
    pub w4_per_writer: usize,
    /// Agent overhead: (history size, timed turns).
    pub agent_plan: Vec<(usize, usize)>,
    /// W5's session count.
    pub w5_sessions: usize,
    /// The turns each W5 measurement (one side, one configuration) runs, between all its
    /// tasks...
    pub w5_turns: usize,
    /// ... unless it reaches this time first.
    pub w5_run: Duration,
    /// How many times each W5 configuration measures both sides, alternating which goes
    /// first; the rounds' counts and samples are pooled.
    pub w5_rounds: usize,
    /// The session counts W6 grows through, measuring at each.
    pub w6_scales: Vec<usize>,
    /// How many owners W6's sessions are spread over.
    pub w6_owners: usize,
}

impl Sizes {
    /// docs/benchmarks.md's sizes, or the smaller smoke-run ones when `quick`.
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                w1_max: 1000,
                w1_targets: vec![100, 1000],
                w1_cap: Duration::from_secs(300),
                w2_sizes: vec![1000],
                w3_sessions: 100,
                w4_per_writer: 50,
                agent_plan: vec![(10, 20), (1000, 10)],
                w5_sessions: 1000,
                w5_turns: 2000,
                w5_run: Duration::from_millis(250),
                w5_rounds: 1,
                w6_scales: vec![1_000, 10_000],
                w6_owners: 100,
            }
        } else {
            Self {
                w1_max: 10_000,
                w1_targets: vec![100, 1000, 10_000],
                w1_cap: Duration::from_secs(300),
                w2_sizes: vec![1000, 10_000],
                w3_sessions: 1000,
                w4_per_writer: 250,
                agent_plan: vec![(10, 100), (1000, 50), (10_000, 10)],
                w5_sessions: 1000,
                w5_turns: 10_000,
                w5_run: Duration::from_millis(1500),
                w5_rounds: 3,
                w6_scales: vec![10_000, 100_000, 1_000_000],
                w6_owners: 10_000,
            }
        }
    }
}
