//! Samples of times and how they are printed: median, 95th percentile and maximum, in
//! milliseconds, and a request to the router timed from call to last body byte.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use fusion::storage::ConversationStorage;
use fusion_ui::{UiConfig, router};
use tower::ServiceExt;

/// The address the router believes it is bound to; requests name it in `Host`.
const HOST: &str = "127.0.0.1:8765";

/// How long a case is timed at most, once it has [`MIN_RUNS`]: a search that reads every
/// session takes seconds a run, and its figure is clear after a few.
pub const BUDGET: Duration = Duration::from_secs(10);
/// The fewest runs of a case, however slow.
const MIN_RUNS: usize = 3;

/// Times in milliseconds, in the order taken.
#[derive(Default, Clone)]
pub struct Sample(Vec<f64>);

impl Sample {
    /// Adds one time.
    pub fn push(&mut self, ms: f64) {
        self.0.push(ms);
    }

    /// How many times it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether a case timed `runs` times, or for [`BUDGET`] since `started`, has enough.
    pub fn enough(&self, runs: usize, started: Instant) -> bool {
        self.len() >= runs || (self.len() >= MIN_RUNS && started.elapsed() > BUDGET)
    }

    fn sorted(&self) -> Vec<f64> {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        sorted
    }

    /// The median (the mean of the middle two for an even count).
    pub fn median(&self) -> f64 {
        let sorted = self.sorted();
        let n = sorted.len();
        match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }

    /// The 95th percentile, nearest rank.
    pub fn p95(&self) -> f64 {
        let sorted = self.sorted();
        let rank = (sorted.len() as f64 * 0.95).ceil() as usize;
        sorted
            .get(rank.saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    }

    /// The largest.
    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }

    /// The first taken (a cold run, when the caller took no warm-up).
    pub fn first(&self) -> f64 {
        self.0.first().copied().unwrap_or(f64::NAN)
    }
}

/// `ms` with one decimal, or a dash for a missing figure.
pub fn ms(ms: f64) -> String {
    if ms.is_nan() {
        "—".to_string()
    } else {
        format!("{ms:.1}")
    }
}

/// The app over `storage`, as `fusion ui` serves it on loopback (no token).
pub fn app(storage: Arc<dyn ConversationStorage>) -> Router {
    let address = HOST.parse().expect("a socket address");
    let settings = UiConfig::new(address)
        .settings(address)
        .expect("loopback settings");
    router(storage, &settings)
}

/// One `GET path` through `app`, read to its last byte: its time in ms and its body.
/// Fails unless the answer is 200.
pub async fn get(app: &Router, path: &str) -> Result<(f64, String), String> {
    let request = Request::get(path)
        .header("host", HOST)
        .body(Body::empty())
        .map_err(|err| err.to_string())?;
    let started = Instant::now();
    let response = app
        .clone()
        .oneshot(request)
        .await
        .map_err(|err| err.to_string())?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|err| err.to_string())?;
    let elapsed = started.elapsed().as_secs_f64() * 1e3;
    let body = String::from_utf8_lossy(&bytes).into_owned();
    if status != StatusCode::OK {
        return Err(format!("GET {path}: {status}: {body}"));
    }
    Ok((elapsed, body))
}

/// `GET path` once to warm up, then `runs` times (fewer past [`BUDGET`]): the times and
/// the last body.
pub async fn get_runs(app: &Router, path: &str, runs: usize) -> Result<(Sample, String), String> {
    let (_, mut body) = get(app, path).await?;
    let mut sample = Sample::default();
    let started = Instant::now();
    while !sample.enough(runs, started) {
        let (time, html) = get(app, path).await?;
        sample.push(time);
        body = html;
    }
    Ok((sample, body))
}
