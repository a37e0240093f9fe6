//! The browser tests' stage: headless Chromium under a chromedriver of its own, the app
//! served in-process on a free loopback port over a seeded store, and axe-core.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`, found on the
//! PATH (or named by `FUSION_CHROMIUM` / `FUSION_CHROMEDRIVER`); axe-core's `axe.min.js`
//! is named by `FUSION_AXE_JS` or found where `cargo xtask test-all-backends` installs
//! it. A missing one is `unavailable`: skipped under plain `cargo test`, a failure with
//! `FUSION_REQUIRE_BACKENDS=1`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use fusion::storage::{ConversationStorage, InMemoryStorage};
use fusion_core::testkit::unavailable;
use fusion_ui::UiConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, oneshot};

use crate::webdriver::Session;

/// The viewport every test and screenshot uses, in CSS pixels.
pub const WINDOW: (u32, u32) = (1280, 900);

/// At most this many browsers at once: the suite runs its tests in parallel, and more
/// Chromiums than cores only make each one slower.
static BROWSERS: Semaphore = Semaphore::const_new(2);

/// Where `cargo xtask test-all-backends` installs axe-core, below the workspace.
const AXE_CACHE: &str = "../../target/axe-core/node_modules/axe-core/axe.min.js";

/// The programs the tests drive.
struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

/// A page in a fresh headless Chromium, pointed at a fresh app.
#[derive(Clone)]
pub struct Page {
    /// The browser session.
    pub browser: Session,
    /// The app's origin, `http://127.0.0.1:PORT`.
    pub origin: String,
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
    let Some(tools) = tools() else { return };
    let _slot = BROWSERS.acquire().await.unwrap();

    let bound = fusion_ui::bind(&UiConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let origin = format!("http://{}", bound.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(storage as Arc<dyn ConversationStorage>, async {
        let _ = stopped.await;
    }));

    let (mut driver, driver_url) = start_chromedriver(&tools.chromedriver).await;
    let http = fusion::agent::http_client_builder()
        .unwrap()
        .build()
        .unwrap();
    let browser = Session::start(http, &driver_url, capabilities(&tools.chromium)).await;
    fit_viewport(&browser).await;
    let page = Page {
        browser: browser.clone(),
        origin,
    };

    // In a task of its own so a failed assertion still lets the browser be closed.
    let outcome = tokio::spawn(body(page)).await;
    browser.quit().await;
    let _ = driver.kill().await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    if let Err(failure) = outcome {
        std::panic::resume_unwind(failure.into_panic());
    }
}

/// Headless Chromium at the fixed window size, logging the console for the CSP checks.
fn capabilities(chromium: &Path) -> Value {
    json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                // New headless mode: the real browser without a display.
                "--headless=new",
                // Chromium's sandbox cannot start as root (CI) nor in many containers.
                "--no-sandbox",
                "--disable-gpu",
                // /dev/shm is small in containers; Chromium crashes tabs when it fills.
                "--disable-dev-shm-usage",
                format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                "--force-device-scale-factor=1",
                "--hide-scrollbars",
                // The same language and colours whatever the machine's settings, so the
                // screenshots differ only where the pages do.
                "--lang=en-US",
                "--force-color-profile=srgb",
                "--no-first-run",
                "--no-default-browser-check",
            ],
        },
        "goog:loggingPrefs": { "browser": "ALL" },
    })
}

/// Sizes the window so that its viewport (what pages and screenshots see) is [`WINDOW`]:
/// `--window-size` sets the outside of the window, toolbars included.
async fn fit_viewport(browser: &Session) {
    let sizes = browser
        .execute(
            "return [window.outerWidth - window.innerWidth, \
                     window.outerHeight - window.innerHeight];",
            vec![],
        )
        .await;
    let frame = |i: usize| sizes[i].as_u64().and_then(|n| u32::try_from(n).ok());
    let (Some(width), Some(height)) = (frame(0), frame(1)) else {
        panic!("unexpected window sizes: {sizes}");
    };
    browser
        .set_window_size(WINDOW.0 + width, WINDOW.1 + height)
        .await;
}

/// Starts chromedriver on a port it picks (`--port=0`) and returns it with its URL.
async fn start_chromedriver(program: &Path) -> (Child, String) {
    let mut child = Command::new(program)
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} exited before saying its port", program.display()));
        // "ChromeDriver was started successfully on port 37863."
        if let Some(rest) = line.split("started successfully on port ").nth(1) {
            break rest.trim_end_matches('.').trim().to_string();
        }
    };
    // Keep reading, so chromedriver never blocks (or dies) writing to a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://127.0.0.1:{port}"))
}

/// Finds Chromium and chromedriver, or reports them unavailable.
fn tools() -> Option<Tools> {
    let found = |variable: &str, names: &[&str]| -> Option<PathBuf> {
        if let Some(path) = std::env::var_os(variable) {
            return Some(PathBuf::from(path));
        }
        let paths = std::env::var_os("PATH")?;
        std::env::split_paths(&paths)
            .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
            .find(|path| path.is_file())
    };
    let chromium = found(
        "FUSION_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    let chromedriver = found("FUSION_CHROMEDRIVER", &["chromedriver"]);
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Some(Tools {
            chromium,
            chromedriver,
        }),
        _ => unavailable(
            "browser",
            "chromium and chromedriver must be on PATH (Debian: apt-get install chromium \
             chromium-driver; `cargo xtask test-all-backends` installs them when root)",
        ),
    }
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
