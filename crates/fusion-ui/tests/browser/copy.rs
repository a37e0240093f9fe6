//! The copy buttons, clicked in the browser: on loopback (a secure context) the exact
//! stored text lands on the clipboard, read back through the clipboard API, for a field
//! of a message's stored JSON (fetched when pressed), for a result whose message is
//! outside the window, and for buttons of messages htmx inserted later; the "raw JSON"
//! block, opened, shows the stored JSON exactly; reached by a LAN name over plain http
//! (no clipboard API) the text is selected instead, and Ctrl-C copies exactly it.

use fusion::storage::{ConversationStorage, InMemoryStorage, SessionMeta};
use fusion::{ChatMessage, ToolCall};
use serde_json::Value;

use crate::harness::{Page, Reach, axe_source, axe_violations, with_page, with_page_by};
use crate::seed::{self, LONG, LONG_MESSAGES};
use crate::webdriver::Element;

/// The session the tests copy from.
const SESSION: &str = "copy-1";
/// Markdown that rendering would change, with Windows line ends that HTML would lose.
const MARKDOWN: &str = "Run **this**:\r\n\r\n```sh\r\necho \"<b>&amp;</b>\"\r\n```";
/// Arguments as the model wrote them (the card shows them pretty-printed).
const ARGUMENTS: &str = r#"{"cmd":"ls","cwd":"/tmp"}"#;

/// The demo's sessions and [`SESSION`]: the markdown, then a call to a tool.
async fn store() -> std::sync::Arc<InMemoryStorage> {
    let storage = seed::demo_store().await;
    let messages = [
        ChatMessage::user(MARKDOWN),
        ChatMessage::assistant_with_tool_calls(
            "On it.",
            vec![ToolCall::new("call-1", "shell", ARGUMENTS)],
        ),
        ChatMessage::tool_result("call-1", "a\r\nb"),
    ];
    storage
        .create_session(SESSION, &SessionMeta::new(), &messages)
        .await
        .unwrap();
    storage
}

/// Clicks `button` and waits until it has said something starting with `outcome`.
///
/// A button says its outcome for 4 s (`FEEDBACK_MS` in assets/copy.js), then its label
/// again. Polling its label missed an outcome shown while the test was held up that long,
/// as on a busy machine: the wait then failed a copy that had worked. Every label the
/// button shows is recorded in the page from before the click instead, and read whenever
/// the test gets to it.
async fn click_and_wait(page: &Page, button: &Element, outcome: &str) {
    page.browser
        .execute(
            "const button = arguments[0];
             button.fusionSaid = [];
             new MutationObserver(() => button.fusionSaid.push(button.textContent))
                 .observe(button, { childList: true, characterData: true, subtree: true });",
            vec![button.reference()],
        )
        .await;
    button.click().await;
    page.browser
        .wait_for(&format!("the button to say {outcome:?}"), || async {
            let said = page
                .browser
                .execute("return arguments[0].fusionSaid;", vec![button.reference()])
                .await;
            let said: Vec<String> = serde_json::from_value(said).expect("a list of labels");
            said.iter()
                .any(|label| label.starts_with(outcome))
                .then_some(())
        })
        .await;
}

/// The clipboard's text, read through the clipboard API (the page's origin must hold the
/// `clipboard-read` permission).
async fn clipboard(page: &Page) -> String {
    let value = page
        .browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             navigator.clipboard.readText().then(done, e => done({ error: String(e) }));",
            vec![],
        )
        .await;
    match value {
        Value::String(text) => text,
        other => panic!("cannot read the clipboard: {other}"),
    }
}

/// The copy button labelled `label` inside the element matching `css`.
async fn button(page: &Page, css: &str, label: &str) -> Element {
    page.browser
        .find_with_text(&format!("{css} button.copy"), label)
        .await
}

#[tokio::test]
async fn copy_buttons_put_the_stored_text_on_the_clipboard() {
    with_page(store().await, |page| async move {
        page.open(&format!("/sessions/{SESSION}")).await;
        page.browser
            .set_permission("clipboard-read", "granted")
            .await;

        let text = button(&page, "#m0", "Copy text").await;
        click_and_wait(&page, &text, "Copied").await;
        assert_eq!(clipboard(&page).await, MARKDOWN);

        page.browser
            .find("#m1 details.tool summary")
            .await
            .click()
            .await;
        let arguments = button(&page, "#m1 details.tool", "Copy arguments").await;
        click_and_wait(&page, &arguments, "Copied").await;
        assert_eq!(clipboard(&page).await, ARGUMENTS);
        let result = button(&page, "#m1 details.tool", "Copy result").await;
        click_and_wait(&page, &result, "Copied").await;
        assert_eq!(clipboard(&page).await, "a\r\nb");

        page.browser
            .find("#m0 details.raw summary")
            .await
            .click()
            .await;
        // Opened, the block fetches the stored JSON and shows it as it is, \r included.
        let expected = serde_json::to_string_pretty(&ChatMessage::user(MARKDOWN)).unwrap();
        page.browser
            .wait_for("the raw JSON to be shown", || async {
                let shown = page
                    .browser
                    .execute(
                        "return document.querySelector('#m0 details.raw pre').textContent;",
                        vec![],
                    )
                    .await;
                (shown == Value::String(expected.clone())).then_some(())
            })
            .await;
        let raw = button(&page, "#m0 details.raw", "Copy JSON").await;
        click_and_wait(&page, &raw, "Copied").await;
        let json: Value = serde_json::from_str(&clipboard(&page).await).unwrap();
        assert_eq!(json["content"], MARKDOWN);

        // A window that ends before the result: its button fetches the result's message.
        page.open(&format!("/sessions/{SESSION}?before=2")).await;
        page.browser
            .find("#m1 details.tool summary")
            .await
            .click()
            .await;
        let result = button(&page, "#m1 details.tool", "Copy result").await;
        let from = result.property("dataset").await["copyFrom"].clone();
        assert!(
            from.as_str()
                .unwrap()
                .starts_with("/sessions/copy-1/messages/2?"),
            "{from}"
        );
        click_and_wait(&page, &result, "Copied").await;
        assert_eq!(clipboard(&page).await, "a\r\nb");

        // A button htmx inserted with an earlier window works as well.
        page.open(&format!("/sessions/{LONG}")).await;
        page.browser
            .find_with_text("nav.earlier a", "Load earlier messages")
            .await
            .click()
            .await;
        let inserted = LONG_MESSAGES - 400;
        let text = button(&page, &format!("#m{inserted}"), "Copy text").await;
        click_and_wait(&page, &text, "Copied").await;
        assert_eq!(clipboard(&page).await, format!("Step {inserted}: go on"));
    })
    .await;
}

#[tokio::test]
async fn without_a_secure_origin_the_text_is_selected_for_ctrl_c() {
    with_page_by(Reach::LanName, store().await, |page| async move {
        page.open(&format!("/sessions/{SESSION}")).await;
        let context = page
            .browser
            .execute(
                "return [window.isSecureContext, navigator.clipboard === undefined];",
                vec![],
            )
            .await;
        assert_eq!(
            context,
            serde_json::json!([false, true]),
            "not the LAN case"
        );

        let text = button(&page, "#m0", "Copy text").await;
        click_and_wait(&page, &text, "Selected: press Ctrl-C").await;
        let selected = page
            .browser
            .execute("return window.getSelection().toString();", vec![])
            .await;
        assert_eq!(selected, MARKDOWN);
        if let Some(axe) = axe_source() {
            let serious: Vec<String> = axe_violations(&page.browser, &axe)
                .await
                .into_iter()
                .filter(|v| v.is_serious())
                .map(|v| v.summary)
                .collect();
            assert!(serious.is_empty(), "axe: {serious:?}");
        }

        // What the person then does: Ctrl-C. The clipboard, read back on the loopback
        // origin (which has the API), holds the stored text, line ends and all.
        page.browser.press_ctrl('c').await;
        page.browser
            .goto(&format!("{}/sessions", page.loopback))
            .await;
        page.browser
            .set_permission("clipboard-read", "granted")
            .await;
        assert_eq!(clipboard(&page).await, MARKDOWN);
    })
    .await;
}
