//! [`redact_text`]: hiding the secrets free text may quote (what a panic said): a URL's,
//! as [`redact_url`] hides them, a credential's value, and words that look like API keys.

use super::{redact_url, scheme_start};

/// Names whose value, after `=` or `:`, [`redact_text`] hides: credentials in a
/// connection string (`password=...`), a header (`authorization: ...`) or a debug print
/// (`api_key: "..."`).
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

/// Words after which [`redact_text`] hides the next word, a credential (`Bearer sk-...`).
const SCHEMES: &[&str] = &["bearer", "basic"];

/// Returns `text` with every secret it may quote hidden as `***`: a URL's password and
/// query values (as [`redact_url`] hides them), the value after a credential's name
/// (`password=`, `token: `, `"api_key": "..."`, `secret = ...`), the word after `Bearer`
/// or `Basic`, and words that look like API keys (`sk-...`).
///
/// For text no error type masked where it was made, such as what a panic said. It reads
/// words, so it may hide more than the secret (a closing quote after it), never less of
/// the forms above.
///
/// ```
/// use fusion_core::redact_text;
/// assert_eq!(redact_text("host=db password = s3cret"), "host=db password = ***");
/// assert_eq!(redact_text("sent Bearer s3cret to https://u:p@h/v1"), "sent Bearer *** to https://u:***@h/v1");
/// ```
pub fn redact_text(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    let mut expecting = Expecting::Anything;
    for piece in text.split_inclusive(char::is_whitespace) {
        let word = piece.trim_end_matches(char::is_whitespace);
        let space = &piece[word.len()..];
        if word.is_empty() {
            shown.push_str(space);
            continue;
        }
        let separated = match expecting {
            Expecting::Separator => word.strip_prefix(['=', ':']),
            _ => None,
        };
        expecting = match (expecting, separated) {
            (Expecting::Secret, _) => {
                shown.push_str("***");
                Expecting::after_hidden(word)
            }
            (_, Some("")) => {
                shown.push_str(word);
                Expecting::Secret
            }
            (_, Some(_)) => {
                shown.push_str(&word[..1]);
                shown.push_str("***");
                Expecting::Anything
            }
            (_, None) => {
                let (word_shown, expecting) = redact_word(word);
                shown.push_str(&word_shown);
                match expecting {
                    Expecting::Anything => Expecting::after_hidden(word),
                    named => named,
                }
            }
        };
        shown.push_str(space);
    }
    shown
}

/// What [`redact_text`] takes the next word to be.
#[derive(Clone, Copy)]
enum Expecting {
    /// A word to read for secrets of its own.
    Anything,
    /// A credential's value: hidden whole.
    Secret,
    /// The `=` or `:` after a credential's name (`password = ...`), perhaps with the
    /// value joined to it.
    Separator,
}

impl Expecting {
    /// What follows `word` when it holds no credential's name: a credential after an
    /// authorization scheme (`Bearer`), else anything.
    fn after_hidden(word: &str) -> Self {
        let bare = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        if SCHEMES.contains(&bare.to_ascii_lowercase().as_str()) {
            Expecting::Secret
        } else {
            Expecting::Anything
        }
    }
}

/// One word without whitespace with its secrets hidden, and what the next word is: the
/// value of a credential whose name and separator end this one (`api_key:`), the
/// separator after a name ending it (`password`), or anything.
fn redact_word(word: &str) -> (String, Expecting) {
    if let Some(at) = word.find("://") {
        // What ends before the scheme may be a character of any width (`「redis://h」`).
        let start = scheme_start(word, at);
        let end = word[at..]
            .find(['"', '<', '>'])
            .map_or(word.len(), |end| at + end);
        // What comes before the URL is read as a word of its own: a credential there
        // (`password=s3cret;dsn=redis://h`) hides the rest of the word, the URL with it.
        let (head, before) = redact_word(&word[..start]);
        match before {
            Expecting::Secret => return (format!("{head}***"), Expecting::Anything),
            _ if head != word[..start] => return (head, Expecting::Anything),
            _ => {}
        }
        let url = redact_url(&word[start..end]);
        let (rest, expecting) = redact_word(&word[end..]);
        return (format!("{head}{url}{rest}"), expecting);
    }
    let lower = word.to_ascii_lowercase();
    // The first credential in the word, whichever name it has: `token=a,password=b` hides
    // from `token`'s value on, where the first name of the list found hid only `b`.
    // Every place a name occurs counts: `token_count=3,token=s3cret` names it twice.
    let first = SECRET_NAMES
        .iter()
        .flat_map(|name| {
            lower.match_indices(name).filter_map(|(at, _)| {
                let value = word[at + name.len()..].trim_start_matches(['"', '\'']);
                value.strip_prefix(['=', ':']).map(|value| (at, value))
            })
        })
        .min_by_key(|(at, _)| *at);
    if let Some((_, value)) = first {
        return if value.is_empty() {
            (word.to_string(), Expecting::Secret)
        } else {
            // An authorization scheme as the value (`authorization:Bearer TOKEN`): the
            // credential is the next word.
            (
                format!("{}***", &word[..word.len() - value.len()]),
                Expecting::after_hidden(value),
            )
        };
    }
    let bare = lower.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-');
    if SECRET_NAMES.iter().any(|name| bare.ends_with(name)) {
        return (word.to_string(), Expecting::Separator);
    }
    let shown = match lower.find("sk-") {
        Some(at) if at == 0 || !lower.as_bytes()[at - 1].is_ascii_alphanumeric() => {
            format!("{}sk-***", &word[..at])
        }
        _ => word.to_string(),
    };
    (shown, Expecting::Anything)
}

#[cfg(test)]
mod tests {
    use super::redact_text;

    #[test]
    fn text_hides_secrets_in_urls_credentials_and_keys() {
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
            assert_eq!(redact_text(said), shown, "{said}");
        }
        let plain = "index out of bounds: the len is 3 but the index is 7\n  at task-sk";
        assert_eq!(redact_text(plain), plain);
    }

    #[test]
    fn text_hides_a_value_set_apart_from_its_name() {
        // A connection string or a config print with spaces around the `=`, and a name
        // met twice in one word: each value was shown as written.
        let cases = [
            (
                "host=db password = s3cret user=a",
                "host=db password = *** user=a",
            ),
            ("password =s3cret", "password =***"),
            ("\"secret\" : \"s3cret\"", "\"secret\" : ***"),
            ("token_count=3,token=s3cret", "token_count=3,token=***"),
        ];
        for (said, shown) in cases {
            assert_eq!(redact_text(said), shown, "{said}");
        }
        // A name followed by anything but a separator is only a word.
        assert_eq!(
            redact_text("the token was refused"),
            "the token was refused"
        );
    }

    #[test]
    fn text_with_a_wide_character_before_a_url_is_read() {
        // The scheme was taken to start one byte after the character before it, which
        // panicked inside a character of two or more bytes: a panic's message quoting a
        // URL in `「」` or after Chinese text panicked again while it was being shown.
        let cases = [
            ("「redis://:s3cret@h/0」", "「redis://:***@h/0」"),
            ("连接失败redis://u:s3cret@h", "连接失败redis://u:***@h"),
            ("éhttps://h/v1?key=s3cret", "éhttps://h/v1?key=***"),
            ("🦀://:s3cret@h", "🦀://:***@h"),
        ];
        for (said, shown) in cases {
            assert_eq!(redact_text(said), shown, "{said}");
        }
    }

    #[test]
    fn text_hides_every_credential_of_a_word() {
        // Two names in one word, the later one first in the list of names; and a
        // credential before a URL in the same word: each showed the first value.
        let cases = [
            ("token=t0k,password=s3cret", "token=***"),
            ("secret=s3cret;pwd=p", "secret=***"),
            ("password=s3cret;dsn=redis://h/0", "password=***"),
            ("password=redis://h/0", "password=***"),
            ("url=redis://u:p@h/0", "url=redis://u:***@h/0"),
            // The scheme joined to the name: the credential after it was shown.
            ("authorization:Bearer s3cret", "authorization:*** ***"),
            (
                "\"Authorization\":\"Basic s3cret\"",
                "\"Authorization\":*** ***",
            ),
        ];
        for (said, shown) in cases {
            assert_eq!(redact_text(said), shown, "{said}");
        }
    }
}
