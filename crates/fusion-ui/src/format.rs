//! Plain-text formatting the pages and exports share: instants as UTC dates (for people,
//! and exact RFC 3339 for files), and long text cut to a head with the rest behind
//! "show all".

use std::time::{SystemTime, UNIX_EPOCH};

/// `time` as `2025-01-31 23:59:59 UTC` (whole seconds; before 1970 too).
pub(crate) fn utc(time: SystemTime) -> String {
    let seconds = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        // Floor, so half a second before the epoch is 23:59:59 of the day before.
        Err(before) => {
            let back = before.duration();
            let whole = back.as_secs() + u64::from(back.subsec_nanos() > 0);
            -i64::try_from(whole).unwrap_or(i64::MAX)
        }
    };
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// `time` as RFC 3339 in UTC with the fraction of a second it holds and no more
/// (`2000-02-29T01:02:03.25Z`), exact so an export reads back to the same instant.
pub(crate) fn rfc3339_exact(time: SystemTime) -> String {
    // Whole seconds floored (before 1970 too) and the nanoseconds after them.
    let (seconds, nanos) = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => (
            i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            after.subsec_nanos(),
        ),
        Err(before) => {
            let back = before.duration();
            let whole = -i64::try_from(back.as_secs()).unwrap_or(i64::MAX);
            match back.subsec_nanos() {
                0 => (whole, 0),
                nanos => (whole - 1, 1_000_000_000 - nanos),
            }
        }
    };
    let fraction = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// An optional instant as [`utc`], or a dash when the backend keeps none.
pub(crate) fn utc_or_dash(time: Option<SystemTime>) -> String {
    time.map_or_else(|| "—".to_string(), utc)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), so no date crate is needed for one line of output.
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

/// Text shown in full when short, else as its first characters with the whole text
/// behind a "show all" toggle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cut {
    /// What is shown at once.
    pub head: String,
    /// The whole text, when `head` is only its start.
    pub full: Option<String>,
    /// How many characters the whole text has.
    pub chars: usize,
}

impl Cut {
    /// `text` cut after `max` characters (on a character boundary).
    pub(crate) fn new(text: &str, max: usize) -> Self {
        match text.char_indices().nth(max) {
            Some((at, _)) => Cut {
                head: text[..at].to_string(),
                full: Some(text.to_string()),
                chars: text.chars().count(),
            },
            None => Cut {
                head: text.to_string(),
                full: None,
                chars: text.chars().count(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn instants_print_as_utc_dates() {
        let at = |secs: u64| utc(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(at(1_735_689_599), "2024-12-31 23:59:59 UTC");
        assert_eq!(
            utc(UNIX_EPOCH - Duration::from_secs(1)),
            "1969-12-31 23:59:59 UTC"
        );
        assert_eq!(utc_or_dash(None), "—");
    }

    #[test]
    fn exact_instants_keep_their_fraction() {
        let fine = UNIX_EPOCH + Duration::from_nanos(951_786_123_250_001_000);
        assert_eq!(rfc3339_exact(fine), "2000-02-29T01:02:03.250001Z");
        let early = UNIX_EPOCH - Duration::from_millis(500);
        assert_eq!(rfc3339_exact(early), "1969-12-31T23:59:59.5Z");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let short = Cut::new("héllo", 5);
        assert_eq!((short.head.as_str(), short.full.is_none()), ("héllo", true));
        let long = Cut::new("héllo wörld", 4);
        assert_eq!(long.head, "héll");
        assert_eq!(long.full.as_deref(), Some("héllo wörld"));
        assert_eq!(long.chars, 11);
    }
}
