//! The CLI's time notations: spans (`30d`, `12h`, `90m`, `45s`, `2w`) for flags such as
//! `--older-than`, and RFC 3339 UTC instants (`2025-01-31T09:05:00Z`) for tables, exports
//! and `--at`.
//!
//! Both forms are the library's ([`fusion::api::time`]), so what the command prints and
//! parses is what an export writes and reads; this adds what only a command line needs.

pub use fusion::api::time::{format_span, parse_rfc3339, parse_span, rfc3339};
use std::time::{Duration, SystemTime};

/// `now + span`, or an error naming `what` when that lies past what the clock can hold.
pub fn after(now: SystemTime, span: Duration, what: &str) -> anyhow::Result<SystemTime> {
    now.checked_add(span)
        .ok_or_else(|| anyhow::anyhow!("{what} {} reaches too far ahead", format_span(span)))
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
            err.starts_with("--in ") && err.ends_with("reaches too far ahead"),
            "{err}"
        );
    }
}
