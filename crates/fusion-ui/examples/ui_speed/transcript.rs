//! A long transcript: a session shaped like the shared benchmark workload, its page and
//! its "load earlier" fragment timed on the server, then the page opened in headless
//! Chromium over a real socket (navigation timing, first paint, long tasks, renderer
//! time by kind) and its earlier messages loaded by clicking the link.

use std::error::Error;
use std::sync::Arc;
use std::time::Instant;

use fusion::storage::{ConversationStorage, SessionMeta, SqliteStorage};
use fusion::{ChatMessage, ToolCall};
use fusion_ui::UiConfig;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::Args;
use crate::chromium::{Chromium, Tools};
use crate::profile;
use crate::timing::{Sample, app, get_runs, ms};

/// The session's id.
const ID: &str = "long-transcript";

/// Words the messages are made of (the benchmark workload's first sixteen).
const WORDS: [&str; 16] = [
    "agent", "memory", "session", "token", "model", "prompt", "vector", "cache", "stream", "tool",
    "result", "query", "index", "shard", "batch", "latency",
];

/// Reads the navigation's timing, first paint, the long tasks (Chromium buffers them, so
/// an observer made after the load still sees those of the load) and the page's size.
const READ_LOAD: &str = "
const done = arguments[arguments.length - 1];
const nav = performance.getEntriesByType('navigation')[0];
const fcp = performance.getEntriesByName('first-contentful-paint')[0];
const tasks = [];
new PerformanceObserver(list => tasks.push(...list.getEntries()))
  .observe({ type: 'longtask', buffered: true });
setTimeout(() => done({
  ttfb: nav.responseStart - nav.requestStart,
  responseEnd: nav.responseEnd,
  domContentLoaded: nav.domContentLoadedEventEnd,
  load: nav.loadEventEnd,
  fcp: fcp ? fcp.startTime : null,
  longest: Math.max(0, ...tasks.map(t => t.duration)),
  htmlBytes: nav.decodedBodySize,
  elements: document.getElementsByTagName('*').length,
  articles: document.querySelectorAll('article.msg').length,
}), 100);
";

/// Clicks \"Load earlier messages\" and waits for the window before to be in the page: the
/// time to the swap, to the next frame after it, the fragment's own request, and the
/// longest task meanwhile.
const LOAD_EARLIER: &str = "
const done = arguments[arguments.length - 1];
const before = document.querySelectorAll('article.msg').length;
const tasks = [];
const longtasks = new PerformanceObserver(list => tasks.push(...list.getEntries()));
longtasks.observe({ type: 'longtask' });
const section = document.querySelector('section.messages');
const started = performance.now();
const swapped = new MutationObserver(() => {
  if (document.querySelectorAll('article.msg').length < before + 200) return;
  swapped.disconnect();
  const inserted = performance.now();
  requestAnimationFrame(() => setTimeout(() => {
    const painted = performance.now();
    setTimeout(() => {
      const fetched = performance.getEntriesByType('resource')
        .filter(e => e.name.includes('/messages?before=')).pop();
      done({
        inserted: inserted - started,
        painted: painted - started,
        response: fetched ? fetched.responseEnd - fetched.startTime : null,
        longest: Math.max(0, ...tasks.map(t => t.duration)),
        articles: document.querySelectorAll('article.msg').length,
      });
    }, 100);
  }, 0));
});
swapped.observe(section, { childList: true, subtree: true });
document.querySelector('nav.earlier a').click();
";

/// Builds the session, times its pages on the server, then in the browser unless told
/// not to; prints the tables.
pub async fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let path = args.dir.join("transcript.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let storage = Arc::new(SqliteStorage::connect(&format!("sqlite://{}", path.display())).await?);
    let messages = workload_like(args.messages);
    let meta = SessionMeta::new().title("A long session");
    storage.create_session(ID, &meta, &messages).await?;

    let count = messages.len();
    let app = app(storage.clone());
    let before = count.saturating_sub(200);
    let (page, html) = get_runs(&app, &format!("/sessions/{ID}"), args.runs).await?;
    let fragment_path = format!("/sessions/{ID}/messages?before={before}");
    let (fragment, _) = get_runs(&app, &fragment_path, args.runs).await?;
    let mut load = Sample::default();
    for _ in 0..args.runs {
        let started = Instant::now();
        storage.load_revision(ID).await?;
        load.push(started.elapsed().as_secs_f64() * 1e3);
    }

    println!("## A {count}-message transcript\n");
    println!(
        "Server time through `router` (`oneshot`), {} runs after one warm-up; \
         `load_revision` is the storage's part (the whole history, read for every window).\n",
        args.runs
    );
    println!("| request | median ms | p95 ms | max ms |");
    println!("|---|---:|---:|---:|");
    for (label, sample) in [
        (
            format!(
                "`GET /sessions/{{id}}` ({:.0} KB)",
                html.len() as f64 / 1024.0
            ),
            &page,
        ),
        (
            "`GET .../messages?before=N` (load earlier)".to_string(),
            &fragment,
        ),
        ("of which `load_revision`".to_string(), &load),
    ] {
        println!(
            "| {label} | {} | {} | {} |",
            ms(sample.median()),
            ms(sample.p95()),
            ms(sample.max())
        );
    }
    println!();
    if args.browser {
        in_browser(storage, args).await?;
    }
    Ok(())
}

/// Opens the transcript `--browser-runs` times in headless Chromium over `bind` + `serve`,
/// loading the earlier window each time, and prints the figures; with `--profile`, once
/// more under the profiler.
async fn in_browser(storage: Arc<SqliteStorage>, args: &Args) -> Result<(), Box<dyn Error>> {
    let runs = args.browser_runs;
    let tools = Tools::find().ok_or(
        "chromium and chromedriver must be on PATH (Debian: apt-get install chromium \
         chromium-driver), or named by FUSION_CHROMIUM and FUSION_CHROMEDRIVER",
    )?;
    let bound = fusion_ui::bind(&UiConfig::new("127.0.0.1:0".parse()?)).await?;
    let url = format!("http://{}/sessions/{ID}", bound.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(storage as Arc<dyn ConversationStorage>, async {
        let _ = stopped.await;
    }));
    let chromium = Chromium::start(&tools, None).await;
    let browser = &chromium.session;
    browser.devtools("Performance.enable", json!({})).await;

    let mut load = Figures::default();
    let mut earlier = Figures::default();
    let mut sizes = Value::Null;
    for _ in 0..runs {
        browser.goto(&url).await;
        let loaded = browser.execute_async(READ_LOAD, vec![]).await;
        let spent = renderer_ms(browser).await;
        let swapped = browser.execute_async(LOAD_EARLIER, vec![]).await;
        let spent_after = renderer_ms(browser).await;
        for (label, key) in [
            ("request sent to first byte", "ttfb"),
            ("page received (from navigation start)", "responseEnd"),
            ("first contentful paint", "fcp"),
            ("DOMContentLoaded handled", "domContentLoaded"),
            ("load event handled", "load"),
            ("longest main-thread task", "longest"),
        ] {
            load.record(label, &loaded[key]);
        }
        for (label, key) in [
            ("the fragment's request", "response"),
            ("click to 200 more messages in the page", "inserted"),
            ("click to the next frame", "painted"),
            ("longest main-thread task", "longest"),
        ] {
            earlier.record(label, &swapped[key]);
        }
        for ((label, loading), (_, total)) in spent.iter().zip(&spent_after) {
            load.record(label, &json!(loading));
            earlier.record(label, &json!(total - loading));
        }
        sizes = json!({ "load": loaded, "earlier": swapped["articles"] });
    }
    let profiled = if args.profile {
        Some(profiled(browser, &url, &args.dir).await?)
    } else {
        None
    };
    chromium.close().await;
    let _ = stop.send(());
    server.await??;

    println!("## The same transcript in headless Chromium\n");
    println!(
        "Served by `bind` + `serve` on loopback, opened {runs} times (the first with cold \
         caches for the stylesheet and scripts); HTML {:.0} KB, {} elements, {} messages \
         shown, {} after \"Load earlier messages\". Long tasks are those over 50 ms (0: \
         none); \"renderer\" is DevTools' time of the page's renderer by kind.\n",
        sizes["load"]["htmlBytes"].as_f64().unwrap_or(0.0) / 1024.0,
        sizes["load"]["elements"],
        sizes["load"]["articles"],
        sizes["earlier"],
    );
    load.print("loading the page");
    earlier.print("\"Load earlier messages\"");
    if let Some(report) = profiled {
        print!("{report}");
    }
    Ok(())
}

/// One more load and "load earlier", each under the profiler: the tables of where their
/// script time went (the profiles are written to `dir`).
async fn profiled(
    browser: &crate::webdriver::Session,
    url: &str,
    dir: &std::path::Path,
) -> std::io::Result<String> {
    profile::start(browser).await;
    browser.goto(url).await;
    browser.execute_async(READ_LOAD, vec![]).await;
    let mut report = profile::stop(browser, &dir.join("load.cpuprofile"), "loading").await?;
    profile::start(browser).await;
    browser.execute_async(LOAD_EARLIER, vec![]).await;
    let file = dir.join("load-earlier.cpuprofile");
    report += &profile::stop(browser, &file, "\"Load earlier messages\"").await?;
    Ok(report)
}

/// Named samples, in the order first recorded.
#[derive(Default)]
struct Figures(Vec<(&'static str, Sample)>);

impl Figures {
    /// Adds `value` (milliseconds) to figure `label`; a value the browser did not give
    /// (no paint entry yet, say) is left out.
    fn record(&mut self, label: &'static str, value: &Value) {
        let Some(ms) = value.as_f64() else { return };
        match self.0.iter_mut().find(|(name, _)| *name == label) {
            Some((_, sample)) => sample.push(ms),
            None => {
                let mut sample = Sample::default();
                sample.push(ms);
                self.0.push((label, sample));
            }
        }
    }

    fn print(&self, what: &str) {
        println!("| {what}, ms | median | max | first run | runs |");
        println!("|---|---:|---:|---:|---:|");
        for (label, sample) in &self.0 {
            println!(
                "| {label} | {} | {} | {} | {} |",
                ms(sample.median()),
                ms(sample.max()),
                ms(sample.first()),
                sample.len()
            );
        }
        println!();
    }
}

/// The renderer's milliseconds in script, style, layout and all tasks (DevTools'
/// `Performance.getMetrics`) for the current document: Chromium counts them per
/// document, so read after a load they are what the load cost.
async fn renderer_ms(browser: &crate::webdriver::Session) -> Vec<(&'static str, f64)> {
    let metrics = browser.devtools("Performance.getMetrics", json!({})).await;
    [
        ("renderer: script", "ScriptDuration"),
        ("renderer: style", "RecalcStyleDuration"),
        ("renderer: layout", "LayoutDuration"),
        ("renderer: all tasks", "TaskDuration"),
    ]
    .into_iter()
    .map(|(label, name)| {
        let value = metrics["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == name)
            .and_then(|m| m["value"].as_f64())
            .map_or(f64::NAN, |seconds| seconds * 1e3);
        (label, value)
    })
    .collect()
}

/// `n` messages shaped like the shared benchmark workload (docs/benchmarks.md): turns of a
/// 120-byte question and a 400-byte answer, every fifth turn with one tool call (80 bytes
/// of JSON arguments) and its 200-byte result. The words cycle through [`WORDS`] instead of
/// the workload's generator: the page's cost follows the sizes and the shape.
fn workload_like(n: usize) -> Vec<ChatMessage> {
    let text = |i: usize, bytes: usize| {
        let mut text = String::new();
        let mut k = i;
        while text.len() < bytes {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(WORDS[k % WORDS.len()]);
            k = k.wrapping_mul(31).wrapping_add(7);
        }
        text.truncate(bytes);
        text
    };
    let mut messages = Vec::with_capacity(n + 2);
    let mut turn = 0;
    while messages.len() < n {
        let i = messages.len();
        messages.push(ChatMessage::user(text(i, 120)));
        if turn % 5 == 4 {
            let id = format!("call_{:08}", i + 1);
            let arguments = format!(r#"{{"query":"{}","top_k":5}}"#, text(i + 1, 58));
            let call = ToolCall::new(id.clone(), "search_docs", arguments);
            messages.push(ChatMessage::assistant_with_tool_calls(
                text(i + 1, 400),
                vec![call],
            ));
            messages.push(ChatMessage::tool_result(id, text(i + 2, 200)));
        } else {
            messages.push(ChatMessage::assistant(text(i + 1, 400)));
        }
        turn += 1;
    }
    messages.truncate(n);
    messages
}
