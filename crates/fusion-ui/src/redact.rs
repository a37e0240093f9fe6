//! Text that did not go through an error type's own masking (what a panic said) made safe
//! to show on a page: secrets in URLs, API keys and credentials hidden.
//!
//! Errors of the storage and of the model's client hide their secrets where they are
//! made (`fusion_core::redact_url`, the OpenAI client's key masking). A panic's message is
//! whatever its code formatted, a connection string or a request's headers included, so
//! the page hides the same things in it before showing it.

/// Names whose value, after `=` or `:`, is hidden: credentials in a connection string
/// (`password=...`), a header (`authorization: ...`) or a debug print (`api_key: "..."`).
const SECRET_NAMES: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "api-key",
    "apikey",
    "authorization",
];

/// Words after which the next word is a credential (`Bearer sk-...`).
const SCHEMES: &[&str] = &["bearer", "basic"];

/// `text` with every secret it shows hidden as `***`: a URL's password and query values
/// (as [`fusion_core::redact_url`] hides them), the value after a credential's name, the
/// word after `Bearer` or `Basic`, and words that look like API keys (`sk-...`).
pub(crate) fn redact(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    let mut hide_next = false;
    for piece in text.split_inclusive(char::is_whitespace) {
        let word = piece.trim_end_matches(char::is_whitespace);
        let space = &piece[word.len()..];
        if word.is_empty() {
            shown.push_str(space);
            continue;
        }
        let names_a_secret = if hide_next {
            shown.push_str("***");
            false
        } else {
            let (word, names_a_secret) = redact_word(word);
            shown.push_str(&word);
            names_a_secret
        };
        hide_next = names_a_secret || SCHEMES.contains(&bare(word).to_ascii_lowercase().as_str());
        shown.push_str(space);
    }
    shown
}

/// One word without whitespace, its secrets hidden, and whether it ends in a credential's
/// name whose value is the next word (`api_key: "sk-..."`).
fn redact_word(word: &str) -> (String, bool) {
    if let Some(at) = word.find("://") {
        // The scheme is the run of letters, digits, `+`, `-` and `.` before `://`.
        let start = word[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |before| before + 1);
        let end = word[at..]
            .find(['"', '<', '>'])
            .map_or(word.len(), |end| at + end);
        let url = fusion_core::redact_url(&word[start..end]);
        let (rest, names_a_secret) = redact_word(&word[end..]);
        return (format!("{}{url}{rest}", &word[..start]), names_a_secret);
    }
    let lower = word.to_ascii_lowercase();
    for name in SECRET_NAMES {
        if let Some(at) = lower.find(name) {
            let rest = &word[at + name.len()..];
            let value = rest.trim_start_matches(['"', '\'']);
            if let Some(value) = value.strip_prefix(['=', ':']) {
                let head = &word[..word.len() - value.len()];
                return if value.is_empty() {
                    (word.to_string(), true)
                } else {
                    (format!("{head}***"), false)
                };
            }
        }
    }
    let shown = match lower.find("sk-") {
        Some(at) if at == 0 || !lower.as_bytes()[at - 1].is_ascii_alphanumeric() => {
            format!("{}sk-***", &word[..at])
        }
        _ => word.to_string(),
    };
    (shown, false)
}

/// `word` without the punctuation around it (`"Bearer` is `Bearer`).
fn bare(word: &str) -> &str {
    word.trim_matches(|c: char| !c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn secrets_in_urls_credentials_and_keys_are_hidden() {
        let cases = [
            (
                "called `Result::unwrap()` on an `Err` value: Connect(\"postgres://app:s3cret@db/x\")",
                "called `Result::unwrap()` on an `Err` value: Connect(\"postgres://app:***@db/x\")",
            ),
            (
                "GET https://h/v1?api_key=s3cret failed",
                "GET https://h/v1?api_key=*** failed",
            ),
            (
                "headers: {\"authorization\": \"Bearer s3cret\"}",
                "headers: {\"authorization\": *** ***",
            ),
            (
                "host=db password=s3cret user=a",
                "host=db password=*** user=a",
            ),
            (
                "Config { api_key: \"sk-s3cret\" }",
                "Config { api_key: *** }",
            ),
            (
                "the key sk-proj-s3cret was refused",
                "the key sk-*** was refused",
            ),
            ("token:s3cret", "token:***"),
        ];
        for (said, shown) in cases {
            assert_eq!(redact(said), shown, "{said}");
            assert!(!redact(said).contains("s3cret"), "{said}");
        }
        let plain = "index out of bounds: the len is 3 but the index is 7\n  at task-sk";
        assert_eq!(redact(plain), plain);
    }
}
