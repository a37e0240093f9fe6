//! The CLI's time notations: spans (`30d`, `12h`, `90m`, `45s`, `2w`) for flags such as
//! `--older-than`, and RFC 3339 UTC instants (`2025-01-31T09:05:00Z`) for tables, exports
//! and `--at`.
//!
//! Both forms are the library's ([`fusion::api::time`]), so what the command prints and
//! parses is what an export writes and reads; this adds what only a command line needs.

pub use fusion::api::time::{format_span, parse_rfc3339, parse_span, rfc3339};
use fusion::storage::{Expiry, MAX_IDLE};
use std::time::{Duration, SystemTime};

/// `now + span` as an expiry instant, or an error naming `what` (the flag) when that lies
/// past the year 9999, the latest an expiry holds. Checked here rather than left to
/// [`Expiry::validate`], whose message gives the instant in microseconds, saturated for a
/// span like `99999999999d` to a number that says nothing of the flag.
pub fn after(now: SystemTime, span: Duration, what: &str) -> anyhow::Result<SystemTime> {
    now.checked_add(span)
        .filter(|at| Expiry::At(*at).validate().is_ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{what} {} reaches past the year 9999, the latest an expiry can be",
                format_span(span)
            )
        })
}

/// `at` as an expiry instant, or an error naming `what` (the flag) when it lies past the
/// last second of 9999 (a fraction of a second past it is, too), checked here for the
/// reason [`after`] gives.
pub fn at(at: SystemTime, what: &str) -> anyhow::Result<Expiry> {
    let expiry = Expiry::At(at);
    if expiry.validate().is_err() {
        anyhow::bail!("{what} lies past 9999-12-31T23:59:59Z, the latest an expiry can be");
    }
    Ok(expiry)
}

/// `span` as an idle expiry, or an error naming `what` (the flag) when it is longer than
/// [`MAX_IDLE`] (the shortest span the flags parse, a second, is never too short).
pub fn idle(span: Duration, what: &str) -> anyhow::Result<Expiry> {
    if span > MAX_IDLE {
        anyhow::bail!(
            "{what} {} is longer than the longest idle expiry, {}",
            format_span(span),
            format_span(MAX_IDLE)
        );
    }
    Ok(Expiry::Idle(span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_past_the_clock_names_the_flag() {
        let now = SystemTime::now();
        assert_eq!(
            after(now, Duration::from_secs(60), "--in").unwrap(),
            now + Duration::from_secs(60)
        );
        let err = after(now, Duration::MAX, "--in").unwrap_err().to_string();
        assert!(
            err.starts_with("--in ") && err.contains("reaches past the year 9999"),
            "{err}"
        );
    }
}
