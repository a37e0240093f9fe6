//! The browser tests' stage: headless Chromium under a chromedriver of its own
//! (`chromium.rs`), the app served in-process on a free loopback port over a seeded store,
//! and axe-core.
//!
//! axe-core's `axe.min.js` is named by `FUSION_AXE_JS` or found where `cargo xtask
//! test-all-backends` installs it. A missing browser or axe-core is `unavailable`: skipped
//! under plain `cargo test`, a failure with `FUSION_REQUIRE_BACKENDS=1`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fusion::storage::{ConversationStorage, InMemoryStorage};
use fusion_core::testkit::unavailable;
use fusion_ui::{ChatAgent, UiConfig};
use tokio::sync::{Semaphore, oneshot};

pub use crate::chromium::WINDOW;
use crate::chromium::{Chromium, Tools};
use crate::webdriver::Session;

/// At most this many browsers at once: the suite runs its tests in parallel, and more
/// Chromiums than cores only make each one slower.
static BROWSERS: Semaphore = Semaphore::const_new(2);

/// Where `cargo xtask test-all-backends` installs axe-core, below the workspace.
const AXE_CACHE: &str = "../../target/axe-core/node_modules/axe-core/axe.min.js";

/// The name [`Reach::LanName`] opens the app by: `.test` is reserved, so it can only
/// mean what Chromium is told it means.
pub const LAN_NAME: &str = "fusion-lan.test";

/// How the browser reaches the app.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// By its loopback address, `http://127.0.0.1:PORT`: a secure context.
    Loopback,
    /// By the name [`LAN_NAME`] over plain http, as a LAN bind is reached: not a secure
    /// context, so the page has no clipboard API. Chromium resolves the name (port 80)
    /// to the app's loopback port; the app accepts it as an extra host name.
    LanName,
}

/// A page in a fresh headless Chromium, pointed at a fresh app.
#[derive(Clone)]
pub struct Page {
    /// The browser session.
    pub browser: Session,
    /// The origin the page opens the app at: `http://127.0.0.1:PORT`, or
    /// `http://fusion-lan.test` for [`Reach::LanName`].
    pub origin: String,
    /// The app's loopback origin, `http://127.0.0.1:PORT`, whichever way it is reached.
    pub loopback: String,
}

impl Page {
    /// Loads `path` (`/sessions?owner=ann`) from the app.
    pub async fn open(&self, path: &str) {
        self.browser.goto(&format!("{}{path}", self.origin)).await;
    }
}

/// Runs `body` against `storage` served by the app and a fresh browser, then closes the
/// browser, its driver and the app, whether `body` passed or panicked (the panic is
/// passed on). Returns without running `body` when the browser is unavailable.
pub async fn with_page<F, Fut>(storage: Arc<InMemoryStorage>, body: F)
where
    F: FnOnce(Page) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_page_by(Reach::Loopback, storage, body).await;
}

/// [`with_page`], with the browser reaching the app the way `reach` says.
pub async fn with_page_by<F, Fut>(reach: Reach, storage: Arc<InMemoryStorage>, body: F)
where
    F: FnOnce(Page) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut config = UiConfig::new("127.0.0.1:0".parse().unwrap());
    if reach == Reach::LanName {
        config = config.allow_host(LAN_NAME);
    }
    with_app(config, reach, storage, body).await;
}

/// [`with_page`], with the transcript page chatting with `agent`.
pub async fn with_chat_page<F, Fut>(storage: Arc<InMemoryStorage>, agent: ChatAgent, body: F)
where
    F: FnOnce(Page) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let config = UiConfig::new("127.0.0.1:0".parse().unwrap()).chat(agent);
    with_app(config, Reach::Loopback, storage, body).await;
}

/// Serves the app `config` describes over `storage`, reached as `reach`, and runs `body`
/// in a fresh browser (see [`with_page`]).
async fn with_app<F, Fut>(config: UiConfig, reach: Reach, storage: Arc<InMemoryStorage>, body: F)
where
    F: FnOnce(Page) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(tools) = tools() else { return };
    let _slot = BROWSERS.acquire().await.unwrap();

    let bound = fusion_ui::bind(&config).await.unwrap();
    let loopback = format!("http://{}", bound.local_addr());
    let (origin, resolve) = match reach {
        Reach::Loopback => (loopback.clone(), None),
        Reach::LanName => {
            let rule = format!("MAP {LAN_NAME}:80 {}", bound.local_addr());
            (format!("http://{LAN_NAME}"), Some(rule))
        }
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(storage as Arc<dyn ConversationStorage>, async {
        let _ = stopped.await;
    }));

    let browser = Chromium::start(&tools, resolve.as_deref()).await;
    let page = Page {
        browser: browser.session.clone(),
        origin,
        loopback,
    };

    // In a task of its own so a failed assertion still lets the browser be closed.
    let outcome = tokio::spawn(body(page)).await;
    browser.close().await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    if let Err(failure) = outcome {
        std::panic::resume_unwind(failure.into_panic());
    }
}

/// Finds Chromium and chromedriver, or reports them unavailable.
fn tools() -> Option<Tools> {
    Tools::find().or_else(|| {
        unavailable(
            "browser",
            "chromium and chromedriver must be on PATH (Debian: apt-get install chromium \
             chromium-driver; `cargo xtask test-all-backends` installs them when root)",
        )
    })
}

/// axe-core's `axe.min.js`, or `None` (after `unavailable`) when it is not installed.
pub fn axe_source() -> Option<String> {
    let path = match std::env::var_os("FUSION_AXE_JS") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(AXE_CACHE),
    };
    match std::fs::read_to_string(&path) {
        Ok(source) => Some(source),
        Err(e) => unavailable(
            "axe-core",
            &format!(
                "cannot read {} ({e}): set FUSION_AXE_JS to axe.min.js, or run `npm install \
                 axe-core@4 --prefix target/axe-core` (`cargo xtask test-all-backends` does)",
                path.display()
            ),
        ),
    }
}

/// One rule axe-core found broken on a page.
pub struct Violation {
    /// axe's impact: `minor`, `moderate`, `serious` or `critical`.
    pub impact: String,
    /// `rule-id: help (target, ...)`.
    pub summary: String,
}

impl Violation {
    /// Whether the rule is one the tests refuse (serious or critical).
    pub fn is_serious(&self) -> bool {
        matches!(self.impact.as_str(), "serious" | "critical")
    }
}

/// Runs axe-core (`axe`, the source of `axe.min.js`) on the current page and returns
/// every violation it reports.
pub async fn axe_violations(browser: &Session, axe: &str) -> Vec<Violation> {
    // Defined through the DevTools protocol, which the page's CSP does not govern; the
    // page itself could not load it (script-src 'self').
    browser
        .execute(&format!("{axe}\nwindow.axe = axe; return true;"), vec![])
        .await;
    browser.set_script_timeout(crate::webdriver::WAIT).await;
    let results = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             window.axe.run(document, { resultTypes: ['violations'] })
               .then(r => done(r.violations), e => done({ error: String(e) }));",
            vec![],
        )
        .await;
    assert!(results.get("error").is_none(), "axe failed: {results}");
    results
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let targets: Vec<String> = v["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| n["target"].to_string())
                .collect();
            Violation {
                impact: v["impact"].as_str().unwrap_or("unknown").to_string(),
                summary: format!("{}: {} ({})", v["id"], v["help"], targets.join(", ")),
            }
        })
        .collect()
}
