//! What the chat tests share: an app chatting with a real OpenAI-protocol server on
//! loopback, htmx's posts, the turn's address and an approval card's form read from the
//! HTML, and a reader of server-sent events.

#![allow(dead_code)] // each test binary uses its own part of this

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use fusion::ChatMessage;
use fusion::agent::testing::MockLlmServer;
use fusion::agent::{OpenAiConfig, ToolRegistry};
use fusion::storage::{ConversationStorage, InMemoryStorage, SessionMeta};
use fusion_ui::{ChatAgent, UiConfig, router};
use futures::StreamExt;
use tower::ServiceExt;

use crate::common::{HOST, ORIGIN, put, request, send, store};

/// The app over `storage` chatting through `server`, with `tools`.
pub fn chat_app(
    storage: Arc<InMemoryStorage>,
    server: &MockLlmServer,
    tools: ToolRegistry,
) -> Router {
    chat_app_over(storage, server, tools)
}

/// [`chat_app`] over any storage (a test's wrapper around the memory store).
pub fn chat_app_over(
    storage: Arc<dyn ConversationStorage>,
    server: &MockLlmServer,
    tools: ToolRegistry,
) -> Router {
    let llm = OpenAiConfig::new("mock-model")
        .base_url(server.base_url())
        .stream(true)
        .build()
        .unwrap();
    let address = HOST.parse().unwrap();
    let settings = UiConfig::new(address)
        .chat(ChatAgent::new(Arc::new(llm)).tools(tools))
        .settings(address)
        .unwrap();
    router(storage, &settings)
}

/// A same-origin htmx form post.
pub fn htmx_post(path: &str, form: &str) -> Request<Body> {
    request("POST", path)
        .header("origin", ORIGIN)
        .header("hx-request", "true")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form.to_string()))
        .unwrap()
}

/// The address of the turn whose live panel (or page) `html` shows, without `/events`:
/// `/sessions/{id}/turns/{key}`.
pub fn turn_path(html: &str) -> String {
    html.split("sse-connect=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|events| events.strip_suffix("/events"))
        .unwrap_or_else(|| panic!("no live panel in {html}"))
        .to_string()
}

/// Sends `message` to session `id` as the page does, returning the turn's address.
pub async fn start_turn(app: &Router, id: &str, message: &str) -> String {
    let started = send(
        app,
        htmx_post(
            &format!("/sessions/{id}/chat"),
            &format!("message={}", message.replace(' ', "+")),
        ),
    )
    .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    turn_path(&started.body)
}

/// The value of the form field `name` in `html`, if it has one.
pub fn field<'a>(html: &'a str, name: &str) -> Option<&'a str> {
    html.split(&format!("name=\"{name}\" value=\""))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
}

/// The post an approval card's form makes when `decision` is pressed: its address, and
/// its fields (whichever it has) with `decision`.
pub fn answer_of(card: &str, decision: &str) -> (String, String) {
    let href = card
        .split("hx-post=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no form in {card}"));
    let mut form = String::new();
    for name in ["call", "digest"] {
        if let Some(value) = field(card, name) {
            form.push_str(&format!("{name}={value}&"));
        }
    }
    form.push_str(&format!("decision={decision}"));
    (href.to_string(), form)
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub name: String,
    pub id: Option<String>,
    pub data: String,
}

/// The events of one SSE response, read as they arrive.
pub struct Events {
    body: axum::body::BodyDataStream,
    buffer: String,
}

impl Events {
    /// Opens the turn's stream, resuming after `last_id` when given.
    pub async fn open(app: &Router, path: &str, last_id: Option<&str>) -> Events {
        let mut get = request("GET", path);
        if let Some(id) = last_id {
            get = get.header("last-event-id", id);
        }
        let response = app
            .clone()
            .oneshot(get.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Events {
            body: response.into_body().into_data_stream(),
            buffer: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped), or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(at) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..at + 2).collect();
                let mut event = Sse {
                    name: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        event.name = value.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("id:") {
                        event.id = Some(value.trim().to_string());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push(value.strip_prefix(' ').unwrap_or(value).to_string());
                    }
                }
                if data.is_empty() && event.id.is_none() {
                    continue; // a comment
                }
                event.data = data.join("\n");
                return Some(event);
            }
            let chunk = self.body.next().await?.unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Events until one whose data contains `text` (returned last).
    pub async fn until(&mut self, text: &str) -> Vec<Sse> {
        let mut seen = Vec::new();
        while let Some(event) = self.next().await {
            let found = event.data.contains(text);
            seen.push(event);
            if found {
                return seen;
            }
        }
        panic!("the stream ended without {text:?}: {seen:#?}");
    }

    /// Every event up to and including `end`.
    pub async fn through_end(&mut self) -> Vec<Sse> {
        let mut seen = Vec::new();
        while let Some(event) = self.next().await {
            let end = event.name == "end";
            seen.push(event);
            if end {
                assert!(self.next().await.is_none(), "nothing follows the end");
                return seen;
            }
        }
        panic!("the stream ended without an end event: {seen:#?}");
    }
}

/// A store holding session `s1` with one earlier exchange.
pub async fn seeded() -> Arc<InMemoryStorage> {
    let storage = store();
    let history = [ChatMessage::user("hello"), ChatMessage::assistant("hi")];
    put(&storage, "s1", SessionMeta::new().title("Chat"), &history).await;
    storage
}
