//! The time notations of exports and the `fusion` command, both directions: RFC 3339
//! instants in UTC (`2025-01-31T09:05:00Z`), spans (`30d`, `12h`, `90m`, `45s`, `2w`), and
//! an [`Expiry`] in a few words.
//!
//! [`export`](super::export) writes an expiry's instant with [`rfc3339_exact`] and reads it
//! back with [`parse_rfc3339`]; its markdown and the command's tables use the other forms,
//! so every place that shows a time shows it the same way. They are computed here rather
//! than with a date crate: these few forms, in UTC only, are all any caller needs.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use fusion::api::time;
//!
//! let at = UNIX_EPOCH + Duration::from_millis(951_782_403_250);
//! assert_eq!(time::rfc3339(at), "2000-02-29T00:00:03Z");
//! assert_eq!(time::rfc3339_exact(at), "2000-02-29T00:00:03.25Z");
//! assert_eq!(time::parse_rfc3339("2000-02-29T00:00:03.25Z")?, at);
//! assert_eq!(time::parse_span("90m")?, Duration::from_secs(5_400));
//! assert_eq!(time::format_span(Duration::from_secs(14 * 86_400)), "2w");
//! # Ok::<(), time::TimeError>(())
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::storage::Expiry;

/// The span units, largest first, with their length in seconds.
const UNITS: [(&str, u64); 5] = [
    ("w", 7 * 86_400),
    ("d", 86_400),
    ("h", 3_600),
    ("m", 60),
    ("s", 1),
];

/// The accepted forms of a span, for error messages.
const SPAN_FORMS: &str = "a whole number and a unit: 45s, 90m, 12h, 30d or 2w";

/// The accepted form of an instant, for error messages.
const INSTANT_FORM: &str = "a UTC time like 2026-01-31T09:00:00Z";

/// Why a span or an instant could not be read; each message names the accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// Not a whole number followed by one unit.
    #[error("{0:?} is not a span; expected {forms}", forms = SPAN_FORMS)]
    NotASpan(String),
    /// A span of zero, which no setting has a use for.
    #[error("a span of zero means nothing here; expected {forms}", forms = SPAN_FORMS)]
    ZeroSpan,
    /// A span longer than a [`Duration`] holds.
    #[error("{0:?} is too long a span")]
    SpanTooLong(String),
    /// Not `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
    #[error("{0:?} is not {form}", form = INSTANT_FORM)]
    NotAnInstant(String),
    /// The shape of an instant, but no such date or time (February 30th, 24:00).
    #[error("{0:?} is not a valid date and time")]
    NoSuchInstant(String),
}

/// Parses a span (`30d`, `12h`, `90m`, `45s`, `2w`): a whole number above zero and one unit.
pub fn parse_span(text: &str) -> Result<Duration, TimeError> {
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(digits);
    let Some(&(_, unit_secs)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(TimeError::NotASpan(text.to_string()));
    };
    let Ok(number) = number.parse::<u64>() else {
        return Err(TimeError::NotASpan(text.to_string()));
    };
    if number == 0 {
        return Err(TimeError::ZeroSpan);
    }
    number
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| TimeError::SpanTooLong(text.to_string()))
}

/// `span` in the largest unit it is a whole number of: `30d`, `2w`, `90m`; below a
/// second, `ms` or `µs` (backends keep spans to the microsecond).
pub fn format_span(span: Duration) -> String {
    if span.subsec_nanos() == 0 {
        let secs = span.as_secs();
        if secs == 0 {
            return "0s".into();
        }
        let (name, length) = UNITS
            .iter()
            .find(|(_, length)| secs.is_multiple_of(*length))
            .expect("every whole number of seconds is one of seconds");
        format!("{}{name}", secs / length)
    } else if span.as_micros().is_multiple_of(1000) {
        format!("{}ms", span.as_millis())
    } else {
        format!("{}µs", span.as_micros())
    }
}

/// An expiry in a few words, exact to the microsecond so two that differ never read the
/// same: `at 2026-03-01T09:00:00.5Z`, `after 30d idle`.
pub fn describe_expiry(expiry: &Expiry) -> String {
    match expiry {
        Expiry::At(at) => format!("at {}", rfc3339_exact(*at)),
        Expiry::Idle(span) => format!("after {} idle", format_span(*span)),
        // `Expiry` may grow; its debug form still says what it is.
        other => format!("{other:?}"),
    }
}

/// RFC 3339 in UTC to the second (`2025-01-31T09:05:00Z`), for people to read.
pub fn rfc3339(time: SystemTime) -> String {
    let (secs, _) = split(time);
    format_utc(secs, "")
}

/// RFC 3339 in UTC with as much of a fraction of a second as `time` holds
/// (`2025-01-31T09:05:00.25Z`), so reading it back with [`parse_rfc3339`] gives `time`.
pub fn rfc3339_exact(time: SystemTime) -> String {
    let (secs, nanos) = split(time);
    let fraction = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format_utc(secs, &fraction)
}

/// Parses an RFC 3339 UTC instant: `YYYY-MM-DDTHH:MM:SSZ`, with an optional fraction of a
/// second (`...:00.250Z`). Offsets other than `Z` are refused rather than guessed at.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, TimeError> {
    let bad = || TimeError::NotAnInstant(text.to_string());
    let bytes = text.as_bytes();
    if bytes.len() < 20
        || !text.is_ascii()
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || bytes[10] != b'T'
        || bytes[13] != b':'
        || bytes[16] != b':'
        || bytes[bytes.len() - 1] != b'Z'
    {
        return Err(bad());
    }
    let number = |range: std::ops::Range<usize>| -> Result<i64, TimeError> {
        let part = &text[range];
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let fraction = &text[19..text.len() - 1];
    let nanos = match fraction.strip_prefix('.') {
        None if fraction.is_empty() => 0,
        Some(digits) if (1..=9).contains(&digits.len()) => {
            let padded = format!("{digits:0<9}");
            number(20..20 + digits.len())?;
            padded.parse::<u32>().map_err(|_| bad())?
        }
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(TimeError::NoSuchInstant(text.to_string()));
    }
    let secs = days_from_civil(year, month as u32, day as u32) * 86_400
        + hour * 3_600
        + minute * 60
        + second;
    let whole = Duration::from_secs(secs.unsigned_abs());
    let at = if secs >= 0 {
        UNIX_EPOCH + whole
    } else {
        UNIX_EPOCH - whole
    };
    Ok(at + Duration::from_nanos(u64::from(nanos)))
}

/// Seconds since the epoch (rounded down, before 1970 too) and the nanoseconds past them.
fn split(time: SystemTime) -> (i64, u32) {
    match time.duration_since(UNIX_EPOCH) {
        Ok(elapsed) => (elapsed.as_secs() as i64, elapsed.subsec_nanos()),
        Err(before) => {
            let before = before.duration();
            match before.subsec_nanos() {
                0 => (-(before.as_secs() as i64), 0),
                nanos => (-(before.as_secs() as i64) - 1, 1_000_000_000 - nanos),
            }
        }
    }
}

fn format_utc(secs: i64, fraction: &str) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01: Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_take_a_whole_number_and_one_unit() {
        let cases = [
            ("30d", 30 * 86_400),
            ("12h", 12 * 3_600),
            ("90m", 90 * 60),
            ("45s", 45),
            ("2w", 14 * 86_400),
            ("007s", 7),
        ];
        for (text, secs) in cases {
            assert_eq!(parse_span(text), Ok(Duration::from_secs(secs)), "{text}");
        }
    }

    #[test]
    fn bad_spans_name_the_accepted_forms() {
        for text in [
            "", "30", "d", "1.5h", "-3d", "3 d", "3D", "3ms", "1y", " 3d", "3d ",
        ] {
            let err = parse_span(text).unwrap_err().to_string();
            assert!(err.contains("45s, 90m, 12h, 30d or 2w"), "{text:?}: {err}");
        }
        let err = parse_span("0d").unwrap_err();
        assert_eq!(err, TimeError::ZeroSpan);
        assert!(err.to_string().contains("zero"), "{err}");
        let err = parse_span("99999999999999999w").unwrap_err().to_string();
        assert!(err.contains("too long"), "{err}");
    }

    #[test]
    fn spans_are_written_in_their_largest_whole_unit() {
        let cases = [
            (Duration::from_secs(30 * 86_400), "30d"),
            (Duration::from_secs(14 * 86_400), "2w"),
            (Duration::from_secs(90 * 60), "90m"),
            (Duration::from_secs(7_200), "2h"),
            (Duration::from_secs(61), "61s"),
            (Duration::from_millis(1_500), "1500ms"),
            (Duration::from_micros(7), "7µs"),
            (Duration::ZERO, "0s"),
        ];
        for (span, text) in cases {
            assert_eq!(format_span(span), text);
            if span.subsec_nanos() == 0 && !span.is_zero() {
                assert_eq!(parse_span(text), Ok(span), "round trip");
            }
        }
    }

    #[test]
    fn an_expiry_reads_as_its_exact_instant_or_its_span() {
        let at = UNIX_EPOCH + Duration::from_secs(86_400) + Duration::from_millis(5);
        assert_eq!(
            describe_expiry(&Expiry::At(at)),
            "at 1970-01-02T00:00:00.005Z"
        );
        let idle = Expiry::Idle(Duration::from_secs(30 * 86_400));
        assert_eq!(describe_expiry(&idle), "after 30d idle");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723);
        assert_eq!(rfc3339(leap_day), "2000-02-29T01:02:03Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1969-12-31T23:59:59Z"
        );
        let fine = leap_day + Duration::from_micros(250_001);
        assert_eq!(rfc3339(fine), "2000-02-29T01:02:03Z");
        assert_eq!(rfc3339_exact(fine), "2000-02-29T01:02:03.250001Z");
        assert_eq!(rfc3339_exact(leap_day), "2000-02-29T01:02:03Z");
        let early = UNIX_EPOCH - Duration::from_millis(500);
        assert_eq!(rfc3339_exact(early), "1969-12-31T23:59:59.5Z");
        assert_eq!(rfc3339(early), "1969-12-31T23:59:59Z", "floored");
    }

    #[test]
    fn instants_read_back_what_they_write() {
        let samples = [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723),
            UNIX_EPOCH + Duration::from_micros(1_767_225_599_999_999),
            UNIX_EPOCH + Duration::from_nanos(4_102_444_800_000_000_001),
            UNIX_EPOCH - Duration::from_millis(500),
        ];
        for time in samples {
            let text = rfc3339_exact(time);
            assert_eq!(parse_rfc3339(&text), Ok(time), "{text}");
        }
        assert_eq!(
            parse_rfc3339("2026-01-31T09:00:00Z"),
            Ok(UNIX_EPOCH + Duration::from_secs(1_769_850_000))
        );
    }

    #[test]
    fn malformed_or_impossible_instants_are_refused() {
        for text in [
            "2026-01-31",
            "2026-01-31 09:00:00Z",
            "2026-01-31T09:00:00",
            "2026-01-31T09:00:00+01:00",
            "2026-1-31T09:00:00Z",
            "2026-01-31T09:00:00.Z",
            "2026-01-31T09:00:00.1234567890Z",
            "2026-01-31T09:00:0xZ",
            "+026-01-31T09:00:00Z",
        ] {
            let err = parse_rfc3339(text).unwrap_err();
            assert_eq!(err, TimeError::NotAnInstant(text.to_string()));
            assert!(err.to_string().contains("2026-01-31T09:00:00Z"), "{err}");
        }
        for text in [
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
        ] {
            let err = parse_rfc3339(text).unwrap_err().to_string();
            assert!(err.contains("not a valid date"), "{text}: {err}");
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_ok(), "a leap day");
    }
}
