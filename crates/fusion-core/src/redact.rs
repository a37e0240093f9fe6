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
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut shown = redact_userinfo(head);
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

fn redact_userinfo(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    // Everything before the last `@` counts as credentials, so a password holding an
    // unescaped `/` or `@` is still hidden; over-hiding an `@` in a path is harmless.
    let rest = &url[scheme_end..];
    match rest.rfind('@') {
        Some(at) => {
            let hidden = match rest[..at].split_once(':') {
                Some((user, _password)) => format!("{user}:***"),
                None => "***".to_string(),
            };
            format!("{}{hidden}{}", &url[..scheme_end], &rest[at..])
        }
        None => url.to_string(),
    }
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
}
