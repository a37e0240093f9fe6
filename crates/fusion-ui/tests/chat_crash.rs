//! A turn whose model client panics ends as a failed turn, and leaves its session free;
//! the panic's text is shown with its secrets hidden, as an error's is.
//!
//! The agent catches its tools' panics, not its model client's or its storage's. Such a
//! panic ended the turn's task without an outcome, so the app counted the turn as running
//! until it was restarted: the page watching it waited for an end that never came, Stop
//! changed nothing, and the session refused every Send, undo and delete with "a chat turn
//! is running".

mod chat_support;
mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::http::StatusCode;
use fusion::Result;
use fusion::agent::{ChatRequest, ChatResponse, LlmClient};
use fusion::storage::{ConversationStorage, InMemoryStorage};
use fusion_ui::{ChatAgent, UiConfig, router};

use chat_support::{Events, seeded, start_turn};
use common::{HOST, post_form, send};

/// A model client with a bug: every request panics, quoting its secrets as a careless
/// `unwrap` or `Debug` print would.
struct Panicking;

#[async_trait]
impl LlmClient for Panicking {
    async fn chat(&self, _request: &ChatRequest<'_>) -> Result<ChatResponse> {
        panic!(
            "the client's bug: https://u:s3cret-1@llm.example/v1?api_key=s3cret-2 refused \
             authorization: Bearer s3cret-3 (config: password = s3cret-4)"
        )
    }

    fn model(&self) -> &str {
        "panicking-model"
    }
}

fn app(storage: Arc<InMemoryStorage>) -> Router {
    let address = HOST.parse().unwrap();
    let settings = UiConfig::new(address)
        .chat(ChatAgent::new(Arc::new(Panicking)))
        .settings(address)
        .unwrap();
    router(storage as Arc<dyn ConversationStorage>, &settings)
}

/// The events of the turn at `turn` through its `end`. The bound is no measure of speed:
/// without the fix the end never comes, and the test should fail rather than hang.
async fn end_of(app: &Router, turn: &str) -> String {
    let mut events = Events::open(app, &format!("{turn}/events"), None).await;
    let seen = tokio::time::timeout(Duration::from_secs(120), events.through_end())
        .await
        .expect("the turn never ended: its task died with the panic");
    seen.last().unwrap().data.clone()
}

#[tokio::test]
async fn a_turn_whose_model_client_panics_fails_and_frees_its_session() {
    let storage = seeded().await;
    let app = app(storage.clone());

    let turn = start_turn(&app, "s1", "hello").await;
    let end = end_of(&app, &turn).await;
    assert!(end.contains("the turn crashed"), "{end}");
    assert!(
        end.contains("the client&#39;s bug") || end.contains("the client's bug"),
        "{end}"
    );
    // Shown as other errors are: without the secrets it quoted.
    assert!(!end.contains("s3cret"), "{end}");
    assert!(
        end.contains("https://u:***@llm.example/v1?api_key=***"),
        "{end}"
    );

    // Stop has nothing to stop; another Send starts a turn, which ends the same way.
    let again = start_turn(&app, "s1", "again").await;
    assert_ne!(again, turn);
    end_of(&app, &again).await;

    // And the session can be deleted: no turn holds it.
    let deleted = send(&app, post_form("/sessions/s1/delete", "")).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    assert!(storage.session_info("s1").await.unwrap().is_none());
}

/// A model client of the caller's own whose every request fails with an error quoting
/// its secrets (the bundled client hides its key where it fails; this one does not).
struct Failing;

#[async_trait]
impl LlmClient for Failing {
    async fn chat(&self, _request: &ChatRequest<'_>) -> Result<ChatResponse> {
        Err(fusion::Error::Llm {
            message: "POST https://u:s3cret-1@llm.example/v1?api_key=s3cret-2 with \
                      authorization: Bearer s3cret-3 refused"
                .into(),
            status: Some(401),
            retryable: false,
            source: None,
        })
    }

    fn model(&self) -> &str {
        "failing-model"
    }
}

#[tokio::test]
async fn a_turn_whose_model_client_fails_shows_the_error_without_its_secrets() {
    // Only a panic's text was redacted: the same client's error was shown as it was.
    let address = HOST.parse().unwrap();
    let settings = UiConfig::new(address)
        .chat(ChatAgent::new(Arc::new(Failing)))
        .settings(address)
        .unwrap();
    let app = router(seeded().await as Arc<dyn ConversationStorage>, &settings);
    let turn = start_turn(&app, "s1", "hello").await;
    let end = end_of(&app, &turn).await;
    assert!(end.contains("The turn failed"), "{end}");
    assert!(!end.contains("s3cret"), "{end}");
    assert!(
        end.contains("https://u:***@llm.example/v1?api_key=***"),
        "{end}"
    );
}
