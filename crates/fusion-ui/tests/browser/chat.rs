//! The chat in the browser: a message typed and sent from the transcript page, the reply
//! appearing while the model still writes it, a delete approved and another denied with
//! the page's buttons, Stop, and a reload in the middle of a turn picking its stream up
//! again, and a word streamed just after the page connected. The model is a real
//! OpenAI-protocol server on loopback.

use std::sync::Arc;

use async_trait::async_trait;
use fusion::agent::testing::{MockDelta, MockLlmServer, MockStreamEnd};
use fusion::agent::{
    ChatRequest, ChatResponse, ChatStream, LlmClient, OpenAiClient, OpenAiConfig, ToolRegistry,
};
use fusion::storage::{ConversationStorage, InMemoryStorage, SessionMeta};
use fusion::{ChatMessage, Result};
use fusion_ui::ChatAgent;
use futures::StreamExt;
use tokio::sync::Notify;

use crate::harness::{Page, axe_source, axe_violations, with_chat_page};

/// A store holding session `talk` with one exchange.
async fn store() -> Arc<InMemoryStorage> {
    let storage = Arc::new(InMemoryStorage::new());
    let history = [ChatMessage::user("hello"), ChatMessage::assistant("hi")];
    storage
        .create_session("talk", &SessionMeta::new().title("Talk"), &history)
        .await
        .unwrap();
    storage
}

/// The client of `server`.
fn client(server: &MockLlmServer) -> OpenAiClient {
    OpenAiConfig::new("mock-model")
        .base_url(server.base_url())
        .build()
        .unwrap()
}

/// The agent on `server`, with `tools`.
fn agent(server: &MockLlmServer, tools: ToolRegistry) -> ChatAgent {
    ChatAgent::new(Arc::new(client(server))).tools(tools)
}

/// A real client whose requests wait until `go` is notified before they are sent: the
/// model thinking for as long as a test needs.
struct Held {
    inner: OpenAiClient,
    go: Arc<Notify>,
}

#[async_trait]
impl LlmClient for Held {
    async fn chat(&self, request: &ChatRequest<'_>) -> Result<ChatResponse> {
        self.go.notified().await;
        self.inner.chat(request).await
    }

    fn chat_stream<'a>(&'a self, request: &'a ChatRequest<'_>) -> ChatStream<'a> {
        futures::stream::once(self.go.notified())
            .flat_map(move |()| self.inner.chat_stream(request))
            .boxed()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }
}

/// Types `message` into the chat box and presses Send.
async fn send(page: &Page, message: &str) {
    page.browser
        .find("#chat-message")
        .await
        .replace_text(message)
        .await;
    page.browser
        .find("#chat-form button[type=submit]")
        .await
        .click()
        .await;
}

/// Waits until an element matching `css` holds `text`, reading the page in one step each
/// time: the live panel's elements are replaced as events arrive, so a found element may
/// be gone by the time its text is read.
async fn wait_text(page: &Page, css: &str, text: &str) -> String {
    page.browser
        .wait_for(&format!("`{css}` with text {text:?}"), || async {
            let texts = page.browser.texts(css).await;
            texts.into_iter().find(|shown| shown.contains(text))
        })
        .await
}

/// Waits until the turn has ended, returning its status line.
async fn turn_end(page: &Page) -> String {
    wait_text(page, "div.turn-end p[role=status]", "").await
}

/// No serious or critical axe violation on the page as it is now.
async fn assert_accessible(page: &Page, state: &str) {
    let Some(axe) = axe_source() else { return };
    let serious: Vec<String> = axe_violations(&page.browser, &axe)
        .await
        .into_iter()
        .filter(|violation| violation.is_serious())
        .map(|violation| format!("[{}] {}", violation.impact, violation.summary))
        .collect();
    assert!(serious.is_empty(), "axe, {state}:\n{}", serious.join("\n"));
}

#[tokio::test]
async fn the_reply_appears_while_the_model_still_writes_it() {
    let server = MockLlmServer::start().await;
    server.push_text("Foxes jump over lazy dogs.");
    let gate = server.hold_next_stream();
    let agent = agent(&server, ToolRegistry::default());
    with_chat_page(store().await, agent, |page| async move {
        page.open("/sessions/talk").await;
        send(&page, "Tell me about <b>foxes</b>").await;
        gate.first_part_sent().await;
        wait_text(&page, "div.turn-steps", "Foxes").await;
        assert!(
            page.browser.find_all("div.turn-end").await.is_empty(),
            "the first word is shown while the reply is still being written"
        );
        assert_accessible(&page, "while a turn runs").await;

        gate.release();
        let status = turn_end(&page).await;
        assert!(status.contains("Finished"), "{status}");
        // The stored turn replaced the live panel in the transcript, rendered as markdown.
        page.browser
            .find_with_text(
                "#transcript article.role-assistant",
                "Foxes jump over lazy dogs.",
            )
            .await;
        page.browser
            .find_with_text(
                "#transcript article.role-user",
                "Tell me about <b>foxes</b>",
            )
            .await;
        assert_eq!(
            page.browser
                .find("#chat-message")
                .await
                .property("value")
                .await,
            "",
            "the box is emptied for the next message"
        );
    })
    .await;
}

/// How many `reset` events the page has taken in since [`count_resets`] was called.
async fn resets(page: &Page) -> u64 {
    let count = page
        .browser
        .execute("return window.fusionResets;", vec![])
        .await;
    count.as_u64().expect("count_resets ran on this page")
}

/// Makes the page count the `reset` events its live panel takes in.
async fn count_resets(page: &Page) {
    page.browser
        .execute(
            "window.fusionResets = 0;
             document.body.addEventListener('htmx:sseBeforeMessage', (event) => {
                 if (event.detail.type === 'reset') window.fusionResets += 1;
             });",
            vec![],
        )
        .await;
}

#[tokio::test]
async fn a_word_arriving_just_after_the_page_connects_is_shown() {
    // htmx wires up what a swap brought in only once it has settled. A `reset` used to
    // bring in a new steps element, so the words streamed while it settled reached no
    // element and were never shown. A settle of 3 s, set on the page, widens that moment
    // from htmx's 20 ms to one the test can land a word in every time.
    let server = MockLlmServer::start().await;
    server.push_text("Foxes jump over lazy dogs.");
    let gate = server.hold_next_stream();
    let go = Arc::new(Notify::new());
    let llm = Held {
        inner: client(&server),
        go: go.clone(),
    };
    let agent = ChatAgent::new(Arc::new(llm));
    with_chat_page(store().await, agent, |page| async move {
        page.open("/sessions/talk").await;
        page.browser
            .execute("htmx.config.defaultSettleDelay = 3000;", vec![])
            .await;
        count_resets(&page).await;
        send(&page, "Tell me about foxes").await;
        page.browser
            .wait_for("the live panel's reset", || async {
                (resets(&page).await > 0).then_some(())
            })
            .await;
        // The model answers only now, while the reset is still settling.
        go.notify_one();
        gate.first_part_sent().await;
        wait_text(&page, "div.turn-steps", "Foxes").await;
        gate.release();
        let status = turn_end(&page).await;
        assert!(status.contains("Finished"), "{status}");
    })
    .await;
}

#[tokio::test]
async fn a_delete_is_approved_and_another_denied_in_the_page() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "a").unwrap();
    std::fs::write(dir.path().join("b.txt"), "b").unwrap();
    let server = MockLlmServer::start().await;
    server
        .push_tool_call("delete_file", r#"{"path":"a.txt"}"#)
        .push_text("Deleted a.txt.")
        .push_tool_call("delete_file", r#"{"path":"b.txt"}"#)
        .push_text("Left b.txt alone.");
    let tools = ToolRegistry::with_file_tools([dir.path()]).unwrap();
    let agent = agent(&server, tools);
    let root = dir.path().to_path_buf();
    with_chat_page(store().await, agent, |page| async move {
        page.open("/sessions/talk").await;
        for (file, button, end) in [
            ("a.txt", "approve", "Deleted a.txt."),
            ("b.txt", "deny", "Left b.txt alone."),
        ] {
            send(&page, &format!("delete {file}")).await;
            wait_text(&page, "div.approval", file).await;
            assert!(root.join(file).exists(), "nothing runs before the answer");
            if button == "approve" {
                assert_accessible(&page, "with a question waiting").await;
            }
            page.browser
                .find(&format!("div.approval button[value={button}]"))
                .await
                .click()
                .await;
            // The answered card lasts until the turn ends and the stored turn replaces the
            // panel, which may come first; the stored reply is what must appear.
            wait_text(&page, "#transcript article.role-assistant", end).await;
            let status = turn_end(&page).await;
            assert!(status.contains("Finished"), "{status}");
        }
        assert!(!root.join("a.txt").exists(), "approved: deleted");
        assert!(root.join("b.txt").exists(), "denied: kept");
    })
    .await;
}

#[tokio::test]
async fn stop_ends_the_turn_and_a_reload_mid_turn_resumes_its_stream() {
    let server = MockLlmServer::start().await;
    server.push_partial(
        [MockDelta::text("Thinking "), MockDelta::text("hard")],
        MockStreamEnd::Stall,
    );
    let agent = agent(&server, ToolRegistry::default());
    let storage = store().await;
    let kept = storage.clone();
    with_chat_page(storage, agent, |page| async move {
        page.open("/sessions/talk").await;
        send(&page, "think").await;
        wait_text(&page, "div.turn-steps", "Thinking hard").await;

        // A reload while the turn runs shows it again, with everything written so far.
        page.open("/sessions/talk").await;
        wait_text(&page, "div.turn-steps", "Thinking hard").await;

        page.browser.find("form.stop button").await.click().await;
        let status = turn_end(&page).await;
        assert!(status.contains("Stopped"), "{status}");
        let history = kept.load("talk").await.unwrap();
        assert!(
            !history.iter().any(|m| m.content.contains("Thinking")),
            "a reply cut off mid-stream is not stored"
        );
    })
    .await;
}

#[tokio::test]
async fn a_screenshot_of_the_chat_with_a_question_waiting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("old.log"), "old").unwrap();
    let server = MockLlmServer::start().await;
    server.push_tool_call("delete_file", r#"{"path":"old.log"}"#);
    let tools = ToolRegistry::with_file_tools([dir.path()]).unwrap();
    let agent = agent(&server, tools);
    with_chat_page(store().await, agent, |page| async move {
        page.open("/sessions/talk").await;
        send(&page, "Clean up the old log, please.").await;
        wait_text(&page, "div.approval", "old.log").await;
        page.browser
            .execute(
                "document.querySelector('div.approval').scrollIntoView({ block: 'center' });",
                vec![],
            )
            .await;
        let png = page.browser.screenshot().await;
        assert_eq!(crate::png_size(&png), crate::WINDOW);
        if let Some(dir) = std::env::var_os("FUSION_UI_SCREENSHOTS_DIR") {
            let dir = std::path::PathBuf::from(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("chat.png"), png).unwrap();
        }
        page.browser
            .find("div.approval button[value=deny]")
            .await
            .click()
            .await;
        turn_end(&page).await;
    })
    .await;
}

/// Posts `form` to `path` of the app from outside the page (as another tab would), with
/// the page's origin, returning the status.
async fn post_elsewhere(page: &Page, path: &str, form: &[(String, String)]) -> u16 {
    let http = fusion::agent::http_client_builder()
        .unwrap()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let response = http
        .post(format!("{}{path}", page.origin))
        .header("origin", &page.origin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

/// The address and fields (decision aside) of the approval card's form on the page.
async fn card_form(page: &Page) -> (String, Vec<(String, String)>) {
    let read = page
        .browser
        .execute(
            "const form = document.querySelector('div.approval form');
             return [form.getAttribute('action'), Array.from(new FormData(form))];",
            vec![],
        )
        .await;
    let (action, fields): (String, Vec<(String, String)>) = serde_json::from_value(read).unwrap();
    (action, fields)
}

#[tokio::test]
async fn refused_chat_actions_say_why_in_the_page() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "a").unwrap();
    let server = MockLlmServer::start().await;
    server
        .push_tool_call("delete_file", r#"{"path":"a.txt"}"#)
        .push_text("Left a.txt alone.");
    let tools = ToolRegistry::with_file_tools([dir.path()]).unwrap();
    let agent = agent(&server, tools);
    let root = dir.path().to_path_buf();
    with_chat_page(store().await, agent, |page| async move {
        // A page opened before another tab started a turn: its send is refused (409).
        page.open("/sessions/talk").await;
        let started = post_elsewhere(
            &page,
            "/sessions/talk/chat",
            &[("message".into(), "delete a.txt".into())],
        )
        .await;
        assert_eq!(started, 303);
        send(&page, "and this?").await;
        wait_text(&page, "#refusal dialog[open]", "A turn is still running").await;
        // The refused send kept the form: the text is still in the box, and the focus
        // stays on Send (only the form a send that started a turn returns takes it).
        let kept = page
            .browser
            .execute(
                "const box = document.querySelector('#chat-message');
                 return [box.value, document.activeElement === box];",
                vec![],
            )
            .await;
        assert_eq!(kept, serde_json::json!(["and this?", false]));

        // The card of a question that asks about another call than the one it shows
        // (here its digest altered): nothing is decided, and the page says why.
        page.open("/sessions/talk").await;
        wait_text(&page, "div.approval", "a.txt").await;
        let (action, fields) = card_form(&page).await;
        page.browser
            .execute(
                "document.querySelector('div.approval input[name=digest]').value += '0';",
                vec![],
            )
            .await;
        page.browser
            .find("div.approval button[value=approve]")
            .await
            .click()
            .await;
        wait_text(&page, "#refusal dialog[open]", "another call than the card").await;
        assert!(root.join("a.txt").exists(), "nothing was decided");

        // Denied in another tab first (the reply after it held, so the turn stays and the
        // page keeps its card): the page's Approve changes nothing, and the card says so.
        let gate = server.hold_next_stream();
        let mut deny = fields.clone();
        deny.push(("decision".into(), "deny".into()));
        assert_eq!(post_elsewhere(&page, &action, &deny).await, 303);
        page.browser
            .find("div.approval button[value=approve]")
            .await
            .click()
            .await;
        wait_text(
            &page,
            "div.approval",
            "Your answer changed nothing: the call was denied first",
        )
        .await;
        gate.release();
        let status = turn_end(&page).await;
        assert!(status.contains("Finished"), "{status}");
        assert!(root.join("a.txt").exists(), "denied: kept");
    })
    .await;
}
