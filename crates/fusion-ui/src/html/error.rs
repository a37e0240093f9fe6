//! [`PageError`]: a request that cannot be answered with its page, answered with an
//! error page that says why (bad input, an unknown session, a refused request), or, to
//! htmx, with the same words as a fragment for the page's refusal area ([`Refusal`]).

use crate::assets::{AssetUrls, URLS};
use crate::shown_error::shown_error;
use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// Why a page cannot be shown, with the status it is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
    hint: Option<String>,
}

impl PageError {
    /// 400: the request's input is invalid; `message` says which and why.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: nothing is stored under what the request names.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 403: the request was refused (wrong `Host`, cross-site).
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 409: the session changed since the page that asked for this change was shown;
    /// `message` says what changed and nothing was written.
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
            .hint("Reload the session's page to see it as it is now, then try again.")
    }

    /// 401: a token is in force and the request did not carry it.
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message).hint(
            "Open the URL that `fusion ui` printed when it started (it ends in ?token=...): \
             it sets a cookie for this browser. Programs can send the header \
             `Authorization: Bearer <token>` instead.",
        )
    }

    /// The status and message of a storage error: the caller's input for an invalid id
    /// or query (400), a rename from a page older than another rename (409, see
    /// `routes/meta.rs`), the server's problem otherwise (500), its text with the secrets
    /// it may quote hidden ([`fusion_core::redact_text`]: the bundled backends hide
    /// theirs where the error is made, and a storage of the caller's own, a public trait,
    /// may quote its connection URL) and the server's file paths too
    /// ([`shown_error`]).
    pub(crate) fn storage(err: &fusion::Error) -> Self {
        match err {
            // The core error names both titles and says nothing was written.
            fusion::Error::TitleChanged { .. } => Self::conflict(format!(
                "This page is older than the session's title: {err}."
            )),
            fusion::Error::InvalidSessionId { .. }
            | fusion::Error::InvalidMeta(_)
            | fusion::Error::InvalidQuery(_) => Self::bad_request(err.to_string()),
            // Its text names a file of the server's: the browser, which may be on
            // another machine (`--bind` with a token), gets the kind alone; the server's
            // log gets the whole error, for whoever runs it.
            fusion::Error::Io { source, .. } => {
                tracing::error!(error = %fusion_core::redact_text(&err.to_string()), "storage I/O error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "the storage failed: an I/O error ({}); the server's log names the file",
                        source.kind()
                    ),
                )
            }
            _ => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the storage failed: {}", shown_error(&err.to_string())),
            ),
        }
    }

    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            hint: None,
        }
    }

    /// `status` saying `message`: for an answer of the app's that is no `PageError` (a
    /// rejection axum made before a handler ran).
    pub(crate) fn with_status(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, message)
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The status it is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// What went wrong, in a sentence.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// The page's heading: what kind of problem this is.
    fn heading(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "Invalid request",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Refused",
            StatusCode::UNAUTHORIZED => "Token required",
            StatusCode::CONFLICT => "Changed meanwhile",
            status if status.is_client_error() => "Invalid request",
            _ => "Something went wrong",
        }
    }

    /// The whole error page.
    pub(crate) fn page(&self) -> Result<String, askama::Error> {
        let heading = self.heading();
        ErrorPage {
            title: heading,
            assets: &URLS,
            heading,
            message: &self.message,
            hint: self.hint.as_deref(),
        }
        .render()
    }

    /// The reason as the fragment htmx puts in the page's refusal area (`#refusal`,
    /// templates/base.html), in place of the whole error page.
    pub(crate) fn refusal(&self) -> Result<String, askama::Error> {
        Refusal {
            heading: self.heading(),
            message: &self.message,
            hint: self.hint.as_deref(),
        }
        .render()
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    assets: &'static AssetUrls,
    heading: &'a str,
    message: &'a str,
    hint: Option<&'a str>,
}

/// A refused request's reason, for the refusal area of the page that sent it.
#[derive(Template)]
#[template(path = "refusal.html")]
struct Refusal<'a> {
    heading: &'a str,
    message: &'a str,
    hint: Option<&'a str>,
}

/// The error page, carrying the error itself as a response extension: an htmx request
/// is answered with [`PageError::refusal`] instead (`routes::refusal`).
impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let mut response = match self.page() {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(err) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("rendering the page failed: {err}"),
            )
                .into_response(),
        };
        response.extensions_mut().insert(self);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_page_renders_its_message_escaped() {
        let page = ErrorPage {
            title: "Invalid request",
            assets: &URLS,
            heading: "Invalid request",
            message: "bad <cursor>",
            hint: Some("try again"),
        };
        let html = page.render().unwrap();
        assert!(html.contains("bad &#60;cursor&#62;") || html.contains("bad &lt;cursor&gt;"));
        assert!(html.contains("<p>try again</p>"), "{html}");
        assert_eq!(
            PageError::storage(&fusion::Error::InvalidMeta("x".into()))
                .into_response()
                .status(),
            StatusCode::BAD_REQUEST
        );
    }

    /// Found by a hunt: the page quoted the I/O error whole, with the server's file path
    /// in it, to a browser that may be on another machine.
    #[test]
    fn an_io_error_is_shown_without_its_path() {
        let err = fusion::Error::Io {
            path: "/srv/private/sessions/s1.jsonl".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let error = PageError::storage(&err);
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !error.message().contains("/srv/private"),
            "{}",
            error.message()
        );
        assert!(
            error.message().contains("permission denied"),
            "{}",
            error.message()
        );
        let page = error.page().unwrap();
        assert!(!page.contains("/srv/private"), "{page}");
    }

    /// Found by a review: errors other than I/O ones name the server's files too (the
    /// file-system backend's damaged metadata or lock file, the SQLite database), and
    /// the page quoted them, as the delete pages quote a damaged session's error.
    #[test]
    fn a_storage_errors_path_is_not_shown() {
        let err = fusion::Error::corrupt(
            "fs",
            "s1",
            "the metadata file /srv/private/s1.meta is not JSON; move the file aside",
        );
        let page = PageError::storage(&err).page().unwrap();
        assert!(!page.contains("/srv/private"), "{page}");
        assert!(page.contains("is not JSON; move the file aside"), "{page}");
        assert!(
            page.contains("the server&#39;s log names the file"),
            "{page}"
        );
        let listed = super::super::bulk::Listed::read("s1".into(), Err(err)).unwrap();
        let damage = listed.damage.unwrap();
        assert!(!damage.contains("/srv/private"), "{damage}");
    }
}
