//! Query parameters of storage URLs that belong to Fusion rather than to the driver: a
//! Redis URL's `key_prefix`, a PostgreSQL URL's `schema`. A backend reads its own and
//! hands the driver the URL without them; the facade reads them to tell which data a URL
//! names. One reading for all, so the two never disagree.

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
    let base = url.split_once('#').map_or(url, |(base, _)| base);
    let (_, query) = base.split_once('?')?;
    query
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
}
