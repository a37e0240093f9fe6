//! `fusion migrate`: copy every session from one storage to another, verifying each copy.
//!
//! Safe to re-run: a session already identical in the target is left alone, one that
//! differs is overwritten with a single atomic `save` (never appended to, which would
//! duplicate messages) and reported. Each copy is read back and compared with the source
//! before it counts as done. One failing session is reported and the rest continue; the
//! command exits non-zero if any failed, so a script can re-run it until it is clean.

use std::collections::HashSet;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use fusion::ChatMessage;
use fusion::storage::ConversationStorage;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{MigrateArgs, parse_storage, render, sessions};

/// What happened to one session.
enum Outcome {
    Copied,
    Unchanged,
    /// The target held a different history of this many messages.
    Replaced(usize),
}

/// Counts for the summary line.
#[derive(Default)]
struct Summary {
    copied: usize,
    unchanged: usize,
    replaced: usize,
    failed: usize,
}

/// Runs `fusion migrate`.
pub async fn run(args: MigrateArgs) -> Result<ExitCode> {
    let from_type = parse_storage(&args.from).context("bad --from")?;
    let to_type = parse_storage(&args.to).context("bad --to")?;
    if from_type == to_type {
        bail!("--from and --to are the same storage ({from_type})");
    }
    let from = sessions::open(&from_type).await?;
    let to = sessions::open(&to_type).await?;

    let mut ids = from
        .list_sessions()
        .await
        .with_context(|| format!("cannot list sessions in {from_type}"))?;
    ids.sort();
    // Sessions only the target has are not ours to touch; say so, so nobody expects a mirror.
    let source_ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let target_only = match to.list_sessions().await {
        Ok(target_ids) => target_ids
            .iter()
            .filter(|id| !source_ids.contains(id.as_str()))
            .count(),
        Err(err) => return Err(err).with_context(|| format!("cannot list sessions in {to_type}")),
    };

    let bar = progress_bar(ids.len() as u64);
    let mut summary = Summary::default();
    // Sessions are copied one at a time: output stays in order, and the embedded backends
    // serialise writes anyway.
    for id in &ids {
        bar.set_message(id.clone());
        match migrate_one(from.as_ref(), to.as_ref(), id, args.dry_run).await {
            Ok(Outcome::Copied) => summary.copied += 1,
            Ok(Outcome::Unchanged) => summary.unchanged += 1,
            Ok(Outcome::Replaced(previous)) => {
                summary.replaced += 1;
                let verb = if args.dry_run {
                    "would replace"
                } else {
                    "replaced"
                };
                bar.suspend(|| {
                    println!(
                        "{verb} {id}: the target held a different history ({})",
                        render::plural(previous, "message")
                    )
                });
            }
            Err(err) => {
                summary.failed += 1;
                bar.suspend(|| println!("failed {id}: {}", crate::one_line(&err)));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    let Summary {
        copied,
        unchanged,
        replaced,
        failed,
    } = summary;
    let (head, copied_word) = if args.dry_run {
        ("dry run, nothing written", "to copy")
    } else {
        ("migrated", "copied")
    };
    println!(
        "{head}: {} from {from_type} to {to_type}: {copied} {copied_word}, {unchanged} unchanged, {replaced} {}, {failed} failed",
        render::plural(ids.len(), "session"),
        if args.dry_run {
            "to replace"
        } else {
            "replaced"
        },
    );
    if target_only > 0 {
        println!(
            "{} only in {to_type} left as they are",
            render::plural(target_only, "session")
        );
    }
    if failed > 0 {
        bail!(
            "{failed} of {} failed to migrate; fix the cause and re-run (finished sessions are skipped)",
            render::plural(ids.len(), "session")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies one session if the target lacks it or differs, then reads it back to verify.
async fn migrate_one(
    from: &dyn ConversationStorage,
    to: &dyn ConversationStorage,
    id: &str,
    dry_run: bool,
) -> Result<Outcome> {
    let source = from.load(id).await.context("cannot read the source")?;
    let target = to.load(id).await.context("cannot read the target")?;
    if source == target {
        // Includes a session deleted from the source since listing: nothing to copy.
        return Ok(Outcome::Unchanged);
    }
    let outcome = if target.is_empty() {
        Outcome::Copied
    } else {
        Outcome::Replaced(target.len())
    };
    if dry_run {
        return Ok(outcome);
    }
    to.save(id, &source)
        .await
        .context("cannot write the target")?;
    verify(to, id, &source).await?;
    Ok(outcome)
}

/// Checks that the target now holds exactly `expected`: the count first, for a clear
/// message, then every message.
async fn verify(to: &dyn ConversationStorage, id: &str, expected: &[ChatMessage]) -> Result<()> {
    let count = to
        .session_info(id)
        .await
        .context("cannot read the copy back")?
        .map_or(0, |info| info.message_count);
    if count != expected.len() {
        bail!(
            "verification failed: the target holds {} after copying {}",
            render::plural(count, "message"),
            expected.len()
        );
    }
    let copy = to.load(id).await.context("cannot read the copy back")?;
    if let Some(index) =
        (0..expected.len().max(copy.len())).find(|&index| copy.get(index) != expected.get(index))
    {
        bail!(
            "verification failed: message {} of the copy differs from the source",
            index + 1
        );
    }
    Ok(())
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
fn progress_bar(len: u64) -> ProgressBar {
    // Hidden bars still count, so the code path is the same for scripts and people.
    let target = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }
    bar
}
