//! The transcript's copy buttons through the router: each names where the exact stored
//! text is (markdown as written, arguments and output as stored, the raw JSON), carriage
//! returns and markup included, in the page and in the "load earlier" fragment; that
//! address serves it; and the page carries each text once (the stored JSON, which would
//! repeat it, is fetched, not embedded). What a click does with it is checked in the
//! browser (`browser/copy.rs`).

mod common;

use axum::Router;
use axum::http::StatusCode;
use fusion::{ChatMessage, ToolCall};
use serde_json::Value;

use common::*;

/// Text that rendering would change: markdown, markup, quotes, a leading line feed and
/// Windows line ends.
const MARKDOWN: &str = "\nRun **this**:\r\n\r\n```sh\r\necho \"<b>&amp;</b>\" 'x'\r\n```\r\n";
const ARGUMENTS: &str = r#"{"cmd":"echo \"<b>\"","cwd":"/tmp"}"#;
const OUTPUT: &str = "\n<b>&amp;</b>\r\nline two\r\n";

/// Every copy button in `html`, in order: its label and the text it copies, found the way
/// `assets/copy.js` finds it: field `data-copy-field` of the stored JSON fetched from
/// `data-copy-from`.
async fn copy_buttons(app: &Router, html: &str) -> Vec<(String, String)> {
    let mut buttons = Vec::new();
    for rest in html.split(r#"<button type="button" class="copy" "#).skip(1) {
        let (attributes, after) = rest.split_once('>').unwrap();
        let label = after.split_once("</button>").unwrap().0;
        let attribute = |name: &str| {
            let start = attributes.split_once(&format!("{name}=\"")).map(|(_, v)| v);
            start.map(|value| unescape_html(value.split_once('"').unwrap().0))
        };
        let from = attribute("data-copy-from")
            .unwrap_or_else(|| panic!("a copy button without a source: {attributes}"));
        let field = attribute("data-copy-field").unwrap();
        buttons.push((label.to_string(), stored_field(app, &from, &field).await));
    }
    buttons
}

/// Field `field` (a dotted path, empty for the whole) of the stored JSON at `href`.
async fn stored_field(app: &Router, href: &str, field: &str) -> String {
    let reply = send(app, get(href)).await;
    assert_eq!(reply.status, StatusCode::OK, "{href}: {}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        "application/json; charset=utf-8"
    );
    if field.is_empty() {
        return reply.body;
    }
    let stored: Value = serde_json::from_str(&reply.body).unwrap();
    let found = field
        .split('.')
        .fold(&stored, |value, key| match key.parse::<usize>() {
            Ok(i) => &value[i],
            Err(_) => &value[key],
        });
    found.as_str().unwrap().to_string()
}

/// `escaped` with the character references askama writes (`&#34;`, `&amp;`, ...) decoded.
fn unescape_html(escaped: &str) -> String {
    let mut out = String::new();
    let mut rest = escaped;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let (reference, after) = rest[at + 1..].split_once(';').unwrap();
        out.push(match reference {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            numeric => {
                let code = numeric.strip_prefix('#').unwrap().parse().unwrap();
                char::from_u32(code).unwrap()
            }
        });
        rest = after;
    }
    out.push_str(rest);
    out
}

fn pretty(message: &ChatMessage) -> String {
    serde_json::to_string_pretty(message).unwrap()
}

#[tokio::test]
async fn copy_buttons_carry_the_exact_stored_text() {
    let messages = vec![
        ChatMessage::user(MARKDOWN),
        ChatMessage::assistant_with_tool_calls(
            "",
            vec![ToolCall::new("call-1", "shell", ARGUMENTS)],
        ),
        ChatMessage::tool_result("call-1", OUTPUT),
        ChatMessage::tool_result("call-unknown", OUTPUT),
    ];
    let storage = store();
    put(&storage, "copy-1", Default::default(), &messages).await;
    let app = app(storage);
    let reply = send(&app, get("/sessions/copy-1")).await;
    assert_inert(&reply.body);

    let expected: Vec<(String, String)> = [
        // The user's markdown as written, not as rendered.
        ("Copy text", MARKDOWN.to_string()),
        ("Copy JSON", pretty(&messages[0])),
        // A call without text: no text button; its arguments as stored, not pretty-printed.
        ("Copy arguments", ARGUMENTS.to_string()),
        ("Copy result", OUTPUT.to_string()),
        ("Copy JSON", pretty(&messages[1])),
        // The result shown in the card has no text button of its own...
        ("Copy JSON", pretty(&messages[2])),
        // ...while a result without its call shows, and copies, its output.
        ("Copy text", OUTPUT.to_string()),
        ("Copy JSON", pretty(&messages[3])),
    ]
    .into_iter()
    .map(|(label, text)| (label.to_string(), text))
    .collect();
    assert_eq!(copy_buttons(&app, &reply.body).await, expected);
    // One script serves them all, from our own files.
    assert!(reply.body.contains(r#"<script src="/assets/copy-"#));
}

#[tokio::test]
async fn earlier_windows_carry_copy_buttons_too() {
    // 249 messages of text, then a call whose result (message 250) the window ending
    // before it does not hold: that button names the result's address all the same.
    let mut messages: Vec<ChatMessage> = (0..249)
        .map(|i| ChatMessage::user(format!("step {i}\r\n")))
        .collect();
    messages.push(ChatMessage::assistant_with_tool_calls(
        "",
        vec![ToolCall::new("call-9", "shell", ARGUMENTS)],
    ));
    messages.push(ChatMessage::tool_result("call-9", OUTPUT));
    let storage = store();
    put(&storage, "long", Default::default(), &messages).await;
    let app = app(storage);
    let reply = send(&app, get("/sessions/long/messages?before=250")).await;
    let buttons = copy_buttons(&app, &reply.body).await;
    let texts: Vec<&str> = buttons
        .iter()
        .filter(|(label, _)| label == "Copy text")
        .map(|(_, text)| text.as_str())
        .collect();
    let stored: Vec<String> = (50..249).map(|i| format!("step {i}\r\n")).collect();
    assert_eq!(texts, stored);
    let result = buttons.iter().find(|(label, _)| label == "Copy result");
    assert_eq!(result.unwrap().1, OUTPUT);
    assert!(
        reply
            .body
            .contains(r#"data-copy-from="/sessions/long/messages/250?generation="#),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn the_copy_script_is_served_as_javascript() {
    let storage = store();
    put(&storage, "s", Default::default(), &exchange()).await;
    let app = app(storage);
    let page = send(&app, get("/sessions/s")).await;
    let src = page
        .body
        .split(r#"<script src=""#)
        .map(|rest| rest.split('"').next().unwrap())
        .find(|src| src.starts_with("/assets/copy-"))
        .unwrap();
    let script = send(&app, get(src)).await;
    assert_eq!(script.status, 200);
    assert_eq!(
        script.header("content-type"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(script.body, include_str!("../assets/copy.js"));
}
