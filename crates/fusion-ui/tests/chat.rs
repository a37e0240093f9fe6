//! The chat without a browser: a turn started by a form post, streamed as server-sent
//! events from a real OpenAI-protocol server on loopback, approvals answered by posts,
//! Stop, resuming a dropped stream, and every refusal.

mod chat_support;
mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use fusion::agent::testing::{MockDelta, MockLlmServer, MockReply, MockStreamEnd};
use fusion::agent::{OpenAiConfig, ToolRegistry};
use fusion::storage::ConversationStorage;
use fusion::{ChatMessage, Role};
use fusion_ui::{ChatAgent, UiConfig};
use futures::StreamExt;
use tower::ServiceExt;

use chat_support::{Events, answer_of, chat_app, htmx_post, seeded, start_turn, turn_path};
use common::{assert_inert, post_cross_site, request, send};

#[tokio::test]
async fn the_reply_streams_before_it_ends_and_the_end_shows_it_as_stored() {
    let storage = seeded().await;
    let server = MockLlmServer::start().await;
    server.push_text("Streaming words arrive one by one.");
    let gate = server.hold_next_stream();
    let app = chat_app(storage.clone(), &server, ToolRegistry::default());

    let started = send(
        &app,
        htmx_post("/sessions/s1/chat", "message=Tell+me+%3Cb%3Emore%3C%2Fb%3E"),
    )
    .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let turn = turn_path(&started.body);
    assert!(turn.starts_with("/sessions/s1/turns/"), "{turn}");
    assert!(
        started.body.contains("Tell me &#60;b&#62;more&#60;/b&#62;"),
        "{}",
        started.body
    );
    assert!(
        started.body.contains("hx-swap-oob=\"true\""),
        "a fresh form replaces the used one"
    );
    assert_inert(&started.body);

    let mut events = Events::open(&app, &format!("{turn}/events"), None).await;
    let first = events.next().await.unwrap();
    assert_eq!(
        first.name, "reset",
        "a fresh connection starts with everything so far"
    );
    gate.first_part_sent().await;
    let before_end = events.until("Streaming").await;
    assert!(
        before_end.iter().all(|e| e.name != "end"),
        "text came before the reply ended"
    );
    assert!(
        !storage
            .load("s1")
            .await
            .unwrap()
            .iter()
            .any(|m| m.content.contains("Streaming"))
    );

    gate.release();
    let rest = events.through_end().await;
    let end = rest.last().unwrap();
    assert!(end.data.contains("Finished: 1 request"), "{}", end.data);
    assert!(end.data.contains("id=\"transcript\"") && end.data.contains("hx-swap-oob"));
    assert!(end.data.contains("Streaming words arrive one by one."));
    let history = storage.load("s1").await.unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(history[2].content, "Tell me <b>more</b>");
    assert_eq!(history[3].role, Role::Assistant);
}

#[tokio::test]
async fn a_resumed_stream_gets_only_what_it_missed() {
    let storage = seeded().await;
    let server = MockLlmServer::start().await;
    server.push_text("one two three four");
    let app = chat_app(storage, &server, ToolRegistry::default());
    let turn = start_turn(&app, "s1", "count").await;
    let events = format!("{turn}/events");
    let whole = Events::open(&app, &events, None).await.through_end().await;
    let text: String = whole
        .iter()
        .filter(|e| e.name != "end")
        .map(|e| e.data.clone())
        .collect();
    for word in ["one", "two", "three", "four"] {
        assert!(text.contains(word), "{text}");
    }
    // Each id names the turn and how many frames the page holds after it.
    let last_id = whole.last().unwrap().id.clone().unwrap();
    let (key, total) = last_id.rsplit_once(':').unwrap();
    assert!(turn.ends_with(&format!("/{key}")), "{last_id} of {turn}");
    let total: usize = total.parse().unwrap();
    assert!(total >= 2, "one frame per word or so: {total}");

    // A browser resuming after frame 1 gets frames 2.. and the end, no reset.
    let resumed = Events::open(&app, &events, Some(&format!("{key}:1")))
        .await
        .through_end()
        .await;
    assert_eq!(resumed[0].name, "step", "{resumed:#?}");
    assert!(
        !resumed[0].data.contains(">one"),
        "frame 0 is not sent again"
    );
    assert_eq!(resumed.last().unwrap().name, "end");
    // An id the turn never sent (past its end, another turn's, a bare count), or none,
    // starts over with a reset.
    let past = format!("{key}:999");
    for id in [
        Some(past.as_str()),
        Some("0-1:1"),
        Some("1"),
        Some("x"),
        None,
    ] {
        let again = Events::open(&app, &events, id).await.through_end().await;
        assert_eq!(again[0].name, "reset", "{id:?}");
        assert!(again[0].data.contains("one"));
    }
}

#[tokio::test]
async fn destructive_calls_wait_for_approve_and_deny() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "a").unwrap();
    std::fs::write(dir.path().join("b.txt"), "b").unwrap();
    let storage = seeded().await;
    let server = MockLlmServer::start().await;
    server
        .push_tool_call("delete_file", r#"{"path":"a.txt"}"#)
        .push_text("Deleted a.txt.")
        .push_tool_call("delete_file", r#"{"path":"b.txt"}"#)
        .push_text("Kept b.txt.");
    let tools = ToolRegistry::with_file_tools([dir.path()]).unwrap();
    let app = chat_app(storage.clone(), &server, tools);

    for (file, decision, shown) in [
        ("a.txt", "approve", "Approved."),
        ("b.txt", "deny", "Denied."),
    ] {
        let turn = start_turn(&app, "s1", &format!("delete {file}")).await;
        let mut events = Events::open(&app, &format!("{turn}/events"), None).await;
        let asked = events.until("wants to run").await;
        let card = &asked.last().unwrap().data;
        assert!(
            card.contains(&format!("delete_file(path=\"{file}\")").replace('"', "&#34;")),
            "{card}"
        );
        assert!(
            !card.contains("<details"),
            "a call shown whole needs no second view: {card}"
        );
        assert!(
            dir.path().join(file).exists(),
            "nothing runs before the answer"
        );
        let (answer_path, answer) = answer_of(card, decision);
        assert_eq!(answer_path, format!("{turn}/approvals/1"), "{card}");

        let answered = send(&app, htmx_post(&answer_path, &answer)).await;
        assert_eq!(answered.status, StatusCode::OK, "{}", answered.body);
        assert!(answered.body.contains(shown), "{}", answered.body);
        assert!(!answered.body.contains("<button"), "the buttons are gone");
        let end = events.through_end().await;
        assert!(end.last().unwrap().data.contains("Finished"), "{end:#?}");

        let (_, approve) = answer_of(card, "approve");
        let again = send(&app, htmx_post(&answer_path, &approve)).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "an answer counts once");
        // The card as it stands, saying the late answer changed nothing.
        let first = shown.trim_end_matches('.').to_lowercase();
        assert!(
            again
                .body
                .contains(&format!("changed nothing: the call was {first} first")),
            "{}",
            again.body
        );
        // Another session's turn, a question never asked: refused.
        let other = answer_path.replacen("/sessions/s1/", "/sessions/s2/", 1);
        let elsewhere = send(&app, htmx_post(&other, &approve)).await;
        assert_eq!(
            elsewhere.status,
            StatusCode::NOT_FOUND,
            "{}",
            elsewhere.body
        );
        let never = answer_path.replace("/approvals/1", "/approvals/2");
        let unasked = send(&app, htmx_post(&never, &approve)).await;
        assert_eq!(unasked.status, StatusCode::NOT_FOUND, "{}", unasked.body);
    }
    assert!(!dir.path().join("a.txt").exists(), "approved: deleted");
    assert!(dir.path().join("b.txt").exists(), "denied: kept");
    let history = storage.load("s1").await.unwrap();
    let denied = history.iter().rev().find(|m| m.role == Role::Tool).unwrap();
    assert!(denied.content.contains("declined"), "{}", denied.content);
}

#[tokio::test]
async fn stop_cancels_the_turn_keeps_the_session_and_frees_it() {
    let storage = seeded().await;
    let server = MockLlmServer::start().await;
    server.push_partial([MockDelta::text("Half a rep")], MockStreamEnd::Stall);
    server.push_text("A whole reply.");
    let app = chat_app(storage.clone(), &server, ToolRegistry::default());

    let turn = start_turn(&app, "s1", "go").await;
    let mut events = Events::open(&app, &format!("{turn}/events"), None).await;
    events.until("Half a rep").await;
    let busy = send(&app, htmx_post("/sessions/s1/chat", "message=again")).await;
    assert_eq!(busy.status, StatusCode::CONFLICT);
    assert!(busy.body.contains("still running"), "{}", busy.body);

    let stopped = send(&app, htmx_post(&format!("{turn}/stop"), "")).await;
    assert_eq!(stopped.status, StatusCode::NO_CONTENT);
    let end = events.through_end().await;
    assert!(end.last().unwrap().data.contains("Stopped."), "{end:#?}");
    server.replies_finished().await;
    let history = storage.load("s1").await.unwrap();
    assert!(
        !history.iter().any(|m| m.content.contains("Half a rep")),
        "a reply cut off mid-stream is not stored"
    );
    assert_eq!(
        &history[..2],
        &[ChatMessage::user("hello"), ChatMessage::assistant("hi")]
    );

    // The session is free again, and continues from what is stored.
    let next = start_turn(&app, "s1", "again").await;
    assert_ne!(next, turn);
    let end = Events::open(&app, &format!("{next}/events"), None)
        .await
        .through_end()
        .await;
    assert!(end.last().unwrap().data.contains("A whole reply."));
    let stop_late = send(&app, htmx_post(&format!("{turn}/stop"), "")).await;
    assert_eq!(
        stop_late.status,
        StatusCode::NOT_FOUND,
        "turn 1 is no longer kept"
    );
}

#[tokio::test]
async fn model_text_streams_inert() {
    let storage = seeded().await;
    let server = MockLlmServer::start().await;
    server.push(MockReply::text(
        "<script>alert(1)</script> <img src=x onerror=alert(2)> [x](javascript:alert(3))",
    ));
    let app = chat_app(storage, &server, ToolRegistry::default());
    let turn = start_turn(&app, "s1", "hi").await;
    for event in Events::open(&app, &format!("{turn}/events"), None)
        .await
        .through_end()
        .await
    {
        assert_inert(&event.data);
    }
}

#[tokio::test]
async fn carriage_returns_in_model_text_add_no_lines_of_data() {
    let storage = seeded().await;
    let server = MockLlmServer::start().await;
    server.push(MockReply::text("one\r\ntwo\rthree"));
    let app = chat_app(storage, &server, ToolRegistry::default());
    let turn = start_turn(&app, "s1", "hi").await;
    let response = app
        .oneshot(
            request("GET", &format!("{turn}/events"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    // A browser ends a line of the stream at a `\r` too: one would split the event's data.
    assert!(!body.contains('\r'), "{body:?}");
    assert!(body.contains("one\ndata: two\ndata: three"), "{body:?}");
}

/// A proxy in front (the TLS proxy docs/ui.md asks for off loopback) must pass the stream
/// on as it comes: nginx, by default, held a turn's events back until its buffer filled,
/// so the reply arrived in lumps, or only at its end. Both kinds of stream: a kept turn's,
/// and the single `end` of a turn not kept here.
#[tokio::test]
async fn the_event_stream_asks_proxies_not_to_buffer_it() {
    let server = MockLlmServer::start().await;
    server.push_text("Hello.");
    let app = chat_app(seeded().await, &server, ToolRegistry::default());
    let turn = start_turn(&app, "s1", "hi").await;
    for path in [
        format!("{turn}/events"),
        "/sessions/s1/turns/9/events".into(),
    ] {
        let events = request("GET", &path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(events).await.unwrap();
        let headers = response.headers();
        assert_eq!(headers["content-type"], "text/event-stream", "{path}");
        assert_eq!(headers.get("x-accel-buffering").unwrap(), "no", "{path}");
    }
}

#[tokio::test]
async fn refusals_say_what_is_wrong() {
    let storage = seeded().await;
    let server = MockLlmServer::start().await;
    let app = chat_app(storage.clone(), &server, ToolRegistry::default());
    for (path, form, status, says) in [
        (
            "/sessions/s1/chat",
            "message=+++",
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        ("/sessions/s1/chat", "", StatusCode::BAD_REQUEST, "message"),
        (
            "/sessions/nope/chat",
            "message=hi",
            StatusCode::NOT_FOUND,
            "No session",
        ),
        (
            "/sessions/s1/turns/9/stop",
            "",
            StatusCode::NOT_FOUND,
            "not kept",
        ),
        (
            "/sessions/s1/turns/9/approvals/1",
            "decision=approve",
            StatusCode::NOT_FOUND,
            "not kept",
        ),
        (
            "/sessions/s1/turns/9/approvals/1",
            "decision=maybe",
            StatusCode::BAD_REQUEST,
            "neither",
        ),
    ] {
        let reply = send(&app, htmx_post(path, form)).await;
        assert_eq!(reply.status, status, "{path} {form}: {}", reply.body);
        assert!(reply.body.contains(says), "{path}: {}", reply.body);
    }
    let long = format!("message={}", "x".repeat(100_001));
    assert_eq!(
        send(&app, htmx_post("/sessions/s1/chat", &long))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let cross = send(&app, post_cross_site("/sessions/s1/chat", "message=hi")).await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert_eq!(
        server.request_count(),
        0,
        "no refused post reached the model"
    );
    assert_eq!(storage.load("s1").await.unwrap().len(), 2);

    // A stream for a turn not kept ends at once, telling the page to reload: a 404 would
    // have htmx retry forever.
    let gone = Events::open(&app, "/sessions/s1/turns/9/events", None)
        .await
        .through_end()
        .await;
    assert!(gone[0].data.contains("reload the page"), "{gone:#?}");
}

#[tokio::test]
async fn without_an_agent_the_page_says_how_to_turn_the_chat_on() {
    let storage = seeded().await;
    let app = common::app(storage);
    let page = send(&app, common::get("/sessions/s1")).await;
    assert!(page.body.contains("The chat is off"), "{}", page.body);
    assert!(!page.body.contains("chat-form"));
    let post = send(&app, htmx_post("/sessions/s1/chat", "message=hi")).await;
    assert_eq!(post.status, StatusCode::NOT_FOUND);
    assert!(post.body.contains("OPENAI_API_KEY"));
}

#[tokio::test]
async fn a_reloaded_page_shows_the_running_turn_and_a_plain_post_redirects() {
    let storage = seeded().await;
    let server = MockLlmServer::start().await;
    server.push_partial([MockDelta::text("thinking")], MockStreamEnd::Stall);
    let app = chat_app(storage, &server, ToolRegistry::default());
    let plain = send(&app, common::post_form("/sessions/s1/chat", "message=go")).await;
    assert_eq!(plain.status, StatusCode::SEE_OTHER);
    assert_eq!(plain.header("location"), "/sessions/s1#turn");
    let page = send(&app, common::get("/sessions/s1")).await;
    assert!(page.body.contains("chat-form"), "{}", page.body);
    let turn = turn_path(&page.body);
    assert!(turn.starts_with("/sessions/s1/turns/"), "{turn}");
    assert_inert(&page.body);
    send(&app, htmx_post(&format!("{turn}/stop"), "")).await;
    Events::open(&app, &format!("{turn}/events"), None)
        .await
        .through_end()
        .await;
}

#[tokio::test]
async fn shutdown_ends_the_streams_of_pages_watching_a_turn() {
    let storage = seeded().await;
    let llm_server = MockLlmServer::start().await;
    llm_server.push_partial([MockDelta::text("never finished")], MockStreamEnd::Stall);
    let llm = OpenAiConfig::new("mock-model")
        .base_url(llm_server.base_url())
        .build()
        .unwrap();
    let config = UiConfig::new("127.0.0.1:0".parse().unwrap()).chat(ChatAgent::new(Arc::new(llm)));
    let bound = fusion_ui::bind(&config).await.unwrap();
    let origin = format!("http://{}", bound.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(
        storage.clone() as Arc<dyn ConversationStorage>,
        async {
            let _ = stopped.await;
        },
    ));
    let http = fusion::agent::http_client_builder()
        .unwrap()
        .build()
        .unwrap();
    let started = http
        .post(format!("{origin}/sessions/s1/chat"))
        .header("origin", &origin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("message=hi")
        .send()
        .await
        .unwrap();
    assert!(started.status().is_success(), "{}", started.status());
    let turn = turn_path(&started.text().await.unwrap());
    let mut stream = http
        .get(format!("{origin}{turn}/events"))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let mut seen = String::new();
    while !seen.contains("never finished") {
        seen.push_str(&String::from_utf8_lossy(
            &stream.next().await.unwrap().unwrap(),
        ));
    }

    stop.send(()).unwrap();
    // A guard against a hang, not a measurement: shutdown waits for open connections.
    tokio::time::timeout(std::time::Duration::from_secs(60), server)
        .await
        .expect("the server shuts down with a page still watching")
        .unwrap()
        .unwrap();
    while let Some(chunk) = stream.next().await {
        if chunk.is_err() {
            break; // the connection closed under the read: also an end
        }
    }
    llm_server.replies_finished().await;
    let history = storage.load("s1").await.unwrap();
    assert!(
        !history.iter().any(|m| m.content.contains("never finished")),
        "the cut-off reply is not stored"
    );
}
