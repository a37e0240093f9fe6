//! What htmx is answered when it asks for something refused: the reason as a fragment
//! for the page's refusal area (`HX-Retarget: #refusal`), escaped, kept out of the
//! address bar, with the security headers of every answer; for a refusal of a handler,
//! of the security checks and of axum itself. A plain browser request still gets the
//! whole error page, and a token cell that cannot be counted says so in place. (htmx
//! swaps no error answer unless the page's config says to: `browser.rs` and
//! `browser/chat.rs` check the page shows these.)

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use fusion::ChatMessage;
use fusion::storage::{ConversationStorage, InMemoryStorage, Revision, SessionInfo, SessionMeta};
use fusion_core::{Error, Intercept, Intercepted, Result};
use fusion_ui::{UiConfig, router};

use common::*;

/// A GET of `path` as htmx sends it.
fn htmx_get(path: &str) -> Request<Body> {
    request("GET", path)
        .header("hx-request", "true")
        .body(Body::empty())
        .unwrap()
}

/// Checks that `reply` is a refusal for the refusal area with `status`, saying `says`.
fn assert_refusal(reply: &Reply, status: StatusCode, says: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.header("hx-retarget"), "#refusal");
    assert_eq!(reply.header("hx-reswap"), "innerHTML");
    assert_eq!(reply.header("hx-push-url"), "false", "kept out of history");
    assert!(reply.header("content-type").starts_with("text/html"));
    assert!(
        reply
            .header("content-security-policy")
            .contains("script-src 'self'"),
        "the refusal keeps the security headers"
    );
    assert!(
        reply
            .body
            .trim_start()
            .starts_with("<dialog class=\"refusal\""),
        "a fragment, not a page: {}",
        reply.body
    );
    assert!(!reply.body.contains("<html"), "{}", reply.body);
    assert!(reply.body.contains(says), "{says:?} in {}", reply.body);
}

#[tokio::test]
async fn a_refused_htmx_request_gets_its_reason_escaped_for_the_refusal_area() {
    let app = app(store());
    let hostile = "/sessions?order=%3Cb%3Ebad%3C%2Fb%3E";
    let reply = send(&app, htmx_get(hostile)).await;
    assert_refusal(&reply, StatusCode::BAD_REQUEST, "Unknown sort order");
    assert!(reply.body.contains("&#60;b&#62;bad"), "{}", reply.body);
    assert!(
        !tags(&reply.body).iter().any(|tag| tag == "b"),
        "the text is escaped: {}",
        reply.body
    );
    assert_inert(&reply.body);

    // A browser without htmx, or htmx restoring history, gets the page.
    let page = send(&app, get(hostile)).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("<html"), "{}", page.body);
    assert!(page.body.contains("Unknown sort order"), "{}", page.body);
    assert_eq!(page.header("hx-retarget"), "");
    let restore = request("GET", hostile)
        .header("hx-request", "true")
        .header("hx-history-restore-request", "true")
        .body(Body::empty())
        .unwrap();
    let restored = send(&app, restore).await;
    assert!(restored.body.contains("<html"), "{}", restored.body);
}

#[tokio::test]
async fn refusals_of_the_security_checks_and_of_axum_are_shown_too() {
    let storage = store();
    put(&storage, "s", SessionMeta::new(), &exchange()).await;
    let app = app(storage);

    let cross_site = request("POST", "/sessions/s/title")
        .header("origin", "https://evil.example")
        .header("hx-request", "true")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("title=x"))
        .unwrap();
    let reply = send(&app, cross_site).await;
    assert_refusal(&reply, StatusCode::FORBIDDEN, "must come from this app");

    // Refused by axum before any handler: a path it cannot read, a method not served.
    let bad_path = request("POST", "/sessions/s/turns/k/approvals/first")
        .header("origin", ORIGIN)
        .header("hx-request", "true")
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, bad_path).await;
    assert_refusal(&reply, StatusCode::BAD_REQUEST, "Invalid URL");
    let put = request("PUT", "/sessions/s")
        .header("origin", ORIGIN)
        .header("hx-request", "true")
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, put).await;
    assert_refusal(&reply, StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
}

/// The store, except that no history can be read.
struct Unreadable(Arc<InMemoryStorage>);

#[async_trait]
impl Intercept for Unreadable {
    fn inner(&self) -> &dyn ConversationStorage {
        self.0.as_ref()
    }

    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        Err(Error::Backend {
            backend: "test",
            message: format!("reading {session_id} failed <on purpose>"),
            retryable: false,
            source: None,
        })
    }
}

#[tokio::test]
async fn a_token_cell_that_cannot_be_counted_says_why_in_place() {
    let storage = store();
    put(&storage, "s", SessionMeta::new(), &exchange()).await;
    let address = HOST.parse().unwrap();
    let settings = UiConfig::new(address).settings(address).unwrap();
    let app = router(Arc::new(Intercepted(Unreadable(storage))), &settings);

    let reply = send(&app, htmx_get("/sessions/s/tokens")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        reply.header("hx-retarget"),
        "",
        "swapped where it was asked for"
    );
    assert!(
        reply
            .body
            .starts_with("<td class=\"num tokens\" title=\"Not counted: the storage failed:"),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("&#60;on purpose&#62;"),
        "{}",
        reply.body
    );
    assert!(reply.body.ends_with(">not counted</td>"), "{}", reply.body);
}

/// A bulk delete is answered as its worst failure alone would be: here a session that
/// changed since it was listed, whose state then cannot be read (the storage failed: 500),
/// beside an invalid id (400). Sessions that only changed, or were held, are a 409
/// (`delete_race.rs`, `chat_busy.rs`); every failure was a 500.
#[tokio::test]
async fn a_bulk_delete_whose_storage_failed_is_a_500_whatever_else_failed() {
    let storage = store();
    put(&storage, "a", SessionMeta::new(), &exchange()).await;
    let address = HOST.parse().unwrap();
    let settings = UiConfig::new(address).settings(address).unwrap();
    let app = router(
        Arc::new(Intercepted(Unreadable(storage.clone()))),
        &settings,
    );

    // Listed with one message; it holds more, so the delete is refused and its state read.
    let form = "id=a&revision=0+1+a&id=bad+id%21";
    let reply = send(&app, post_form("/bulk-delete", form)).await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("reading a failed &#60;on purpose&#62;"),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("<code>bad id!</code>"),
        "{}",
        reply.body
    );
    assert_eq!(storage.load("a").await.unwrap().len(), exchange().len());
}

#[tokio::test]
async fn a_request_axum_refuses_before_any_handler_gets_an_error_page() {
    let storage = store();
    put(&storage, "s", SessionMeta::new(), &exchange()).await;
    let app = app(storage);
    let page = |reply: &Reply, status: StatusCode, says: &str| {
        assert_eq!(reply.status, status, "{}", reply.body);
        assert!(reply.header("content-type").starts_with("text/html"));
        assert!(reply.body.contains("<html"), "a page: {}", reply.body);
        assert!(reply.body.contains(says), "{says:?} in {}", reply.body);
        assert!(
            reply.body.contains("Back to the sessions"),
            "{}",
            reply.body
        );
    };
    // A path that is not UTF-8 (it was a line of plain text).
    let reply = send(&app, get("/sessions/%FF")).await;
    page(&reply, StatusCode::BAD_REQUEST, "Invalid UTF-8");
    // A form over the body limit: a title pasted from a 3 MB file.
    let title = format!("title={}", "a".repeat(3 << 20));
    let reply = send(&app, post_form("/sessions/s/title", &title)).await;
    page(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "length limit exceeded",
    );
    // A method not served keeps saying which are.
    let put = request("PUT", "/sessions/s")
        .header("origin", ORIGIN)
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, put).await;
    page(&reply, StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    assert!(reply.header("allow").contains("GET"), "{:?}", reply.headers);
}

/// The store, except that every read fails with an error quoting credentials, as a
/// storage of the caller's own may (the bundled backends hide theirs where they fail).
struct Quoting(Arc<InMemoryStorage>);

/// What [`Quoting`] fails with.
const QUOTED: &str = "cannot reach redis://app:s3cret-1@db:6379/0 (password=s3cret-2)";

#[async_trait]
impl Intercept for Quoting {
    fn inner(&self) -> &dyn ConversationStorage {
        self.0.as_ref()
    }

    async fn session_info(&self, _session_id: &str) -> Result<Option<SessionInfo>> {
        Err(Error::Backend {
            backend: "test",
            message: QUOTED.into(),
            retryable: true,
            source: None,
        })
    }

    async fn load_revision(&self, _session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        Err(Error::Backend {
            backend: "test",
            message: QUOTED.into(),
            retryable: true,
            source: None,
        })
    }
}

#[tokio::test]
async fn a_storage_failure_is_shown_without_the_secrets_it_quotes() {
    let storage = store();
    put(&storage, "a", SessionMeta::new(), &exchange()).await;
    let address = HOST.parse().unwrap();
    let settings = UiConfig::new(address).settings(address).unwrap();
    let app = router(Arc::new(Intercepted(Quoting(storage))), &settings);
    for request in [
        get("/sessions/a"),
        htmx_get("/sessions/a"),
        get("/sessions/a/tokens"),
        post_form("/bulk-delete", "id=a&revision=0+1+a"),
    ] {
        let path = request.uri().to_string();
        let reply = send(&app, request).await;
        assert_eq!(
            reply.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{path}: {}",
            reply.body
        );
        assert!(!reply.body.contains("s3cret"), "{path}: {}", reply.body);
        assert!(
            reply.body.contains("redis://app:***@db:6379/0"),
            "{path}: {}",
            reply.body
        );
    }
}
