//! W6: sessions that belong to someone, at a million sessions.
//!
//! Sessions `w6-0000000…` of 2 messages each are created with
//! `create_session`, session `i` owned by `o{i % owners}` and tagged `t{i % 10}`, by 8
//! concurrent tasks. The store grows through each scale (10k, 100k, 1M; `--quick`: 1k,
//! 10k) and at each one the listing calls are timed, each the median of [`REPEATS`] calls
//! on a warm instance:
//! - the first page of all sessions, newest first, and a page from the middle of that list
//!   (a cursor built from the middle session's own facts);
//! - one owner's first page and second page (by cursor);
//! - one tag's first page (a tenth of the sessions carry it);
//! - a page by id from the middle.
//!
//! Every tenth session (`i % 10 == 9`, the ones tagged `t9`) is written with an expiry
//! 1 ms ahead, so by the time the pages are read a tenth of the store has expired and
//! every listing skips it, as in a store whose expired sessions wait for the next purge.
//! After the pages, [`purge_all_expired`] removes them in batches of [`PURGE_BATCH`],
//! timed; the sessions column counts every session written, purged ones included.
//!
//! A page holds [`PAGE`] sessions. Alongside, this process's peak resident memory (which
//! for the in-process backends, memory, SQLite and fs, includes the storage itself) and how
//! much that peak grew over all the listing calls at that scale: a listing whose memory
//! grew with the number of sessions would raise it at each scale. (The workspace forbids
//! `unsafe`, so the bench has no counting allocator to weigh one call exactly.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use fusion_core::{
    ChatMessage, ConversationStorage, Expiry, Position, SessionMeta, SessionOrder, SessionQuery,
    purge_all_expired,
};
use serde::Serialize;

use crate::backends::Backend;
use crate::sizes::Sizes;
use crate::stats::median_ms;

/// Sessions per page.
pub const PAGE: usize = 50;
/// Timed calls per measurement (the median is reported).
pub const REPEATS: usize = 21;
/// Concurrent writer tasks.
const WRITERS: usize = 8;
/// Sessions per `purge_expired` call.
pub const PURGE_BATCH: usize = 1000;

/// W6's result.
#[derive(Debug, Clone, Serialize)]
pub struct W6Report {
    /// How many owners the sessions are spread over.
    pub owners: usize,
    /// One row per scale.
    pub scales: Vec<W6Scale>,
}

/// The measurements at one total number of sessions.
#[derive(Debug, Clone, Serialize)]
pub struct W6Scale {
    /// Sessions stored.
    pub sessions: usize,
    /// Seconds to create the sessions added since the previous scale.
    pub write_s: f64,
    /// Sessions created per second in that step.
    pub write_per_s: f64,
    /// All sessions, newest first, first page: median ms.
    pub first_page_ms: f64,
    /// All sessions, newest first, a page from the middle: median ms.
    pub deep_page_ms: f64,
    /// One owner's first page: median ms.
    pub owner_page_ms: f64,
    /// One owner's second page: median ms.
    pub owner_next_page_ms: f64,
    /// One tag's first page: median ms.
    pub tag_page_ms: f64,
    /// By id, a page from the middle: median ms.
    pub id_page_ms: f64,
    /// How much this process's peak resident memory grew during the listing calls, KiB.
    pub listing_rss_growth_kib: u64,
    /// This process's peak resident memory so far, MiB.
    pub peak_rss_mib: f64,
    /// Expired sessions `purge_expired` deleted at this scale (the tenth written since the
    /// previous one).
    pub purged: usize,
    /// Seconds those purges took, all batches together.
    pub purge_s: f64,
}

fn id(i: usize) -> String {
    format!("w6-{i:07}")
}

fn meta(i: usize, owners: usize) -> SessionMeta {
    let meta = SessionMeta::new()
        .owner(format!("o{:05}", i % owners))
        .title(format!("chat {i}"))
        .tags([format!("t{}", i % 10)]);
    if expires(i) {
        meta.expiry(Expiry::after(Duration::from_millis(1)))
    } else {
        meta
    }
}

/// Whether session `i` is one of the tenth written to expire at once.
fn expires(i: usize) -> bool {
    i % 10 == 9
}

/// Runs W6 in namespace `w6`.
pub async fn run(backend: &Backend, sizes: &Sizes) -> Result<W6Report> {
    let (scales, owners) = (&sizes.w6_scales, sizes.w6_owners);
    let storage = backend.open("w6").await?;
    let pair = Arc::new(vec![
        ChatMessage::user("What did we decide about the release?"),
        ChatMessage::assistant("Ship on Thursday after the migration test."),
    ]);
    let mut written = 0;
    let mut rows = Vec::new();
    for &total in scales {
        let started = Instant::now();
        create(&storage, written..total, owners, &pair).await?;
        let write = started.elapsed();
        let added = total - written;
        written = total;
        let mut row = measure(&storage, total, owners, write, added).await?;
        let expected = (total - added..total).filter(|&i| expires(i)).count();
        let started = Instant::now();
        row.purged = purge_all_expired(storage.as_ref(), PURGE_BATCH).await?;
        row.purge_s = started.elapsed().as_secs_f64();
        ensure!(
            row.purged == expected,
            "W6: purge_expired deleted {} sessions, not the {expected} that expired",
            row.purged
        );
        rows.push(row);
    }
    Ok(W6Report {
        owners,
        scales: rows,
    })
}

/// Creates sessions `range` with [`WRITERS`] tasks, each taking every `WRITERS`-th one.
async fn create(
    storage: &Arc<dyn ConversationStorage>,
    range: std::ops::Range<usize>,
    owners: usize,
    pair: &Arc<Vec<ChatMessage>>,
) -> Result<()> {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (storage, pair, range) = (storage.clone(), pair.clone(), range.clone());
        tasks.push(tokio::spawn(async move {
            for i in range.skip(w).step_by(WRITERS) {
                storage
                    .create_session(&id(i), &meta(i, owners), &pair)
                    .await?;
            }
            Ok::<(), fusion_core::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

async fn measure(
    storage: &Arc<dyn ConversationStorage>,
    total: usize,
    owners: usize,
    write: Duration,
    added: usize,
) -> Result<W6Scale> {
    // A multiple of ten, so not one of the sessions that expired.
    let middle_id = id(total / 20 * 10);
    let middle = storage
        .session_info(&middle_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("W6: session {middle_id} missing"))?;
    let newest = SessionQuery::new().limit(PAGE);
    let deep = newest.clone().after(Some(
        Position::of(SessionOrder::UpdatedDesc, &middle).cursor(),
    ));
    let owner = SessionQuery::new().owner(format!("o{:05}", 0)).limit(PAGE);
    let owner_first = storage.list_page(&owner).await?;
    let owner_next = owner.clone().after(owner_first.next.clone());
    let tag = SessionQuery::new().tag("t3").limit(PAGE);
    let by_id = SessionQuery::new()
        .order(SessionOrder::Id)
        .limit(PAGE)
        .after(Some(Position::Id(middle.id.clone()).cursor()));

    let rss_before = peak_rss_kib();
    let first = storage.list_page(&newest).await?;
    ensure!(
        first.sessions.len() == PAGE.min(total)
            && first
                .sessions
                .windows(2)
                .all(|w| w[0].updated_at >= w[1].updated_at),
        "W6: the first page is not {PAGE} sessions newest first"
    );
    ensure!(
        owner_first.sessions.len() == PAGE.min(total.div_ceil(owners))
            && owner_first
                .sessions
                .iter()
                .all(|s| s.meta.owner.as_deref() == Some("o00000")),
        "W6: the owner's first page holds {} sessions or another owner's",
        owner_first.sessions.len()
    );

    let mut scale = W6Scale {
        sessions: total,
        write_s: write.as_secs_f64(),
        write_per_s: added as f64 / write.as_secs_f64().max(1e-9),
        first_page_ms: timed(storage, &newest).await?,
        deep_page_ms: timed(storage, &deep).await?,
        owner_page_ms: timed(storage, &owner).await?,
        owner_next_page_ms: timed(storage, &owner_next).await?,
        tag_page_ms: timed(storage, &tag).await?,
        id_page_ms: timed(storage, &by_id).await?,
        listing_rss_growth_kib: 0,
        peak_rss_mib: 0.0,
        purged: 0,
        purge_s: 0.0,
    };
    let rss_after = peak_rss_kib();
    scale.listing_rss_growth_kib = rss_after.saturating_sub(rss_before);
    scale.peak_rss_mib = rss_after as f64 / 1024.0;
    Ok(scale)
}

/// The median time of [`REPEATS`] calls of `query`, in ms.
async fn timed(storage: &Arc<dyn ConversationStorage>, query: &SessionQuery) -> Result<f64> {
    let mut samples = Vec::with_capacity(REPEATS);
    for _ in 0..REPEATS {
        let started = Instant::now();
        let page = storage.list_page(query).await?;
        samples.push(started.elapsed());
        ensure!(!page.sessions.is_empty(), "W6: an empty page for {query:?}");
    }
    Ok(median_ms(&samples))
}

/// W6 as a terminal table: one row per scale.
pub fn table(o: &mut String, w6: &W6Report) {
    use std::fmt::Write as _;
    let _ = writeln!(
        o,
        "W6 sessions with owners ({} owners, pages of {PAGE}, median of {REPEATS} calls, ms):",
        w6.owners
    );
    let _ = writeln!(
        o,
        "  {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9}",
        "sessions",
        "write_s",
        "writes/s",
        "newest",
        "deep",
        "owner",
        "owner+1",
        "tag",
        "by_id",
        "rss+KiB",
        "rss_MiB",
        "purged",
        "purge_s"
    );
    for s in &w6.scales {
        let _ = writeln!(
            o,
            "  {:>9} {:>9.1} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>9} {:>8.0} {:>8} {:>9.2}",
            s.sessions,
            s.write_s,
            s.write_per_s,
            s.first_page_ms,
            s.deep_page_ms,
            s.owner_page_ms,
            s.owner_next_page_ms,
            s.tag_page_ms,
            s.id_page_ms,
            s.listing_rss_growth_kib,
            s.peak_rss_mib,
            s.purged,
            s.purge_s
        );
    }
}

/// This process's peak resident set size (`VmHWM`), KiB; 0 where `/proc` has none.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
