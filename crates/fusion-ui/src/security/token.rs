//! The access token, when one is in force: a request must carry it, as the cookie
//! [`Guard::cookie`] (`fusion_ui_token_<port>`, the port the browser opened; over HTTPS
//! `__Host-fusion_ui_token_<port>`) or as `Authorization: Bearer <token>`, or it is
//! refused with 401.
//!
//! Opening any page with `?token=<token>` sets the cookie (`HttpOnly`, so no script can
//! read it; `SameSite=Strict`, so no other site's request carries it; `Secure` when a
//! TLS proxy says the browser came over HTTPS, so no plain HTTP request carries it, and
//! then named `__Host-fusion_ui_token_<port>`, a name browsers take only from a secure
//! origin, for this host alone, on `Path=/`), expires earlier releases' cookies, and
//! redirects to the same address without the token, so it does not linger in the address
//! bar or the history. The embedded
//! assets need no token: they are public files, and the refusal page uses the stylesheet.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE as COOKIE_HEADER, HOST, LOCATION, SET_COOKIE};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::guard::Guard;
use crate::assets::PREFIX;
use crate::html::PageError;

/// How a request proved it may be served; the CSRF check reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// No token is in force.
    Open,
    /// The cookie carried the token.
    Cookie,
    /// An `Authorization: Bearer` header carried it: a program, not a browser form, since
    /// no page on another site can make a browser send that header here.
    Bearer,
}

/// Middleware: lets a request through with its [`Auth`], exchanges `?token=` for the
/// cookie, or refuses with 401.
pub(crate) async fn check_token(
    State(guard): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !guard.requires_token() {
        request.extensions_mut().insert(Auth::Open);
        return next.run(request).await;
    }
    if request.uri().path().starts_with(PREFIX) {
        return next.run(request).await;
    }
    // The Host check ran first: this is one of our own names.
    let host = request.headers().get(HOST).and_then(|v| v.to_str().ok());
    let cookie = guard.cookie(host);
    let in_address = split_token_param(request.uri());
    if let Some((given, rest)) = &in_address
        && matches!(*request.method(), Method::GET | Method::HEAD)
    {
        return if guard.token_matches(given) {
            let secure = over_https(&request);
            set_cookie_and_redirect(&cookie, given, rest, secure)
        } else {
            PageError::unauthorized("The token in this address is not this server's token.")
                .into_response()
        };
    }
    // Only a page opened (GET) logs in. A change is judged by its cookie or bearer alone,
    // whatever its address holds; without them, one whose address holds a token (which
    // then sits in whatever logs addresses) is told where the token goes instead.
    let auth = if bearer(&request).is_some_and(|t| guard.token_matches(t)) {
        Auth::Bearer
    } else if cookies(&request, &cookie).any(|t| guard.token_matches(t))
        || cookies(&request, &secure_name(&cookie)).any(|t| guard.token_matches(t))
    {
        Auth::Cookie
    } else if in_address.is_some() {
        return PageError::unauthorized(
            "A token in the address only logs a browser in, when a page is opened; a \
             change must carry it as the cookie or as Authorization: Bearer.",
        )
        .into_response();
    } else {
        return PageError::unauthorized("This server needs its access token.").into_response();
    };
    request.extensions_mut().insert(auth);
    next.run(request).await
}

/// The `token` query parameter, and the path with the rest of the query, if the
/// request has one.
fn split_token_param(uri: &Uri) -> Option<(String, String)> {
    let query = uri.query()?;
    let mut token = None;
    // The other parameters as sent, not decoded and encoded again: decoding is lossy, and
    // a value that is not UTF-8 (`tag=%FF`), which the page refuses naming it, came back
    // as U+FFFD, a filter that matched nothing and said nothing.
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match url::form_urlencoded::parse(pair.as_bytes()).next() {
            Some((name, value)) if name == "token" => token = Some(value.into_owned()),
            _ => rest.push(pair),
        }
    }
    let rest = rest.join("&");
    // One leading slash: `//evil.example/` (or `/\evil.example/`) as a `Location` would
    // send the browser to another host.
    let path = format!("/{}", uri.path().trim_start_matches(['/', '\\']));
    let target = if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{rest}")
    };
    Some((token?, target))
}

/// The cookie of releases before the port was in the name: never `Secure`, and sent to
/// every port of the host, so a `--token` given again would travel on in it, in the clear
/// where the new cookie is `Secure`. A login expires it.
const OLD_COOKIE_EXPIRED: HeaderValue =
    HeaderValue::from_static("fusion_ui_token=; Max-Age=0; Path=/");

/// The name of the cookie `name` set over HTTPS: with the `__Host-` prefix, which a
/// browser accepts only from a secure origin, `Secure`, on `Path=/` and without a
/// `Domain` (so no other host, not a sibling subdomain, can set or shadow it). Read back
/// beside `name`, which a login over HTTPS of an earlier release set.
fn secure_name(name: &str) -> String {
    format!("__Host-{name}")
}

/// The login's answer: the cookie `name` holding `token` (`Secure`, and named
/// [`secure_name`], when the browser came over HTTPS), the old cookies expired, and a
/// redirect to `target`.
fn set_cookie_and_redirect(name: &str, token: &str, target: &str, secure: bool) -> Response {
    // The token was checked against ours, whose characters are all cookie-safe, and the
    // target is our own path: both are valid header values.
    let cookie = if secure {
        format!(
            "{}={token}; HttpOnly; SameSite=Strict; Path=/; Secure",
            secure_name(name)
        )
    } else {
        format!("{name}={token}; HttpOnly; SameSite=Strict; Path=/")
    };
    // Over HTTPS, the unprefixed cookie an earlier release set there goes too.
    let unprefixed = secure.then(|| format!("{name}=; Max-Age=0; Path=/; Secure"));
    match (
        HeaderValue::from_str(&cookie),
        HeaderValue::from_str(target),
        unprefixed.as_deref().map(HeaderValue::from_str).transpose(),
    ) {
        (Ok(cookie), Ok(location), Ok(unprefixed)) => {
            // Appended, as a header array would keep only the last `Set-Cookie`.
            let mut response = (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response();
            let headers = response.headers_mut();
            headers.append(SET_COOKIE, cookie);
            headers.append(SET_COOKIE, OLD_COOKIE_EXPIRED);
            if let Some(unprefixed) = unprefixed {
                headers.append(SET_COOKIE, unprefixed);
            }
            response
        }
        _ => PageError::bad_request("This address cannot be redirected to.").into_response(),
    }
}

/// Whether the browser reached us over HTTPS, through a proxy that ends TLS and says so
/// (`X-Forwarded-Proto: https`, or `proto=https` in `Forwarded`, RFC 7239). Its cookie is
/// then `Secure`; without that, the browser sent it over plain HTTP to the same host too
/// (cookies ignore the port), in the clear the proxy was there to prevent. Believing a
/// forged header costs nothing: it can only make a cookie travel less.
fn over_https(request: &Request) -> bool {
    let values = |name| {
        request
            .headers()
            .get_all(name)
            .into_iter()
            .filter_map(|v| v.to_str().ok())
    };
    let https = |value: &str| value.trim().trim_matches('"').eq_ignore_ascii_case("https");
    values("x-forwarded-proto").any(|value| value.split(',').any(https))
        || values("forwarded").any(|value| {
            value
                .split([',', ';'])
                .filter_map(|pair| pair.split_once('='))
                .any(|(key, value)| key.trim().eq_ignore_ascii_case("proto") && https(value))
        })
}

fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Every value of our cookie, `name`, the request carries (a browser may send several
/// `Cookie` headers, or the same name twice from different paths).
fn cookies<'a>(request: &'a Request, name: &'a str) -> impl Iterator<Item = &'a str> {
    request
        .headers()
        .get_all(COOKIE_HEADER)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(given, _)| *given == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_taken_out_of_the_query_and_the_rest_kept() {
        let uri: Uri = "/sessions?owner=a&token=T0k&tag=x%20y&search=%FF"
            .parse()
            .unwrap();
        assert_eq!(
            split_token_param(&uri),
            Some((
                "T0k".into(),
                "/sessions?owner=a&tag=x%20y&search=%FF".into()
            ))
        );
        let uri: Uri = "/sessions?to%6Ben=T%30k&&x".parse().unwrap();
        assert_eq!(
            split_token_param(&uri),
            Some(("T0k".into(), "/sessions?x".into()))
        );
        let uri: Uri = "/?token=abc".parse().unwrap();
        assert_eq!(split_token_param(&uri), Some(("abc".into(), "/".into())));
        assert_eq!(
            split_token_param(&"/sessions?owner=a".parse().unwrap()),
            None
        );
    }
}
