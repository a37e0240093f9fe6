//! The floor's report: the raw driver's W1 and W2 next to the library's, and the ratio
//! library/floor, which is how much the library adds to the unavoidable cost. The raw driver
//! itself is `crate::raw`.

use serde::Serialize;

use crate::raw::{Probe, Raw};
use crate::stats::Stats;
use crate::w1::W1Report;
use crate::w2::W2Point;

/// The floor of one W1 window, next to the library's.
#[derive(Debug, Clone, Serialize)]
pub struct FloorW1 {
    /// The W1 target the window belongs to.
    pub target: usize,
    /// The raw driver's per-turn times over the same turns.
    pub floor: Stats,
    /// The library's per-turn times over the window, when W1 ran.
    pub library: Option<Stats>,
    /// library mean / floor mean.
    pub ratio_mean: Option<f64>,
    /// library median / floor median.
    pub ratio_median: Option<f64>,
}

/// The floor of one W2 size, next to the library's.
#[derive(Debug, Clone, Serialize)]
pub struct FloorW2 {
    /// Messages loaded.
    pub n: usize,
    /// Median raw read + parse, ms.
    pub load_median_ms: f64,
    /// Median raw connect + read + parse, ms.
    pub open_plus_load_median_ms: f64,
    /// library load median / floor load median.
    pub ratio_load: Option<f64>,
    /// library open+load median / floor open+load median.
    pub ratio_open_plus_load: Option<f64>,
}

/// The floor's result.
#[derive(Debug, Clone, Serialize)]
pub struct FloorReport {
    /// What the floor does.
    pub driver: &'static str,
    /// W1 windows.
    pub w1: Vec<FloorW1>,
    /// W2 sizes.
    pub w2: Vec<FloorW2>,
    /// Single calls timed on their own, for what a storage operation is made of: the
    /// cheapest call to the server or worker thread (SQLite `SELECT 1`, Redis `PING`),
    /// which no storage operation can undercut, and for SQLite the same writes and loads
    /// as the floor on the calling thread through `rusqlite`, the path the library takes
    /// for a database file. Empty for memory and fs.
    pub probes: Vec<Probe>,
}

/// Sets the floor's W1 and W2 next to the library's, when those ran.
pub fn compare(
    raw: &Raw,
    probes: Vec<Probe>,
    floor_w1: Option<&W1Report>,
    library_w1: Option<&W1Report>,
    floor_w2: Option<&[W2Point]>,
    library_w2: Option<&[W2Point]>,
) -> FloorReport {
    let w1 = floor_w1
        .map(|f| &f.windows[..])
        .unwrap_or_default()
        .iter()
        .map(|window| {
            let library = library_w1
                .and_then(|l| l.windows.iter().find(|w| w.target == window.target))
                .map(|w| w.stats);
            FloorW1 {
                target: window.target,
                floor: window.stats,
                library,
                ratio_mean: library.map(|l| l.mean_ms / window.stats.mean_ms),
                ratio_median: library.map(|l| l.median_ms / window.stats.median_ms),
            }
        })
        .collect();
    let w2 = floor_w2
        .unwrap_or_default()
        .iter()
        .map(|floor| {
            let library = library_w2.and_then(|points| points.iter().find(|p| p.n == floor.n));
            FloorW2 {
                n: floor.n,
                load_median_ms: floor.load_median_ms,
                open_plus_load_median_ms: floor.open_plus_load_median_ms,
                ratio_load: library.map(|l| l.load_median_ms / floor.load_median_ms),
                ratio_open_plus_load: library
                    .map(|l| l.open_plus_load_median_ms / floor.open_plus_load_median_ms),
            }
        })
        .collect();
    FloorReport {
        driver: raw.describe(),
        w1,
        w2,
        probes,
    }
}
