//! How long to wait before retrying: exponential backoff with full jitter, or the
//! server's `Retry-After` when it gives one.
//!
//! Full jitter (a uniformly random wait between zero and the exponential bound) spreads
//! out many clients that failed at the same moment, which a fixed schedule would make
//! retry in lockstep against a rate-limited server.

use std::time::Duration;

use rand::Rng;
use reqwest::header::HeaderMap;

/// The retry timing of one client.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub retry_after_max: Duration,
}

impl Backoff {
    /// The wait before retry number `retry` (1 for the first retry).
    ///
    /// A server-given `retry_after` wins over the computed backoff, capped at
    /// `retry_after_max` so a hostile or confused server cannot stall the agent for hours.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.retry_after_max);
        }
        let bound = self.bound(retry);
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// `min(max, base * 2^(retry-1))`, without overflow for large retry counts.
    fn bound(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// The wait a server asked for: `retry-after-ms` (sent by OpenAI) or `Retry-After` in
/// seconds. The HTTP-date form of `Retry-After` is ignored (the backoff applies instead):
/// API servers send seconds, and honouring a date needs a trustworthy clock.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    let secs = number("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| number("retry-after"))?;
    // Clamp before converting: `from_secs_f64` panics on values it cannot represent.
    Some(Duration::from_secs_f64(secs.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(1),
        retry_after_max: Duration::from_secs(5),
    };

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(BACKOFF.bound(1), Duration::from_millis(100));
        assert_eq!(BACKOFF.bound(3), Duration::from_millis(400));
        assert_eq!(BACKOFF.bound(5), Duration::from_secs(1));
        assert_eq!(BACKOFF.bound(200), Duration::from_secs(1));
        for retry in 1..10 {
            assert!(BACKOFF.delay(retry, None) <= BACKOFF.bound(retry));
        }
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        assert_eq!(
            BACKOFF.delay(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            BACKOFF.delay(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn retry_after_headers_are_read() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        let mut date = HeaderMap::new();
        date.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&date), None);
        date.insert("retry-after", HeaderValue::from_static("1e308"));
        assert_eq!(retry_after(&date), Some(Duration::from_secs(86_400)));
    }
}
