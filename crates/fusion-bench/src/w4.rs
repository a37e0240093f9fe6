//! W4: 8 concurrent writers, each with its own storage instance, appending to one session.
//!
//! What matters here is correctness under contention (nothing lost, duplicated or
//! reordered per writer); the wall time is secondary.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use fusion_core::{ChatMessage, ConversationStorage};
use serde::Serialize;
use tokio::sync::Barrier;

use crate::backends::Backend;
use crate::workload;

/// The session every writer appends to.
const SESSION: &str = "w4";

/// Concurrent writers.
pub const WRITERS: usize = 8;

/// W4's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct W4Report {
    /// Writers and messages per writer.
    pub writers: usize,
    /// Messages each writer appended.
    pub per_writer: usize,
    /// Tagged messages found in the session.
    pub present: usize,
    /// Expected tags not found.
    pub lost: usize,
    /// Tags found more than once (counted per extra copy).
    pub duplicates: usize,
    /// Times a writer's tag came after a later tag of the same writer.
    pub order_violations: usize,
    /// Appends that returned an error.
    pub errors: usize,
    /// From the barrier's release to the last writer finishing, seconds.
    pub wall_s: f64,
    /// The first append error, or the load error, if any.
    pub first_error: Option<String>,
}

/// Runs W4 in namespace `w4` with `per_writer` messages per writer.
pub async fn run(backend: &Backend, per_writer: usize) -> Result<W4Report> {
    let contents: Vec<Vec<ChatMessage>> = (0..WRITERS)
        .map(|w| {
            (0..per_writer)
                .map(|k| workload::identified(ChatMessage::user(workload::w4_content(w, k))))
                .collect()
        })
        .collect();
    // Instances are opened before the barrier so connecting is not part of the race.
    let mut storages = Vec::with_capacity(WRITERS);
    for _ in 0..WRITERS {
        storages.push(backend.open("w4").await?);
    }

    let barrier = Arc::new(Barrier::new(WRITERS));
    let mut tasks = Vec::with_capacity(WRITERS);
    for (storage, messages) in storages.into_iter().zip(contents) {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let (mut errors, mut first_error) = (0, None);
            for message in messages {
                if let Err(err) = storage.append(SESSION, &[message]).await {
                    errors += 1;
                    first_error.get_or_insert_with(|| err.to_string());
                }
            }
            (started, Instant::now(), errors, first_error)
        }));
    }
    let mut report = W4Report {
        writers: WRITERS,
        per_writer,
        ..W4Report::default()
    };
    let (mut first_start, mut last_end) = (None::<Instant>, None::<Instant>);
    for task in tasks {
        let (started, ended, errors, first_error) = task.await.context("W4 writer panicked")?;
        first_start = Some(first_start.map_or(started, |s| s.min(started)));
        last_end = Some(last_end.map_or(ended, |e| e.max(ended)));
        report.errors += errors;
        if report.first_error.is_none() {
            report.first_error = first_error;
        }
    }
    if let (Some(start), Some(end)) = (first_start, last_end) {
        report.wall_s = (end - start).as_secs_f64();
    }

    let fresh: Arc<dyn ConversationStorage> = backend.open("w4").await?;
    match fresh.load(SESSION).await {
        Ok(history) => tally(&history, per_writer, &mut report),
        Err(err) => {
            // Unreadable means nothing can be trusted to be there.
            report.lost = WRITERS * per_writer;
            report.first_error = Some(format!("load failed: {err}"));
        }
    }
    Ok(report)
}

/// Counts present, lost, duplicated and out-of-order tags in `history`.
fn tally(history: &[ChatMessage], per_writer: usize, report: &mut W4Report) {
    let mut seen = HashSet::new();
    let mut last_k: Vec<Option<usize>> = vec![None; WRITERS];
    for message in history {
        let Some((w, k)) = workload::parse_w4_tag(&message.content) else {
            continue;
        };
        if w >= WRITERS || k >= per_writer {
            continue;
        }
        report.present += 1;
        if !seen.insert((w, k)) {
            report.duplicates += 1;
        }
        if last_k[w].is_some_and(|last| k <= last) {
            report.order_violations += 1;
        }
        last_k[w] = Some(k);
    }
    report.lost = WRITERS * per_writer - seen.len();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_losses_duplicates_and_reordering() {
        let msg = |w, k| workload::identified(ChatMessage::user(workload::w4_content(w, k)));
        // Writer 0: 0, 2, 1, 2 (one duplicate; one step backwards, 2 -> 1); writer 1: only 0.
        let history = [msg(0, 0), msg(1, 0), msg(0, 2), msg(0, 1), msg(0, 2)];
        let mut report = W4Report::default();
        tally(&history, 3, &mut report);
        assert_eq!(report.present, 5);
        assert_eq!(report.duplicates, 1);
        assert_eq!(report.order_violations, 1);
        assert_eq!(report.lost, WRITERS * 3 - 4);
    }
}
