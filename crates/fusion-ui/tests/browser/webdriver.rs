//! A small W3C WebDriver client over the workspace's reqwest: the dozen commands the
//! browser tests use (navigate, find, click, type, read, run script, screenshot, logs),
//! also used by the UI's speed measurement (`examples/ui_speed`).
//!
//! Written here rather than taken from fantoccini, which would bring hyper-util, its own
//! connector stack and Mozilla's `webdriver` crate (with ICU segmentation) into the
//! build for what is JSON over loopback HTTP; this adds no crate at all.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

/// The key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a wait polls before failing: generous, since the machine may be busy; a wait
/// that ends sooner simply returns sooner. Never a measure of speed.
pub const WAIT: Duration = Duration::from_secs(60);

/// One browser session on a chromedriver.
#[derive(Clone)]
pub struct Session {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`.
    base: String,
}

/// An element of the current page (stale once the page or its fragment is replaced).
#[derive(Clone)]
pub struct Element {
    session: Session,
    id: String,
}

/// Sends one command and returns its `value`, panicking with WebDriver's error otherwise.
async fn command(http: &reqwest::Client, method: &str, url: &str, body: Option<Value>) -> Value {
    let request = match method {
        "GET" => http.get(url),
        "DELETE" => http.delete(url),
        _ => http.post(url).json(&body.unwrap_or_else(|| json!({}))),
    };
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("WebDriver {method} {url}: {e}"));
    let status = response.status();
    let mut reply: Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("WebDriver {method} {url}: unreadable reply: {e}"));
    let value = reply["value"].take();
    if !status.is_success() {
        panic!(
            "WebDriver {method} {url} failed ({status}): {} {}",
            value["error"], value["message"]
        );
    }
    value
}

impl Session {
    /// Opens a session on the chromedriver at `driver` (`http://127.0.0.1:PORT`) with
    /// `capabilities` (the `alwaysMatch` object).
    pub async fn start(http: reqwest::Client, driver: &str, capabilities: Value) -> Session {
        let body = json!({ "capabilities": { "alwaysMatch": capabilities } });
        let value = command(&http, "POST", &format!("{driver}/session"), Some(body)).await;
        let id = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {value}"));
        Session {
            http,
            base: format!("{driver}/session/{id}"),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        command(&self.http, method, &format!("{}{path}", self.base), body).await
    }

    /// Ends the session, closing its browser.
    pub async fn quit(&self) {
        self.call("DELETE", "", None).await;
    }

    /// Loads `url` and waits for the page's load event.
    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// The address of the current page.
    pub async fn url(&self) -> String {
        let value = self.call("GET", "/url", None).await;
        value.as_str().unwrap_or_default().to_string()
    }

    /// The current page's title.
    pub async fn title(&self) -> String {
        let value = self.call("GET", "/title", None).await;
        value.as_str().unwrap_or_default().to_string()
    }

    /// The elements matching the CSS selector `css` now (none is no error).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let body = json!({ "using": "css selector", "value": css });
        let value = self.call("POST", "/elements", Some(body)).await;
        value
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| self.element(e))
            .collect()
    }

    /// The first element matching `css`, waiting (polling) until there is one.
    pub async fn find(&self, css: &str) -> Element {
        self.wait_for(&format!("an element matching `{css}`"), || async {
            self.find_all(css).await.into_iter().next()
        })
        .await
    }

    /// The first element matching `css` whose text contains `text`, waiting for one.
    pub async fn find_with_text(&self, css: &str, text: &str) -> Element {
        self.wait_for(&format!("`{css}` with text {text:?}"), || async {
            for element in self.find_all(css).await {
                if element.text().await.contains(text) {
                    return Some(element);
                }
            }
            None
        })
        .await
    }

    /// Polls `probe` until it returns `Some`, failing with `what` after [`WAIT`].
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(found) = probe().await {
                return found;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "waited {WAIT:?} for {what} on {}; page text:\n{}",
                    self.url().await,
                    self.body_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The visible text of the whole page.
    pub async fn body_text(&self) -> String {
        let body = self.find_all("body").await;
        match body.first() {
            Some(body) => body.text().await,
            None => String::new(),
        }
    }

    /// The text of every element matching `css` now, read in one step inside the page
    /// (so an htmx swap cannot leave a half-read list of stale elements).
    pub async fn texts(&self, css: &str) -> Vec<String> {
        self.strings(css, "e => e.innerText").await
    }

    /// The attribute `name` of every element matching `css` now, read in one step.
    pub async fn attributes(&self, css: &str, name: &str) -> Vec<String> {
        let read = format!("e => e.getAttribute({})", json!(name));
        self.strings(css, &read).await
    }

    async fn strings(&self, css: &str, read: &str) -> Vec<String> {
        let script = format!(
            "return Array.from(document.querySelectorAll(arguments[0]), {read}).map(String);"
        );
        let value = self.execute(&script, vec![json!(css)]).await;
        serde_json::from_value(value).expect("a list of strings")
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    /// Runs through the DevTools protocol, so the page's CSP does not apply to it.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        let body = json!({ "script": script, "args": args });
        self.call("POST", "/execute/sync", Some(body)).await
    }

    /// Runs `script`, which calls its last argument with the result, and returns that.
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        let body = json!({ "script": script, "args": args });
        self.call("POST", "/execute/async", Some(body)).await
    }

    /// Runs the Chrome DevTools Protocol command `command` with `params` (chromedriver's
    /// `goog/cdp/execute`) and returns its result: what WebDriver has no command for, such
    /// as the renderer's time spent in script, style and layout (`Performance.getMetrics`).
    #[allow(dead_code)] // examples/ui_speed's; no test needs it
    pub async fn devtools(&self, command: &str, params: Value) -> Value {
        let body = json!({ "cmd": command, "params": params });
        self.call("POST", "/goog/cdp/execute", Some(body)).await
    }

    /// Sets how long an asynchronous script may run.
    pub async fn set_script_timeout(&self, timeout: Duration) {
        let body = json!({ "script": timeout.as_millis() as u64 });
        self.call("POST", "/timeouts", Some(body)).await;
    }

    /// Resizes the browser window (its outside, with any toolbars) to `width` × `height`.
    pub async fn set_window_size(&self, width: u32, height: u32) {
        let body = json!({ "width": width, "height": height });
        self.call("POST", "/window/rect", Some(body)).await;
    }

    /// Sets the current origin's permission `name` (`clipboard-read`, ...) to `state`
    /// (`granted`, `denied`, `prompt`), as the W3C Permissions extension of WebDriver does.
    pub async fn set_permission(&self, name: &str, state: &str) {
        let body = json!({ "descriptor": { "name": name }, "state": state });
        self.call("POST", "/permissions", Some(body)).await;
    }

    /// Presses Control with `key` (`'c'`: copy), as a person at the keyboard would.
    pub async fn press_ctrl(&self, key: char) {
        // WebDriver's code point for the Control key.
        const CONTROL: &str = "\u{E009}";
        let key = key.to_string();
        let body = json!({ "actions": [{
            "type": "key",
            "id": "keyboard",
            "actions": [
                { "type": "keyDown", "value": CONTROL },
                { "type": "keyDown", "value": key },
                { "type": "keyUp", "value": key },
                { "type": "keyUp", "value": CONTROL },
            ],
        }] });
        self.call("POST", "/actions", Some(body)).await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let value = self.call("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .expect("the screenshot is not base64")
    }

    /// The browser console's entries since the last call (`level`, `source`, `message`
    /// each), from chromedriver's log endpoint; needs the `goog:loggingPrefs` capability.
    pub async fn browser_log(&self) -> Vec<Value> {
        let value = self
            .call("POST", "/se/log", Some(json!({ "type": "browser" })))
            .await;
        value.as_array().cloned().unwrap_or_default()
    }

    fn element(&self, reference: &Value) -> Element {
        let id = reference[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("not an element: {reference}"));
        Element {
            session: self.clone(),
            id: id.to_string(),
        }
    }
}

impl Element {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/element/{}{path}", self.id);
        self.session.call(method, &path, body).await
    }

    /// Clicks the element (scrolling it into view first, as a person would).
    pub async fn click(&self) {
        self.call("POST", "/click", None).await;
    }

    /// Focuses the element and presses Enter on it, as a person at the keyboard would.
    pub async fn press_enter(&self) {
        // WebDriver's code point for the Enter key.
        self.call("POST", "/value", Some(json!({ "text": "\u{E007}" })))
            .await;
    }

    /// Empties a text field, then types `text` into it.
    pub async fn replace_text(&self, text: &str) {
        self.call("POST", "/clear", None).await;
        self.call("POST", "/value", Some(json!({ "text": text })))
            .await;
    }

    /// The element's rendered text (what a person sees: hidden text is left out).
    pub async fn text(&self) -> String {
        let value = self.call("GET", "/text", None).await;
        value.as_str().unwrap_or_default().to_string()
    }

    /// The DOM property `name` (`open` of a `<details>`, `href` of a link, ...).
    pub async fn property(&self, name: &str) -> Value {
        self.call("GET", &format!("/property/{name}"), None).await
    }

    /// The element as a script argument of [`Session::execute`] (`arguments[i]` in the
    /// page is then this element).
    pub fn reference(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    /// Finds, inside this element, the first match of `css` now.
    pub async fn find_inside(&self, css: &str) -> Option<Element> {
        let body = json!({ "using": "css selector", "value": css });
        let value = self.call("POST", "/elements", Some(body)).await;
        value
            .as_array()
            .and_then(|all| all.first())
            .map(|e| self.session.element(e))
    }
}
