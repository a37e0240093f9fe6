//! The `Host` check: a request must name this server, or it is refused with 403.
//!
//! DNS rebinding is how a web page reaches a server on the visitor's loopback: the
//! attacker's name first points at their server, then at 127.0.0.1, and the browser,
//! seeing one origin throughout, lets their script read our pages. The browser still
//! sends the attacker's name in `Host`, so refusing unknown names stops it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::HOST;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::guard::Guard;
use crate::html::PageError;

/// Middleware: 403 unless `Host` (and an absolute request target, if any) names this
/// server.
pub(crate) async fn check_host(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request.headers().get(HOST).and_then(|v| v.to_str().ok());
    let target = request.uri().authority().map(|a| a.as_str());
    let named_here =
        host.is_some_and(|h| guard.host_allowed(h)) && target.is_none_or(|t| guard.host_allowed(t));
    if named_here {
        next.run(request).await
    } else {
        PageError::forbidden(format!(
            "This server does not answer to the host name {:?}. Open it by the address it \
             printed when it started.",
            host.unwrap_or("")
        ))
        .into_response()
    }
}
