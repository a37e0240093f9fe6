//! `bind` and `serve` on a real socket (127.0.0.1, port 0) over a SQLite file, fetched
//! with a real HTTP client: pages, a deletion, the token exchange, shutdown, and a port
//! that is already taken.

use std::sync::Arc;

use fusion::ChatMessage;
use fusion::storage::{ConversationStorage, SessionMeta, StorageType};
use fusion_ui::{BoundUi, UiConfig, UiError};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use tokio::sync::oneshot;

/// A SQLite store in `dir` holding one titled session.
async fn sqlite_store(dir: &tempfile::TempDir) -> Arc<dyn ConversationStorage> {
    let url = format!("sqlite://{}", dir.path().join("ui.db").display());
    let storage = StorageType::Sqlite(url).open().await.unwrap();
    let meta = SessionMeta::new().owner("ann").title("Over HTTP");
    let messages = [
        ChatMessage::user("hello *there*"),
        ChatMessage::assistant("hi"),
    ];
    storage
        .create_session("web-1", &meta, &messages)
        .await
        .unwrap();
    storage
}

/// A client that shows redirects rather than following them.
fn client() -> reqwest::Client {
    fusion::agent::http_client_builder()
        .unwrap()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// Serves `bound` in a task; send on the returned channel to stop it.
fn start(
    bound: BoundUi,
    storage: Arc<dyn ConversationStorage>,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), UiError>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(storage, async {
        let _ = stopped.await;
    }));
    (stop, server)
}

#[tokio::test]
async fn pages_are_served_over_http_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let storage = sqlite_store(&dir).await;
    let bound = fusion_ui::bind(&UiConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let addr = bound.local_addr();
    assert_ne!(addr.port(), 0, "the real port is known before serving");
    let base = bound.url();
    assert_eq!(base, format!("http://{addr}/"), "no token on loopback");
    let (stop, server) = start(bound, storage.clone());
    let http = client();

    let home = http.get(&base).send().await.unwrap();
    assert_eq!(home.status(), StatusCode::SEE_OTHER);
    let list = http
        .get(format!("{base}sessions?owner=ann"))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), StatusCode::OK);
    assert!(
        list.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let body = list.text().await.unwrap();
    assert!(
        body.contains(r#"<a href="/sessions/web-1">Over HTTP</a>"#),
        "{body}"
    );

    let page = http
        .get(format!("{base}sessions/web-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<p>hello <em>there</em></p>")
    );

    let foreign = http
        .get(format!("{base}sessions"))
        .header("host", format!("evil.example:{}", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);

    let deleted = http
        .post(format!("{base}sessions/web-1/delete"))
        .header("origin", format!("http://{addr}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    assert!(storage.load("web-1").await.unwrap().is_empty());
    let gone = http
        .get(format!("{base}sessions/web-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_printed_url_logs_a_browser_in_with_a_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let storage = sqlite_store(&dir).await;
    let token = "http-test-token-0123456789";
    let config = UiConfig::new("127.0.0.1:0".parse().unwrap()).token(token);
    let bound = fusion_ui::bind(&config).await.unwrap();
    let url = bound.url();
    assert!(url.ends_with(&format!("/?token={token}")), "{url}");
    let base = url.split('?').next().unwrap().to_string();
    let (stop, server) = start(bound, storage);
    let http = client();

    let refused = http.get(format!("{base}sessions")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let login = http.get(&url).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    assert_eq!(login.headers()["location"], "/");
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    let pair = cookie.split(';').next().unwrap().to_string();
    let page = http
        .get(format!("{base}sessions"))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error() {
    let first = fusion_ui::bind(&UiConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let taken = first.local_addr();
    let err = fusion_ui::bind(&UiConfig::new(taken)).await.unwrap_err();
    assert!(
        matches!(err, UiError::Bind { addr, .. } if addr == taken),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("cannot listen on {taken}")),
        "{text}"
    );
    assert!(text.contains("choose another with --bind"), "{text}");
}
