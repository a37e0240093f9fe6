//! The sessions page over a SQLite store of many sessions: the store seeded once through
//! the public storage API and kept, then `GET /sessions` with each filter timed beside
//! the storage's own `list_page` for the same query (the rest is the page's rendering).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use fusion::ChatMessage;
use fusion::storage::{
    ConversationStorage, Cursor, SessionMeta, SessionOrder, SessionQuery, SqliteStorage,
};

use crate::timing::{BUDGET, Sample, app, get, get_runs, ms};

/// Each session belongs to one of this many owners (so an owner has `count / OWNERS`).
const OWNERS: usize = 1_000;
/// Each session carries one of this many topic tags (so a topic has `count / TOPICS`).
const TOPICS: usize = 20;
/// One session in this many also carries the tag `rare`.
const RARE_EVERY: usize = 1_000;
/// Sessions created at once: SQLite writes one at a time, but the next writer's Rust
/// work (JSON, checks) overlaps the current one's commit.
const WRITERS: usize = 4;

/// Seeds (or reuses) the store of `count` sessions in `dir`, then times each listing
/// `runs` times and prints the table.
pub async fn run(dir: &Path, count: usize, runs: usize) -> Result<(), Box<dyn Error>> {
    let storage = seeded(dir, count).await?;
    let app = app(storage.clone());

    let owner = "owner-042";
    let topic = "topic-07";
    let (_, first) = get(&app, "/sessions").await?;
    let mut cases = vec![
        (
            "first page, newest first",
            "/sessions".to_string(),
            SessionQuery::new(),
        ),
        (
            "one owner's (1 in 1,000)",
            format!("/sessions?owner={owner}"),
            SessionQuery::new().owner(owner),
        ),
        (
            "a common tag's (1 in 20)",
            format!("/sessions?tag={topic}"),
            SessionQuery::new().tag(topic),
        ),
        (
            "a rare tag's (1 in 1,000)",
            "/sessions?tag=rare".to_string(),
            SessionQuery::new().tag("rare"),
        ),
        (
            "owner and tag",
            format!("/sessions?owner={owner}&tag=topic-02"),
            SessionQuery::new().owner(owner).tag("topic-02"),
        ),
        (
            "by id",
            "/sessions?order=id".to_string(),
            SessionQuery::new().order(SessionOrder::Id),
        ),
    ];
    let next = storage.list_page(&SessionQuery::new()).await?.next;
    if let Some(cursor) = next {
        cases.push(page_two(cursor));
    }
    // The search box, when the page has one (issue #19 asked for it to be timed too).
    if first.contains("name=\"search\"") {
        cases.push((
            "search, 1 in 20 match (`42`)",
            "/sessions?search=42".to_string(),
            SessionQuery::new().search("42"),
        ));
        cases.push((
            "search, one match",
            "/sessions?search=Session+424242".to_string(),
            SessionQuery::new().search("Session 424242"),
        ));
    }

    println!("## The sessions page, {count} sessions in SQLite\n");
    println!(
        "Server time of `GET /sessions` through `router` (`oneshot`, no socket), {runs} runs \
         after one warm-up (fewer when {} s were not enough); `list_page` is the storage's \
         part, timed alone.\n",
        BUDGET.as_secs()
    );
    println!(
        "| page | GET median ms | GET p95 ms | GET max ms | list_page median ms | runs | HTML KB | rows |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (label, path, query) in cases {
        let (sample, html) = get_runs(&app, &path, runs).await?;
        let storage_time = list_page_runs(storage.as_ref(), &query, runs).await?;
        let rows = html.matches("<tr>").count().saturating_sub(1);
        println!(
            "| {label} | {} | {} | {} | {} | {} | {:.1} | {rows} |",
            ms(sample.median()),
            ms(sample.p95()),
            ms(sample.max()),
            ms(storage_time.median()),
            sample.len(),
            html.len() as f64 / 1024.0
        );
    }
    println!();
    storage.close().await;
    Ok(())
}

/// The second page of the newest-first listing, by the first page's cursor.
fn page_two(cursor: Cursor) -> (&'static str, String, SessionQuery) {
    let encoded: String =
        url::form_urlencoded::byte_serialize(cursor.as_str().as_bytes()).collect();
    (
        "page 2 (cursor)",
        format!("/sessions?cursor={encoded}"),
        SessionQuery::new().after(Some(cursor)),
    )
}

/// `list_page(query)` once to warm up, then `runs` times (fewer past [`BUDGET`]).
async fn list_page_runs(
    storage: &dyn ConversationStorage,
    query: &SessionQuery,
    runs: usize,
) -> fusion::Result<Sample> {
    storage.list_page(query).await?;
    let mut sample = Sample::default();
    let first = Instant::now();
    while !sample.enough(runs, first) {
        let started = Instant::now();
        storage.list_page(query).await?;
        sample.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(sample)
}

/// The store of `count` sessions in `dir`: the one there if it holds exactly `count`
/// sessions, else a new one seeded now.
async fn seeded(dir: &Path, count: usize) -> Result<Arc<SqliteStorage>, Box<dyn Error>> {
    let path = dir.join(format!("sessions-{count}.db"));
    let url = format!("sqlite://{}", path.display());
    if path.exists() {
        let storage = SqliteStorage::connect(&url).await?;
        let held = storage.list_sessions().await?.len();
        if held == count {
            eprintln!("ui_speed: reusing {} ({held} sessions)", path.display());
            return Ok(Arc::new(storage));
        }
        eprintln!(
            "ui_speed: {} holds {held} sessions, not {count}: seeding it again",
            path.display()
        );
        storage.close().await;
        for file in database_files(&path) {
            if file.exists() {
                std::fs::remove_file(file)?;
            }
        }
    }
    let storage = Arc::new(SqliteStorage::connect(&url).await?);
    seed(&storage, count).await?;
    Ok(storage)
}

/// The database file and its WAL and shared-memory files.
fn database_files(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

/// Creates sessions `0..count` with [`WRITERS`] writers, one `create_session` each
/// (metadata and two messages in one transaction), printing progress.
async fn seed(storage: &Arc<SqliteStorage>, count: usize) -> Result<(), Box<dyn Error>> {
    eprintln!("ui_speed: seeding {count} sessions (once; kept for later runs)");
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let storage = storage.clone();
        let done = done.clone();
        writers.push(tokio::spawn(async move {
            for i in (writer..count).step_by(WRITERS) {
                let (id, meta, messages) = session(i);
                storage.create_session(&id, &meta, &messages).await?;
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                if finished.is_multiple_of(100_000) {
                    let seconds = started.elapsed().as_secs_f64();
                    eprintln!(
                        "ui_speed: {finished} sessions in {seconds:.0} s ({:.0}/s)",
                        finished as f64 / seconds
                    );
                }
            }
            Ok::<(), fusion::Error>(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "ui_speed: seeded {count} sessions in {seconds:.0} s ({:.0}/s)",
        count as f64 / seconds
    );
    Ok(())
}

/// Session `i`: its id, its owner, topic (and maybe `rare`) tag and title, and a
/// question with its answer.
fn session(i: usize) -> (String, SessionMeta, [ChatMessage; 2]) {
    let mut tags = vec![format!("topic-{:02}", i % TOPICS)];
    if i.is_multiple_of(RARE_EVERY) {
        tags.push("rare".to_string());
    }
    let meta = SessionMeta::new()
        .owner(format!("owner-{:03}", i % OWNERS))
        .title(format!("Session {i}"))
        .tags(tags);
    let messages = [
        ChatMessage::user(format!("Question {i}")),
        ChatMessage::assistant(format!("Answer {i}")),
    ];
    (format!("s{i:07}"), meta, messages)
}
