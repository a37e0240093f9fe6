//! Turning a template into a response.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// `template` rendered as an HTML response with `status`, or a plain 500 if rendering
/// failed (a template bug, never input: templates render any data they accept).
pub(crate) fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the page failed: {err}"),
        )
            .into_response(),
    }
}
