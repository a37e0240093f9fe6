//! W2: loading a whole history of 1,000 or 10,000 messages on a freshly opened storage.
//!
//! With the floor selected, each repetition also has the raw driver connect and load the
//! same history, alternating which goes first, so both see the same machine state.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde::Serialize;

use crate::backends::Backend;
use crate::raw::Raw;
use crate::stats::{Stats, Timed, median_ms};
use crate::workload;

/// How many fresh instances load each session.
pub const REPEATS: usize = 5;

/// W2's result for one history size.
#[derive(Debug, Clone, Serialize)]
pub struct W2Point {
    /// Messages in the session.
    pub n: usize,
    /// Median time of the `load` call on the fresh instance, ms.
    pub load_median_ms: f64,
    /// Median time of constructing the instance plus the `load`, ms.
    pub open_plus_load_median_ms: f64,
    /// Every load, for the curious.
    pub load: Stats,
}

/// W2 for the library and the floor, each when asked for.
#[derive(Debug, Default)]
pub struct W2Outcome {
    /// The library's points.
    pub library: Option<Vec<W2Point>>,
    /// The floor's points.
    pub floor: Option<Vec<W2Point>>,
}

/// Runs W2 in namespace `w2` for each of `sizes`.
pub async fn run(
    backend: &Backend,
    sizes: &[usize],
    library: bool,
    raw: Option<&Raw>,
) -> Result<W2Outcome> {
    let mut lib_points = Vec::new();
    let mut floor_points = Vec::new();
    for &n in sizes {
        let session = format!("w2-{n}");
        let messages = workload::messages(n);
        // Seeded with one append carrying all n messages, then released.
        if library {
            backend
                .open("w2")
                .await?
                .append(&session, &messages)
                .await?;
        }
        if let Some(raw) = raw {
            raw.seed(&session, &messages).await?;
        }
        let (mut lib, mut floor) = (Samples::default(), Samples::default());
        for repeat in 0..REPEATS {
            for side in [repeat % 2, 1 - repeat % 2] {
                match (side, raw) {
                    (0, _) if library => {
                        lib.push(n, open_and_load(backend, &session).await?)?;
                    }
                    (1, Some(raw)) => floor.push(n, raw.open_and_load(&session).await?)?,
                    _ => {}
                }
            }
        }
        if library {
            lib_points.push(lib.point(n));
        }
        if raw.is_some() {
            floor_points.push(floor.point(n));
        }
    }
    Ok(W2Outcome {
        library: library.then_some(lib_points),
        floor: raw.map(|_| floor_points),
    })
}

/// A new storage instance (new pool / client / handle) loading `session` once.
async fn open_and_load(backend: &Backend, session: &str) -> Result<Timed> {
    let opened = Instant::now();
    let storage = backend.open("w2").await?;
    let loading = Instant::now();
    let history = storage.load(session).await?;
    let done = Instant::now();
    Ok(Timed {
        len: history.len(),
        opened,
        loading,
        done,
    })
}

#[derive(Default)]
struct Samples {
    loads: Vec<Duration>,
    opens_plus_loads: Vec<Duration>,
}

impl Samples {
    fn push(&mut self, n: usize, timed: Timed) -> Result<()> {
        ensure!(
            timed.len == n,
            "W2: loaded {} messages, expected {n}",
            timed.len
        );
        self.loads.push(timed.done - timed.loading);
        self.opens_plus_loads.push(timed.done - timed.opened);
        Ok(())
    }

    fn point(&self, n: usize) -> W2Point {
        W2Point {
            n,
            load_median_ms: median_ms(&self.loads),
            open_plus_load_median_ms: median_ms(&self.opens_plus_loads),
            load: Stats::of(&self.loads),
        }
    }
}
