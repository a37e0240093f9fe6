//! The sessions page through the router: the listing with its filters, sort orders and
//! cursor pages, the htmx fragment, go-to-session, and the 400s for bad input.

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use fusion::ChatMessage;
use fusion::storage::{InMemoryStorage, SessionMeta};

use common::*;

/// Seven sessions of ann tagged `ops` (s0..s6), three more of ann without it, two of bob
/// tagged `ops`.
async fn seeded() -> std::sync::Arc<InMemoryStorage> {
    let storage = store();
    let hello = [ChatMessage::user("hello")];
    for i in 0..7 {
        let meta = SessionMeta::new()
            .owner("ann")
            .tags(["ops"])
            .title(format!("Ops {i}"));
        put(&storage, &format!("s{i}"), meta, &hello).await;
    }
    for i in 7..10 {
        put(
            &storage,
            &format!("s{i}"),
            SessionMeta::new().owner("ann"),
            &hello,
        )
        .await;
    }
    for i in 10..12 {
        let meta = SessionMeta::new().owner("bob").tags(["ops"]);
        put(&storage, &format!("s{i}"), meta, &hello).await;
    }
    storage
}

/// The session ids the page links to, in order.
fn listed(html: &str) -> Vec<String> {
    html.split("<td><a href=\"/sessions/")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

/// The "Next page" address, unescaped.
fn next_page(html: &str) -> Option<String> {
    let at = html.find("rel=\"next\" href=\"")?;
    let rest = &html[at + "rel=\"next\" href=\"".len()..];
    Some(
        rest.split('"')
            .next()
            .unwrap()
            .replace("&#38;", "&")
            .replace("&amp;", "&"),
    )
}

#[tokio::test]
async fn the_home_page_leads_to_the_sessions() {
    let reply = send(&app(store()), get("/")).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.header("location"), "/sessions");
    let empty = send(&app(store()), get("/sessions")).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.contains("No sessions."), "{}", empty.body);
    assert!(!empty.body.contains("rel=\"next\""));
}

#[tokio::test]
async fn filtered_pages_follow_their_cursors_to_the_end() {
    let app = app(seeded().await);
    let mut path = "/sessions?owner=ann&tag=ops&order=id&limit=3".to_string();
    let mut pages = Vec::new();
    loop {
        let reply = send(&app, get(&path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
        pages.push(listed(&reply.body));
        match next_page(&reply.body) {
            Some(next) => {
                assert!(
                    next.contains("owner=ann") && next.contains("tag=ops"),
                    "{next}"
                );
                assert!(
                    next.contains("order=id") && next.contains("limit=3"),
                    "{next}"
                );
                path = next;
            }
            None => break,
        }
    }
    assert_eq!(
        pages,
        [vec!["s0", "s1", "s2"], vec!["s3", "s4", "s5"], vec!["s6"]]
    );
}

#[tokio::test]
async fn the_newest_first_order_lists_each_session_once_with_its_facts() {
    let app = app(seeded().await);
    let mut path = "/sessions?limit=5".to_string();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let reply = send(&app, get(&path)).await;
        seen.extend(listed(&reply.body));
        match next_page(&reply.body) {
            Some(next) => path = next,
            None => break,
        }
    }
    seen.sort();
    let mut all: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
    all.sort();
    assert_eq!(seen, all);

    let first = send(&app, get("/sessions?tag=ops&owner=bob")).await;
    assert_eq!(listed(&first.body), ["s11", "s10"]);
    assert!(
        first
            .body
            .contains(r#"<a class="tag" href="/sessions?owner=bob&#38;tag=ops">ops</a>"#),
        "{}",
        first.body
    );
    assert!(first.body.contains(r#"<td class="num">1</td>"#));
    let titled = send(&app, get("/sessions?owner=ann&tag=ops&limit=1")).await;
    assert!(
        titled
            .body
            .contains(">Ops 6</a><div class=\"sub\">s6</div>"),
        "{}",
        titled.body
    );
}

#[tokio::test]
async fn htmx_gets_the_table_alone() {
    let app = app(seeded().await);
    let fragment = request("GET", "/sessions?owner=bob")
        .header("hx-request", "true")
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, fragment).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.body.starts_with("<div id=\"sessions-table\">"),
        "{}",
        reply.body
    );
    assert!(!reply.body.contains("<html"));
    assert_eq!(listed(&reply.body), ["s11", "s10"]);
    // Restoring the browser history needs the whole page.
    let restore = request("GET", "/sessions?owner=bob")
        .header("hx-request", "true")
        .header("hx-history-restore-request", "true")
        .body(Body::empty())
        .unwrap();
    assert!(
        send(&app, restore)
            .await
            .body
            .starts_with("<!doctype html>")
    );
    let page = send(&app, get("/sessions?owner=bob")).await;
    assert!(
        page.body
            .contains(r##"hx-get="/sessions" hx-target="#sessions-table""##)
    );
    assert!(page.body.contains(r#"<input name="owner" value="bob""#));
}

#[tokio::test]
async fn bad_listing_input_is_a_400_that_says_what_is_wrong() {
    let app = app(seeded().await);
    let cases = [
        (
            "/sessions?order=sideways",
            "Unknown sort order &#34;sideways&#34;",
        ),
        ("/sessions?cursor=garbage", "invalid cursor"),
        // A cursor handed out for the other order.
        ("/sessions?order=id&cursor=u.5.s1", "another sort order"),
        ("/sessions?limit=many", "is not a whole number"),
        ("/sessions?limit=0", "out of range"),
        ("/sessions?owner=a%2Fb", "invalid owner"),
        ("/sessions?tag=a,b", "comma"),
    ];
    for (path, expected) in cases {
        let reply = send(&app, get(path)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(reply.body.contains(expected), "{path}: {}", reply.body);
    }
}

#[tokio::test]
async fn go_to_a_session_by_id() {
    let app = app(store());
    let reply = send(&app, get("/go?id=+user-1+")).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.header("location"), "/sessions/user-1");
    for bad in ["/go?id=..%2Fetc", "/go?id=", "/go"] {
        let reply = send(&app, get(bad)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(reply.body.contains("session id"), "{bad}: {}", reply.body);
    }
}
