//! Hiding secrets in connection URLs before they reach an error message or a log line.

/// Returns `url` with any password replaced by `***`: the password of
/// `scheme://user:password@host` (a lone `scheme://token@host` userinfo is hidden whole),
/// and the value of every query parameter not known to hold no secret
/// (Fusion's and the bundled drivers' settings, such as `key_prefix` or `sslmode`):
/// `password=` and `pass=`, and also a misspelt `pasword=`, whose value is as secret.
/// A bare piece of query that is not a known key is hidden whole.
///
/// ```
/// use fusion_core::redact_url;
/// assert_eq!(redact_url("redis://app:s3cret@db:6379/0"), "redis://app:***@db:6379/0");
/// assert_eq!(redact_url("sqlite://x.db?password=p"), "sqlite://x.db?password=***");
/// assert_eq!(redact_url("postgres://h/db?sslmode=require&pasword=p"), "postgres://h/db?sslmode=require&pasword=***");
/// ```
pub fn redact_url(url: &str) -> String {
    let (shown_userinfo, rest) = redact_userinfo(url);
    let (head, query) = match rest.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (rest, None),
    };
    let mut shown = shown_userinfo;
    shown.push_str(head);
    if let Some(query) = query {
        let shown_key = |key: &str| SHOWN_QUERY_KEYS.contains(&key);
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if !shown_key(key) => format!("{key}=***"),
                None if !pair.is_empty() && !shown_key(pair) => "***".to_string(),
                _ => pair.to_string(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    shown
}

/// Query parameters whose values [`redact_url`] shows: names the bundled backends and
/// their drivers read that never hold a secret (Fusion's `key_prefix`, `publish_changes`
/// and `schema`; Redis's `protocol`, `db` and `user`; SQLite's `mode`, `cache`,
/// `immutable` and `vfs`; PostgreSQL's server, database and TLS mode; an OpenAI-compatible
/// endpoint's `api-version`). Anything else is hidden: `options` (it may set anything),
/// and also the TLS file paths, which an error does not need.
const SHOWN_QUERY_KEYS: &[&str] = &[
    "key_prefix",
    "publish_changes",
    "schema",
    "protocol",
    "db",
    "user",
    "mode",
    "cache",
    "immutable",
    "vfs",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "sslmode",
    "application_name",
    "api-version",
];

/// The scheme and the userinfo of `url` with its password hidden, and the rest of `url`
/// (from the `@` on, or after the scheme when there is no userinfo).
fn redact_userinfo(url: &str) -> (String, &str) {
    let head_end = url.find('?').unwrap_or(url.len());
    let scheme_end = url[..head_end].find("://").map_or(0, |i| i + 3);
    // Everything before the last `@` counts as credentials, so a password holding an
    // unescaped `/` or `@` is still hidden; over-hiding an `@` in a path is harmless.
    // A password holding an unescaped `?` ends the head early and leaves no `@` in it
    // (`redis://u:pa?ss@host`): then the last `@` after the `?` ends the credentials, so
    // no start of a password is shown, at the cost of hiding the host of a URL whose
    // query holds an `@` (`postgres://h/db?user=a@b` shows as `postgres://***@b`).
    let at = url[scheme_end..head_end]
        .rfind('@')
        .map(|at| scheme_end + at)
        .or_else(|| url[head_end..].rfind('@').map(|at| head_end + at));
    let Some(at) = at else {
        return (url[..scheme_end].to_string(), &url[scheme_end..]);
    };
    let hidden = match url[scheme_end..at].split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    (format!("{}{hidden}", &url[..scheme_end]), &url[at..])
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn hides_every_form_of_password() {
        let cases = [
            (
                "redis://user:s3cret@host:6379/2",
                "redis://user:***@host:6379/2",
            ),
            ("redis://:s3cret@host", "redis://:***@host"),
            ("rediss://s3cret@host/0", "rediss://***@host/0"),
            ("redis://host:6379", "redis://host:6379"),
            (
                "postgres://u:s3cret@h/db?sslmode=require&password=s3cret",
                "postgres://u:***@h/db?sslmode=require&password=***",
            ),
            ("redis://u:p@ss:s3cret@host", "redis://u:***@host"),
            ("redis://u:pa/s3cret@host", "redis://u:***@host"),
            (
                "redis://h/0?key_prefix=app&pasword=s3cret&protocol=resp3",
                "redis://h/0?key_prefix=app&pasword=***&protocol=resp3",
            ),
            ("sqlite://x.db?mode=ro&s3cret", "sqlite://x.db?mode=ro&***"),
            (
                "postgres://h/db?options=-c%20pw%3Ds3cret&schema=chat",
                "postgres://h/db?options=***&schema=chat",
            ),
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
            assert!(!redact_url(url).contains("s3cret"), "{url}");
        }
    }

    #[test]
    fn a_password_holding_a_question_mark_is_hidden_whole() {
        // Found by fuzzing: the `?` was read as the start of the query, so everything of
        // the password before it was shown (`redis://u:s3cr?***`).
        let cases = [
            ("redis://u:s3cr?et@host/0", "redis://u:***@host/0"),
            ("rediss://s3cr?et@host", "rediss://***@host"),
            (
                "redis://u:s3/cr?e=t@h/0?db=1&pw=x",
                "redis://u:***@h/0?db=1&pw=***",
            ),
            // An `@` in a query value with no userinfo before it hides more than needed.
            ("postgres://h/db?user=a@b", "postgres://***@b"),
            // With one, the userinfo is read as before.
            (
                "postgres://u:p@h/db?user=a@b",
                "postgres://u:***@h/db?user=a@b",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
            assert!(!redact_url(url).contains("s3"), "{url}");
        }
    }
}
