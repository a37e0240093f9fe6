//! What the router tests share: an app over a memory store, requests addressed to it,
//! responses read whole, and a check that HTML holds nothing active.

#![allow(dead_code)] // each test binary uses its own part of this

pub mod backends;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use fusion::storage::{ConversationStorage, InMemoryStorage, SessionMeta};
use fusion::{ChatMessage, ToolCall};
use fusion_ui::{UiConfig, router};
use tower::ServiceExt;

/// The address the test apps believe they are bound to.
pub const HOST: &str = "127.0.0.1:8765";
/// The origin their pages are served from.
pub const ORIGIN: &str = "http://127.0.0.1:8765";
/// The token of [`app_with_token`].
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A fresh, empty store.
pub fn store() -> Arc<InMemoryStorage> {
    Arc::new(InMemoryStorage::new())
}

/// The app over `storage`, bound (it believes) to loopback without a token.
pub fn app(storage: Arc<InMemoryStorage>) -> Router {
    app_over(storage)
}

/// [`app`] over any storage: a wrapper of a memory store that misbehaves on purpose.
pub fn app_over(storage: Arc<dyn ConversationStorage>) -> Router {
    let address = HOST.parse().unwrap();
    let settings = UiConfig::new(address).settings(address).unwrap();
    router(storage, &settings)
}

/// The app over `storage` with [`TOKEN`] in force.
pub fn app_with_token(storage: Arc<InMemoryStorage>) -> Router {
    let address = HOST.parse().unwrap();
    let settings = UiConfig::new(address)
        .token(TOKEN)
        .settings(address)
        .unwrap();
    router(storage as Arc<dyn ConversationStorage>, &settings)
}

/// A request builder for `method path`, addressed to [`HOST`].
pub fn request(method: &str, path: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", HOST)
}

/// A plain browser GET of `path`.
pub fn get(path: &str) -> Request<Body> {
    request("GET", path).body(Body::empty()).unwrap()
}

/// A same-origin form post of `form` (already URL-encoded) to `path`, as our pages send.
pub fn post_form(path: &str, form: &str) -> Request<Body> {
    request("POST", path)
        .header("origin", ORIGIN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form.to_string()))
        .unwrap()
}

/// The same post from another site (a cross-site form), which the app must refuse.
pub fn post_cross_site(path: &str, form: &str) -> Request<Body> {
    request("POST", path)
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form.to_string()))
        .unwrap()
}

/// What the app answered.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

/// Sends `request` to `app` and reads the whole reply.
pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// Stores session `id` holding `messages`, with `meta`.
pub async fn put(storage: &InMemoryStorage, id: &str, meta: SessionMeta, messages: &[ChatMessage]) {
    storage.create_session(id, &meta, messages).await.unwrap();
}

/// A short exchange with one tool call and its result.
pub fn exchange() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You manage files."),
        ChatMessage::user("List **/tmp**"),
        ChatMessage::assistant_with_tool_calls(
            "Looking.",
            vec![ToolCall::new(
                "call-1",
                "list_files",
                r#"{"path":"/tmp","deep":true}"#,
            )],
        ),
        ChatMessage::tool_result("call-1", "a.txt\nb.txt"),
        ChatMessage::assistant("Two files: `a.txt` and `b.txt`."),
    ]
}

/// The contents of every real tag in `html` (escaped text is not a tag), lower case.
pub fn tags(html: &str) -> Vec<String> {
    html.split('<')
        .skip(1)
        .map(|rest| rest.split('>').next().unwrap_or("").to_ascii_lowercase())
        .collect()
}

/// `attributes` with the quoted values of attributes that are data, not URLs, emptied:
/// `value="&#60;img onerror=x&#62;"` is text in a field (quotes inside are escaped, so a
/// value cannot end early), while a URL attribute's value is kept to be checked.
fn without_data_values(attributes: &str) -> String {
    const URL_ATTRIBUTES: [&str; 7] = [
        "href",
        "src",
        "action",
        "formaction",
        "srcset",
        "poster",
        "xlink:href",
    ];
    let mut out = String::new();
    let mut rest = attributes;
    while let Some(quote_at) = rest.find('"') {
        let (before, after_quote) = rest.split_at(quote_at);
        let name = before
            .trim_end()
            .strip_suffix('=')
            .and_then(|head| head.split_whitespace().last())
            .unwrap_or("");
        let Some(end) = after_quote[1..].find('"') else {
            break;
        };
        let value = &after_quote[1..=end];
        out.push_str(before);
        out.push('"');
        if URL_ATTRIBUTES.contains(&name) {
            out.push_str(value);
        }
        out.push('"');
        rest = &after_quote[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Fails if `html` holds anything a browser would run: a script or frame tag, an event
/// handler attribute, a `javascript:` URL, or inline style. Text in a data attribute's
/// quoted value (a form field's `value`) is inert and not looked at.
pub fn assert_inert(html: &str) {
    for tag in tags(html) {
        let name = tag.split_whitespace().next().unwrap_or("");
        if name == "script" {
            // Only our own scripts, loaded from our own files.
            assert!(tag.contains("src=\"/assets/"), "an inline script: <{tag}>");
        }
        for banned in [
            "iframe",
            "object",
            "embed",
            "style",
            "svg",
            "math",
            "form action=\"http",
        ] {
            assert!(!tag.starts_with(banned), "<{tag}> in {html}");
        }
        let attributes = tag.split_once(' ').map_or("", |(_, rest)| rest);
        let attributes = without_data_values(attributes);
        for active in [" on", "javascript:", "style=", "data:text"] {
            assert!(
                !format!(" {attributes}").contains(active),
                "{active:?} in <{tag}>"
            );
        }
    }
}

/// The fields the form of the bulk confirmation page posts, URL-encoded.
pub fn bulk_form(page: &str) -> String {
    let form = page.split("action=\"/bulk-delete\"").nth(1).unwrap();
    let mut fields = Vec::new();
    for input in form.split("<input type=\"hidden\" ").skip(1) {
        let name = input
            .split("name=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let value = input
            .split("value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        fields.push(format!("{name}={}", value.replace(' ', "+")));
    }
    fields.join("&")
}

/// The fields of the fork form for message `at` on the transcript page `html`.
pub fn fork_form(html: &str, at: usize) -> String {
    let form = html
        .split("<form class=\"fork\"")
        .find(|form| form.contains(&format!("name=\"at\" value=\"{at}\"")))
        .unwrap_or_else(|| panic!("no fork button for #{at} in {html}"));
    let field = |name: &str| {
        let value = form.split(&format!("name=\"{name}\" value=\"")).nth(1);
        value.unwrap().split('"').next().unwrap().to_string()
    };
    format!(
        "at={at}&generation={}&request={}",
        field("generation"),
        field("request")
    )
}

/// The form fields of the confirmation page of session `id`, as its button posts them.
pub async fn confirmation(app: &Router, id: &str) -> String {
    let page = send(app, get(&format!("/sessions/{id}/delete"))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let field = |name: &str| {
        page.body
            .split(&format!("name=\"{name}\" value=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no field {name} in {}", page.body))
            .to_string()
    };
    let fields = ["generation", "len", "updated", "meta"].map(|name| (name, field(name)));
    fields
        .map(|(name, value)| format!("{name}={value}"))
        .join("&")
}
