//! The transcript page through the router: the session's facts, messages with roles and
//! markdown, tool cards with their results, context records, hostile text rendered
//! inert, windows of a long session, and the 404s and 400s; and the delete pages.

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use fusion::agent::context::{INTERRUPTED_METADATA_KEY, PRUNE_KEY, summary_record};
use fusion::storage::{ConversationStorage, SessionMeta};
use fusion::{ChatMessage, ToolCall};
use serde_json::json;

use common::*;

/// Every `<article ... id="mN">` index on a page, in order.
fn shown(html: &str) -> Vec<usize> {
    html.split("\" id=\"m")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn a_transcript_shows_facts_roles_markdown_and_tool_cards() {
    let storage = store();
    let meta = SessionMeta::new()
        .owner("ann")
        .title("File chores")
        .tags(["ops", "tmp"]);
    put(&storage, "chat-1", meta, &exchange()).await;
    let reply = send(&app(storage), get("/sessions/chat-1")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let html = &reply.body;
    assert!(html.contains("<h1>File chores</h1>"), "{html}");
    assert!(html.contains("<dt>Owner</dt><dd>ann</dd>"), "{html}");
    assert!(html.contains(r#"<span class="tag">ops</span> <span class="tag">tmp</span>"#));
    assert!(html.contains("<dt>Messages</dt><dd>5</dd>"));
    assert!(html.contains("UTC</dd>"), "timestamps are shown");
    assert_eq!(shown(html), [0, 1, 2, 3, 4]);
    for role in ["system", "user", "assistant", "tool"] {
        assert!(
            html.contains(&format!("<span class=\"role\">{role}</span>")),
            "{role}"
        );
    }
    assert!(
        html.contains("<p>List <strong>/tmp</strong></p>"),
        "markdown: {html}"
    );
    // The call's card holds the pretty-printed arguments and the result it was answered with.
    let card = html.split("<details class=\"tool\">").nth(1).unwrap();
    assert!(card.contains(r#"<span class="tool-name">list_files</span>"#));
    assert!(
        card.contains("{\n  &#34;deep&#34;: true,\n  &#34;path&#34;: &#34;/tmp&#34;\n}"),
        "{card}"
    );
    assert!(card.contains("(message #3)"), "{card}");
    assert!(card.contains("a.txt\nb.txt"), "{card}");
    // The result message points to the card rather than repeating the output.
    assert!(
        html.contains(r##"shown in the tool card of <a href="#m2">message #2</a>"##),
        "{html}"
    );
    assert!(html.contains("<summary>raw JSON</summary>"));
    assert!(html.contains(r#"href="/sessions/chat-1/delete""#));
    assert_inert(html);
}

#[tokio::test]
async fn hostile_text_in_every_place_renders_inert() {
    let storage = store();
    let attack = "<script>alert(1)</script> <img src=x onerror=alert(2)> \
                  [click](javascript:alert(3)) <a href=\"javascript:alert(4)\">a</a> \
                  <iframe src=\"https://evil.example\"></iframe> <style>body{}</style> \
                  <svg onload=alert(5)></svg> \"'><b onmouseover=alert(6)>x</b>";
    let messages = [
        ChatMessage::user(attack),
        ChatMessage::assistant_with_tool_calls(
            attack,
            vec![ToolCall::new("c1", "run<script>alert(7)</script>", attack)],
        ),
        ChatMessage::tool_result("c1", attack),
        ChatMessage::tool_result("orphan", attack),
        ChatMessage::assistant(attack).with_metadata("x", json!(attack)),
    ];
    let meta = SessionMeta::new().title(attack.replace('\n', " ")[..200].to_string());
    put(&storage, "xss", meta, &messages).await;
    let app = app(storage);
    for path in [
        "/sessions/xss",
        "/sessions",
        "/sessions/xss/delete",
        "/sessions/xss/messages",
    ] {
        let reply = send(&app, get(path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_inert(&reply.body);
        assert!(reply.body.contains("&#60;script&#62;") || reply.body.contains("&lt;script&gt;"));
    }
    // The check itself bites.
    for active in [
        "<img src=x onerror=alert(1)>",
        "<script>alert(1)</script>",
        "<a href=\"javascript:x\">",
    ] {
        assert!(
            std::panic::catch_unwind(|| assert_inert(active)).is_err(),
            "{active}"
        );
    }
}

#[tokio::test]
async fn long_output_is_cut_with_the_rest_behind_show_all() {
    let storage = store();
    let long = "x".repeat(2_500);
    let messages = [
        ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("c1", "dump", "{}")]),
        ChatMessage::tool_result("c1", &long),
    ];
    put(&storage, "long", SessionMeta::new(), &messages).await;
    let html = send(&app(storage), get("/sessions/long")).await.body;
    assert!(html.contains(&format!("<pre class=\"out\">{}</pre>", "x".repeat(2_000))));
    assert!(html.contains("show all (2500 characters)"), "{html}");
    assert!(html.contains(&format!("<pre class=\"out\">{long}</pre>")));
}

#[tokio::test]
async fn summaries_prune_records_and_interrupted_results_are_marked() {
    let storage = store();
    let messages = [
        ChatMessage::user("run it"),
        ChatMessage::assistant_with_tool_calls("thinking", vec![ToolCall::new("c1", "ls", "{}")]),
        ChatMessage::tool_result("c1", "lots of output"),
        ChatMessage::system("[record]")
            .with_metadata(PRUNE_KEY, json!({"tool_outputs": [2, 9], "chatter": [1]})),
        summary_record("The user ran ls.", 3),
        ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("c2", "rm", "{}")]),
        ChatMessage::tool_result("c2", "interrupted")
            .with_metadata(INTERRUPTED_METADATA_KEY, json!(true)),
    ];
    put(&storage, "ctx", SessionMeta::new(), &messages).await;
    let html = send(&app(storage), get("/sessions/ctx")).await.body;
    assert!(
        html.contains(r#"class="msg role-system record" id="m3""#),
        "{html}"
    );
    assert!(html.contains("prune record: tool output of [#2, #9] and assistant notes of [#1]"));
    assert!(html.contains(r#"class="msg role-system record" id="m4""#));
    assert!(html.contains("stored summary of the messages before #3"));
    assert!(
        html.contains("text pruned from the model&#39;s view"),
        "{html}"
    );
    let first_card = html.split("<details class=\"tool\">").nth(1).unwrap();
    assert!(first_card.contains("pruned in the model"), "{first_card}");
    assert!(html.contains("interrupted: written when the turn was cancelled"));
}

#[tokio::test]
async fn a_long_session_shows_its_last_window_and_loads_earlier_ones() {
    let storage = store();
    put(
        &storage,
        "big",
        SessionMeta::new(),
        &numbered("message", 10_000),
    )
    .await;
    let app = app(storage);
    let page = send(&app, get("/sessions/big")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(shown(&page.body), (9_800..10_000).collect::<Vec<_>>());
    assert!(page.body.contains(r#"href="/sessions/big?before=9800""#));
    let href = earlier_href(&page.body);
    assert!(
        href.starts_with("/sessions/big/messages?before=9800&generation="),
        "{href}"
    );
    assert!(page.body.contains("Load earlier messages (9800 more)"));

    let earlier = send(&app, fragment(&href)).await;
    assert!(!earlier.body.contains("<html"));
    assert_eq!(shown(&earlier.body), (9_600..9_800).collect::<Vec<_>>());
    assert!(earlier_href(&earlier.body).starts_with("/sessions/big/messages?before=9600&"));

    let first = send(&app, get("/sessions/big?before=150")).await;
    assert_eq!(shown(&first.body), (0..150).collect::<Vec<_>>());
    assert!(!first.body.contains("Load earlier"));
}

/// `n` user messages, `"{word} 0"` to `"{word} n-1"`.
fn numbered(word: &str, n: usize) -> Vec<ChatMessage> {
    (0..n)
        .map(|i| ChatMessage::user(format!("{word} {i}")))
        .collect()
}

/// The address the "Load earlier messages" link of `html` fetches its fragment from.
fn earlier_href(html: &str) -> String {
    let attribute = html
        .split(r#"hx-get=""#)
        .nth(1)
        .expect("a load-earlier link");
    attribute.split('"').next().unwrap().replace("&#38;", "&")
}

/// The request htmx sends for the fragment at `href`.
fn fragment(href: &str) -> axum::http::Request<Body> {
    request("GET", href)
        .header("hx-request", "true")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn earlier_messages_of_a_history_rewritten_since_the_page_are_refused() {
    let storage = store();
    let messages = numbered("message", 300);
    put(&storage, "s", SessionMeta::new(), &messages).await;
    let app = app(storage.clone());
    let href = earlier_href(&send(&app, get("/sessions/s")).await.body);

    // Another writer's append keeps every position: the earlier window still fits.
    let late = ChatMessage::assistant("a late answer");
    storage.append("s", &[late]).await.unwrap();
    let earlier = send(&app, fragment(&href)).await;
    assert_eq!(earlier.status, StatusCode::OK, "{}", earlier.body);
    assert_eq!(shown(&earlier.body), (0..100).collect::<Vec<_>>());

    // Another tab undoes, or summarizes by rewriting: the page holds messages of the old
    // history, so earlier ones of the new one would make a transcript that never was.
    storage
        .save("s", &numbered("rewritten", 300))
        .await
        .unwrap();
    let refused = send(&app, fragment(&href)).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(!refused.body.contains("rewritten 0"), "{}", refused.body);
    assert!(refused.body.contains("reload the page"), "{}", refused.body);

    // A history cut shorter than the page's window starts is refused too.
    storage.save("s", &messages[..50]).await.unwrap();
    let href = href.split("&generation").next().unwrap();
    let refused = send(&app, fragment(href)).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
}

#[tokio::test]
async fn unknown_sessions_are_404_and_invalid_input_400() {
    let storage = store();
    put(&storage, "s1", SessionMeta::new(), &exchange()).await;
    let app = app(storage);
    for path in [
        "/sessions/nobody",
        "/sessions/nobody/messages",
        "/sessions/nobody/delete",
    ] {
        let reply = send(&app, get(path)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            reply
                .body
                .contains("No session &#34;nobody&#34; is stored."),
            "{}",
            reply.body
        );
    }
    for path in [
        "/sessions/.hidden",
        "/sessions/a%20b",
        "/sessions/s1?before=-1",
        "/sessions/s1?before=x",
    ] {
        let reply = send(&app, get(path)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(reply.body.contains("Invalid request"), "{path}");
    }
    let invalid_delete = request("POST", "/sessions/a%20b/delete")
        .header("origin", ORIGIN)
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&app, invalid_delete).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(&app, get("/nothing/here")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn delete_asks_first_then_deletes_and_returns_to_the_list() {
    let storage = store();
    put(
        &storage,
        "doomed",
        SessionMeta::new().title("Old"),
        &exchange(),
    )
    .await;
    put(&storage, "kept", SessionMeta::new(), &exchange()).await;
    let app = app(storage.clone());
    let ask = send(&app, get("/sessions/doomed/delete")).await;
    assert!(
        ask.body
            .contains(r#"<form method="post" action="/sessions/doomed/delete""#)
    );
    assert!(
        ask.body.contains("<strong>Old</strong> and its 5 messages"),
        "{}",
        ask.body
    );
    let post = request("POST", "/sessions/doomed/delete")
        .header("origin", ORIGIN)
        .body(Body::empty())
        .unwrap();
    let done = send(&app, post).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.header("location"), "/sessions");
    assert!(storage.load("doomed").await.unwrap().is_empty());
    assert_eq!(storage.load("kept").await.unwrap().len(), 5);
    assert_eq!(
        send(&app, get("/sessions/doomed")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_call_answered_interrupted_then_for_real_shows_the_real_result_in_its_card() {
    // What two front ends on one session can store: one's turn opening answers the other's
    // call as interrupted while it waits for approval; the real result lands later.
    let storage = store();
    let messages = [
        ChatMessage::user("delete it"),
        ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("c8", "delete_file", "{}")]),
        ChatMessage::tool_result("c8", "interrupted")
            .with_metadata(INTERRUPTED_METADATA_KEY, json!(true)),
        ChatMessage::user("from the other front end"),
        ChatMessage::assistant("ok"),
        ChatMessage::tool_result("c8", "Deleted `gone.txt`."),
        ChatMessage::assistant("Done."),
    ];
    put(&storage, "two", SessionMeta::new(), &messages).await;
    let html = send(&app(storage), get("/sessions/two")).await.body;
    let card = html.split("<details class=\"tool\">").nth(1).unwrap();
    let card = card.split("</details>").next().unwrap();
    assert!(card.contains("Deleted `gone.txt`."), "{card}");
}

#[tokio::test]
async fn calls_with_the_same_id_in_two_turns_each_show_their_own_result_and_fork_between() {
    // Some OpenAI-compatible servers give every turn's calls the same ids.
    let storage = store();
    let read = |path: &str| {
        ChatMessage::assistant_with_tool_calls(
            "",
            vec![ToolCall::new(
                "call_0",
                "read_file",
                format!(r#"{{"path":"{path}"}}"#),
            )],
        )
    };
    let messages = [
        ChatMessage::user("read a"),
        read("a.txt"),
        ChatMessage::tool_result("call_0", "AAA"),
        ChatMessage::assistant("a says AAA"),
        ChatMessage::user("read b"),
        read("b.txt"),
        ChatMessage::tool_result("call_0", "BBB"),
        ChatMessage::assistant("b says BBB"),
    ];
    put(&storage, "ids", SessionMeta::new(), &messages).await;
    let app = app(storage.clone());
    let html = send(&app, get("/sessions/ids")).await.body;
    let cards: Vec<&str> = html
        .split("<details class=\"tool\">")
        .skip(1)
        .map(|card| card.split("</details>").next().unwrap())
        .collect();
    assert_eq!(cards.len(), 2);
    assert!(
        cards[0].contains("AAA") && !cards[0].contains("BBB"),
        "{}",
        cards[0]
    );
    assert!(
        cards[1].contains("BBB") && !cards[1].contains("AAA"),
        "{}",
        cards[1]
    );
    assert!(
        html.contains(r##"shown in the tool card of <a href="#m5">message #5</a>"##),
        "b's result points to b's call"
    );
    // Cutting before the second turn separates no call from its result.
    assert!(html.contains("Fork before turn 2"), "{html}");
    let (_, revision) = storage.load_revision("ids").await.unwrap();
    let form = format!("at=4&generation={}", revision.generation);
    let reply = send(&app, post_form("/sessions/ids/fork", &form)).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(storage.load("ids-fork-1").await.unwrap(), messages[..4]);
}

#[tokio::test]
async fn a_tool_call_shows_what_would_reorder_or_hide_its_text_as_escapes() {
    // U+202E turns the rest around: the card would read "exe.txt" for a call on "txt.exe",
    // where the call's approval card (html/chat.rs) showed `\u202e`.
    let storage = store();
    let messages = [
        ChatMessage::user("Tidy up."),
        ChatMessage::assistant_with_tool_calls(
            "",
            vec![ToolCall::new(
                "c\u{200b}1",
                "delete\u{2066}_file",
                "{\"path\":\"\u{202e}txt.exe\"}",
            )],
        ),
        ChatMessage::tool_result("c\u{200b}1", "deleted").with_name("delete\u{2066}_file"),
    ];
    put(&storage, "bidi", SessionMeta::new(), &messages).await;
    let html = send(&app(storage), get("/sessions/bidi")).await.body;
    for hidden in ['\u{202e}', '\u{200b}', '\u{2066}'] {
        assert!(!html.contains(hidden), "{hidden:?} shown raw in {html}");
    }
    let card = html.split("<details class=\"tool\">").nth(1).unwrap();
    assert!(card.contains("&#34;\\u202etxt.exe&#34;"), "{card}");
    assert!(card.contains("delete\\u2066_file"), "{card}");
    assert!(card.contains("c\\u200b1"), "{card}");
}
