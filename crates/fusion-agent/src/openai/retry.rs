//! How long to wait before retrying: exponential backoff with full jitter, or the
//! server's `Retry-After` when it gives one.
//!
//! Full jitter (a uniformly random wait between zero and the exponential bound) spreads
//! out many clients that failed at the same moment, which a fixed schedule would make
//! retry in lockstep against a rate-limited server.

use std::time::{Duration, SystemTime};

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

/// The wait a server asked for: `retry-after-ms` (sent by OpenAI), or `Retry-After` as
/// delta-seconds or as an HTTP date (IMF-fixdate, or the obsolete RFC 850 and asctime
/// forms), which some proxies and gateways send. A date in the past means "retry now".
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

/// [`retry_after`] with the current time given, so a date can be read against a fixed
/// clock in tests.
fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| Some(headers.get(name)?.to_str().ok()?.trim());
    let number = |text: &str| {
        text.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    if let Some(ms) = text("retry-after-ms").and_then(number) {
        return Some(seconds(ms / 1000.0));
    }
    let value = text("retry-after")?;
    if let Some(secs) = number(value) {
        return Some(seconds(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A finite, non-negative number of seconds as a `Duration`, at most a day: clamped
/// before converting because `from_secs_f64` panics on values it cannot represent.
fn seconds(secs: f64) -> Duration {
    Duration::from_secs_f64(secs.min(86_400.0))
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
        let mut huge = HeaderMap::new();
        huge.insert("retry-after", HeaderValue::from_static("1e308"));
        assert_eq!(retry_after(&huge), Some(Duration::from_secs(86_400)));
        for bad in ["soon", "-3", "NaN", ""] {
            huge.insert("retry-after", HeaderValue::from_static(bad));
            assert_eq!(retry_after(&huge), None, "{bad:?}");
        }
    }

    /// 2015-10-21 07:28:00 UTC, the instant the dates below are read against.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480)
    }

    fn date_header(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn retry_after_dates_in_every_http_form_are_read() {
        let in_90s = Some(Duration::from_secs(90));
        for value in [
            "Wed, 21 Oct 2015 07:29:30 GMT",     // IMF-fixdate
            "Wednesday, 21-Oct-15 07:29:30 GMT", // obsolete RFC 850
            "Wed Oct 21 07:29:30 2015",          // obsolete asctime
            " Wed, 21 Oct 2015 07:29:30 GMT ",   // surrounding whitespace
        ] {
            assert_eq!(
                retry_after_at(&date_header(value), now()),
                in_90s,
                "{value}"
            );
        }
        // A second fraction of "now" still past the date's whole second means no wait.
        assert_eq!(
            retry_after_at(
                &date_header("Wed, 21 Oct 2015 07:28:00 GMT"),
                now() + Duration::from_millis(400)
            ),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_retry_after_date_in_the_past_means_now() {
        let past = date_header("Tue, 20 Oct 2015 07:28:00 GMT");
        assert_eq!(retry_after_at(&past, now()), Some(Duration::ZERO));
        assert_eq!(BACKOFF.delay(1, Some(Duration::ZERO)), Duration::ZERO);
    }

    #[test]
    fn a_far_retry_after_date_is_capped() {
        let next_year = date_header("Fri, 21 Oct 2016 07:28:00 GMT");
        let wait = retry_after_at(&next_year, now()).unwrap();
        assert_eq!(wait, Duration::from_secs(366 * 86_400));
        assert_eq!(BACKOFF.delay(1, Some(wait)), BACKOFF.retry_after_max);
    }

    #[test]
    fn retry_after_ms_wins_over_a_date() {
        let mut headers = date_header("Wed, 21 Oct 2015 07:29:30 GMT");
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(
            retry_after_at(&headers, now()),
            Some(Duration::from_millis(250))
        );
    }
}
