//! The text search of a listing ([`SessionQuery::search`](super::SessionQuery::search)):
//! which search texts are valid, which sessions one matches, and the same match as a SQL
//! `LIKE` pattern for the backends that run it in their query.
//!
//! A session matches when its id or its title contains the text, comparing ASCII letters
//! without regard to case and every other character exactly: `"ops"` finds `"Ops review"`
//! and `"DEPLOY-7"`, but `"é"` does not find `"É"`. ASCII folding rather than Unicode case
//! folding because it is what every backend can run natively and identically: SQLite's
//! `LIKE` folds exactly the ASCII letters (without the ICU extension, which the bundled
//! SQLite does not build), and so does PostgreSQL's `ILIKE` under collation `"C"`, whatever
//! the server's locale; Unicode folding would need a function registered in SQLite and
//! would follow the locale (or ICU build) of each PostgreSQL server, so one query would
//! list different sessions on different backends. Session ids are ASCII anyway.

use super::SessionQuery;
use crate::{Error, Result, SessionInfo};

/// The character that escapes `%`, `_` and itself in [`like_pattern`].
const LIKE_ESCAPE: char = '\\';

/// The longest search text, in characters.
const MAX_SEARCH_CHARS: usize = SessionQuery::MAX_SEARCH_CHARS;

/// Checks a search text: some character other than white space, at most
/// [`MAX_SEARCH_CHARS`] characters, no control characters; else [`Error::InvalidQuery`].
pub(crate) fn validate(text: &str) -> Result<()> {
    let length = text.chars().count();
    let reason = if text.trim().is_empty() {
        "it is empty or only white space".to_string()
    } else if length > MAX_SEARCH_CHARS {
        format!("it is {length} characters long; the limit is {MAX_SEARCH_CHARS}")
    } else if text.chars().any(char::is_control) {
        "it contains a control character".to_string()
    } else {
        return Ok(());
    };
    let shown: String = text.chars().take(40).collect();
    Err(Error::InvalidQuery(format!(
        "invalid search text {shown:?}: {reason}"
    )))
}

/// Whether `info`'s id or title contains `text`, ASCII letters in either case.
pub(crate) fn matches(text: &str, info: &SessionInfo) -> bool {
    contains_ignoring_ascii_case(&info.id, text)
        || info
            .meta
            .title
            .as_deref()
            .is_some_and(|title| contains_ignoring_ascii_case(title, text))
}

/// Whether `haystack` contains `needle`, ASCII letters in either case. Compared byte by
/// byte: a byte of a multi-byte UTF-8 character only ever equals itself, and a valid
/// `needle` starts with a character's first byte, so no match starts inside a character.
fn contains_ignoring_ascii_case(haystack: &str, needle: &str) -> bool {
    let needle = needle.as_bytes();
    needle.is_empty()
        || haystack
            .as_bytes()
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

/// `text` as a SQL `LIKE` pattern matching any value that contains it: `%text%`, with
/// `%`, `_` and [`LIKE_ESCAPE`] in `text` escaped so they match themselves.
pub(crate) fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | LIKE_ESCAPE) {
            pattern.push(LIKE_ESCAPE);
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    fn titled(id: &str, title: Option<&str>) -> SessionInfo {
        let mut info = SessionInfo::new(id, 1);
        info.meta.title = title.map(str::to_string);
        info
    }

    #[test]
    fn the_id_or_the_title_matches_ascii_letters_in_either_case() {
        let info = titled("Deploy-7", Some("Ops review: été 50% done"));
        for text in ["ploy-7", "DEPLOY", "ops REVIEW", "été", "50% d", ": "] {
            assert!(matches(text, &info), "{text}");
        }
        for text in ["ÉTÉ", "deploy-8", "50%%", "review  "] {
            assert!(!matches(text, &info), "{text}");
        }
        assert!(!matches("x", &titled("a", None)));
    }

    #[test]
    fn like_patterns_escape_their_wildcards_and_the_escape() {
        assert_eq!(like_pattern("ops"), "%ops%");
        assert_eq!(like_pattern(r"50%_a\b"), r"%50\%\_a\\b%");
    }

    #[test]
    fn blank_long_and_control_texts_are_refused() {
        let long = "x".repeat(MAX_SEARCH_CHARS + 1);
        for bad in ["", "   ", "a\nb", "tab\there", long.as_str()] {
            let err = validate(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidQuery(_)), "{bad:?}: {err:?}");
            assert!(err.to_string().contains("invalid search text"), "{err}");
        }
        validate(&"é".repeat(MAX_SEARCH_CHARS)).unwrap();
        validate(" padded ").unwrap();
    }
}
