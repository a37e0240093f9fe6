//! The static files the pages load, embedded in the binary and served from `/assets/`.
//!
//! Each is served under a name that changes whenever its bytes do (the vendored files
//! carry their version, our own files a hash of their content), so a browser may keep
//! them for a year without ever using a stale copy.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use fusion_core::fnv1a;

/// Where the assets are served, below the site root.
pub(crate) const PREFIX: &str = "/assets/";

const APP_CSS: &[u8] = include_bytes!("../assets/app.css");
const COPY_JS: &[u8] = include_bytes!("../assets/copy.js");
const HTMX: &[u8] = include_bytes!("../assets/vendor/htmx-2.0.11.min.js");
const HTMX_SSE: &[u8] = include_bytes!("../assets/vendor/htmx-ext-sse-2.2.4.min.js");

const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// One embedded file.
struct Asset {
    /// The name it is served under.
    name: String,
    bytes: &'static [u8],
    content_type: &'static str,
}

/// Every embedded file, named once.
static ASSETS: LazyLock<[Asset; 4]> = LazyLock::new(|| {
    [
        Asset {
            name: format!("app-{:016x}.css", fnv1a(APP_CSS)),
            bytes: APP_CSS,
            content_type: CSS,
        },
        Asset {
            name: format!("copy-{:016x}.js", fnv1a(COPY_JS)),
            bytes: COPY_JS,
            content_type: JS,
        },
        Asset {
            name: "htmx-2.0.11.min.js".into(),
            bytes: HTMX,
            content_type: JS,
        },
        Asset {
            name: "htmx-ext-sse-2.2.4.min.js".into(),
            bytes: HTMX_SSE,
            content_type: JS,
        },
    ]
});

/// The URLs the page layout links to.
#[derive(Debug)]
pub(crate) struct AssetUrls {
    /// Our stylesheet.
    pub css: String,
    /// htmx itself.
    pub htmx: String,
    /// htmx's SSE extension, for the chat's streamed turns.
    pub sse: String,
    /// The copy buttons' script (`assets/copy.js`).
    pub copy: String,
}

/// The URLs of the embedded files.
pub(crate) static URLS: LazyLock<AssetUrls> = LazyLock::new(|| {
    let [css, copy, htmx, sse] = &*ASSETS;
    AssetUrls {
        css: format!("{PREFIX}{}", css.name),
        htmx: format!("{PREFIX}{}", htmx.name),
        sse: format!("{PREFIX}{}", sse.name),
        copy: format!("{PREFIX}{}", copy.name),
    }
});

/// `GET /assets/{name}`: the embedded file, cacheable for a year, or 404.
pub(crate) async fn serve(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            asset.bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_names_follow_the_content() {
        assert!(URLS.css.starts_with("/assets/app-") && URLS.css.ends_with(".css"));
        assert!(URLS.copy.starts_with("/assets/copy-") && URLS.copy.ends_with(".js"));
        assert_ne!(fnv1a(b"a{}"), fnv1a(b"b{}"));
        assert_eq!(URLS.htmx, "/assets/htmx-2.0.11.min.js");
    }
}
