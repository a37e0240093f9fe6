//! What a refused request gets: an error page, or, for htmx, its reason in the page's
//! refusal area.
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
//! - anything else (a rejection axum made before a handler ran, in plain text: a path
//!   that is not UTF-8, a body over its size limit, a method not served) becomes a
//!   refusal saying its text.
//!
//! A plain browser request (no `HX-Request`) gets the whole error page, a rejection of
//! axum's too (it was a line of plain text).

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

/// Middleware: an htmx request answered with an error gets it as a refusal to show, and
/// any request refused in plain text gets an error page.
pub(crate) async fn show_refusals(request: Request, next: Next) -> Response {
    let htmx = wants_fragment(request.headers());
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    match response.extensions().get::<PageError>() {
        Some(_) if !htmx => response,
        Some(error) => {
            let error = error.clone();
            as_refusal(response, &error)
        }
        None if is_html(&response) => response,
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
            let error = PageError::with_status(status, message);
            if htmx {
                return as_refusal(response, &error);
            }
            match error.page() {
                Ok(html) => with_html(response, html),
                Err(_) => response,
            }
        }
    }
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
    let mut response = with_html(response, html);
    let headers = response.headers_mut();
    headers.insert("hx-retarget", HeaderValue::from_static("#refusal"));
    headers.insert("hx-reswap", HeaderValue::from_static("innerHTML"));
    headers.insert("hx-push-url", HeaderValue::from_static("false"));
    response
}

/// `response` (its status and other headers kept: a 405's `Allow`) with `html` as its
/// body.
fn with_html(response: Response, html: String) -> Response {
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Response::from_parts(parts, Body::from(html))
}
