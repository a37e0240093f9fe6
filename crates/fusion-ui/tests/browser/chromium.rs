//! Headless Chromium under a chromedriver of its own, at a fixed viewport: what the browser
//! tests (`harness.rs`) and the UI's speed measurement (`examples/ui_speed.rs`) both start.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`, found on the
//! PATH (or named by `FUSION_CHROMIUM` / `FUSION_CHROMEDRIVER`). Shared as a file rather
//! than a crate: the library has no use for it, and both users are this crate's own
//! targets.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::webdriver::Session;

/// The viewport every test, screenshot and measurement uses, in CSS pixels.
pub const WINDOW: (u32, u32) = (1280, 900);

/// The programs driven.
pub struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

impl Tools {
    /// Chromium and chromedriver, or `None` when either is not found.
    pub fn find() -> Option<Tools> {
        Some(Tools {
            chromium: program(
                "FUSION_CHROMIUM",
                &["chromium", "chromium-browser", "google-chrome"],
            )?,
            chromedriver: program("FUSION_CHROMEDRIVER", &["chromedriver"])?,
        })
    }
}

/// The program named by `variable`, else the first of `names` on the PATH.
fn program(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(PathBuf::from(path));
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|path| path.is_file())
}

/// A headless Chromium and the chromedriver that runs it.
pub struct Chromium {
    /// The WebDriver session of its one window.
    pub session: Session,
    driver: Child,
}

impl Chromium {
    /// Starts chromedriver, then a browser whose viewport is [`WINDOW`]; `resolve` is a
    /// host resolver rule (`MAP name:80 127.0.0.1:PORT`) when given.
    pub async fn start(tools: &Tools, resolve: Option<&str>) -> Chromium {
        let (driver, driver_url) = start_chromedriver(&tools.chromedriver).await;
        let http = fusion::agent::http_client_builder()
            .unwrap()
            .build()
            .unwrap();
        let capabilities = capabilities(&tools.chromium, resolve);
        let session = Session::start(http, &driver_url, capabilities).await;
        fit_viewport(&session).await;
        Chromium { session, driver }
    }

    /// Closes the browser and stops its driver.
    pub async fn close(mut self) {
        self.session.quit().await;
        let _ = self.driver.kill().await;
    }
}

/// Headless Chromium at the fixed window size, logging the console for the CSP checks;
/// `resolve`, a host resolver rule, when given.
fn capabilities(chromium: &Path, resolve: Option<&str>) -> Value {
    let mut args = vec![
        // New headless mode: the real browser without a display.
        "--headless=new".to_string(),
        // Chromium's sandbox cannot start as root (CI) nor in many containers.
        "--no-sandbox".to_string(),
        "--disable-gpu".to_string(),
        // /dev/shm is small in containers; Chromium crashes tabs when it fills.
        "--disable-dev-shm-usage".to_string(),
        format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        "--force-device-scale-factor=1".to_string(),
        "--hide-scrollbars".to_string(),
        // The same language and colours whatever the machine's settings, so the
        // screenshots differ only where the pages do.
        "--lang=en-US".to_string(),
        "--force-color-profile=srgb".to_string(),
        "--no-first-run".to_string(),
        "--no-default-browser-check".to_string(),
    ];
    if let Some(rule) = resolve {
        args.push(format!("--host-resolver-rules={rule}"));
    }
    json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": chromium, "args": args },
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

/// How many times chromedriver is started before a test gives up on it. On a loaded
/// machine it has been seen to exit at start (once in a CI run of 16 tests), which is no
/// fault of the pages under test.
const DRIVER_ATTEMPTS: usize = 3;

/// Starts chromedriver on a port it picks (`--port=0`) and returns it with its URL,
/// starting it again if it exits before saying its port.
async fn start_chromedriver(program: &Path) -> (Child, String) {
    let mut failures = Vec::new();
    for _ in 0..DRIVER_ATTEMPTS {
        match try_start_chromedriver(program).await {
            Ok(started) => return started,
            Err(why) => failures.push(why),
        }
    }
    panic!(
        "{} did not start in {DRIVER_ATTEMPTS} attempts: {}",
        program.display(),
        failures.join("; ")
    );
}

/// One start of chromedriver: it and its URL, or why it exited before saying its port.
async fn try_start_chromedriver(program: &Path) -> Result<(Child, String), String> {
    let mut child = Command::new(program)
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let Some(line) = lines.next_line().await.unwrap() else {
            let status = child.wait().await.map(|s| s.to_string());
            return Err(format!("exited before saying its port ({status:?})"));
        };
        // "ChromeDriver was started successfully on port 37863."
        if let Some(rest) = line.split("started successfully on port ").nth(1) {
            break rest.trim_end_matches('.').trim().to_string();
        }
    };
    // Keep reading, so chromedriver never blocks (or dies) writing to a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, format!("http://127.0.0.1:{port}")))
}
