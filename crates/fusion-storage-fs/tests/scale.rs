//! A measurement, not a test: how long a page takes as the number of sessions grows.
//!
//! ```sh
//! cargo test --release -p fusion-storage-fs --test scale -- --ignored --nocapture
//! FUSION_FS_SCALE=10000,100000,1000000 cargo test --release ...   # other sizes
//! ```
//!
//! Sessions of two messages are created with `create_session` by 8 tasks, session `i`
//! owned by `o{i % (n / 100)}` at the largest size `n` (100 sessions per owner, like W6's
//! 10,000 owners at a million) and tagged `t{i % 10}`. At each size it prints the median
//! of 21 calls on a warm instance for: the first page of everything newest first, a page
//! from the middle of that order (by cursor), one owner's first and second page, one
//! tag's first page and a page by id from the middle; and this process's peak resident
//! memory. Nothing is asserted about times: they depend on the machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fusion_core::{
    ChatMessage, ConversationStorage, Position, SessionMeta, SessionOrder, SessionQuery,
};
use fusion_storage_fs::FileSystemStorage;

const PAGE: usize = 50;
const REPEATS: usize = 21;
const WRITERS: usize = 8;

fn id(i: usize) -> String {
    format!("w6-{i:07}")
}

async fn fill(storage: &Arc<FileSystemStorage>, from: usize, to: usize, owners: usize) {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let storage = storage.clone();
        tasks.push(tokio::spawn(async move {
            for i in (from + w..to).step_by(WRITERS) {
                let meta = SessionMeta::new()
                    .owner(format!("o{}", i % owners))
                    .tags([format!("t{}", i % 10)]);
                let messages = [
                    ChatMessage::user(format!("question {i}")),
                    ChatMessage::assistant("answer"),
                ];
                storage
                    .create_session(&id(i), &meta, &messages)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// The median time of `REPEATS` runs of `query`, and the size of its page.
async fn time(storage: &FileSystemStorage, query: &SessionQuery) -> (Duration, usize) {
    let mut times = Vec::new();
    let mut len = 0;
    for _ in 0..REPEATS {
        let start = Instant::now();
        let page = storage.list_page(query).await.unwrap();
        times.push(start.elapsed());
        len = page.sessions.len();
    }
    times.sort();
    (times[REPEATS / 2], len)
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; run it with --release -- --ignored --nocapture"]
async fn page_times_as_sessions_grow() {
    let sizes: Vec<usize> = std::env::var("FUSION_FS_SCALE")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("FUSION_FS_SCALE: sizes, comma-separated")
        })
        .collect();
    let owners = (sizes.iter().max().unwrap() / 100).max(1);
    let tmp = tempfile::tempdir().unwrap();
    let storage = Arc::new(FileSystemStorage::connect(tmp.path()).await.unwrap());
    println!("owners {owners}, page {PAGE}, median of {REPEATS} calls, ms");
    println!(
        "{:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "sessions", "write/s", "first", "middle", "owner", "owner-2", "tag", "by-id", "rss MiB"
    );
    let mut stored = 0;
    for &n in &sizes {
        let start = Instant::now();
        fill(&storage, stored, n, owners).await;
        let rate = (n - stored) as f64 / start.elapsed().as_secs_f64();
        stored = n;

        let middle = storage.session_info(&id(n / 2)).await.unwrap().unwrap();
        let newest = SessionQuery::new().limit(PAGE);
        let deep = newest.clone().after(Some(
            Position::of(SessionOrder::UpdatedDesc, &middle).cursor(),
        ));
        let owner = SessionQuery::new()
            .owner(format!("o{}", 7 % owners))
            .limit(PAGE);
        let second = owner
            .clone()
            .after(storage.list_page(&owner).await.unwrap().next);
        let tag = SessionQuery::new().tag("t3").limit(PAGE);
        let by_id = SessionQuery::new()
            .order(SessionOrder::Id)
            .limit(PAGE)
            .after(Some(Position::of(SessionOrder::Id, &middle).cursor()));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut row = format!("{n:>9} {rate:>9.0}");
        for query in [&newest, &deep, &owner, &second, &tag, &by_id] {
            let (took, len) = time(&storage, query).await;
            assert!(len > 0, "{query:?} found nothing");
            row += &format!(" {:>8.2}", ms(took));
        }
        row += &format!(" {:>8.0}", peak_rss_mib().unwrap_or(f64::NAN));
        println!("{row}");
    }
}
