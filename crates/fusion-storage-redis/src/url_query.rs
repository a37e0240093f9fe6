//! The query parameters a Redis URL may carry, checked before connecting: Fusion's own
//! (`key_prefix`, `publish_changes`), taken out and applied to the options, and the few
//! the redis crate reads.
//!
//! The redis crate ignores every parameter it does not read, so a misspelt
//! `keyprefix=mine` would connect with the default prefix, into another application's
//! keys, and `key_prefix=a&key_prefix=b` would pick one silently. Both are refused here,
//! as the SQLite backend's driver refuses an unknown parameter.

use fusion_core::{
    Error, Result, UrlQueryProblem, parse_flag, split_url_param, url_query_problem,
    url_without_query,
};

use crate::config::{DEFAULT_KEY_PREFIX, RedisOptions};

/// The URL parameter that picks the key prefix ([`RedisOptions::key_prefix`]).
const KEY_PREFIX_PARAM: &str = "key_prefix";
/// The URL parameter that turns on [`RedisOptions::publish_changes`].
const PUBLISH_CHANGES_PARAM: &str = "publish_changes";
/// Fusion's parameters, which the driver never sees.
const FUSION_PARAMS: [&str; 2] = [KEY_PREFIX_PARAM, PUBLISH_CHANGES_PARAM];
/// What redis 1.8 reads from the query of the URLs this backend accepts (`redis://`,
/// `rediss://`): `url_to_tcp_connection_info` (redis 1.8.1, `src/connection.rs`, line 651)
/// passes the query to `parse_protocol` (line 566), which reads `protocol` alone.
const DRIVER_PARAMS: [&str; 1] = ["protocol"];
/// What the redis crate reads only from unix-socket URLs (`url_to_unix_connection_info`,
/// lines 699 to 707), which this backend does not accept: on a TCP URL they would be
/// ignored, so they are refused with a pointer to where a TCP URL puts them.
const UNIX_ONLY_PARAMS: [&str; 3] = ["db", "user", "pass"];

/// A Redis URL without Fusion's parameters, and their values.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Split {
    /// The URL the driver gets: only parameters it reads are left.
    pub(crate) driver_url: String,
    /// The URL's `key_prefix`, if given.
    key_prefix: Option<String>,
    /// The URL's `publish_changes`, if given.
    publish_changes: Option<bool>,
}

/// Takes Fusion's parameters out of `url` and refuses what is left unless the driver
/// reads it: an unknown parameter, or one of Fusion's given twice or without a value
/// ([`split_url_param`] leaves those in), is an [`Error::Config`] naming it.
pub(crate) fn split(url: &str) -> Result<Split> {
    check_credentials(url)?;
    check_fragment(url)?;
    let (rest, key_prefix) = split_url_param(url, KEY_PREFIX_PARAM);
    let (driver_url, publish) = split_url_param(&rest, PUBLISH_CHANGES_PARAM);
    check_driver_query(&driver_url, url)?;
    let publish_changes = match publish {
        Some(text) => Some(parse_flag(
            &format!("{PUBLISH_CHANGES_PARAM} in a Redis URL"),
            &text,
        )?),
        None => None,
    };
    Ok(Split {
        driver_url,
        key_prefix,
        publish_changes,
    })
}

/// [`split`], then the URL's parameters applied to `options`. A parameter that
/// contradicts an option set to something other than its default is refused rather
/// than one of the two silently winning.
pub(crate) fn apply(url: &str, mut options: RedisOptions) -> Result<(String, RedisOptions)> {
    let split = split(url)?;
    if let Some(prefix) = split.key_prefix {
        if options.key_prefix != DEFAULT_KEY_PREFIX && options.key_prefix != prefix {
            return Err(bad(
                url,
                format!(
                    "`{KEY_PREFIX_PARAM}={prefix}` contradicts RedisOptions::key_prefix({:?}); \
                     give the prefix once",
                    options.key_prefix
                ),
            ));
        }
        options.key_prefix = prefix;
    }
    if let Some(publish) = split.publish_changes {
        if options.publish_changes && !publish {
            return Err(bad(
                url,
                format!(
                    "`{PUBLISH_CHANGES_PARAM}` off contradicts RedisOptions::publish_changes(true)"
                ),
            ));
        }
        options.publish_changes = publish;
    }
    Ok((split.driver_url, options))
}

/// Refuses any parameter of `driver_url` the driver does not read; `url` is the URL as
/// given, for the message.
fn check_driver_query(driver_url: &str, url: &str) -> Result<()> {
    // The driver matches the decoded key, so `protoc%6Fl` is as good as `protocol`.
    let reads = |key: &str| DRIVER_PARAMS.contains(&key);
    let what = match url_query_problem(driver_url, &FUSION_PARAMS, reads) {
        None => return Ok(()),
        Some(UrlQueryProblem::Ambiguous { name, times: 1 }) => {
            format!("query parameter `{name}` has no value; use {name}=VALUE")
        }
        Some(UrlQueryProblem::Ambiguous { name, times }) => {
            format!("query parameter `{name}` is given {times} times; give it once")
        }
        Some(UrlQueryProblem::Unknown { key, decoded }) => {
            let hint = if UNIX_ONLY_PARAMS.contains(&decoded.as_str()) {
                " (the driver reads it only from unix-socket URLs; in \
                 redis://[user[:password]@]host[:port][/db] the database is the path and the \
                 credentials come before the host)"
            } else {
                ""
            };
            format!(
                "unknown query parameter `{key}`{hint}; accepted: `{}` (Fusion's) and the \
                 driver's `{}`",
                FUSION_PARAMS.join("`, `"),
                DRIVER_PARAMS.join("`, `")
            )
        }
    };
    Err(bad(url, what))
}

/// Refuses `url` when its user name or password holds a `/`, `?` or `#` written as it
/// is. The authority ends at the first of those, so the rest of the password would be
/// read as the path, the query or the fragment: refused as a database number, as an
/// unknown query parameter named in the error (a piece of the password shown), or as a
/// URL the driver cannot parse, none saying what is wrong. An `@` after that character
/// tells: no path or fragment holds one, and a query only in a value (`key_prefix=me@x`),
/// its piece holding an `=` before it, with the hosts a list of `host[:port]`. An `@`
/// before the cut tells nothing: a user name may hold one (`me@corp:pa?ss@h`), so the
/// hosts are what follows the last `@` before the cut.
fn check_credentials(url: &str) -> Result<()> {
    let Some((_, rest)) = url.split_once("://") else {
        return Ok(());
    };
    let Some(cut) = rest.find(['/', '?', '#']) else {
        return Ok(());
    };
    let (authority, after) = rest.split_at(cut);
    let Some(at) = after.find('@') else {
        return Ok(());
    };
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    let before_at = &after[..at];
    let in_a_value = before_at.contains('?')
        && !before_at.contains('#')
        && (before_at.rsplit(['?', '&']).next()).is_some_and(|piece| piece.contains('='))
        && hosts.split(',').all(is_host_port);
    if in_a_value {
        return Ok(());
    }
    let held = after.as_bytes()[0] as char;
    let code = match held {
        '/' => "%2F",
        '?' => "%3F",
        _ => "%23",
    };
    Err(bad(
        url,
        format!("the user name or password holds a `{held}`; percent-encode it as {code}"),
    ))
}

/// Refuses a fragment other than `#insecure` (what the driver reads, from a `rediss://`
/// URL) in `url`: a `redis://` URL's the driver ignores, so a `#` written in a query value
/// (`key_prefix=a#b`) cut the value there unseen, and the storage used prefix `a`.
fn check_fragment(url: &str) -> Result<()> {
    match url.split_once('#') {
        Some((_, fragment)) if !matches!(fragment, "" | "insecure") => Err(bad(
            url,
            "a `#` begins the URL's fragment, which a Redis URL takes only as `#insecure` \
             (rediss://): remove the `#` and what follows it (written in a query value, it \
             cuts the value there: no value Fusion or the driver reads holds a `#`)"
                .to_string(),
        )),
        _ => Ok(()),
    }
}

/// Whether `node` reads as `host[:port]` (a host in brackets for IPv6): what is left of
/// an authority cut inside a password is `[user]:` and its start, no host and port.
fn is_host_port(node: &str) -> bool {
    let after_host = node.rfind(']').map_or(0, |close| close + 1);
    let (host, port) = match node[after_host..].find(':') {
        Some(colon) => node.split_at(after_host + colon),
        None => (node, ":0"),
    };
    let port = &port[1..];
    !host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
}

/// [`Error::Config`] for `url`, shown without its query and password: a parameter's value
/// is never printed, so a misspelt `pass=` cannot leak one.
fn bad(url: &str, what: String) -> Error {
    let kind = if crate::connect::names_a_cluster(url) {
        "Redis Cluster URL"
    } else {
        "Redis URL"
    };
    Error::Config(format!("invalid {kind} {}: {what}", url_without_query(url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by a review: a `?` or `#` written as it is in a password was refused as an
    /// unknown query parameter, the rest of the password (`ter2@h1:7000`) named in the
    /// error, or with "Redis URL did not parse - InvalidClientConfig"; a `/` in that of
    /// a one-server URL as a bad database number. Each says what to do now, showing no
    /// piece of the password; an `@` in a query's value is no credential.
    #[test]
    fn credentials_holding_a_slash_a_question_mark_or_a_hash_are_refused_by_name() {
        for (url, held) in [
            (
                "redis+cluster://:hun?ter2@h1:7000,h2:7001",
                "`?`; percent-encode it as %3F",
            ),
            (
                "redis+cluster://u:hun#ter2@h1:7000",
                "`#`; percent-encode it as %23",
            ),
            (
                "redis+cluster://:hun/ter2@h1:7000",
                "`/`; percent-encode it as %2F",
            ),
            (
                "redis://:hun?ter2@h:6379/0?protocol=3",
                "`?`; percent-encode it as %3F",
            ),
            ("rediss://u:hun#ter2@h", "`#`; percent-encode it as %23"),
            ("redis://:hun/ter2@h", "`/`; percent-encode it as %2F"),
            ("redis://u:123?ter2@h", "`?`; percent-encode it as %3F"),
            ("redis://:hun?a=ter2@h", "`?`; percent-encode it as %3F"),
            // Found by a later review: a user name holding an `@` (`me@corp`) let the
            // password's `?` through, its rest (`ter2@h`) named as an unknown parameter,
            // and a `#` or `/` reach the driver.
            (
                "redis://me@corp:hun?ter2@h:6379",
                "`?`; percent-encode it as %3F",
            ),
            (
                "redis+cluster://me@corp:hun?ter2@h1:7000,h2:7001",
                "`?`; percent-encode it as %3F",
            ),
            (
                "redis://me@corp:1234?ter2@h",
                "`?`; percent-encode it as %3F",
            ),
            (
                "redis://me@corp:hun#ter2@h",
                "`#`; percent-encode it as %23",
            ),
            (
                "redis://me@corp:hun/ter2@[::1]",
                "`/`; percent-encode it as %2F",
            ),
            (
                "redis://:hun?ter2@[::1]:6379",
                "`?`; percent-encode it as %3F",
            ),
        ] {
            let text = refusal(url);
            assert!(text.contains(held), "{url}: {text}");
            assert!(!text.contains("ter2"), "{url}: {text}");
        }
        for url in [
            "redis://:hun%3Fter2@h:6379",
            "redis+cluster://:hun%23ter2@h1:7000,h2",
            "redis://h:6379/0?key_prefix=me@x",
            "redis+cluster://u:p@h1:7000,[::1]:7001?protocol=3&key_prefix=a@b",
            "redis://me@corp:pass@h:6379/0?key_prefix=a@b",
            "redis://me@corp:hun%3Fter2@[::1]:6379?protocol=3",
            "redis+cluster://me@corp:p@h1:7000,[::1]:7001/0?key_prefix=x@y",
        ] {
            apply(url, RedisOptions::new()).unwrap();
        }
    }

    /// Found by a review: a `#` in a query value (`key_prefix=a#b`) began the URL's
    /// fragment, which the driver ignores on a `redis://` URL: the storage used prefix
    /// `a`, another application's keys maybe. A fragment other than `#insecure` is
    /// refused, without showing the query.
    #[test]
    fn a_fragment_other_than_insecure_is_refused() {
        for url in [
            "redis://h:6379/0?key_prefix=a#b",
            "redis+cluster://h1:7000,h2?key_prefix=a#b&publish_changes=true",
            "redis://u:p@h#frag",
            "rediss://h?key_prefix=p#insecur",
        ] {
            let text = refusal(url);
            assert!(
                text.contains("a `#` begins the URL's fragment"),
                "{url}: {text}"
            );
            // Found by a second review: a fragment the driver ignored, which connected
            // before, is refused saying what to do.
            assert!(
                text.contains("remove the `#` and what follows it"),
                "{url}: {text}"
            );
            assert!(!text.contains("key_prefix"), "{url}: {text}");
        }
        for url in [
            "rediss://h?key_prefix=p#insecure",
            "redis://h#",
            "redis://h#insecure",
        ] {
            apply(url, RedisOptions::new()).unwrap();
        }
    }

    fn refusal(url: &str) -> String {
        let err = apply(url, RedisOptions::new()).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{url}: {err}");
        err.to_string()
    }

    #[test]
    fn unknown_and_misspelt_parameters_are_refused_by_name() {
        for (url, name) in [
            ("redis://127.0.0.1:6379/0?keyprefix=mine", "keyprefix"),
            ("redis://h/0?key_prefix=a&protocl=resp3", "protocl"),
            ("redis://h/0?key-prefix=a", "key-prefix"),
            ("rediss://h?publish=true#insecure", "publish"),
            ("redis+cluster://h1:7000,h2:7001?keyprefix=x", "keyprefix"),
            ("redis://h?db=2", "db"),
            ("redis://h?bare", "bare"),
        ] {
            let text = refusal(url);
            assert!(
                text.contains(&format!("unknown query parameter `{name}`")),
                "{text}"
            );
            assert!(
                text.contains("`key_prefix`, `publish_changes` (Fusion's)"),
                "{text}"
            );
            assert!(text.contains("`protocol`"), "{text}");
        }
        assert!(refusal("redis://h?user=u").contains("unix-socket"));
        // `connect` reads the scheme in any case (7be630a), so the refusal does too.
        for scheme in ["redis+cluster", "REDISS+Cluster"] {
            let cluster = refusal(&format!("{scheme}://h1:7000,h2:7001?keyprefix=x"));
            assert!(
                cluster.contains(&format!("invalid Redis Cluster URL {scheme}://h1")),
                "{cluster}"
            );
        }
    }

    #[test]
    fn fusions_parameters_given_twice_or_bare_are_refused() {
        for (url, text) in [
            (
                "redis://h/0?key_prefix=a&key_prefix=b",
                "`key_prefix` is given 2 times",
            ),
            (
                "redis://h/0?key_prefix=a&key_prefix=a",
                "`key_prefix` is given 2 times",
            ),
            (
                "redis+cluster://h1,h2?key_prefix=a&protocol=3&key_prefix=b",
                "`key_prefix` is given 2 times",
            ),
            (
                "redis://h?publish_changes=1&publish_changes=1",
                "`publish_changes` is given 2 times",
            ),
            ("redis://h?key_prefix", "`key_prefix` has no value"),
        ] {
            let shown = refusal(url);
            assert!(shown.contains(text), "{url}: {shown}");
        }
    }

    #[test]
    fn accepted_parameters_reach_the_options_or_the_driver() {
        let (url, options) = apply(
            "redis://h/0?protocol=resp3&key_prefix=a",
            RedisOptions::new(),
        )
        .unwrap();
        assert_eq!(url, "redis://h/0?protocol=resp3");
        assert_eq!(options, RedisOptions::new().key_prefix("a"));
        let (url, options) =
            apply("rediss://h?key_prefix=p#insecure", RedisOptions::new()).unwrap();
        assert_eq!(url, "rediss://h#insecure");
        assert_eq!(options.key_prefix, "p");
        let (url, options) = apply(
            "redis+cluster://h1:7000,h2?publish_changes=true&protoc%6Fl=3&",
            RedisOptions::new(),
        )
        .unwrap();
        assert_eq!(url, "redis+cluster://h1:7000,h2?protoc%6Fl=3");
        assert!(options.publish_changes);
        let plain = apply("redis://:pw@h:6379/2", RedisOptions::new().key_prefix("x")).unwrap();
        assert_eq!(
            plain,
            (
                "redis://:pw@h:6379/2".into(),
                RedisOptions::new().key_prefix("x")
            )
        );
    }

    #[test]
    fn a_parameter_that_contradicts_an_option_is_refused() {
        let options = RedisOptions::new().key_prefix("other");
        let err = apply("redis://h?key_prefix=a", options.clone()).unwrap_err();
        assert!(
            err.to_string().contains("RedisOptions::key_prefix"),
            "{err}"
        );
        // Saying the same thing twice is no contradiction.
        apply("redis://h?key_prefix=other", options).unwrap();
        let publishing = RedisOptions::new().publish_changes(true);
        assert!(apply("redis://h?publish_changes=0", publishing).is_err());
        assert!(apply("redis://h?publish_changes=maybe", RedisOptions::new()).is_err());
    }

    #[test]
    fn refusals_never_show_a_password() {
        for url in [
            "redis://:hunter2@h/0?pass=hunter2",
            "redis://app:hunter2@h/0?passwd=hunter2&key_prefix=a",
            "rediss+cluster://:hunter2@h1,h2?key_prefix=a&key_prefix=b",
        ] {
            let shown = refusal(url);
            assert!(shown.contains(":***@h"), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}
