//! The same-origin check on every request that may change something (anything but GET
//! and HEAD), refused with 403 otherwise.
//!
//! A page on another site can make a browser post a form here, cookie included (except
//! where `SameSite=Strict` keeps it back, and there is no cookie at all when no token is
//! in force). Browsers mark such a request: `Origin` names the other site, and
//! `Sec-Fetch-Site` says `cross-site`. So a change is accepted only with `Origin` equal
//! to this server's origin, or, when `Origin` is absent or `null`, with
//! `Sec-Fetch-Site: same-origin` or the bearer token (a header no other site can make a
//! browser send).
//!
//! Our pages are served with `Referrer-Policy: same-origin`, so their form posts carry
//! the real `Origin`. (Under `no-referrer`, which earlier releases sent, a browser sends
//! `Origin: null` with a form post even to its own origin, the Fetch standard's
//! "serializing a request origin"; over plain HTTP to a LAN address Chromium sends no
//! `Sec-Fetch-Site` either, so those posts were refused.) `null` still gets the second
//! look, for a page cached from before: a sandboxed frame on another site sends `null`
//! too, but with `Sec-Fetch-Site: cross-site`, which no page can change.

use axum::extract::Request;
use axum::http::Method;
use axum::http::header::{HOST, ORIGIN};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::token::Auth;
use crate::html::PageError;

/// Middleware: lets reads through, and changes only from this origin.
pub(crate) async fn check_origin(request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // The Host check ran first, so this is one of our own names.
    let host = header(HOST.as_str()).unwrap_or_default();
    let allowed = match header(ORIGIN.as_str()) {
        Some(origin) if origin != "null" => is_served_at(origin, host),
        _ => {
            header("sec-fetch-site") == Some("same-origin")
                || request.extensions().get::<Auth>() == Some(&Auth::Bearer)
        }
    };
    if allowed {
        next.run(request).await
    } else {
        PageError::forbidden(
            "A change must come from this app's own pages: this request came from another \
             site or did not say where it came from (Origin).",
        )
        .into_response()
    }
}

/// Whether `origin` is this server's, reached as `host`: over HTTP, or over HTTPS through
/// a proxy that ends TLS in front of it (docs/ui.md, "On another machine"), which passes
/// the browser's `Host` on. Either way the name and port are ours (the Host check ran
/// first), and nothing but this server answers there.
fn is_served_at(origin: &str, host: &str) -> bool {
    ["http://", "https://"].into_iter().any(|scheme| {
        origin.len() == scheme.len() + host.len()
            && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
            && origin[scheme.len()..].eq_ignore_ascii_case(host)
    })
}

#[cfg(test)]
mod tests {
    use super::is_served_at;

    #[test]
    fn the_origin_is_this_host_over_http_or_https_and_nothing_else() {
        let host = "fusion.example.com:18443";
        for origin in [
            "http://fusion.example.com:18443",
            "https://fusion.example.com:18443",
            "HTTPS://Fusion.Example.com:18443",
        ] {
            assert!(is_served_at(origin, host), "{origin}");
        }
        for origin in [
            "https://fusion.example.com",
            "https://fusion.example.com:18443/",
            "https://evil.example.com:18443",
            "wss://fusion.example.com:18443",
            "https://fusion.example.com:184430",
            "https://",
            "",
        ] {
            assert!(!is_served_at(origin, host), "{origin}");
        }
    }
}
