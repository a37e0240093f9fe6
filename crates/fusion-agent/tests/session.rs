//! `AgentSession` conversations end to end, against a real loopback OpenAI-compatible
//! server: multi-turn context, persistence across sessions and processes, what is stored
//! when, and how storage failures surface.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::{FlakyStorage, Harness, SESSION, Spy, builder, client, roles};
use fusion_agent::AgentSession;
use fusion_agent::testing::MockLlmServer;
use fusion_core::{ConversationStorage, Error, Role};
use fusion_storage_fs::FileSystemStorage;

#[tokio::test]
async fn a_new_session_is_empty_and_the_system_prompt_is_stored_once_with_the_first_message() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    assert_eq!(session.session_id(), SESSION);
    assert_eq!(session.message_count(), 0);
    assert!(h.stored().await.is_empty());

    h.server.push_text("Hello!").push_text("Still here.");
    let first = session.send_message("hi").await.unwrap();
    assert!(first.success);
    assert_eq!(first.result, "Hello!");
    assert!(first.steps.is_empty());
    session.send_message("again").await.unwrap();

    let stored = h.stored().await;
    let roles: Vec<Role> = stored.iter().map(|m| m.role).collect();
    use Role::*;
    assert_eq!(roles, [System, User, Assistant, User, Assistant]);
    assert_eq!(stored[0].content, "You are a test agent.");
    assert_eq!(session.history(), stored.as_slice());
    assert_eq!(session.message_count(), 5);
}

#[tokio::test]
async fn the_second_turn_request_carries_the_first_turn() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    h.server
        .push_text("Noted: your favourite colour is blue.")
        .push_text("Blue.");
    session
        .send_message("Remember: my favourite colour is blue")
        .await
        .unwrap();
    let answer = session
        .send_message("What is my favourite colour?")
        .await
        .unwrap();
    assert_eq!(answer.result, "Blue.");

    let second = h.request_messages(1);
    assert_eq!(roles(&second), ["system", "user", "assistant", "user"]);
    assert_eq!(
        second[1]["content"],
        "Remember: my favourite colour is blue"
    );
    assert_eq!(
        second[2]["content"],
        "Noted: your favourite colour is blue."
    );
    assert_eq!(second[3]["content"], "What is my favourite colour?");
}

#[tokio::test]
async fn a_new_session_on_the_same_directory_continues_the_conversation() {
    let server = MockLlmServer::start().await;
    let sessions = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let open = || async {
        builder(
            Arc::new(client(&server)),
            Arc::new(FileSystemStorage::new(sessions.path())),
            workspace.path(),
        )
        .build()
        .await
        .unwrap()
    };

    server.push_text("I will remember that.");
    {
        let mut first_run = open().await;
        assert_eq!(first_run.message_count(), 0);
        first_run
            .send_message("Remember: my favourite colour is blue")
            .await
            .unwrap();
    }

    let mut second_run = open().await;
    assert_eq!(second_run.message_count(), 3);
    server.push_text("Your favourite colour is blue.");
    let answer = second_run
        .send_message("What is my favourite colour?")
        .await
        .unwrap();
    assert_eq!(answer.result, "Your favourite colour is blue.");
    let request = server.requests()[1]["messages"].as_array().unwrap().clone();
    assert_eq!(roles(&request), ["system", "user", "assistant", "user"]);
    assert_eq!(request[2]["content"], "I will remember that.");
    assert_eq!(
        FileSystemStorage::new(sessions.path())
            .load(SESSION)
            .await
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test]
async fn each_message_is_stored_before_the_next_request_is_made() {
    let h = Harness::new().await;
    let spy = Arc::new(Spy::new(Arc::new(client(&h.server)), h.storage.clone()));
    let mut session = common::builder(spy.clone(), h.storage.clone(), h.workspace.path())
        .build()
        .await
        .unwrap();
    h.server
        .push_tool_call("list_directory", "{}")
        .push_text("The workspace is empty.");
    session
        .send_message("What is in the workspace?")
        .await
        .unwrap();

    let snapshots = spy.snapshots();
    // The user message was stored before the first request...
    let first: Vec<Role> = snapshots[0].iter().map(|m| m.role).collect();
    assert_eq!(first, [Role::System, Role::User]);
    // ...and the tool call and its result before the second.
    let second: Vec<Role> = snapshots[1].iter().map(|m| m.role).collect();
    assert_eq!(
        second,
        [Role::System, Role::User, Role::Assistant, Role::Tool]
    );
    assert_eq!(h.stored().await.len(), 5);
}

#[tokio::test]
async fn clear_history_empties_memory_and_storage_and_the_next_turn_starts_fresh() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    h.server.push_text("one").push_text("two");
    session.send_message("first").await.unwrap();
    session.clear_history().await.unwrap();
    assert_eq!(session.message_count(), 0);
    assert!(h.stored().await.is_empty());

    session.send_message("second").await.unwrap();
    assert_eq!(roles(&h.request_messages(1)), ["system", "user"]);
    assert_eq!(h.stored().await.len(), 3);
}

#[tokio::test]
async fn a_storage_failure_is_returned_and_nothing_reaches_the_model() {
    let h = Harness::new().await;
    let storage = Arc::new(FlakyStorage::failing_after_appends(0));
    let mut session = common::builder(
        Arc::new(client(&h.server)),
        storage.clone(),
        h.workspace.path(),
    )
    .build()
    .await
    .unwrap();
    h.server.push_text("never sent");
    let err = session.send_message("hello").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Backend {
                backend: "flaky",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        h.server.request_count(),
        0,
        "the user message must be stored first"
    );
    assert_eq!(session.message_count(), 0);
}

#[tokio::test]
async fn a_storage_failure_mid_turn_is_returned_and_the_next_turn_resumes_from_storage() {
    let h = Harness::new().await;
    // The opening append succeeds; storing the assistant's reply fails.
    let storage = Arc::new(FlakyStorage::failing_after_appends(1));
    let mut session = common::builder(
        Arc::new(client(&h.server)),
        storage.clone(),
        h.workspace.path(),
    )
    .build()
    .await
    .unwrap();
    h.server.push_tool_call("list_directory", "{}");
    let err = session.send_message("list it").await.unwrap_err();
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert_eq!(storage.inner.load(SESSION).await.unwrap().len(), 2);

    storage.appends_left.store(usize::MAX, Ordering::SeqCst);
    h.server.push_text("Sorry, where were we?");
    let result = session.send_message("hello?").await.unwrap();
    assert!(result.success);
    // The unstored tool call is not resent: storage is the truth.
    assert_eq!(roles(&h.request_messages(1)), ["system", "user", "user"]);
}

#[tokio::test]
async fn a_load_failure_when_opening_is_returned() {
    let h = Harness::new().await;
    let storage = Arc::new(FlakyStorage::failing_after_appends(usize::MAX));
    storage.fail_load.store(true, Ordering::SeqCst);
    let err = common::builder(Arc::new(client(&h.server)), storage, h.workspace.path())
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("load failed"), "{err}");
}

#[tokio::test]
async fn builder_mistakes_are_configuration_errors() {
    let h = Harness::new().await;
    let err = AgentSession::builder("../escape")
        .llm(Arc::new(client(&h.server)))
        .storage(h.storage.clone())
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSessionId { .. }), "{err}");

    let err = AgentSession::builder(SESSION)
        .llm(Arc::new(client(&h.server)))
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains(".storage("), "{err}");

    let err = h
        .builder()
        .tools(fusion_agent::ToolRegistry::new())
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("with_file_tools"), "{err}");

    let mut session = h.session().await;
    let err = session
        .send_message_with_iterations("hi", 0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(h.stored().await.is_empty());
}

#[tokio::test]
async fn an_answer_cut_by_the_token_limit_or_the_content_filter_says_so_and_is_stored() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    let reply = fusion_agent::testing::MockReply::finished;
    h.server.push(reply("The first three steps are", "length"));
    h.server.push(reply("", "content_filter"));
    h.server.push(reply("Done.", "stop"));

    let cut = session.send_message("explain").await.unwrap();
    assert!(cut.success);
    assert_eq!(cut.finish_reason.as_deref(), Some("length"));
    assert!(cut.answer_is_cut());
    assert_eq!(
        cut.answer_cut_because(),
        Some("the model reached its output token limit")
    );
    let filtered = session.send_message("again").await.unwrap();
    assert_eq!(filtered.finish_reason.as_deref(), Some("content_filter"));
    assert!(filtered.answer_is_cut());
    let whole = session.send_message("thanks").await.unwrap();
    assert_eq!(whole.finish_reason.as_deref(), Some("stop"));
    assert!(!whole.answer_is_cut());

    // What the model wrote is kept as it came, cut or not.
    let stored = h.stored().await;
    assert_eq!(stored[2].content, "The first three steps are");
    assert_eq!(stored.len(), 7);
}

#[tokio::test]
async fn undo_after_a_message_that_starts_with_observation_removes_only_that_turn() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    h.server
        .push_text("Hello there.")
        .push_text("Sorry to hear that.");
    session.send_message("hi").await.unwrap();
    session
        .send_message("Observation: my disk is full")
        .await
        .unwrap();
    assert_eq!(session.undo_last_turn().await.unwrap(), 2);
    let roles: Vec<Role> = h.stored().await.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::System, Role::User, Role::Assistant]);
}

#[tokio::test]
async fn a_native_answer_with_an_action_line_is_not_answered_as_an_interrupted_action() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    h.server
        .push_text("Here is the plan:\n- Action: restart nginx\n- Expected: it comes back")
        .push_text("You're welcome.");
    session.send_message("plan it").await.unwrap();
    session.send_message("thanks").await.unwrap();
    let stored = h.stored().await;
    let roles: Vec<Role> = stored.iter().map(|m| m.role).collect();
    use Role::*;
    assert_eq!(roles, [System, User, Assistant, User, Assistant]);
    assert_eq!(stored[3].content, "thanks");
}
