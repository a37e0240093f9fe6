//! Hostile text and the Content-Security-Policy, checked where they matter: in the
//! browser. Payloads that would leave a mark if they ran, a click on a `javascript:`
//! link, and the browser's own CSP reports.

use serde_json::Value;

use crate::harness::{Page, with_page};
use crate::seed::{self, CHORES, FLAG, HOSTILE, LINK_TEXT, LONG, PWNED_TITLE};

/// Fails if any payload of the hostile session ran: set the window flag or the title.
async fn assert_nothing_ran(page: &Page) {
    let flag = page
        .browser
        .execute(&format!("return window.{FLAG} === undefined;"), vec![])
        .await;
    assert_eq!(flag, Value::Bool(true), "a payload set window.{FLAG}");
    assert_ne!(
        page.browser.title().await,
        PWNED_TITLE,
        "a payload set the title"
    );
}

/// The browser's CSP reports since the last read.
async fn csp_violations(page: &Page) -> Vec<String> {
    page.browser
        .browser_log()
        .await
        .into_iter()
        .map(|entry| entry["message"].as_str().unwrap_or_default().to_string())
        .filter(|message| message.contains("Content Security Policy"))
        .collect()
}

#[tokio::test]
async fn hostile_text_renders_inert_and_its_link_runs_nothing() {
    with_page(seed::hostile_store().await, |page| async move {
        page.open("/sessions?owner=mallory").await;
        page.browser
            .find_with_text("#sessions-table", "<script>")
            .await;
        assert_nothing_ran(&page).await;

        page.open(&format!("/sessions/{HOSTILE}")).await;
        page.browser.find("details.tool").await;
        // The payloads are on the page as text a person can read.
        let text = page.browser.body_text().await;
        assert!(text.contains(&format!("<script>window.{FLAG}=1")), "{text}");
        assert!(text.contains("<img src=x onerror="), "{text}");
        for card in page.browser.find_all("details").await {
            card.find_inside("summary").await.unwrap().click().await;
        }
        assert_nothing_ran(&page).await;

        // The markdown link survives as text at most; clicking it runs nothing.
        let hrefs = page.browser.attributes("a[href]", "href").await;
        assert!(
            !hrefs
                .iter()
                .any(|h| h.trim().to_ascii_lowercase().starts_with("javascript:")),
            "{hrefs:?}"
        );
        // The link itself if one is left, else the paragraph that shows its text.
        let mut clicked = 0;
        for css in [".md a", ".md p"] {
            for candidate in page.browser.find_all(css).await {
                if clicked == 0 && candidate.text().await.contains(LINK_TEXT) {
                    candidate.click().await;
                    clicked += 1;
                }
            }
        }
        assert_eq!(clicked, 1, "the link text {LINK_TEXT:?} is not on the page");
        assert!(
            page.browser
                .url()
                .await
                .ends_with(&format!("/sessions/{HOSTILE}"))
        );
        assert_nothing_ran(&page).await;
        // Nothing was even tried: the sanitizer left the CSP nothing to block.
        assert_eq!(csp_violations(&page).await, Vec::<String>::new());
    })
    .await;
}

#[tokio::test]
async fn our_pages_break_no_csp_rule_and_the_browser_enforces_it() {
    with_page(seed::demo_store().await, |page| async move {
        for path in [
            "/sessions".to_string(),
            "/sessions?owner=ann&tag=ops".to_string(),
            format!("/sessions/{CHORES}"),
            format!("/sessions/{LONG}"),
            format!("/sessions/{CHORES}/delete"),
            "/sessions/no-such-session".to_string(),
        ] {
            page.open(&path).await;
            page.browser.find("main").await;
            assert_eq!(
                csp_violations(&page).await,
                Vec::<String>::new(),
                "on {path}"
            );
        }
        // htmx's swaps too.
        page.open(&format!("/sessions/{LONG}")).await;
        page.browser.find("nav.earlier a").await.click().await;
        page.browser
            .wait_for("the earlier messages", || async {
                (page.browser.find_all("article.msg").await.len() > 200).then_some(())
            })
            .await;
        assert_eq!(csp_violations(&page).await, Vec::<String>::new());

        // An inline script put into the page (as an injection would) is refused.
        page.browser
            .execute(
                "const s = document.createElement('script');
                 s.textContent = 'window.__fusion_inline = 1';
                 document.body.appendChild(s);",
                vec![],
            )
            .await;
        let ran = page
            .browser
            .execute("return window.__fusion_inline === 1;", vec![])
            .await;
        assert_eq!(ran, Value::Bool(false), "the CSP let an inline script run");
        let reports = page
            .browser
            .wait_for("the browser's CSP report", || async {
                let reports = csp_violations(&page).await;
                (!reports.is_empty()).then_some(reports)
            })
            .await;
        assert!(reports[0].contains("script-src"), "{reports:?}");
    })
    .await;
}
