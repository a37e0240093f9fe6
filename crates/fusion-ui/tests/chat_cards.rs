//! An approval card shows the call it asks about whole: the one-line form `fusion chat`
//! asks with cuts values at 120 characters (a long path even hides the file's name), so
//! whenever it cuts, the card shows the arguments whole beside it, as the terminal's
//! "[v]iew it whole" does; and names or values a page would not show as they are (line
//! breaks, bidirectional overrides, zero-width characters) are shown escaped.

mod chat_support;
mod common;

use axum::http::StatusCode;
use fusion::agent::ToolRegistry;
use fusion::agent::testing::MockLlmServer;

use chat_support::{Events, answer_of, chat_app, htmx_post, seeded, start_turn};
use common::{assert_inert, send};

/// The card of the first question the turn asks after `message`, for a call of
/// `delete_file` with `arguments`; denied once read.
async fn card_for(arguments: &serde_json::Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let storage = seeded().await;
    let server = MockLlmServer::start().await;
    server
        .push_tool_call("delete_file", arguments.to_string())
        .push_text("Left it.");
    let tools = ToolRegistry::with_file_tools([dir.path()]).unwrap();
    let app = chat_app(storage, &server, tools);
    let turn = start_turn(&app, "s1", "clean up").await;
    let mut events = Events::open(&app, &format!("{turn}/events"), None).await;
    let card = events.until("wants to run").await.pop().unwrap().data;
    let (href, deny) = answer_of(&card, "deny");
    let denied = send(&app, htmx_post(&href, &deny)).await;
    assert_eq!(denied.status, StatusCode::OK, "{}", denied.body);
    events.through_end().await;
    card
}

#[tokio::test]
async fn a_call_cut_short_on_the_card_is_shown_whole_beside_it() {
    let path = format!("{}/precious.db", "deep/".repeat(40));
    let card = card_for(&serde_json::json!({ "path": path })).await;
    let line = card.split("</code>").next().unwrap();
    assert!(
        !line.contains("precious.db"),
        "the line cuts the path: {line}"
    );
    let whole = card
        .split("<details class=\"whole\" open>")
        .nth(1)
        .unwrap_or_else(|| panic!("the arguments whole, open: {card}"));
    let whole = whole.split("</details>").next().unwrap();
    assert!(
        whole.contains(&format!("&#34;path&#34;: &#34;{path}&#34;")),
        "{whole}"
    );
    assert!(whole.find("</pre>") > whole.find("precious.db"), "{whole}");
    assert_inert(&card);
}

#[tokio::test]
async fn names_and_values_a_page_would_not_show_as_they_are_are_escaped() {
    // A name holding line breaks and a fake call, a value reversed by U+202E (it would
    // read "a.txt"), a zero-width space, and a value long enough to be cut, so the
    // arguments are shown whole too.
    let spoof = format!("x{}delete_file(path", "\n".repeat(3));
    let arguments = serde_json::json!({
        "path": "\u{202e}txt.a",
        spoof: "scratch\u{200b}.tmp",
        "why": "y".repeat(200),
    });
    let card = card_for(&arguments).await;
    for hidden in ['\u{202e}', '\u{200b}'] {
        assert!(!card.contains(hidden), "{hidden:?} raw in {card:?}");
    }
    let line = card
        .split("<code>")
        .nth(1)
        .unwrap()
        .split("</code>")
        .next()
        .unwrap();
    assert!(!line.contains('\n'), "{line:?}");
    // The line quotes and escapes the name as the terminal does; the whole view is JSON,
    // with the same escapes.
    assert!(
        line.contains(r"&#34;x\n\n\ndelete_file(path&#34;="),
        "{line}"
    );
    assert!(line.contains(r"&#34;\u202etxt.a&#34;"), "{line}");
    let whole = card
        .split("<pre")
        .nth(1)
        .unwrap()
        .split("</pre>")
        .next()
        .unwrap();
    for escaped in [
        r"&#34;x\n\n\ndelete_file(path&#34;: &#34;scratch\u200b.tmp&#34;",
        r"&#34;path&#34;: &#34;\u202etxt.a&#34;",
    ] {
        assert!(whole.contains(escaped), "{escaped} in {whole}");
    }
}
