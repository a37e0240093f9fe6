//! Plain-text formatting the pages share: instants as UTC dates for people, and long text
//! cut to a head with the rest behind "show all".

use std::time::SystemTime;

/// `time` as `2025-01-31 23:59:59 UTC` (whole seconds; before 1970 too): the library's
/// RFC 3339 ([`fusion::api::time::rfc3339`]), spelled for people.
pub(crate) fn utc(time: SystemTime) -> String {
    let rfc3339 = fusion::api::time::rfc3339(time);
    format!(
        "{} UTC",
        rfc3339.trim_end_matches('Z').replacen('T', " ", 1)
    )
}

/// An optional instant as [`utc`], or a dash when the backend keeps none.
pub(crate) fn utc_or_dash(time: Option<SystemTime>) -> String {
    time.map_or_else(|| "—".to_string(), utc)
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
    use std::time::{Duration, UNIX_EPOCH};

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
    fn long_text_is_cut_on_a_character_boundary() {
        let short = Cut::new("héllo", 5);
        assert_eq!((short.head.as_str(), short.full.is_none()), ("héllo", true));
        let long = Cut::new("héllo wörld", 4);
        assert_eq!(long.head, "héll");
        assert_eq!(long.full.as_deref(), Some("héllo wörld"));
        assert_eq!(long.chars, 11);
    }
}
