//! The sessions page through the router: the listing with its filters (a search of ids
//! and titles among them), sort orders and cursor pages, the htmx fragment, each row's
//! token total fetched on its own, go-to-session, and the 400s for bad input.

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use fusion::ChatMessage;
use fusion::agent::TokenCounter;
use fusion::agent::context::{Encoding, TiktokenCounter};
use fusion::storage::{ConversationStorage, InMemoryStorage, SessionMeta};

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

/// The pages from `start` to the last, following each "Next page" address, as their
/// bodies: each must be a 200, and each next address must keep every one of `keeps` (the
/// filters, order and limit that a cursor must not drop).
async fn walk_pages(app: &Router, start: &str, keeps: &[&str]) -> Vec<String> {
    let mut path = start.to_string();
    let mut pages = Vec::new();
    loop {
        let reply = send(app, get(&path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
        let next = next_page(&reply.body);
        pages.push(reply.body);
        let Some(next) = next else {
            return pages;
        };
        for kept in keeps {
            assert!(next.contains(kept), "{kept} dropped from {next}");
        }
        path = next;
    }
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
    let start = "/sessions?owner=ann&tag=ops&order=id&limit=3";
    let keeps = ["owner=ann", "tag=ops", "order=id", "limit=3"];
    let pages = walk_pages(&app, start, &keeps).await;
    assert_eq!(
        pages.iter().map(|body| listed(body)).collect::<Vec<_>>(),
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
async fn a_search_of_ids_and_titles_stays_across_pages_and_filters() {
    let app = app(seeded().await);
    // By title, in another case, the spaces a form may send trimmed: s0..s6 are "Ops n".
    let start = "/sessions?search=+oPS+&order=id&limit=3";
    let pages = walk_pages(&app, start, &["search=oPS", "order=id"]).await;
    for body in &pages {
        assert!(
            body.contains(r#"<input type="search" name="search" value="oPS""#),
            "the form shows the search: {body}"
        );
    }
    assert_eq!(
        pages.iter().map(|body| listed(body)).collect::<Vec<_>>(),
        [vec!["s0", "s1", "s2"], vec!["s3", "s4", "s5"], vec!["s6"]]
    );

    // By id, with an owner; the row's owner and tag links keep the search.
    let bob = send(&app, get("/sessions?owner=bob&search=S1")).await;
    assert_eq!(listed(&bob.body), ["s11", "s10"]);
    assert!(
        bob.body.contains(
            r#"<a class="tag" href="/sessions?owner=bob&#38;tag=ops&#38;search=S1">ops</a>"#
        ),
        "{}",
        bob.body
    );
    let none = send(&app, get("/sessions?search=50%25_off")).await;
    assert!(
        none.body.contains("No sessions match these filters."),
        "{}",
        none.body
    );
    assert_inert(&bob.body);
}

#[tokio::test]
async fn each_row_fetches_its_token_total_which_follows_the_session() {
    let storage = seeded().await;
    let app = app(storage.clone());
    let page = send(&app, get("/sessions?owner=bob")).await;
    assert!(
        page.body
            .contains(r#"<th scope="col" class="num">Tokens</th>"#),
        "{}",
        page.body
    );
    // The page itself counts nothing: each row asks once it is in view.
    assert!(
        page.body.contains(
            r#"<td class="num tokens" hx-get="/sessions/s11/tokens" hx-trigger="revealed" hx-swap="outerHTML">counting…</td>"#
        ),
        "{}",
        page.body
    );
    assert!(!page.body.contains(" tokens</td>"), "{}", page.body);

    let counter = TiktokenCounter::new(Encoding::O200kBase);
    let count = |messages: &[ChatMessage]| -> usize {
        messages.iter().map(|m| counter.count_message(m)).sum()
    };
    let hello = count(&[ChatMessage::user("hello")]);
    let cell = send(&app, get("/sessions/s11/tokens")).await;
    assert_eq!(cell.status, StatusCode::OK);
    assert!(
        cell.body
            .starts_with(r#"<td class="num tokens" title="The 1 stored message, each with its framing, counted with the o200k_base encoding"#),
        "{}",
        cell.body
    );
    assert!(
        cell.body.ends_with(&format!(">{hello} tokens</td>")),
        "{}",
        cell.body
    );
    assert_inert(&cell.body);
    // Asked again, unchanged: the same answer (from the cache).
    assert_eq!(
        send(&app, get("/sessions/s11/tokens")).await.body,
        cell.body
    );

    // A write is counted at once, in groups of three digits.
    let long = [ChatMessage::assistant(
        "tokens and more tokens ".repeat(300),
    )];
    storage.append("s11", &long).await.unwrap();
    let total = hello + count(&long);
    assert!((1_000..1_000_000).contains(&total), "{total}");
    let grown = send(&app, get("/sessions/s11/tokens")).await;
    assert!(
        grown.body.ends_with(&format!(
            ">{},{:03} tokens</td>",
            total / 1000,
            total % 1000
        )),
        "{total}: {}",
        grown.body
    );
    assert!(
        grown.body.contains("The 2 stored messages,"),
        "{}",
        grown.body
    );

    // Deleted since its row was shown: a dash; an id no backend accepts: a 400.
    storage.delete("s11").await.unwrap();
    let gone = send(&app, get("/sessions/s11/tokens")).await;
    assert_eq!(gone.status, StatusCode::OK);
    assert!(gone.body.ends_with(">—</td>"), "{}", gone.body);
    let bad = send(&app, get("/sessions/a%20b/tokens")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
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
        ("/sessions?search=a%07b", "invalid search text"),
        // Not UTF-8 once decoded: refused naming the parameter, where axum's lossy
        // decoding made it U+FFFD, a filter that matched nothing and said nothing.
        (
            "/sessions?tag=%FF",
            "The query parameter &#34;tag&#34; is not text",
        ),
        (
            "/sessions?owner=ann&search=caf%E9",
            "parameter &#34;search&#34;",
        ),
    ];
    let long = format!("/sessions?search={}", "x".repeat(201));
    let cases = cases
        .into_iter()
        .chain([(long.as_str(), "the limit is 200")]);
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

/// A parameter no page reads is never looked at: its bytes, text or not, are no reason to
/// refuse the page. The check of every parameter's bytes refused a link that carried one
/// along (`&ref=%FF`), though the page would never read it.
#[tokio::test]
async fn a_parameter_no_page_reads_is_not_refused_for_its_bytes() {
    let app = app(seeded().await);
    let reply = send(&app, get("/sessions?owner=bob&ref=%FF%FE")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains(r#"<input name="owner" value="bob""#));
    let reply = send(&app, get("/go?ref=%FF&id=user-1")).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let reply = send(&app, get("/sessions?owner=%FF&ref=ok")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(reply.body.contains("parameter &#34;owner&#34; is not text"));
}
