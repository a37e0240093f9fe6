//! Fork and undo through the router: a fork holds the history before a turn and never
//! overwrites a session; undo removes the last turn only if the session is what its
//! confirmation page showed, and answers 409 otherwise.

mod common;

use axum::http::StatusCode;
use fusion::agent::TokenCounter;
use fusion::agent::context::{Encoding, TiktokenCounter};
use fusion::storage::{ConversationStorage, InMemoryStorage, SessionMeta};
use fusion::{ChatMessage, ToolCall};

use common::*;

/// [`exchange`] and a second turn: turns start at messages 1 and 5.
fn two_turns() -> Vec<ChatMessage> {
    let mut history = exchange();
    history.push(ChatMessage::user("Delete a.txt"));
    history.push(ChatMessage::assistant("Done."));
    history
}

/// The `(generation, len)` hidden fields of an undo confirmation page.
fn revision_fields(html: &str) -> String {
    let field = |name: &str| {
        html.split(&format!("name=\"{name}\" value=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no {name} in {html}"))
            .to_string()
    };
    format!("generation={}&len={}", field("generation"), field("len"))
}

/// The fork form for message `at` of session `id` as its page would post it now.
async fn fork_form(storage: &InMemoryStorage, id: &str, at: usize) -> String {
    let (_, revision) = storage.load_revision(id).await.unwrap();
    format!("at={at}&generation={}", revision.generation)
}

async fn count(storage: &InMemoryStorage, id: &str) -> usize {
    storage.load(id).await.unwrap().len()
}

#[tokio::test]
async fn forking_before_a_turn_copies_the_history_before_it_with_owner_and_tags() {
    let storage = store();
    let meta = SessionMeta::new()
        .owner("ann")
        .title("Chores")
        .tags(["ops"]);
    put(&storage, "s-1", meta, &two_turns()).await;
    let app = app(storage.clone());
    let page = send(&app, get("/sessions/s-1")).await.body;
    let generation = storage.load_revision("s-1").await.unwrap().1.generation;
    for at in [1, 5] {
        assert!(
            page.contains(&format!(
                "<form class=\"fork\" method=\"post\" action=\"/sessions/s-1/fork\"><input \
                 type=\"hidden\" name=\"at\" value=\"{at}\"><input type=\"hidden\" \
                 name=\"generation\" value=\"{generation}\"><input type=\"hidden\" \
                 name=\"request\" value=\""
            )),
            "{page}"
        );
    }
    assert_eq!(
        page.matches("class=\"fork\"").count(),
        2,
        "only turn starts"
    );
    // Each turn's size: its messages up to the next turn, counted as a request would.
    let counter = TiktokenCounter::new(Encoding::O200kBase);
    let tokens = |messages: &[ChatMessage]| -> usize {
        messages.iter().map(|m| counter.count_message(m)).sum()
    };
    let history = two_turns();
    for (turn, range) in [(1, 1..5), (2, 5..7)] {
        let badge = format!(
            "<span class=\"badge turn\">turn {turn}: {} tokens</span>",
            tokens(&history[range])
        );
        assert!(page.contains(&badge), "{badge} in {page}");
    }
    assert_inert(&page);

    let reply = send(
        &app,
        post_form("/sessions/s-1/fork", &fork_form(&storage, "s-1", 5).await),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.header("location"), "/sessions/s-1-fork-1");
    assert_eq!(storage.load("s-1-fork-1").await.unwrap(), two_turns()[..5]);
    let fork = storage
        .session_info("s-1-fork-1")
        .await
        .unwrap()
        .unwrap()
        .meta;
    assert_eq!(fork.title.as_deref(), Some("Fork of Chores at turn 2"));
    assert_eq!(fork.owner.as_deref(), Some("ann"));
    assert_eq!(fork.tags, ["ops"]);
    assert_eq!(count(&storage, "s-1").await, 7, "the source is untouched");

    let reply = send(
        &app,
        post_form("/sessions/s-1/fork", &fork_form(&storage, "s-1", 1).await),
    )
    .await;
    assert_eq!(reply.header("location"), "/sessions/s-1-fork-2");
    assert_eq!(storage.load("s-1-fork-2").await.unwrap(), two_turns()[..1]);
}

#[tokio::test]
async fn a_session_with_an_id_of_any_length_can_be_forked() {
    // 121 bytes leave room for `-fork-1` exactly; 122 and the longest, 128, do not, and
    // were refused with a 400 ("the fork's id cannot be made") from a button that showed.
    let storage = store();
    let app = app(storage.clone());
    for len in [121, 122, 128] {
        let id = format!("{}-{len}", "l".repeat(len - 4));
        assert_eq!(id.len(), len);
        put(&storage, &id, SessionMeta::new(), &two_turns()).await;
        let page = send(&app, get(&format!("/sessions/{id}"))).await.body;
        assert!(
            page.contains("Fork before turn 2"),
            "{len}: a button: {page}"
        );

        let stem = &id[..len.min(121)];
        for n in [1, 2] {
            let form = fork_form(&storage, &id, 5).await;
            let reply = send(&app, post_form(&format!("/sessions/{id}/fork"), &form)).await;
            assert_eq!(reply.status, StatusCode::SEE_OTHER, "{len}: {}", reply.body);
            let fork = format!("{stem}-fork-{n}");
            assert!(fork.len() <= 128);
            assert_eq!(reply.header("location"), format!("/sessions/{fork}"));
            assert_eq!(storage.load(&fork).await.unwrap(), two_turns()[..5]);
            let title = storage
                .session_info(&fork)
                .await
                .unwrap()
                .unwrap()
                .meta
                .title;
            assert_eq!(
                title,
                Some(format!("Fork of {id} at turn 2")),
                "the title names the source whole"
            );
        }
        assert_eq!(count(&storage, &id).await, 7, "the source is untouched");
    }
}

#[tokio::test]
async fn a_fork_never_overwrites_an_existing_session() {
    let storage = store();
    put(&storage, "s-1", SessionMeta::new(), &two_turns()).await;
    let squatter = [ChatMessage::user("mine, keep out")];
    put(
        &storage,
        "s-1-fork-1",
        SessionMeta::new().owner("bob"),
        &squatter,
    )
    .await;
    let app = app(storage.clone());
    let reply = send(
        &app,
        post_form("/sessions/s-1/fork", &fork_form(&storage, "s-1", 5).await),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.header("location"), "/sessions/s-1-fork-2");
    assert_eq!(storage.load("s-1-fork-1").await.unwrap(), squatter);
    let kept = storage
        .session_info("s-1-fork-1")
        .await
        .unwrap()
        .unwrap()
        .meta;
    assert_eq!(kept.owner.as_deref(), Some("bob"));
    assert_eq!(count(&storage, "s-1-fork-2").await, 5);
    let title = storage
        .session_info("s-1-fork-2")
        .await
        .unwrap()
        .unwrap()
        .meta
        .title;
    assert_eq!(
        title.as_deref(),
        Some("Fork of s-1 at turn 2"),
        "the id when untitled"
    );
}

#[tokio::test]
async fn forks_refuse_non_turns_split_tool_calls_and_bad_input() {
    let storage = store();
    put(&storage, "s-1", SessionMeta::new(), &two_turns()).await;
    // A user message between a call and its result: a fork there would split them.
    let split = [
        ChatMessage::user("go"),
        ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("c1", "ls", "{}")]),
        ChatMessage::user("meanwhile"),
        ChatMessage::tool_result("c1", "a"),
    ];
    put(&storage, "split", SessionMeta::new(), &split).await;
    let app = app(storage.clone());
    let page = send(&app, get("/sessions/split")).await.body;
    assert!(
        !page.contains("class=\"fork\""),
        "no fork button at 0 or 2: {page}"
    );
    let s1 = storage.load_revision("s-1").await.unwrap().1.generation;
    let sp = storage.load_revision("split").await.unwrap().1.generation;
    let cases = [
        (
            "/sessions/s-1/fork",
            format!("at=2&generation={s1}"),
            "does not start a turn",
        ),
        (
            "/sessions/s-1/fork",
            format!("at=99&generation={s1}"),
            "does not start a turn",
        ),
        (
            "/sessions/s-1/fork",
            format!("at=two&generation={s1}"),
            "not a whole number",
        ),
        ("/sessions/s-1/fork", "at=5".to_string(), "no field"),
        ("/sessions/s-1/fork", String::new(), "no field"),
        (
            "/sessions/split/fork",
            format!("at=0&generation={sp}"),
            "first message",
        ),
        (
            "/sessions/split/fork",
            format!("at=2&generation={sp}"),
            "tool call from its result",
        ),
    ];
    for (path, form, expected) in cases {
        let reply = send(&app, post_form(path, &form)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path} {form}");
        assert!(reply.body.contains(expected), "{form}: {}", reply.body);
    }
    let reply = send(&app, post_form("/sessions/nope/fork", "at=1&generation=1")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = send(
        &app,
        post_cross_site("/sessions/s-1/fork", &fork_form(&storage, "s-1", 5).await),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let mut ids = storage.list_sessions().await.unwrap();
    ids.sort();
    assert_eq!(ids, ["s-1", "split"], "no fork was made");
}

#[tokio::test]
async fn a_fork_from_a_page_older_than_a_rewrite_is_refused_but_appends_are_fine() {
    let storage = store();
    put(&storage, "s-1", SessionMeta::new(), &two_turns()).await;
    let app = app(storage.clone());
    let form = fork_form(&storage, "s-1", 5).await;
    // Appends keep every position: the fork the page offered is still the same one.
    storage
        .append("s-1", &[ChatMessage::user("more")])
        .await
        .unwrap();
    let reply = send(&app, post_form("/sessions/s-1/fork", &form)).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(storage.load("s-1-fork-1").await.unwrap(), two_turns()[..5]);
    // A rewrite (here: the last turns undone, then another written) may move them.
    storage.truncate("s-1", 5).await.unwrap();
    storage
        .append(
            "s-1",
            &[ChatMessage::user("other"), ChatMessage::assistant("x")],
        )
        .await
        .unwrap();
    let reply = send(&app, post_form("/sessions/s-1/fork", &form)).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert!(
        reply
            .body
            .contains("was rewritten since its page was shown, so message #5 may not be"),
        "{}",
        reply.body
    );
    assert!(storage.session_info("s-1-fork-2").await.unwrap().is_none());
}

#[tokio::test]
async fn undo_asks_then_removes_the_last_turn() {
    let storage = store();
    put(&storage, "s-1", SessionMeta::new(), &two_turns()).await;
    let app = app(storage.clone());
    let page = send(&app, get("/sessions/s-1")).await.body;
    assert!(
        page.contains(r#"<a href="/sessions/s-1/undo">Undo last turn…</a>"#),
        "{page}"
    );
    let confirm = send(&app, get("/sessions/s-1/undo")).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        confirm.body.contains("removes the last 2 messages"),
        "{}",
        confirm.body
    );
    assert_inert(&confirm.body);
    assert_eq!(count(&storage, "s-1").await, 7, "asking removes nothing");

    let reply = send(
        &app,
        post_form("/sessions/s-1/undo", &revision_fields(&confirm.body)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.header("location"), "/sessions/s-1");
    assert_eq!(storage.load("s-1").await.unwrap(), exchange());

    // Undoing the only turn keeps what came before it (the system prompt)...
    let confirm = send(&app, get("/sessions/s-1/undo")).await.body;
    assert!(confirm.contains("removes the last 4 messages"), "{confirm}");
    let reply = send(
        &app,
        post_form("/sessions/s-1/undo", &revision_fields(&confirm)),
    )
    .await;
    assert_eq!(reply.header("location"), "/sessions/s-1");
    assert_eq!(storage.load("s-1").await.unwrap(), exchange()[..1]);

    // ...and when nothing came before it, removes the session and returns to the listing.
    let chat = [ChatMessage::user("hi"), ChatMessage::assistant("hello")];
    put(&storage, "u", SessionMeta::new(), &chat).await;
    let confirm = send(&app, get("/sessions/u/undo")).await.body;
    let reply = send(
        &app,
        post_form("/sessions/u/undo", &revision_fields(&confirm)),
    )
    .await;
    assert_eq!(reply.header("location"), "/sessions");
    assert!(storage.session_info("u").await.unwrap().is_none());
}

#[tokio::test]
async fn undo_refuses_with_409_when_the_session_changed_since_its_page() {
    let storage = store();
    put(&storage, "s-1", SessionMeta::new(), &two_turns()).await;
    let app = app(storage.clone());
    let confirm = send(&app, get("/sessions/s-1/undo")).await.body;
    // Another writer (a running agent) appends after the page was shown.
    let late = [ChatMessage::user("one more"), ChatMessage::assistant("ok")];
    storage.append("s-1", &late).await.unwrap();
    let reply = send(
        &app,
        post_form("/sessions/s-1/undo", &revision_fields(&confirm)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert!(
        reply.body.contains("<h1>Changed meanwhile</h1>"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("Nothing was undone"), "{}", reply.body);
    assert!(
        reply.body.contains("now holds 9 messages"),
        "{}",
        reply.body
    );
    assert_eq!(count(&storage, "s-1").await, 9, "nothing lost");

    // Rewritten to the same length: the generation differs, so still refused.
    let confirm = send(&app, get("/sessions/s-1/undo")).await.body;
    let mut rewritten = storage.load("s-1").await.unwrap();
    rewritten[8] = ChatMessage::assistant("rewritten");
    storage.save("s-1", &rewritten).await.unwrap();
    let reply = send(
        &app,
        post_form("/sessions/s-1/undo", &revision_fields(&confirm)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(storage.load("s-1").await.unwrap(), rewritten);

    storage.delete("s-1").await.unwrap();
    let reply = send(
        &app,
        post_form("/sessions/s-1/undo", &revision_fields(&confirm)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn undo_refuses_bad_input_and_sessions_without_a_turn() {
    let storage = store();
    put(&storage, "s-1", SessionMeta::new(), &two_turns()).await;
    put(
        &storage,
        "sys",
        SessionMeta::new(),
        &[ChatMessage::system("only")],
    )
    .await;
    let app = app(storage.clone());
    let reply = send(&app, get("/sessions/sys/undo")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("no turn to undo"), "{}", reply.body);
    for form in [
        "",
        "generation=1",
        "generation=x&len=7",
        "generation=1&len=-1",
    ] {
        let reply = send(&app, post_form("/sessions/s-1/undo", form)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{form:?}: {}",
            reply.body
        );
    }
    let confirm = send(&app, get("/sessions/s-1/undo")).await.body;
    let reply = send(
        &app,
        post_cross_site("/sessions/s-1/undo", &revision_fields(&confirm)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = send(&app, get("/sessions/nope/undo")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(count(&storage, "s-1").await, 7);
}

/// A's turn asked for a call; B's turn was stored while it ran; A's result and answer
/// came after B's answer.
fn overlapping_turns() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("prompt"),
        ChatMessage::user("A asks"),
        ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("a1", "slow", "{}")]),
        ChatMessage::user("B asks"),
        ChatMessage::assistant("B's answer"),
        ChatMessage::tool_result("a1", "A's result"),
        ChatMessage::assistant("A's answer"),
    ]
}

#[tokio::test]
async fn undo_keeps_another_writer_s_result_stored_after_the_last_turn() {
    let storage = store();
    put(&storage, "s-1", SessionMeta::new(), &overlapping_turns()).await;
    let app = app(storage.clone());
    let confirm = send(&app, get("/sessions/s-1/undo")).await.body;
    assert!(
        confirm.contains("removes 2 messages") && confirm.contains("The 2 messages after them"),
        "{confirm}"
    );
    let reply = send(
        &app,
        post_form("/sessions/s-1/undo", &revision_fields(&confirm)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let mut kept = overlapping_turns();
    kept.drain(3..5);
    assert_eq!(storage.load("s-1").await.unwrap(), kept);
}

#[tokio::test]
async fn undo_refuses_a_last_turn_mixed_with_another_writer_s() {
    let storage = store();
    let mut history = overlapping_turns();
    // B had not answered when A's result came: B's call and result surround it.
    history[4] =
        ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new("b1", "slow", "{}")]);
    history.push(ChatMessage::tool_result("b1", "B's result"));
    put(&storage, "s-1", SessionMeta::new(), &history).await;
    let app = app(storage.clone());
    let reply = send(&app, get("/sessions/s-1/undo")).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert!(
        reply.body.contains("Nothing can be undone"),
        "{}",
        reply.body
    );
    assert_eq!(storage.load("s-1").await.unwrap(), history);
}
