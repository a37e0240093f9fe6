//! The HTTP client of streamable-HTTP servers, which follows a redirect only within the
//! server's origin.
//!
//! A server's configured headers and token are secrets, sent with every request. reqwest
//! follows redirects by default and drops only `Authorization` and cookies when one leaves
//! the origin, so a header such as `X-Api-Key` would go wherever the server, or whoever can
//! answer in its name, points; an `https` server redirecting to `http` would send it in the
//! clear. A redirect within the origin (`/mcp` to `/mcp/`) is followed; one to another
//! origin fails the request, saying so, and a user who trusts the place it names can
//! configure that URL. As HTTP has it, only a 307 or 308 repeats the request as it was; a
//! 301, 302 or 303 turns the POST of an MCP message into a GET without it, which the
//! server will refuse: configure the URL it names instead.
//!
//! A server's URL may itself carry a secret (`?api_key=`, a password): reqwest's errors
//! quote the request's URL. [`hide_url`] redacts the URL of every error the client gives
//! rmcp, which logs them, and [`redact_urls`] hides any URL in a message's text.

use reqwest::redirect::{Action, Attempt, Policy};
use rmcp::transport::streamable_http_client::StreamableHttpError;

/// The most redirects followed for one request, as reqwest's default.
const MAX_REDIRECTS: usize = 10;

/// A client for one server's requests. The error is the reason, for a message.
pub fn http_client() -> Result<reqwest::Client, String> {
    fusion_agent::http_client_builder()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?
        .redirect(Policy::custom(within_origin))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

fn within_origin(attempt: Attempt) -> Action {
    // reqwest lists the request's own URL first; a redirect with none to compare against
    // is not followed, rather than followed unchecked.
    let Some(first) = attempt.previous().first() else {
        return attempt.error("a redirect whose origin cannot be checked");
    };
    if attempt.url().origin() != first.origin() {
        let message = format!(
            "the server redirected to another origin ({}), which is not followed since the \
             configured headers and token would go there too; configure that URL if it is to \
             be trusted",
            attempt.url().origin().ascii_serialization()
        );
        return attempt.error(message);
    }
    if attempt.previous().len() > MAX_REDIRECTS {
        return attempt.error("too many redirects");
    }
    attempt.follow()
}

/// `text` with every `http://` or `https://` URL in it shown without its secrets (a
/// password, the query's values: see [`fusion_core::redact_url`]), for a message the
/// model or a person reads.
///
/// A URL ends only at what a URL as reqwest writes it cannot hold: whitespace and other
/// control characters, `"`, `<`, `>` and any character outside ASCII, which its serializer
/// always escapes (so Chinese or Japanese text written right after a URL, with no space
/// between, is shown). A `)`, a `'`, a bracket or a backtick may be part of a password or
/// a query value (the serializer leaves them), so the `)` closing reqwest's "error sending
/// request for url (…)" is taken as part of a URL with secrets and hidden with its last
/// value: ending there would show the rest of a password such as `pa)ss`.
pub fn redact_urls(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["http://", "https://"]
        .iter()
        .filter_map(|scheme| rest.find(scheme))
        .min()
    {
        shown.push_str(&rest[..at]);
        let url = &rest[at..];
        let end = url
            .find(|c: char| !c.is_ascii_graphic() || matches!(c, '"' | '<' | '>'))
            .unwrap_or(url.len());
        shown.push_str(&fusion_core::redact_url(&url[..end]));
        rest = &url[end..];
    }
    shown.push_str(rest);
    shown
}

/// `error` with the URL its reqwest error carries shown without its secrets, as the
/// client passes it to rmcp: rmcp logs it (`fail to delete session: …`, the worker's fatal
/// error, with reqwest's `Debug`) and puts it in the errors it gives the calls.
pub fn hide_url(error: StreamableHttpError<reqwest::Error>) -> StreamableHttpError<reqwest::Error> {
    let StreamableHttpError::Client(error) = error else {
        return error;
    };
    let shown = error.url().map(|url| fusion_core::redact_url(url.as_str()));
    let error = match shown.map(|shown| reqwest::Url::parse(&shown)) {
        None => error,
        Some(Ok(shown)) => error.with_url(shown),
        Some(Err(_)) => error.without_url(),
    };
    StreamableHttpError::Client(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_a_message_are_shown_without_their_secrets() {
        // A `)` or a quote inside a secret does not end the URL early, leaving the rest of
        // the secret shown; a URL without secrets is shown whole, the `)` after it too.
        let said = "error sending request for url (http://u:pa)ss@h/mcp?k=it's)x): refused \
                    \"https://h/?key=a`b\" (http://h/mcp)";
        assert_eq!(
            redact_urls(said),
            "error sending request for url (http://u:***@h/mcp?k=*** refused \
             \"https://h/?key=***\" (http://h/mcp)"
        );
        let said = "error sending request for url (http://u:pw@h:1/mcp?api_key=k1&x=2): \
                    refused; configured https://h/mcp?token=k2 and `https://h/?k3`.";
        assert_eq!(
            redact_urls(said),
            "error sending request for url (http://u:***@h:1/mcp?api_key=***&x=*** \
             refused; configured https://h/mcp?token=*** and `https://h/?***"
        );
        assert_eq!(redact_urls("HTTP 500: no url"), "HTTP 500: no url");
    }

    #[test]
    fn text_glued_after_a_url_ends_it_where_a_url_cannot_go_on() {
        // Chinese and Japanese put no space after a URL; reqwest escapes every character
        // outside ASCII, so the first one ends the URL, and the key stays hidden.
        assert_eq!(
            redact_urls("请求失败https://h/p?key=SECRET连接被拒绝"),
            "请求失败https://h/p?key=***连接被拒绝"
        );
        assert_eq!(
            redact_urls("「https://h/p?key=SECRET」に接続できません"),
            "「https://h/p?key=***」に接続できません"
        );
        assert_eq!(
            redact_urls("url (https://h/p?k=a[b]c^d|e)\tcut"),
            "url (https://h/p?k=***\tcut"
        );
    }

    #[tokio::test]
    async fn the_url_of_a_client_error_is_hidden_before_rmcp_sees_it() {
        // Port 0, which nothing can listen on: the request fails, quoting its URL.
        let url = "http://u:pw@127.0.0.1:0/mcp?api_key=SECRET&team=7";
        let error = http_client().unwrap().post(url).send().await.unwrap_err();
        assert!(format!("{error:?}").contains("SECRET"), "{error:?}");
        let error = hide_url(StreamableHttpError::Client(error));
        // rmcp logs it with `Debug` (its worker's fatal error) and with `Display`.
        for shown in [format!("{error:?}"), error.to_string()] {
            assert!(
                !shown.contains("SECRET") && !shown.contains(":pw@"),
                "{shown}"
            );
            assert!(shown.contains("/mcp?api_key=***&team=***"), "{shown}");
        }
    }
}
