//! The defences, through the router: the `Host` check, the token (cookie, bearer, the
//! `?token=` exchange), the same-origin check on changes, and the headers every
//! response carries.

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use fusion::ChatMessage;
use fusion::storage::{ConversationStorage, SessionMeta};

use common::*;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' \
    data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn post_delete(id: &str) -> axum::http::request::Builder {
    request("POST", &format!("/sessions/{id}/delete"))
}

#[tokio::test]
async fn a_foreign_or_missing_host_is_refused_and_local_names_are_served() {
    let app = app(store());
    for host in [
        "evil.example",
        "evil.example:8765",
        "127.0.0.1:9999",
        "localhost",
    ] {
        let request = axum::http::Request::get("/sessions")
            .header("host", host)
            .body(Body::empty())
            .unwrap();
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{host}");
        assert!(
            reply.body.contains("does not answer to the host name"),
            "{host}"
        );
    }
    let no_host = axum::http::Request::get("/sessions")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, no_host).await.status, StatusCode::FORBIDDEN);
    let absolute = axum::http::Request::get("http://evil.example/sessions")
        .header("host", HOST)
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, absolute).await.status, StatusCode::FORBIDDEN);
    for host in [HOST, "localhost:8765", "[::1]:8765"] {
        let request = axum::http::Request::get("/sessions")
            .header("host", host)
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app, request).await.status, StatusCode::OK, "{host}");
    }
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let storage = store();
    put(&storage, "s1", SessionMeta::new(), &exchange()).await;
    let app = app(storage);
    let foreign = axum::http::Request::get("/")
        .header("host", "evil.example")
        .body(Body::empty())
        .unwrap();
    let replies = [
        send(&app, get("/sessions")).await,
        send(&app, get("/sessions/s1")).await,
        send(&app, get("/no/such/page")).await,
        send(&app, get("/sessions?order=sideways")).await,
        send(&app, foreign).await,
        send(&app, post_delete("s1").body(Body::empty()).unwrap()).await,
        send(&app, get("/assets/htmx-2.0.11.min.js")).await,
    ];
    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses, [200, 200, 404, 400, 403, 403, 200]);
    for reply in &replies {
        assert_eq!(reply.header("content-security-policy"), CSP);
        assert_eq!(reply.header("x-content-type-options"), "nosniff");
        assert_eq!(reply.header("referrer-policy"), "same-origin");
        assert_eq!(reply.header("x-frame-options"), "DENY");
    }
    assert_eq!(replies[0].header("cache-control"), "no-store");
    assert!(replies[6].header("cache-control").contains("immutable"));
    assert_eq!(
        replies[6].header("content-type"),
        "text/javascript; charset=utf-8"
    );
}

#[tokio::test]
async fn with_a_token_in_force_a_request_without_it_is_refused() {
    let app = app_with_token(store());
    let reply = send(&app, get("/sessions")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply.body.contains("?token="),
        "the page says how to get in"
    );
    let wrong_cookie = request("GET", "/sessions")
        .header("cookie", "fusion_ui_token_8765=nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&app, wrong_cookie).await.status,
        StatusCode::UNAUTHORIZED
    );
    let wrong_bearer = request("GET", "/sessions")
        .header("authorization", format!("Bearer {TOKEN}x"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&app, wrong_bearer).await.status,
        StatusCode::UNAUTHORIZED
    );
    let wrong_query = send(&app, get("/sessions?token=guess-guess-guess-guess")).await;
    assert_eq!(wrong_query.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_query.header("set-cookie"), "");
    // The stylesheet of the refusal page itself needs no token.
    let css = reply
        .body
        .split("<link rel=\"stylesheet\" href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(css.starts_with("/assets/app-"), "{css}");
    let css = send(&app, get(css)).await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.header("content-type"), "text/css; charset=utf-8");
}

#[tokio::test]
async fn the_token_in_the_url_becomes_a_strict_cookie_and_leaves_the_address() {
    let app = app_with_token(store());
    let reply = send(
        &app,
        get(&format!("/sessions?owner=ann&token={TOKEN}&tag=x")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.header("location"), "/sessions?owner=ann&tag=x");
    assert_eq!(
        reply.header("set-cookie"),
        format!("fusion_ui_token_8765={TOKEN}; HttpOnly; SameSite=Strict; Path=/")
    );
    // The cookie of earlier releases, named for no port and never Secure, would still
    // carry a --token given again to every port of the host, in the clear: it is expired.
    let set: Vec<_> = reply.headers.get_all("set-cookie").iter().collect();
    assert_eq!(set.len(), 2, "{set:?}");
    assert_eq!(set[1], "fusion_ui_token=; Max-Age=0; Path=/");
    let with_cookie = request("GET", "/sessions?owner=ann&tag=x")
        .header("cookie", format!("other=1; fusion_ui_token_8765={TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, with_cookie).await.status, StatusCode::OK);
    let with_bearer = request("GET", "/sessions")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, with_bearer).await.status, StatusCode::OK);
    // The address it redirects to is always ours, never another host's.
    let reply = send(&app, get(&format!("//evil.example/x?token={TOKEN}"))).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.header("location"), "/evil.example/x");
}

#[tokio::test]
async fn a_change_from_another_origin_or_from_nowhere_is_refused() {
    let storage = store();
    put(&storage, "s1", SessionMeta::new(), &exchange()).await;
    let app = app(storage.clone());
    let refused = [
        post_delete("s1").body(Body::empty()).unwrap(),
        post_delete("s1")
            .header("origin", "http://evil.example")
            .body(Body::empty())
            .unwrap(),
        post_delete("s1")
            .header("origin", "null")
            .body(Body::empty())
            .unwrap(),
        post_delete("s1")
            .header("origin", "http://127.0.0.1:9999")
            .body(Body::empty())
            .unwrap(),
        // Our name, but not our port: over HTTPS that is someone else's server.
        post_delete("s1")
            .header("origin", "https://127.0.0.1")
            .body(Body::empty())
            .unwrap(),
        post_delete("s1")
            .header("sec-fetch-site", "cross-site")
            .body(Body::empty())
            .unwrap(),
        // A right-looking Sec-Fetch-Site does not outvote a wrong Origin.
        post_delete("s1")
            .header("origin", "http://evil.example")
            .header("sec-fetch-site", "same-origin")
            .body(Body::empty())
            .unwrap(),
        request("DELETE", "/sessions/s1")
            .body(Body::empty())
            .unwrap(),
    ];
    for request in refused {
        let what = format!("{} {:?}", request.method(), request.headers());
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what}");
        assert!(reply.body.contains("own pages"), "{}", reply.body);
    }
    assert_eq!(
        storage.load("s1").await.unwrap().len(),
        5,
        "nothing was deleted"
    );

    let same_origin = post_delete("s1")
        .header("origin", ORIGIN)
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, same_origin).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.header("location"), "/sessions");
    assert!(storage.load("s1").await.unwrap().is_empty());

    // The page served through a proxy that ends TLS and passes the browser's Host on.
    put(&storage, "s1", SessionMeta::new(), &exchange()).await;
    let through_tls = post_delete("s1")
        .header("origin", format!("https://{HOST}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, through_tls).await.status, StatusCode::SEE_OTHER);
    assert!(storage.load("s1").await.unwrap().is_empty());

    put(&storage, "s2", SessionMeta::new(), &exchange()).await;
    let fetch_metadata = post_delete("s2")
        .header("sec-fetch-site", "same-origin")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&app, fetch_metadata).await.status,
        StatusCode::SEE_OTHER
    );
    assert!(storage.load("s2").await.unwrap().is_empty());
}

/// A store holding session `s1` (one message), and the app over it with [`TOKEN`].
async fn one_session_behind_the_token() -> (
    std::sync::Arc<fusion::storage::InMemoryStorage>,
    axum::Router,
) {
    let storage = store();
    put(
        &storage,
        "s1",
        SessionMeta::new(),
        &[ChatMessage::user("hi")],
    )
    .await;
    let app = app_with_token(storage.clone());
    (storage, app)
}

#[tokio::test]
async fn a_bearer_may_change_without_origin_and_a_cookie_may_not() {
    let (storage, app) = one_session_behind_the_token().await;
    let by_cookie = request("DELETE", "/sessions/s1")
        .header("cookie", format!("fusion_ui_token_8765={TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, by_cookie).await.status, StatusCode::FORBIDDEN);
    assert_eq!(storage.load("s1").await.unwrap().len(), 1);
    let by_bearer = request("DELETE", "/sessions/s1")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, by_bearer).await.status, StatusCode::NO_CONTENT);
    assert!(storage.load("s1").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_get_never_deletes() {
    let storage = store();
    put(&storage, "s1", SessionMeta::new(), &exchange()).await;
    let app = app(storage.clone());
    let reply = send(&app, get("/sessions/s1/delete")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("Delete session s1?"), "{}", reply.body);
    assert_eq!(storage.load("s1").await.unwrap().len(), 5);
}

/// A browser keeps one cookie per name for a host, whatever the port: two apps with
/// tokens on one machine (one per store, say) must not name their cookies alike, or
/// logging in to the second replaced the first's cookie and its tabs were refused. The
/// port that tells them apart is the one the browser opened: two containers that both
/// listen on 8765, published on 8001 and 8002 (or two SSH tunnels), shared a name when
/// it was the bound port's.
#[tokio::test]
async fn two_apps_on_one_host_keep_their_own_cookies() {
    let other = "other-token-0123456789";
    for pair in [
        [
            ("127.0.0.1:8765", "127.0.0.1:8765", TOKEN),
            ("127.0.0.1:8766", "127.0.0.1:8766", other),
        ],
        [
            ("0.0.0.0:8765", "127.0.0.1:8001", TOKEN),
            ("0.0.0.0:8765", "127.0.0.1:8002", other),
        ],
    ] {
        let apps = pair.map(|(bind, host, token)| {
            let address = bind.parse().unwrap();
            let settings = fusion_ui::UiConfig::new(address)
                .token(token)
                .allow_host(host)
                .settings(address)
                .unwrap();
            let storage: std::sync::Arc<dyn ConversationStorage> = store();
            (host, token, fusion_ui::router(storage, &settings))
        });
        // The browser's jar for 127.0.0.1: name to value, the last cookie set winning.
        let mut jar = std::collections::BTreeMap::new();
        for (host, token, app) in &apps {
            let login = send(app, get_at(host, &format!("/?token={token}"), "")).await;
            assert_eq!(login.status, StatusCode::SEE_OTHER, "{host}");
            let pair = login.header("set-cookie").split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            jar.insert(name.to_string(), value.to_string());
        }
        let cookies: Vec<String> = jar
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let cookies = cookies.join("; ");
        for (host, _, app) in &apps {
            let page = send(app, get_at(host, "/sessions", &cookies)).await;
            assert_eq!(page.status, StatusCode::OK, "{host} with {cookies}");
        }
    }
}

/// A GET of `path` that names the server `host`, with the `Cookie` header `cookie`.
fn get_at(host: &str, path: &str, cookie: &str) -> axum::http::Request<Body> {
    axum::http::Request::get(path)
        .header("host", host)
        .header("cookie", cookie)
        .body(Body::empty())
        .unwrap()
}

/// Behind a proxy that ends TLS, the cookie is `Secure`: without it the browser also sent
/// it over plain HTTP to the same host (any port, such as a request to port 80 that
/// someone on the network made it send), in the clear the proxy was there to prevent. It
/// is named with the `__Host-` prefix then, which browsers take only from a secure origin
/// and without a `Domain`, so no plain-HTTP page or sibling subdomain can set or shadow it.
#[tokio::test]
async fn a_login_through_https_sets_a_secure_host_only_cookie() {
    let app = app_with_token(store());
    // Any hop saying https makes it Secure: a forged header can only make it travel less.
    for (headers, secure) in [
        (&[("x-forwarded-proto", "https")][..], true),
        (&[("x-forwarded-proto", "HTTPS")], true),
        (&[("x-forwarded-proto", "http, https")], true),
        (
            &[
                ("x-forwarded-proto", "http"),
                ("x-forwarded-proto", "https"),
            ],
            true,
        ),
        (
            &[("forwarded", "for=192.0.2.60;proto=https;by=203.0.113.43")],
            true,
        ),
        (&[("forwarded", "For=\"[2001:db8::1]\"; Proto=https")], true),
        (&[("forwarded", "proto=\"https\"")], true),
        (
            &[("forwarded", "for=a;proto=http, for=b;proto=https")],
            true,
        ),
        (&[], false),
        (&[("x-forwarded-proto", "http")], false),
        (&[("x-forwarded-proto", "httpsx")], false),
        (&[("forwarded", "proto=http")], false),
        (&[("forwarded", "for=https;host=https")], false),
    ] {
        let mut login = request("GET", &format!("/?token={TOKEN}"));
        for (name, value) in headers {
            login = login.header(*name, *value);
        }
        let reply = send(&app, login.body(Body::empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{headers:?}");
        let (prefix, flag) = if secure {
            ("__Host-", "; Secure")
        } else {
            ("", "")
        };
        assert_eq!(
            reply.header("set-cookie"),
            format!(
                "{prefix}fusion_ui_token_8765={TOKEN}; HttpOnly; SameSite=Strict; Path=/{flag}"
            ),
            "{headers:?}"
        );
        // Over HTTPS, the unprefixed cookie an earlier release set there is expired.
        let set: Vec<_> = reply.headers.get_all("set-cookie").iter().collect();
        let expired = "fusion_ui_token_8765=; Max-Age=0; Path=/; Secure";
        assert_eq!(set.iter().any(|c| *c == expired), secure, "{set:?}");
    }
    // Both names are read back: the prefixed one, and the unprefixed one of a login over
    // HTTPS before this release; a value that is not the token under either is refused.
    for (cookie, status) in [
        (
            format!("__Host-fusion_ui_token_8765={TOKEN}"),
            StatusCode::OK,
        ),
        (format!("fusion_ui_token_8765={TOKEN}"), StatusCode::OK),
        (
            "__Host-fusion_ui_token_8765=nope".to_string(),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let page = request("GET", "/sessions")
            .header("x-forwarded-proto", "https")
            .header("cookie", &cookie)
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app, page).await.status, status, "{cookie}");
    }
}

/// The token in an address only logs a browser in (a GET): a change carrying it there and
/// no cookie or bearer is refused, saying so, and not that the token is wrong, which sent
/// a program's author looking for another token; with the cookie, it is served.
#[tokio::test]
async fn a_change_with_the_token_in_its_address_is_told_where_the_token_goes() {
    let (storage, app) = one_session_behind_the_token().await;
    let post = request("POST", &format!("/sessions/s1/delete?token={TOKEN}"))
        .header("origin", ORIGIN)
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, post).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(!reply.body.contains("not this server"), "{}", reply.body);
    assert!(
        reply.body.contains("Authorization: Bearer"),
        "{}",
        reply.body
    );
    assert_eq!(reply.header("set-cookie"), "");
    assert!(
        storage.session_info("s1").await.unwrap().is_some(),
        "nothing deleted"
    );
    // A wrong token there gets the same words: the refusal says nothing of the guess.
    let wrong = request("POST", "/sessions/s1/delete?token=not-the-token-0000")
        .header("origin", ORIGIN)
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, wrong).await.body, reply.body);
    // With the cookie, the change is served: the cookie is what it is judged by.
    let with_cookie = request("POST", "/sessions/s1/delete?token=stale-token-0000")
        .header("origin", ORIGIN)
        .header("cookie", format!("fusion_ui_token_8765={TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, with_cookie).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert!(storage.session_info("s1").await.unwrap().is_none());
}
