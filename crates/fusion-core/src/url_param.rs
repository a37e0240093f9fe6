//! Query parameters of storage URLs that belong to Fusion rather than to the driver: a
//! Redis URL's `key_prefix`, a PostgreSQL URL's `schema`. A backend reads its own and
//! hands the driver the URL without them; the facade reads them to tell which data a URL
//! names. One reading for all, so the two never disagree. Also the percent-decoding and the
//! refusal of a query that the facade's and the backends' URL readers share.

/// The query of `url`: what follows its `?`, without a `#fragment`; `None` when it has no
/// `?`. Not decoded.
///
/// ```
/// assert_eq!(fusion_core::url_query("postgres://h/db?sslmode=require#x"), Some("sslmode=require"));
/// assert_eq!(fusion_core::url_query("redis://h/0"), None);
/// ```
pub fn url_query(url: &str) -> Option<&str> {
    let base = url.split_once('#').map_or(url, |(base, _)| base);
    base.split_once('?').map(|(_, query)| query)
}

/// The value of query parameter `name` in `url`, if given (the last one wins, as in most
/// URL readers; a `#fragment` is not part of the query). Not percent-decoded: every
/// character a key prefix or a schema name may hold is allowed in a query as it is.
///
/// For telling which data a URL names, never for connecting: the backends refuse a URL
/// that gives their own parameter more than once ([`split_url_param`] leaves it in).
///
/// ```
/// assert_eq!(fusion_core::url_param("postgres://h/db?sslmode=require&schema=chat", "schema"), Some("chat"));
/// assert_eq!(fusion_core::url_param("redis://h/0", "key_prefix"), None);
/// ```
pub fn url_param<'u>(url: &'u str, name: &str) -> Option<&'u str> {
    url_query(url)?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .next_back()
}

/// `url` without query parameter `name`, and the parameter's value ([`url_param`]). The
/// other parameters and any `#fragment` are kept in order; a query left empty is dropped.
///
/// Only a parameter given exactly once, as `name=value`, is taken out. Given twice (even
/// with the same value) or without a value, it is ambiguous: `url` comes back unchanged
/// with `None`, so that the backend, which refuses its own parameter in the URL it
/// connects with, names the mistake instead of one reading silently winning.
///
/// ```
/// let (url, schema) = fusion_core::split_url_param("postgres://h/db?schema=chat&sslmode=require", "schema");
/// assert_eq!((url.as_str(), schema.as_deref()), ("postgres://h/db?sslmode=require", Some("chat")));
/// let twice = "postgres://h/db?schema=a&schema=b";
/// assert_eq!(fusion_core::split_url_param(twice, "schema"), (twice.to_string(), None));
/// ```
pub fn split_url_param(url: &str, name: &str) -> (String, Option<String>) {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let Some((before_query, query)) = base.split_once('?') else {
        return (url.to_string(), None);
    };
    let is_name = |pair: &&str| pair.split_once('=').map_or(*pair, |(key, _)| key) == name;
    let mut named = query.split('&').filter(is_name);
    let once = match (named.next(), named.next()) {
        (Some(pair), None) => pair.split_once('=').map(|(_, value)| value.to_string()),
        _ => None,
    };
    let Some(value) = once else {
        return (url.to_string(), None);
    };
    let others: Vec<&str> = query
        .split('&')
        .filter(|pair| !is_name(pair))
        .filter(|pair| !pair.is_empty())
        .collect();
    let mut rest = before_query.to_string();
    if !others.is_empty() {
        rest.push('?');
        rest.push_str(&others.join("&"));
    }
    if let Some(fragment) = fragment {
        rest.push('#');
        rest.push_str(fragment);
    }
    (rest, Some(value))
}

/// What is wrong with the query of a URL a backend is about to connect with, after it took
/// its own parameters out ([`split_url_param`]): see [`url_query_problem`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlQueryProblem {
    /// One of the backend's own parameters is still there: given more than once (`times`)
    /// or without a value (`times` is 1), either way ambiguous.
    Ambiguous {
        /// The parameter.
        name: &'static str,
        /// How often the query names it.
        times: usize,
    },
    /// A parameter the driver does not read, as written in the URL.
    Unknown {
        /// The parameter's key (its value is never kept: it may be a misspelt password).
        key: String,
        /// The key as the driver would read it, percent-decoded.
        decoded: String,
    },
}

/// The first problem with the query of `url`, which should hold only parameters the driver
/// reads (`driver_reads`, given each key percent-decoded as an
/// `application/x-www-form-urlencoded` reader decodes it) now that the backend took its own
/// (`ours`) out. Drivers tend to ignore what they do not read, so a misspelt parameter
/// would connect with a default instead: the backends refuse it. Empty pieces (`?&a=1`, a
/// trailing `&`) and a `#fragment` are not parameters.
///
/// ```
/// use fusion_core::{UrlQueryProblem, url_query_problem};
/// let reads = |key: &str| key == "protocol";
/// assert_eq!(url_query_problem("redis://h/0?protocol=resp3&", &["key_prefix"], reads), None);
/// assert!(matches!(
///     url_query_problem("redis://h/0?keyprefix=a", &["key_prefix"], reads),
///     Some(UrlQueryProblem::Unknown { key, .. }) if key == "keyprefix"
/// ));
/// ```
pub fn url_query_problem(
    url: &str,
    ours: &[&'static str],
    driver_reads: impl Fn(&str) -> bool,
) -> Option<UrlQueryProblem> {
    let keys: Vec<&str> = url_query(url)?
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').map_or(pair, |(key, _)| key))
        .collect();
    for &name in ours {
        let times = keys.iter().filter(|key| **key == name).count();
        if times > 0 {
            return Some(UrlQueryProblem::Ambiguous { name, times });
        }
    }
    keys.iter().find_map(|key| {
        let decoded = form_decode(key);
        (!driver_reads(&decoded)).then(|| UrlQueryProblem::Unknown {
            key: key.to_string(),
            decoded,
        })
    })
}

/// `url` as an error may show it: password hidden ([`redact_url`](crate::redact_url)) and
/// query left off, so that no parameter's value (a misspelt `pasword=`) is ever printed.
pub fn url_without_query(url: &str) -> String {
    let redacted = crate::redact_url(url);
    match redacted.split_once('?') {
        Some((head, _)) => head.to_string(),
        None => redacted,
    }
}

/// The error for a query or fragment in `url`, whose scheme `scheme` (as `file://`) takes
/// none: the first parameter is named (never its value, which may be a misspelt password),
/// as the backends name one they do not read.
///
/// ```
/// assert!(fusion_core::refuse_query("memory://", "memory://").is_ok());
/// let err = fusion_core::refuse_query("file:///d?pass=secret", "file://").unwrap_err();
/// assert!(err.to_string().contains("`pass`") && !err.to_string().contains("secret"));
/// ```
pub fn refuse_query(url: &str, scheme: &str) -> crate::Result<()> {
    let shown = url_without_query(url);
    if let Some(UrlQueryProblem::Unknown { key, .. }) = url_query_problem(url, &[], |_| false) {
        return Err(crate::Error::Config(format!(
            "unknown query parameter `{key}` in {shown}: {scheme} takes no options"
        )));
    }
    match url.find(['?', '#']) {
        None => Ok(()),
        Some(at) => Err(crate::Error::Config(format!(
            "{shown}: {scheme} takes no query or fragment, but `{}` begins one (in a directory's name write %3F for `?`, %23 for `#`)",
            &url[at..at + 1]
        ))),
    }
}

/// Decodes `%XX` escapes, as the SQLite driver does for a database path and a `file:` URL
/// reader for its path (`None` when the result is not UTF-8). A `%` not followed by two hex
/// digits is kept as it is.
///
/// ```
/// assert_eq!(fusion_core::percent_decode("my%20dir%zz").as_deref(), Some("my dir%zz"));
/// assert_eq!(fusion_core::percent_decode("%FF"), None);
/// ```
pub fn percent_decode(text: &str) -> Option<String> {
    String::from_utf8(percent_decode_bytes(text)).ok()
}

/// The bytes `text` decodes to ([`percent_decode`]), UTF-8 or not: a Unix path may be any
/// bytes.
pub(crate) fn percent_decode_bytes(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escape = bytes
            .get(index + 1..index + 3)
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match (bytes[index], escape) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    decoded
}

/// A query key decoded as `application/x-www-form-urlencoded`: `+` is a space and `%XX` a
/// byte; an invalid escape stays as it is, invalid UTF-8 becomes U+FFFD.
fn form_decode(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| char::from(*b).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'+', ..) => out.push(b' '),
            (b'%', Some(high), Some(low)) => {
                // Two hex digits make at most 255.
                out.push(u8::try_from(high * 16 + low).unwrap_or(u8::MAX));
                i += 2;
            }
            (byte, ..) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_parameters_are_taken_out_and_the_rest_kept() {
        let cases = [
            ("redis://h/0", "key_prefix", "redis://h/0", None),
            (
                "redis://h/0?key_prefix=app",
                "key_prefix",
                "redis://h/0",
                Some("app"),
            ),
            (
                "redis://h/0?protocol=resp3&key_prefix=a:b/c&x=1",
                "key_prefix",
                "redis://h/0?protocol=resp3&x=1",
                Some("a:b/c"),
            ),
            (
                "rediss://h?key_prefix=p#insecure",
                "key_prefix",
                "rediss://h#insecure",
                Some("p"),
            ),
            (
                "postgres://h/db#schema=x",
                "schema",
                "postgres://h/db#schema=x",
                None,
            ),
        ];
        for (url, name, rest, value) in cases {
            let (got_rest, got_value) = split_url_param(url, name);
            assert_eq!(
                (got_rest.as_str(), got_value.as_deref()),
                (rest, value),
                "{url}"
            );
            assert_eq!(url_param(url, name), value, "{url}");
        }
    }

    #[test]
    fn an_ambiguous_parameter_is_left_in_for_the_backend_to_refuse() {
        for url in [
            "postgres://h/db?schema=a&schema=b",
            "postgres://h/db?schema=a&sslmode=require&schema=a",
            "redis://h/0?key_prefix",
            "redis://h/0?key_prefix=a&key_prefix#insecure",
        ] {
            let name = if url.starts_with("redis") {
                "key_prefix"
            } else {
                "schema"
            };
            assert_eq!(split_url_param(url, name), (url.to_string(), None), "{url}");
        }
        // What names the data still reads one value; connecting is what refuses it.
        assert_eq!(
            url_param("postgres://h/db?schema=a&schema=b", "schema"),
            Some("b")
        );
    }

    #[test]
    fn keys_are_decoded_as_drivers_decode_them() {
        assert_eq!(form_decode("options%5Bx%5D"), "options[x]");
        assert_eq!(form_decode("a+b%2"), "a b%2");
        assert_eq!(form_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn a_query_problem_names_the_parameter_never_its_value() {
        let reads = |key: &str| key == "sslmode" || key == "options[x]";
        let problem = |url| url_query_problem(url, &["schema"], reads);
        assert_eq!(problem("postgres://h/db"), None);
        assert_eq!(
            problem("postgres://h/db?sslmode=require&options%5Bx%5D=1#frag"),
            None
        );
        assert_eq!(
            problem("postgres://h/db?schema=a&schema=b"),
            Some(UrlQueryProblem::Ambiguous {
                name: "schema",
                times: 2
            })
        );
        assert_eq!(
            problem("postgres://h/db?schema"),
            Some(UrlQueryProblem::Ambiguous {
                name: "schema",
                times: 1
            })
        );
        assert_eq!(
            problem("postgres://h/db?sslmode=require&pasword=hunter2"),
            Some(UrlQueryProblem::Unknown {
                key: "pasword".into(),
                decoded: "pasword".into()
            })
        );
        assert_eq!(
            url_without_query("postgres://u:pw@h/db?password=x"),
            "postgres://u:***@h/db"
        );
    }
}
