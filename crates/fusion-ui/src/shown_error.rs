//! [`shown_error`]: an error's text as a page shows it, without the secrets or the
//! server's file paths it may quote.
//!
//! The browser may be on another machine (`--bind` with a token), and a storage's errors
//! name the server's files: the file-system backend's damaged metadata or lock file, the
//! SQLite database. Whoever runs the server needs the path to mend the file, so the whole
//! text goes to the server's log, and the page says it is there. An I/O error is shown
//! by its kind alone (`html::error`); this covers every other error text a page shows.

/// What stands in a page for a path that was hidden.
const HIDDEN: &str = "[a path, hidden]";

/// `text` (an error's) with the secrets it may quote hidden ([`fusion_core::redact_text`]:
/// a storage or client of the caller's own may quote its URL) and each absolute path
/// replaced by a placeholder. When a path was hidden, the whole (redacted) text is
/// logged, and the result says that the server's log names the file.
pub(crate) fn shown_error(text: &str) -> String {
    let redacted = fusion_core::redact_text(text);
    let shown = hide_paths(&redacted);
    if shown == redacted {
        return redacted;
    }
    tracing::error!(error = %redacted, "an error shown to the browser without its paths");
    format!("{shown} (the server's log names the file)")
}

/// `text` with every absolute path in it (`/srv/a/b`, `~/a/b`, `C:\a`, `file:/a`,
/// `sqlite:/a`) replaced by [`HIDDEN`]. A path starts a word (after a space, a quote or
/// an opening bracket, or the text's start), so a URL's `//host/db` and a `1/2` are no
/// path; it runs to the next space, quote or closing bracket, less a full stop or colon
/// ending a sentence. A Unix path holds a second `/`, so a lone `/` or `/0` is kept. The
/// word after an HTTP method is the path of a request (a model server's "Invalid URL
/// (POST /v1/chat/completions)"), not a file of this server's, and is kept, unless it
/// holds a query or fragment: a bare path's `?key=...` is no URL's, which
/// [`fusion_core::redact_text`] would hide, and may hold a key.
fn hide_paths(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    let mut rest = text;
    let mut at_word_start = true;
    while let Some(c) = rest.chars().next() {
        if at_word_start
            && let Some(len) = path_len(rest)
            && !is_a_requests_path(&shown, &rest[..len])
        {
            shown.push_str(HIDDEN);
            rest = &rest[len..];
            at_word_start = false;
            continue;
        }
        shown.push(c);
        rest = &rest[c.len_utf8()..];
        at_word_start = c.is_whitespace() || "\"'`([{<=,".contains(c);
    }
    shown
}

/// Whether `path`, written after `shown`, is a request's path without a query or
/// fragment: `shown` ends with an HTTP method as a word of its own and one space, as a
/// request's line has them (`POST /v1/chat/completions`).
fn is_a_requests_path(shown: &str, path: &str) -> bool {
    const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    let Some(before) = shown.strip_suffix(' ') else {
        return false;
    };
    if path.contains(['?', '#']) {
        return false;
    }
    METHODS.iter().any(|method| {
        before.strip_suffix(method).is_some_and(|start| {
            !start.ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '/')
        })
    })
}

/// The length of the path `text` starts with, if it starts with one (see [`hide_paths`]).
fn path_len(text: &str) -> Option<usize> {
    let end = text
        .find(|c: char| c.is_whitespace() || "\"'`)]}>,;".contains(c))
        .unwrap_or(text.len());
    let word = text[..end].trim_end_matches(['.', ':']);
    let unix = |path: &str| {
        path.strip_prefix('/')
            .is_some_and(|tail| !tail.starts_with('/') && tail.contains('/'))
    };
    let bytes = word.as_bytes();
    let is_path = unix(word)
        || word.starts_with("~/")
        || (bytes.len() > 3 && bytes[0].is_ascii_alphabetic() && &bytes[1..3] == b":\\")
        || ["file:/", "sqlite:/"]
            .iter()
            .any(|scheme| word.len() > scheme.len() && word.starts_with(scheme));
    is_path.then_some(word.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_hidden_and_the_rest_kept() {
        let cases = [
            (
                "fs: session \"s\" is corrupt: the metadata file /srv/private/s.meta is not JSON; \
                 move the file aside",
                "fs: session \"s\" is corrupt: the metadata file [a path, hidden] is not JSON; \
                 move the file aside",
            ),
            (
                "cannot open `/home/ann/db.sqlite`: locked",
                "cannot open `[a path, hidden]`: locked",
            ),
            (
                "the lock file (/srv/s/.lock) at /srv/s/x.",
                "the lock file ([a path, hidden]) at [a path, hidden].",
            ),
            ("in ~/fusion/s.jsonl:", "in [a path, hidden]:"),
            // Only a method, as a word of its own, makes the next word a request's path.
            ("FORGET /srv/a/b", "FORGET [a path, hidden]"),
            ("GET\n/srv/a/b", "GET\n[a path, hidden]"),
            ("api/GET /srv/a/b", "api/GET [a path, hidden]"),
            ("(GET /v1/models?key=s3cret)", "(GET [a path, hidden])"),
            ("GET /v1/a#k=s3cret", "GET [a path, hidden]"),
            ("at C:\\Users\\ann\\s.jsonl", "at [a path, hidden]"),
            (
                "sqlite:///srv/x.db and file:/srv/y",
                "[a path, hidden] and [a path, hidden]",
            ),
        ];
        for (text, shown) in cases {
            assert_eq!(hide_paths(text), shown, "{text}");
        }
    }

    #[test]
    fn what_is_no_path_is_kept() {
        for text in [
            "redis://u:***@h:6379/0 refused the connection",
            "postgres://h/db: relation does not exist",
            "1/2 of the replicas, and/or a retry",
            "a lone / and /0 and //x",
            "HTTP 400: bad request.",
            "Server said: Invalid URL (POST /v1/chat/completions)",
            "GET /api/tags answered 404, then DELETE /api/x",
            "due 2026/12/08, 1/2 done",
        ] {
            assert_eq!(hide_paths(text), text);
        }
    }

    #[test]
    fn a_hidden_path_is_said_to_be_in_the_log() {
        let shown = shown_error("fs: the index /srv/s/index.jsonl is damaged");
        assert_eq!(
            shown,
            "fs: the index [a path, hidden] is damaged (the server's log names the file)"
        );
        assert_eq!(shown_error("plain"), "plain");
        // A model server's 404 names the request it refused, which is no file of ours.
        let refused = "LLM error (HTTP 404): http://127.0.0.1:8080/v1/chat/completions was not \
                       found: check OPENAI_BASE_URL (now http://127.0.0.1:8080/v1; \
                       OpenAI-compatible APIs usually end in /v1). Server said: Invalid URL \
                       (POST /v1/chat/completions)";
        assert_eq!(shown_error(refused), refused);
    }
}
