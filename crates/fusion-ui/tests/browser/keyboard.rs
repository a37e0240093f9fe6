//! The transcript page at the keyboard: "Load earlier messages" pressed with Enter keeps
//! the focus where the reader is, on the next window's link, and, once the first message
//! is in, on the line saying the session starts there; Send puts it back in the message
//! box for the next message.

use std::sync::Arc;

use fusion::ChatMessage;
use fusion::agent::OpenAiConfig;
use fusion::agent::testing::MockLlmServer;
use fusion::storage::{ConversationStorage, InMemoryStorage, SessionMeta};
use fusion_ui::ChatAgent;
use serde_json::Value;

use crate::harness::{Page, with_chat_page, with_page};

/// Messages in the session: three windows, of 200, 200 and 1.
const MESSAGES: usize = 401;

/// The focused element's id and text.
async fn focused(page: &Page) -> (String, String) {
    let value = page
        .browser
        .execute(
            "const e = document.activeElement; return [e.id, e.textContent.trim()];",
            vec![],
        )
        .await;
    let text = |at: usize| value[at].as_str().unwrap_or_default().to_string();
    (text(0), text(1))
}

/// Presses Enter on the "load earlier" link and waits for `total` messages on the page.
async fn load_earlier_with_enter(page: &Page, total: usize) {
    page.browser.find("nav.earlier a").await.press_enter().await;
    page.browser
        .wait_for(&format!("{total} messages on the page"), || async {
            (page.browser.find_all("article.msg").await.len() == total).then_some(())
        })
        .await;
}

#[tokio::test]
async fn loading_earlier_messages_with_the_keyboard_keeps_the_focus_in_place() {
    let storage = Arc::new(InMemoryStorage::new());
    let history: Vec<ChatMessage> = (0..MESSAGES)
        .map(|n| ChatMessage::user(format!("Step {n}")))
        .collect();
    storage
        .create_session("steps", &SessionMeta::new(), &history)
        .await
        .unwrap();
    with_page(storage, |page| async move {
        page.open("/sessions/steps").await;
        page.browser.find("article.msg").await;

        load_earlier_with_enter(&page, 400).await;
        assert_eq!(
            focused(&page).await,
            ("earlier".into(), "Load earlier messages (1 more)".into()),
            "the focus left the link pressed for the page's start"
        );

        load_earlier_with_enter(&page, MESSAGES).await;
        assert_eq!(
            focused(&page).await,
            ("earlier".into(), "The session starts here.".into())
        );
        let first = page.browser.find("article.msg").await;
        assert_eq!(first.property("id").await, Value::String("m0".into()));
    })
    .await;
}

#[tokio::test]
async fn after_a_send_with_the_keyboard_the_focus_is_back_in_the_message_box() {
    let server = MockLlmServer::start().await;
    server.push_text("Noted.");
    let llm = OpenAiConfig::new("mock-model")
        .base_url(server.base_url())
        .build()
        .unwrap();
    let storage = Arc::new(InMemoryStorage::new());
    let history = [ChatMessage::user("hello"), ChatMessage::assistant("hi")];
    storage
        .create_session("talk", &SessionMeta::new(), &history)
        .await
        .unwrap();
    with_chat_page(storage, ChatAgent::new(Arc::new(llm)), |page| async move {
        page.open("/sessions/talk").await;
        page.browser
            .find("#chat-message")
            .await
            .replace_text("Note this.")
            .await;
        page.browser
            .find("#chat-form button[type=submit]")
            .await
            .press_enter()
            .await;
        page.browser
            .find_with_text("div.turn-end p[role=status]", "Finished")
            .await;
        let (id, _) = focused(&page).await;
        assert_eq!(
            id, "chat-message",
            "the focus left the chat for the page's start"
        );
    })
    .await;
}
