//! Forking from the transcript page: "Fork before turn 3" makes a new session holding the
//! first two turns and opens it; the source is left as it was.

use std::sync::Arc;

use fusion::ChatMessage;
use fusion::storage::{ConversationStorage, InMemoryStorage, SessionMeta};

use crate::harness::with_page;

#[tokio::test]
async fn forking_before_turn_3_keeps_turns_1_and_2_in_a_new_session() {
    let storage = Arc::new(InMemoryStorage::new());
    let history: Vec<ChatMessage> = (1..=3)
        .flat_map(|turn| {
            [
                ChatMessage::user(format!("question {turn}")),
                ChatMessage::assistant(format!("answer {turn}")),
            ]
        })
        .collect();
    storage
        .create_session("three", &SessionMeta::new().title("Three turns"), &history)
        .await
        .unwrap();
    let kept = storage.clone();
    with_page(storage, |page| async move {
        page.open("/sessions/three").await;
        page.browser
            .find_with_text("form.fork button", "Fork before turn 3")
            .await
            .click()
            .await;
        page.browser
            .wait_for("the fork's page", || async {
                page.browser
                    .url()
                    .await
                    .ends_with("/sessions/three-fork-1")
                    .then_some(())
            })
            .await;
        let shown = page.browser.texts("#transcript article .md").await;
        assert_eq!(shown, ["question 1", "answer 1", "question 2", "answer 2"]);

        let fork = kept.load("three-fork-1").await.unwrap();
        assert_eq!(fork, history[..4]);
        assert_eq!(
            kept.load("three").await.unwrap(),
            history,
            "the source is unchanged"
        );
        let info = kept.session_info("three-fork-1").await.unwrap().unwrap();
        assert_eq!(
            info.meta.title.as_deref(),
            Some("Fork of Three turns at turn 3")
        );
    })
    .await;
}
