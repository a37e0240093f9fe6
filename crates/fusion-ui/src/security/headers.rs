//! Security headers on every response, refusals and assets included.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::middleware::Next;
use axum::response::Response;

use crate::assets::PREFIX;

/// Scripts and styles only from our own files (so no injected inline script or style
/// runs), images only from us or `data:`, no plugins, no framing, forms and requests
/// only to us, and no `<base>` to re-point relative URLs.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// Middleware: adds the headers to whatever the inner layers answered. Pages are not
/// cached (they show stored conversations, which a shared cache should not keep);
/// assets set their own long caching.
pub(crate) async fn add_headers(request: Request, next: Next) -> Response {
    let asset = request.uri().path().starts_with(PREFIX);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Not `no-referrer`: under it a browser sends `Origin: null` with our own forms' posts,
    // and where it also sends no `Sec-Fetch-Site` (plain HTTP to a LAN address), the
    // same-origin check (`csrf`) could not tell them from another site's. `same-origin`
    // sends nothing to other sites, and the token never stays in our addresses (`token`
    // redirects it away).
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !asset {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
