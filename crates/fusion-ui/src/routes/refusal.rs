//! What htmx shows of a refused request: its reason, in the page's refusal area.
//!
//! htmx leaves the page as it is when an answer is an error (4xx, 5xx) unless told
//! otherwise, so a refused action (a send while a turn runs, an approval for a call the
//! question no longer asks about, a filter the listing refuses) looked as if nothing had
//! happened. The pages tell htmx to swap errors too (`responseHandling` in base.html), and
//! this middleware makes every error answer to htmx one it can swap:
//!
//! - a [`PageError`] (every refusal of a handler or of the security middleware) becomes
//!   [`PageError::refusal`], the same words as its page, retargeted to `#refusal`;
//! - an HTML answer that is no `PageError` is a fragment meant for the element that asked
//!   (the card of a question answered already, a token cell that could not be counted)
//!   and is left to replace it;
//! - anything else (a rejection axum made before a handler ran, in plain text) becomes a
//!   refusal saying its text.
//!
//! A plain browser request (no `HX-Request`) still gets the whole error page.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::Response;

use super::request::wants_fragment;
use crate::html::PageError;

/// The most of a plain-text error answer read to show as its reason.
const MAX_TEXT: usize = 16 * 1024;

/// Middleware: an htmx request answered with an error gets it as a refusal to show.
pub(crate) async fn show_refusals(request: Request, next: Next) -> Response {
    let htmx = wants_fragment(request.headers());
    let response = next.run(request).await;
    let status = response.status();
    if !htmx || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let refusal = match response.extensions().get::<PageError>() {
        Some(error) => error.clone(),
        None if is_html(&response) => return response,
        None => {
            let (parts, body) = response.into_parts();
            let text = to_bytes(body, MAX_TEXT).await.unwrap_or_default();
            let response = Response::from_parts(parts, Body::empty());
            let text = String::from_utf8_lossy(&text).trim().to_string();
            let message = if text.is_empty() {
                status.canonical_reason().unwrap_or("Refused").to_string()
            } else {
                text
            };
            return as_refusal(response, &PageError::with_status(status, message));
        }
    };
    as_refusal(response, &refusal)
}

/// Whether `response` is HTML.
fn is_html(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"))
}

/// `response` (its status and headers kept) with `error`'s refusal as its body, and the
/// headers that make htmx put it in the refusal area: not where the request's element
/// said, and not in the address bar (a filter form pushes its URL).
fn as_refusal(response: Response, error: &PageError) -> Response {
    let Ok(html) = error.refusal() else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    let headers = &mut parts.headers;
    headers.remove(CONTENT_LENGTH);
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert("hx-retarget", HeaderValue::from_static("#refusal"));
    headers.insert("hx-reswap", HeaderValue::from_static("innerHTML"));
    headers.insert("hx-push-url", HeaderValue::from_static("false"));
    Response::from_parts(parts, Body::from(html))
}
