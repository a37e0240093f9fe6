//! One click on a fork button makes one fork: the form carries a token of the page, and a
//! post repeated with it (a double click, a reload of the answer) goes to the fork the
//! first made. Before, each post made another `<id>-fork-<n>`.

mod common;

use axum::http::StatusCode;
use fusion::ChatMessage;
use fusion::storage::{ConversationStorage, SessionMeta};

use common::*;

async fn forks(storage: &dyn ConversationStorage) -> Vec<String> {
    let mut ids = storage.list_sessions().await.unwrap();
    ids.retain(|id| id.contains("-fork-"));
    ids.sort();
    ids
}

#[tokio::test]
async fn a_fork_button_pressed_twice_makes_one_fork() {
    let storage = store();
    let mut history = exchange();
    history.push(ChatMessage::user("Delete a.txt"));
    history.push(ChatMessage::assistant("Done."));
    put(&storage, "s", SessionMeta::new().title("Chores"), &history).await;
    let app = app(storage.clone());
    let page = send(&app, get("/sessions/s")).await.body;
    let form = fork_form(&page, 5);

    for _ in 0..2 {
        let reply = send(&app, post_form("/sessions/s/fork", &form)).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        assert_eq!(reply.header("location"), "/sessions/s-fork-1");
    }
    assert_eq!(forks(storage.as_ref()).await, ["s-fork-1"]);
    let made = storage.session_info("s-fork-1").await.unwrap().unwrap();
    let origin = &made.meta.data["forked_from"];
    assert_eq!(origin["session"], "s");
    assert_eq!(origin["before"], 5);

    // Another button of the same page, or the same button on a page shown again, is
    // another click: another fork.
    let reply = send(&app, post_form("/sessions/s/fork", &fork_form(&page, 1))).await;
    assert_eq!(reply.header("location"), "/sessions/s-fork-2");
    let again = send(&app, get("/sessions/s")).await.body;
    let reply = send(&app, post_form("/sessions/s/fork", &fork_form(&again, 5))).await;
    assert_eq!(reply.header("location"), "/sessions/s-fork-3");
    assert_eq!(
        forks(storage.as_ref()).await,
        ["s-fork-1", "s-fork-2", "s-fork-3"]
    );

    let bad = format!(
        "{}&request=not+a+token",
        form.split("&request").next().unwrap()
    );
    let reply = send(&app, post_form("/sessions/s/fork", &bad)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
}
