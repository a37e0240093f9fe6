//! Hiding secrets before they reach an error message, a log line or a page: in a
//! connection URL ([`redact_url`]), and in free text that may quote one, a header or a
//! credential ([`redact_text`], for what a panic said).

// A path of its own: xtask compiles this file in with `#[path]`, and a module declared in
// such a file is looked for beside it, not in a folder named after it.
#[path = "redact/text.rs"]
mod text;

#[allow(
    unused_imports,
    reason = "xtask compiles this file in for redact_url alone"
)]
pub use text::redact_text;

/// Returns `url` with any password replaced by `***`: the password of
/// `scheme://user:password@host` (a lone `scheme://token@host` userinfo is hidden whole),
/// and the value of every query parameter not known to hold no secret
/// (Fusion's and the bundled drivers' settings, such as `key_prefix` or `sslmode`):
/// `password=` and `pass=`, and also a misspelt `pasword=`, whose value is as secret.
/// A bare piece of query that is not a known key is hidden whole; a fragment's pieces
/// (`#pw=x`) are hidden as the query's, Redis's `#insecure` shown. A `sqlite:` or
/// `file:` URL names a file and holds no credentials: its path is shown whole, an `@` in
/// it too, up to another URL it holds (`file:/x,https://u:p@h`, two URLs in one
/// argument), which is shown as that URL is; its query and fragment are hidden from the
/// piece holding a `://` on (`sqlite:a.db?mode=ro&x=https://u:p@h&y` shows as
/// `sqlite:a.db?mode=ro&***`).
///
/// ```
/// use fusion_core::redact_url;
/// assert_eq!(redact_url("sqlite://./node_modules/@app/x.db"), "sqlite://./node_modules/@app/x.db");
/// assert_eq!(redact_url("redis://app:s3cret@db:6379/0"), "redis://app:***@db:6379/0");
/// assert_eq!(redact_url("sqlite://x.db?password=p"), "sqlite://x.db?password=***");
/// assert_eq!(redact_url("postgres://h/db?sslmode=require&pasword=p"), "postgres://h/db?sslmode=require&pasword=***");
/// ```
pub fn redact_url(url: &str) -> String {
    if let Some(start) = url_in_path(url).or_else(|| url_after_credentials(url)) {
        return redact_url(&url[..start]) + &redact_url(&url[start..]);
    }
    if let Some(hidden) = url_in_query(url) {
        return redact_url(&url[..hidden]) + "***";
    }
    let (shown_userinfo, rest) = redact_userinfo(url);
    // A fragment ends the query: `?db=1#pw=x` is the query `db=1` and the fragment
    // `pw=x`, whose pieces are hidden as the query's are: the only one a bundled driver
    // reads is Redis's `#insecure`, so anything else was put there by hand.
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (rest, None),
    };
    let (head, query) = match rest.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (rest, None),
    };
    let mut shown = shown_userinfo;
    shown.push_str(head);
    if let Some(query) = query {
        shown.push('?');
        shown.push_str(&redact_pairs(query));
    }
    if let Some(fragment) = fragment {
        shown.push('#');
        shown.push_str(&redact_pairs(fragment));
    }
    shown
}

/// The `&`-separated pieces of a query or a fragment with the value of every key not in
/// [`SHOWN_QUERY_KEYS`] hidden, and a bare piece that is not such a key hidden whole.
fn redact_pairs(pairs: &str) -> String {
    let shown_key = |key: &str| SHOWN_QUERY_KEYS.contains(&key);
    let pairs: Vec<String> = pairs
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if !shown_key(key) => format!("{key}=***"),
            None if !pair.is_empty() && !shown_key(pair) => "***".to_string(),
            _ => pair.to_string(),
        })
        .collect();
    pairs.join("&")
}

/// Query parameters whose values [`redact_url`] shows: names the bundled backends and
/// their drivers read that never hold a secret (Fusion's `key_prefix`, `publish_changes`
/// and `schema`; Redis's `protocol`, `db` and `user`; SQLite's `mode`, `cache`,
/// `immutable` and `vfs`; PostgreSQL's server, database and TLS mode; an OpenAI-compatible
/// endpoint's `api-version`; and the fragment Redis's driver reads, `#insecure`, which
/// turns off TLS verification). Anything else is hidden: `options` (it may set anything),
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
    "insecure",
];

/// Schemes whose URLs name a file, never a user: an `@` in one is its path's
/// (`sqlite://./node_modules/@app/x.db`), read so by the SQLite backend (everything up to
/// the `?`) and by `file://` directories, so the path is shown whole to say which file
/// failed. Their query is hidden as any is.
const PATH_SCHEMES: &[&str] = &["sqlite:", "file:"];

/// Whether `url` names a file ([`PATH_SCHEMES`]), whose path is shown whole.
fn names_a_file(url: &str) -> bool {
    PATH_SCHEMES.iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
    })
}

/// Where another URL starts in `url`, a URL naming a file whose path holds a `://` past
/// its own scheme's (`file:/x,https://u:p@h`: two URLs in one argument, as a command line
/// may write them): at the scheme before that `://` (letters, digits, `+`, `-`, `.`).
/// The path is shown whole up to there only: what follows may be a URL with a password.
///
/// A URL written without `://` (`redis:u:p@h`, `//u:p@h`) has none to find: after a `,`,
/// a `;` or whitespace in the path (which joins two URLs in one argument), a piece
/// holding an `@` starts another URL too, whose credentials end at that `@`, when what
/// comes before its first `@` reads as credentials: it holds a `:` (`redis:u:p`) or starts
/// with `//` (`//token`). An `@` with no such separator before it is the path's
/// (`file:///srv/a@b/x`), and so is one after a space in a folder's name that reads as no
/// credentials (`sqlite:///Users/J Doe/node_modules/@app/x.db`).
///
/// Only a `://` in the path counts: see [`url_in_query`] for one past it.
fn url_in_path(url: &str) -> Option<usize> {
    if !names_a_file(url) {
        return None;
    }
    // Past the scheme's colon, so its own `://` (`file:///srv`) is not found.
    let after_scheme = url.find(':')? + 1;
    let path_end = url.find(['?', '#']).unwrap_or(url.len());
    let path = &url[after_scheme..path_end];
    // The scheme's colon ends the run, so the URL before it is never empty.
    let scheme_start =
        (path.find("://")).map(|at| scheme_start(url, after_scheme + at).max(after_scheme));
    let credentials = |piece: &str| {
        piece
            .split_once('@')
            .is_some_and(|(before, _)| before.contains(':') || before.starts_with("//"))
    };
    let piece_start = path
        .char_indices()
        .find(|&(at, c)| {
            (matches!(c, ',' | ';') || c.is_whitespace()) && credentials(&path[at + c.len_utf8()..])
        })
        .map(|(at, c)| after_scheme + at + c.len_utf8());
    match (scheme_start, piece_start) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Where the scheme ends by the `://` at `at` of `text` starts: after the last character
/// before it that no scheme holds (letters, digits, `+`, `-`, `.`).
fn scheme_start(text: &str, at: usize) -> usize {
    text[..at]
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .map_or(0, |(before, c)| before + c.len_utf8())
}

/// Where another URL starts in `url`, a URL not naming a file, whose first `://` ends a
/// scheme with an `@` and then a `,`, a `;` or whitespace before it
/// (`redis:u:p@h,https://v:q@g`, `//u:p@h,https://v:q@g`: two URLs in one argument, the
/// first written without `://`): at that scheme. Read as one URL, everything before its
/// `://` would be shown as its scheme is, the first one's password too. Without such a
/// separator right before the scheme, the `://` is a password's (`redis:u:p@ss://x@h`),
/// read by [`redact_userinfo`].
fn url_after_credentials(url: &str) -> Option<usize> {
    if names_a_file(url) {
        return None;
    }
    let start = scheme_start(url, url.find("://")?);
    let joined = url[..start].ends_with(|c: char| matches!(c, ',' | ';') || c.is_whitespace());
    (joined && url[..start].contains('@')).then_some(start)
}

/// Where the piece of the query or fragment of `url`, a URL naming a file, that holds a
/// `://` starts: from there on, everything is hidden.
///
/// Read as pieces of a query, a value holding a URL may be hidden (`?password=x://y`)
/// and the rest of that URL's password after an `&` taken for a key (`?mode=h://u:p&ss@h`
/// has the key `ss@h`); read as a URL of its own, the pieces after it are read as its
/// host or path (`?mode=h://u:p@h&pass=z`): each reading shows what the other hides.
fn url_in_query(url: &str) -> Option<usize> {
    if !names_a_file(url) {
        return None;
    }
    let query = url.find(['?', '#'])? + 1;
    let at = query + url[query..].find("://")?;
    // Pieces end at `&` and, past a query, at its fragment's `#`; a later `?` is a piece's.
    let piece = url[query..at]
        .rfind(['&', '#'])
        .map_or(query, |end| query + end + 1);
    Some(piece)
}

/// The scheme and the userinfo of `url` with its password hidden, and the rest of `url`
/// (from the `@` on, or after the scheme when there is no userinfo; for credentials that
/// end past the first `?` or `#`, from the fragment on, what comes before it shown here).
fn redact_userinfo(url: &str) -> (String, &str) {
    if names_a_file(url) {
        return (String::new(), url);
    }
    let head_end = url.find(['?', '#']).unwrap_or(url.len());
    // A `://` with a `:` before its scheme is a password's, in a URL written without one
    // (`redis:u:pa://ss@h`, `//u:pa://ss@h`): read as the scheme's, the password's part
    // before it would be shown as a scheme. Then the credentials start the text.
    let scheme_end = (url[..head_end].find("://"))
        .filter(|&at| !url[..scheme_start(url, at)].contains(':'))
        .map_or(0, |i| i + 3);
    let Some(at) = credentials_end(url, scheme_end, head_end) else {
        return (url[..scheme_end].to_string(), &url[scheme_end..]);
    };
    // A user name running past the first `?` or `#` may end inside a query value
    // (`?password=se:cret@x` shows nothing of `se`).
    let hidden = match url[scheme_end..at].split_once(':') {
        Some((user, _password)) if !user.contains(['?', '#']) => format!("{user}:***"),
        _ => "***".to_string(),
    };
    let shown = format!("{}{hidden}", &url[..scheme_end]);
    if at < head_end {
        return (shown, &url[at..]);
    }
    let (after, fragment) = shown_after_query_at(url, scheme_end, at);
    (shown + &after, fragment)
}

/// The `@` that ends the credentials of `url` (after its scheme, which ends at
/// `scheme_end`; its first `?` or `#` at `head_end`), if it has any.
///
/// A URL parser ends the userinfo at the last `@` before the first `/`, `?` or `#`; but a
/// password is often written unescaped (`redis://:pa/ss@host`, `:p@ss?w@host`), and then
/// the parser's userinfo is only the start of it. So everything before the last `@` of
/// the URL counts as credentials: over-hiding an `@` in a path or a query is harmless,
/// while showing the rest of a password is not (what follows an `@` past the first `?`
/// is shown as safe for both readings, [`shown_after_query_at`]). The `@`s passed over
/// are those in the value of a query parameter whose value is shown (`?user=a@b`), back
/// to the first that is in no such value: one before the first `?` ends a userinfo
/// (`postgres://u:p@h/db?user=a@b`), one past it may end a password holding a `?` or `#`
/// (`redis://:a@b#c@h/0?db=1&user=d@e`: `h` is the host, not `b`). Without either, the host of
/// such a URL is hidden too (`postgres://h/db?user=a@b` shows as `postgres://***@b`),
/// since the `?` may be part of a password. None are passed over when what follows the
/// last `@` holds a `/` or a `?` (a host and its path, `@h/0`, which a user's name does not
/// hold): a password holding `?user=a@` (`redis://:s3@x?user=a@h/0`) is hidden whole.
fn credentials_end(url: &str, scheme_end: usize, head_end: usize) -> Option<usize> {
    let last = scheme_end + url[scheme_end..].rfind('@')?;
    // What follows the last `@` up to the next piece: a host with a path or a query
    // (`@h/0`, `@h?db=1`) ends a password holding `?user=a@` (`redis://:s3@x?user=a@h/0`),
    // whose part before the `?` was shown as a host; a shown value (`user=a@b`) ends in
    // neither, and reading it so hides only more of that value.
    let after_last = &url[last + 1..];
    let piece_end = after_last.find(['&', '#']).unwrap_or(after_last.len());
    if last >= head_end && after_last[..piece_end].contains(['/', '?']) {
        return Some(last);
    }
    let mut at = last;
    while at >= head_end && shown_key_value(query_piece_before(url, head_end, at)) {
        match url[scheme_end..at].rfind('@') {
            Some(before) => at = scheme_end + before,
            None => return Some(last),
        }
    }
    Some(at)
}

/// The piece of the query or fragment of `url` (which starts after `head_end`) that
/// holds the `@` at `at`, up to that `@`.
fn query_piece_before(url: &str, head_end: usize, at: usize) -> &str {
    url[head_end + 1..at]
        .rsplit(['&', '#'])
        .next()
        .unwrap_or("")
}

/// Whether `piece`, a query's `key=value`, is one whose value [`redact_url`] shows.
fn shown_key_value(piece: &str) -> bool {
    piece
        .split_once('=')
        .is_some_and(|(key, _)| SHOWN_QUERY_KEYS.contains(&key))
}

/// What follows credentials that end at the `@` at `at`, past the first `?` or `#` of
/// `url` (whose scheme ends at `scheme_end`), up to the fragment after it, shown; and the
/// rest of `url` (that fragment, or nothing).
///
/// A URL parser reads that `@` as part of the query, where a URL may hold one unescaped
/// (`postgres://u@h/db?password=p@ss&sslmode=require`), so what follows it may be the
/// rest of a parameter's value and the parameters after it, not a host. It is shown as
/// safe for both readings: up to the next `&`, hidden when it may end the value of a
/// parameter whose value is hidden ([`may_end_hidden_value`]); shown as a host
/// otherwise, its query hidden as any query is; and each `&` piece after it hidden as a
/// query's.
fn shown_after_query_at(url: &str, scheme_end: usize, at: usize) -> (String, &str) {
    let query_end = url[at..].find('#').map_or(url.len(), |end| at + end);
    let (value, pieces) = match url[at + 1..query_end].split_once('&') {
        Some((value, pieces)) => (value, Some(pieces)),
        None => (&url[at + 1..query_end], None),
    };
    let hidden_value = may_end_hidden_value(url, scheme_end, at);
    let mut shown = String::from("@");
    match value.split_once('?') {
        _ if hidden_value => shown.push_str("***"),
        Some((host, query)) => {
            shown.push_str(host);
            shown.push('?');
            shown.push_str(&redact_pairs(query));
        }
        None => shown.push_str(value),
    }
    if let Some(pieces) = pieces {
        shown.push('&');
        shown.push_str(&redact_pairs(pieces));
    }
    (shown, &url[query_end..])
}

/// Whether a parser may read the `@` at `at` of `url` (whose scheme ends at
/// `scheme_end`) as part of the value of a query parameter whose value is hidden.
///
/// It may when the credentials can end before it, at an earlier `@` (or, with none,
/// after the scheme), so that an authority a parser takes follows, and then a query or
/// fragment whose `key=value` piece holds that `@`. Every earlier `@` is tried: a
/// password written unescaped may hold `/`, `?` or `#` before the one that ends it
/// (`redis://:a/b@h/0?pass=c@d`), and the URL's start then reads as no host.
fn may_end_hidden_value(url: &str, scheme_end: usize, at: usize) -> bool {
    let after_earlier_ats = url[scheme_end..at]
        .match_indices('@')
        .map(|(i, _)| scheme_end + i + 1);
    std::iter::once(scheme_end)
        .chain(after_earlier_ats)
        .any(|start| {
            let before_at = &url[start..at];
            let Some(query) = before_at.find(['?', '#']) else {
                return false;
            };
            let authority_end = before_at.find(['/', '?', '#']).unwrap_or(query);
            let piece = query_piece_before(before_at, query, before_at.len());
            is_hosts(&before_at[..authority_end]) && piece.contains('=') && !shown_key_value(piece)
        })
}

/// Whether `authority` is one a URL parser takes after a userinfo: hosts (one, or a
/// comma-separated list, as `redis+cluster://h1:1,h2:2` and PostgreSQL's multi-host URLs
/// write them), each with an optional numeric port; an IPv6 address in brackets.
fn is_hosts(authority: &str) -> bool {
    !authority.contains('@')
        && authority.split(',').all(|host| {
            let port = match host.strip_prefix('[') {
                // An IPv6 address: its colons are not a port's.
                Some(bracketed) => bracketed.split_once(']').and_then(|(_, after)| {
                    after.strip_prefix(':').or(after.is_empty().then_some(""))
                }),
                None => Some(host.split_once(':').map_or("", |(_, port)| port)),
            };
            port.is_some_and(|port| port.bytes().all(|b| b.is_ascii_digit()))
        })
}

#[cfg(test)]
mod tests {
    use super::{redact_text, redact_url};

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

    #[test]
    fn a_password_holding_a_shown_key_and_an_at_is_hidden_whole() {
        // The `@` of `?user=a@` was passed over as a shown value's, so the credentials
        // ended at the `@` before it and the password's part between showed as a host
        // (`redis://:***@s3?user=a@h/0`).
        let cases = [
            ("redis://:Xy@s3?user=a@h/0", "redis://:***@h/0"),
            (
                "redis://u:Xy@s3?user=a@h:6379/0?db=1",
                "redis://u:***@h:6379/0?db=1",
            ),
            ("postgres://u:p@s3?user=a@db/app", "postgres://u:***@db/app"),
            ("redis://:Xy@s3#user=a@h/0", "redis://:***@h/0"),
            ("redis://:Xy@s3?db=1&user=a@h?db=2", "redis://:***@h?db=2"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
            assert!(!redact_url(url).contains("s3"), "{url}");
        }
    }

    #[test]
    fn a_url_after_a_file_url_in_one_argument_is_redacted_as_a_url() {
        // A `file:` or `sqlite:` path was shown whole, and with it the password of a URL
        // written after it in the same text (`file:/x,https://u:s3@h`, an MCP server's
        // argument shown by fusion-mcp's display_command).
        let cases = [
            ("file:/x,https://u:s3@h", "file:/x,https://u:***@h"),
            (
                "sqlite://a.db,redis://:s3@h:6379/0",
                "sqlite://a.db,redis://:***@h:6379/0",
            ),
            (
                "file:///srv/a@b/https://u:s3@h/v1",
                "file:///srv/a@b/https://u:***@h/v1",
            ),
            ("FILE:/x;postgres://s3@h/db", "FILE:/x;postgres://***@h/db"),
            ("sqlite:x.db?mode=ro,https://h/v1?key=s3", "sqlite:x.db?***"),
            (
                "file:/a,file:/b@c,redis://u:s3@h",
                "file:/a,file:/b@c,redis://u:***@h",
            ),
            ("file:x://u:s3@h", "file:x://u:***@h"),
            ("file:://u:s3@h", "file:://u:***@h"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
            assert!(!redact_url(url).contains("s3"), "{url}");
        }
    }

    #[test]
    fn a_url_without_slashes_after_a_file_url_is_redacted_as_a_url() {
        // Found by a review: only a `://` split a `file:` or `sqlite:` path, so a URL
        // written without one after it (`//u:p@h`, `redis:u:p@h`) showed its password.
        let cases = [
            ("file:/x,//u:s3@h", "file:/x,//u:***@h"),
            ("file:/x,redis:u:s3@h", "file:/x,redis:***@h"),
            ("sqlite:a.db;redis:u:s3@h/0", "sqlite:a.db;redis:***@h/0"),
            ("file:/a@b/x //u:s3@h", "file:/a@b/x //u:***@h"),
            ("file:/x,y,//u:pa/s3@h", "file:/x,y,//u:***@h"),
            (
                "file:/x,//u:s3@h,https://v:s3@g",
                "file:/x,//u:***@h,https://v:***@g",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
        // An `@` of the path itself, with no separator before it, is shown as before.
        for url in [
            "file:///srv/a@b/x.db",
            "sqlite://./node_modules/@app/x.db,y",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn a_url_in_the_query_of_a_file_url_is_hidden_from_its_piece_on() {
        // 3c408ba read a `://` in the query of a `file:` or `sqlite:` URL as the start of
        // a URL of its own, shown as such: a hidden value holding one (a password with
        // `://`) was shown from its scheme on, and the `&` pieces after a URL in a shown
        // value, read as that URL's host, were shown too. Read as query pieces alone, a
        // password holding an `&` would show its rest as a key (`ss@h=...`).
        let cases = [
            ("sqlite:a.db?password=x://s3&mode=ro", "sqlite:a.db?***"),
            ("sqlite:a.db?key=s3://s3", "sqlite:a.db?***"),
            ("sqlite:a.db#pw=s3://s3", "sqlite:a.db#***"),
            ("sqlite:a.db?mode=https://u:s3@h&pass=s3", "sqlite:a.db?***"),
            ("sqlite:a.db?mode=h://u:s3&s3@h/x?db=s3", "sqlite:a.db?***"),
            ("file:/x?cache=s3://h/s3", "file:/x?***"),
            (
                "sqlite:a.db?mode=ro#https://u:s3@h",
                "sqlite:a.db?mode=ro#***",
            ),
            ("sqlite:a.db?mode=ro&x=s3://s3", "sqlite:a.db?mode=ro&***"),
            ("sqlite:a.db#a?b=s3://s3", "sqlite:a.db#***"),
            ("file:/x?https://u:s3@h/?pass=s3", "file:/x?***"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn a_password_holding_an_at_and_a_question_mark_is_hidden_whole() {
        // The `@` before the `?` was taken to end the credentials, so the password's part
        // between them showed as a host (`redis://:***@s3?***`).
        let cases = [
            ("redis://:Xy@s3?cr3t@host:6379", "redis://:***@host:6379"),
            ("redis://u:a@s3/c?r3t@h/0?db=1", "redis://u:***@h/0?db=1"),
            ("rediss://Xy@s3?cr#3t@host", "rediss://***@host"),
            // A value that is no shown query key's may be the password's part or the
            // value's (`pw` of host `s3`): hidden either way.
            ("redis://:a@s3?pw=cr3t@h/0", "redis://:***@***"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
            assert!(!redact_url(url).contains("s3"), "{url}");
        }
    }

    #[test]
    fn a_query_value_holding_an_at_shows_nothing_of_itself_or_what_follows() {
        // A URL may hold an `@` unescaped in a query value; the last `@` was taken to end
        // the credentials and what followed it shown as a host, so the value's rest and
        // every parameter after it showed (`postgres://u:***@y&password=s3cret`).
        let cases = [
            (
                "postgres://u:p@h/db?options=x@y&password=s3cret",
                "postgres://u:***@***&password=***",
            ),
            ("postgres://u@h/db?password=p@s3cret", "postgres://***@***"),
            (
                "postgres://u@h/db?password=p@s3cret&sslmode=require",
                "postgres://***@***&sslmode=require",
            ),
            ("postgres://h/db?password=p@s3cret", "postgres://***@***"),
            (
                "postgres://h/db?user=a@b&password=s3cret",
                "postgres://***@b&password=***",
            ),
            (
                "postgres://u:p@h/db?options=-c%20x@s3cret",
                "postgres://u:***@***",
            ),
            // The name before a `:` was shown as a user's.
            ("postgres://h/db?password=s3:cret@x", "postgres://***@***"),
            ("redis://h/0#pw=s3:cret@x", "redis://***@***"),
            (
                "redis://u:p@[::1]:6379/0?password=a@s3cret",
                "redis://u:***@***",
            ),
            ("u:p@h/db?password=p@s3cret", "u:***@***"),
            // A shown value's rest is shown, what follows it hidden as a query is.
            ("redis://h:6379/0?user=a@b", "redis://h:***@b"),
            (
                "redis://h:6379/0?user=a@b/0?pw=s3cret",
                "redis://h:***@b/0?pw=***",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
            assert!(!redact_url(url).contains("s3"), "{url}");
        }
        for shown in [
            "redis://[::1]:6379/0?db=1",
            "postgres://h/db?sslmode=require",
        ] {
            assert_eq!(redact_url(shown), shown);
        }
        assert_eq!(
            redact_url("postgres://h/db?password=x"),
            "postgres://h/db?password=***"
        );
    }

    #[test]
    fn realistic_urls_show_their_hosts_and_never_a_password() {
        // Every `s3` is part of a secret. An `@` in a hidden query value of a URL with
        // several hosts (`h1:1,h2:2`), or after a password holding a `/` or `?`, was read
        // as ending the credentials and what followed it shown as a host.
        let cases = [
            (
                "redis://:s3@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            (
                "rediss://default:s3@cache:6380/0#insecure",
                "rediss://default:***@cache:6380/0#insecure",
            ),
            (
                "redis+cluster://:s3@h1:1,h2:2",
                "redis+cluster://:***@h1:1,h2:2",
            ),
            (
                "redis+cluster://u:s3@h1:1,h2:2/?key_prefix=app",
                "redis+cluster://u:***@h1:1,h2:2/?key_prefix=app",
            ),
            (
                // `h1` may be a user's name, as `h` of `redis://h:6379/0?user=a@b` is.
                "redis+cluster://h1:1,h2:2/0?pass=a@s3",
                "redis+cluster://h1:***@***",
            ),
            (
                "redis+cluster://:s3@h1:1,h2:2/?pass=a@s3&db=1",
                "redis+cluster://:***@***&db=1",
            ),
            (
                "postgres://app@h1:5432,h2:5433/app?password=p@s3",
                "postgres://app@h1:***@***",
            ),
            (
                "postgres://app:s3@h1:5432,h2:5433/app?sslmode=require",
                "postgres://app:***@h1:5432,h2:5433/app?sslmode=require",
            ),
            (
                "postgres://[::1]:1,[::2]:2/db?options=x@s3",
                "postgres://[:***@***",
            ),
            ("redis://:s3/s3@h/0?pass=a@s3", "redis://:***@***"),
            ("redis://:s3?@db?password=s3@s3", "redis://:***@***"),
            ("postgres://:s3#@h:5432/?options=@s3", "postgres://:***@***"),
            // A password holding an `@` and then a `?` or `#`, before a shown value
            // holding one: the `@` before the first `?` was taken to end the credentials.
            (
                "redis://:s3@s3#s3@h:6379/0?db=1&user=me@x",
                "redis://:***@h:6379/0?db=1&user=me@x",
            ),
            (
                "postgres://u:s3@s3?s3@db/app?sslmode=require&user=az@srv",
                "postgres://u:***@db/app?sslmode=require&user=az@srv",
            ),
            (
                "postgres://app:s3@db.internal:5432/app?sslmode=require&application_name=fusion",
                "postgres://app:***@db.internal:5432/app?sslmode=require&application_name=fusion",
            ),
            (
                "postgres://app@db/app?password=s3&sslmode=verify-full&options=-c%20s3",
                "postgres://***@db/app?password=***&sslmode=verify-full&options=***",
            ),
            (
                "postgres:///app?host=/run/postgresql&user=me&password=s3",
                "postgres:///app?host=/run/postgresql&user=me&password=***",
            ),
            ("postgres://app:p%40s3@db/app", "postgres://app:***@db/app"),
            (
                "redis://:s3@[fe80::1%25eth0]:6379/0",
                "redis://:***@[fe80::1%25eth0]:6379/0",
            ),
            ("redis://u@host:6379", "redis://***@host:6379"),
            ("redis://u:@host:6379", "redis://u:***@host:6379"),
            (
                "unix:///run/redis.sock?db=1&pass=s3",
                "unix:///run/redis.sock?db=1&pass=***",
            ),
            ("unix://:s3@/run/redis.sock", "unix://:***@/run/redis.sock"),
            (
                "sqlite:///var/lib/fusion/x.db?mode=rwc",
                "sqlite:///var/lib/fusion/x.db?mode=rwc",
            ),
            // A SQLite or `file:` URL names a file: an `@` there is in its path, which
            // was hidden up to it as a user's.
            (
                "sqlite://file@v2.db?password=s3",
                "sqlite://file@v2.db?password=***",
            ),
            (
                "sqlite://./node_modules/@app/x.db?mode=rwc",
                "sqlite://./node_modules/@app/x.db?mode=rwc",
            ),
            ("sqlite:data/me@work.db", "sqlite:data/me@work.db"),
            ("SQLite:///home/a@b/x.db#s3", "SQLite:///home/a@b/x.db#***"),
            ("file:///srv/a@b/sessions", "file:///srv/a@b/sessions"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("file:///srv/fusion/sessions", "file:///srv/fusion/sessions"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
            assert!(!redact_url(url).contains("s3"), "{url}");
        }
    }

    /// A few thousand URLs built from realistic parts, with passwords and hidden query
    /// values written unescaped and of letters used nowhere else (`Q`, `Ŝ`), and odd text:
    /// no letter of a secret is shown, and nothing panics. (Not `sqlite:`, whose URLs
    /// hold no password before an `@`: `PATH_SCHEMES`.)
    #[test]
    fn generated_urls_never_show_a_secret() {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut pick = |parts: &[&'static str]| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            parts[(state % parts.len() as u64) as usize]
        };
        let secret_parts = [
            "Q", "Ŝ", "QŜ", "@", "/", "?", "#", ":", "&", "=", "%40", "%", ",", ";", " ", "://",
        ];
        for _ in 0..20_000 {
            let mut url = pick(&[
                "redis://",
                "redis+cluster://",
                "postgres://",
                "unix://",
                "https://",
            ])
            .to_string();
            let userinfo = pick(&["", "u:", ":", "app@", "app:"]);
            url.push_str(userinfo);
            if userinfo.ends_with(':') {
                (0..4).for_each(|_| url.push_str(pick(&secret_parts)));
                url.push('@');
            }
            url.push_str(pick(&[
                "h:6379",
                "db.internal",
                "h1:1,h2:2",
                "[::1]:6379",
                "",
            ]));
            url.push_str(pick(&["", "/", "/0", "/app"]));
            for separator in ["?", "&", "&"] {
                match pick(&["", "password=", "options=", "pass=", "sslmode=", "user="]) {
                    "" => break,
                    shown @ ("sslmode=" | "user=") => {
                        url.extend([separator, shown, pick(&["require", "a@b"])]);
                    }
                    hidden => {
                        url.extend([separator, hidden]);
                        (0..3)
                            .for_each(|_| url.push_str(pick(&["Q", "Ŝ", "@", "/", ":", "?", "="])));
                    }
                }
            }
            url.push_str(pick(&["", "", "#insecure"]));
            let shown = redact_url(&url);
            assert!(!shown.contains(['Q', 'Ŝ']), "{url} shown as {shown}");
            // After a path shown whole, in one argument, or in its query.
            let after = format!(
                "{}{url}",
                pick(&[
                    "file:/x,",
                    "sqlite://a@b.db;",
                    "file:",
                    "sqlite:a.db?mode=",
                    "file:/x?",
                    "redis:u:Q@h,",
                    "redis:u:Q://Q@h,",
                    "//u:Q@Q://Q@h;",
                    "sqlite:///J Doe/@x.db,//u:Q@h ",
                ])
            );
            let shown = redact_url(&after);
            assert!(!shown.contains(['Q', 'Ŝ']), "{after} shown as {shown}");
        }
        let odd_parts = [
            "@", "?", "#", "/", ":", "&", "=", "[", "]", ",", "%", "é", "日本", "🦀", "://", "a",
        ];
        for _ in 0..20_000 {
            let text: String = (0..8).map(|_| pick(&odd_parts)).collect();
            redact_url(&text);
            redact_text(&text);
        }
    }

    #[test]
    fn a_fragment_is_hidden_as_a_query_is() {
        // The `#` was read as part of the last query value, so a known key's value
        // showed the fragment after it (`?db=1#pw=s3cret`).
        let cases = [
            ("redis://h/0?db=1#pw=s3cret", "redis://h/0?db=1#pw=***"),
            ("redis://h/0#s3cret", "redis://h/0#***"),
            (
                "postgres://u:s3cret@h/db?sslmode=require#password=s3cret&s3cret",
                "postgres://u:***@h/db?sslmode=require#password=***&***",
            ),
            ("redis://u:s3cr#et@h/0", "redis://u:***@h/0"),
            ("redis://h/0?db=1#", "redis://h/0?db=1#"),
            ("rediss://h/0?db=1#insecure", "rediss://h/0?db=1#insecure"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn a_password_holding_a_scheme_in_a_url_written_without_one_is_hidden_whole() {
        // Found by a second review: the `://` in the password of a URL written without one was
        // read as the end of a scheme, so the password's part before it was shown as one
        // (`redis:u:s3://***@h`); with an `@` before it too, as two URLs
        // (`redis:***@s3://***@h`).
        let cases = [
            ("redis:u:s3://s3@h", "redis:***@h"),
            ("//u:s3://s3@h/0", "//u:***@h/0"),
            ("redis:u:s3@s3://s3@h", "redis:***@h"),
            ("file:/x,u:s3://s3@h", "file:/x,u:***@h"),
            ("file:/x,//u:s3@s3://s3@h", "file:/x,//u:***@h"),
            ("redis:u:s3://s3@h,https://v:s3@g", "redis:***@g"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
        // A `://` with no `:` before its scheme is a scheme's, as before.
        for (url, want) in [
            ("--db=postgres://u:s3@h/db", "--db=postgres://u:***@h/db"),
            ("redis:u:s3@h https://g", "redis:***@h https://g"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn a_folder_name_with_a_space_before_an_at_is_shown_as_a_path() {
        // Found by a second review: after whitespace in a file's path, a piece holding an `@`
        // was read as a URL's credentials (`sqlite:///Users/J ***@app/x.db`).
        for url in [
            "sqlite:///Users/J Doe/node_modules/@app/x.db",
            "file:///C:/Program Files/@scope/pkg",
            "file:/a b,c/@x",
        ] {
            assert_eq!(redact_url(url), url);
        }
        assert_eq!(
            redact_url("sqlite:///J Doe/@x.db,//u:s3@h"),
            "sqlite:///J Doe/@x.db,//u:***@h"
        );
    }

    #[test]
    fn a_url_without_slashes_before_one_with_them_is_redacted_as_a_url() {
        // Found by a review: read as one URL, `redis:u:p@h,https://v:q@g` (two in one
        // argument, the first written without `://`) showed everything before its `://`
        // as a scheme, the first URL's password with it.
        let cases = [
            ("redis:u:s3@h,https://v:s3@g", "redis:***@h,https://v:***@g"),
            ("//u:s3@h,https://v:s3@g/x", "//u:***@h,https://v:***@g/x"),
            (
                "--db=redis:u:s3@h;postgres://h/db?password=s3",
                "--db=redis:***@h;postgres://h/db?password=***",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
        // A URL starting the text, an `@` only after its `://`: read as one, as before.
        for (url, want) in [
            ("redis://u:s3@h,https://g", "redis://u:***@h,https://g"),
            ("--url=https://h/a@b", "--url=https://***@b"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
