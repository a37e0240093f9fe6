//! Hiding secrets in connection URLs before they reach an error message or a log line.

/// Returns `url` with any password replaced by `***`: the password of
/// `scheme://user:password@host` (a lone `scheme://token@host` userinfo is hidden whole) and
/// the values of `password=` / `pass=` query parameters.
///
/// ```
/// assert_eq!(fusion_core::redact_url("redis://app:s3cret@db:6379/0"), "redis://app:***@db:6379/0");
/// assert_eq!(fusion_core::redact_url("sqlite://x.db?password=p"), "sqlite://x.db?password=***");
/// ```
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut shown = redact_userinfo(head);
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _))
                    if key.eq_ignore_ascii_case("pass") || key.eq_ignore_ascii_case("password") =>
                {
                    format!("{key}=***")
                }
                _ => pair.to_string(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    shown
}

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
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
            assert!(!redact_url(url).contains("s3cret"), "{url}");
        }
    }
}
