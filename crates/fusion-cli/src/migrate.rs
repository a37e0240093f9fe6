//! `fusion migrate`: copy every session from one storage to another without ever
//! destroying a message the target holds, verifying each copy.
//!
//! Per session: an empty target gets the source's history appended, a target whose
//! history is a prefix of the source's gets the missing suffix appended, an equal one is
//! up to date, and any other is "diverged": reported, left as it is, and the command
//! exits non-zero (`--force` replaces it with one `save`). Appending rather than saving
//! is what keeps a writer of the target safe while this runs: an append never removes
//! anything, whereas a save, even one done only after checking that the target is
//! empty, would wipe a message stored between the check and the save. If such a message
//! lands, the read-back shows the target holding more than the source, and the session
//! is reported diverged with every message kept. Safe to re-run, also after the
//! application switched to the target.

use std::collections::HashSet;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use fusion::ChatMessage;
use fusion::storage::ConversationStorage;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{MigrateArgs, parse_storage, render, sessions};

/// What happened (or, in a dry run, would happen) to one session.
enum Outcome {
    /// The target was empty and now holds the source's history.
    Copied,
    /// The target held a prefix of the source's history; the rest was appended.
    Extended,
    /// The target already held exactly the source's history.
    UpToDate,
    /// The target holds messages the source lacks; it was left as it is.
    Diverged(String),
    /// The target held a different history, replaced because of `--force`.
    Replaced(usize),
}

/// Counts for the summary line.
#[derive(Default)]
struct Summary {
    copied: usize,
    extended: usize,
    up_to_date: usize,
    diverged: usize,
    replaced: usize,
    failed: usize,
}

/// Runs `fusion migrate`.
pub async fn run(args: MigrateArgs) -> Result<ExitCode> {
    let from_type = parse_storage(&args.from).context("bad --from")?;
    let to_type = parse_storage(&args.to).context("bad --to")?;
    // By what the URLs open, not how they are spelled: `./d` and `/abs/d` are one place.
    // Each location is read once (it may canonicalize paths), then compared the way
    // `StorageType::same_storage` compares them: no location (an in-memory SQLite
    // database) is the same as nothing.
    let from_location = from_type.location().context("bad --from")?;
    let to_location = to_type.location().context("bad --to")?;
    if let Some(place) = from_location.filter(|at| Some(at) == to_location.as_ref()) {
        bail!("--from and --to are the same storage ({place})");
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
        let outcome = migrate_one(from.as_ref(), to.as_ref(), id, &args).await;
        let line = match outcome {
            Ok(Outcome::Copied) => {
                summary.copied += 1;
                None
            }
            Ok(Outcome::Extended) => {
                summary.extended += 1;
                None
            }
            Ok(Outcome::UpToDate) => {
                summary.up_to_date += 1;
                None
            }
            Ok(Outcome::Diverged(why)) => {
                summary.diverged += 1;
                Some(format!(
                    "diverged {id}: {why}; left as it is (--force replaces it)"
                ))
            }
            Ok(Outcome::Replaced(previous)) => {
                summary.replaced += 1;
                let verb = if args.dry_run {
                    "would replace"
                } else {
                    "replaced"
                };
                Some(format!(
                    "{verb} {id}: the target held a different history ({})",
                    render::plural(previous, "message")
                ))
            }
            Err(err) => {
                summary.failed += 1;
                Some(format!("failed {id}: {}", crate::one_line(&err)))
            }
        };
        if let Some(line) = line {
            bar.suspend(|| println!("{line}"));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    let Summary {
        copied,
        extended,
        up_to_date,
        diverged,
        replaced,
        failed,
    } = summary;
    let head = if args.dry_run {
        "dry run, nothing written"
    } else {
        "migrated"
    };
    let (copied_word, extended_word, replaced_word) = if args.dry_run {
        ("to copy", "to extend", "to replace")
    } else {
        ("copied", "extended", "replaced")
    };
    println!(
        "{head}: {} from {from_type} to {to_type}: {copied} {copied_word}, {extended} {extended_word}, \
         {up_to_date} up to date, {diverged} diverged, {replaced} {replaced_word}, {failed} failed",
        render::plural(ids.len(), "session"),
    );
    if target_only > 0 {
        println!(
            "{} only in {to_type} left as they are",
            render::plural(target_only, "session")
        );
    }
    let total = render::plural(ids.len(), "session");
    match (failed, diverged) {
        (0, 0) => Ok(ExitCode::SUCCESS),
        (0, diverged) => bail!(
            "{diverged} of {total} diverged in the target and were left as they are; \
             check them, or re-run with --force to replace them with the source's history"
        ),
        (failed, 0) => bail!(
            "{failed} of {total} failed to migrate; fix the cause and re-run (finished sessions are skipped)"
        ),
        (failed, diverged) => bail!(
            "{failed} of {total} failed to migrate and {diverged} diverged in the target \
             (left as they are); fix the cause and re-run, with --force to replace diverged sessions"
        ),
    }
}

/// Brings one session of the target up to date with the source, never removing a target
/// message unless `--force` is given, then reads it back to verify.
async fn migrate_one(
    from: &dyn ConversationStorage,
    to: &dyn ConversationStorage,
    id: &str,
    args: &MigrateArgs,
) -> Result<Outcome> {
    let source = from.load(id).await.context("cannot read the source")?;
    // Deleted from the source since it was listed: nothing to copy, and whatever the
    // target holds is not this command's to delete, even with --force.
    if source.is_empty() {
        return Ok(Outcome::UpToDate);
    }
    let target = to.load(id).await.context("cannot read the target")?;
    if source == target {
        return Ok(Outcome::UpToDate);
    }
    let outcome = if source.starts_with(&target) {
        if target.is_empty() {
            Outcome::Copied
        } else {
            Outcome::Extended
        }
    } else if args.force {
        Outcome::Replaced(target.len())
    } else {
        return Ok(Outcome::Diverged(divergence(&source, &target)));
    };
    if args.dry_run {
        return Ok(outcome);
    }
    if let Outcome::Replaced(_) = outcome {
        to.save(id, &source)
            .await
            .context("cannot write the target")?;
    } else {
        // Only what the target lacks, so a re-run after an interrupted one never
        // duplicates, and a message another writer stores meanwhile is kept.
        to.append(id, &source[target.len()..])
            .await
            .context("cannot write the target")?;
    }
    let stored = to.load(id).await.context("cannot read the copy back")?;
    if stored.len() > source.len() {
        // Another writer stored messages in this session while it was being migrated.
        return Ok(Outcome::Diverged(format!(
            "the target gained messages while it was migrated ({})",
            divergence(&source, &stored)
        )));
    }
    verify(&stored, &source)?;
    Ok(outcome)
}

/// Says how `target` differs from `source`, for a "diverged" line.
fn divergence(source: &[ChatMessage], target: &[ChatMessage]) -> String {
    if target.starts_with(source) {
        return format!(
            "the target has {} the source lacks",
            render::plural(target.len() - source.len(), "message")
        );
    }
    let first = source
        .iter()
        .zip(target)
        .take_while(|(a, b)| a == b)
        .count();
    format!(
        "the histories differ from message {} (source {}, target {})",
        first + 1,
        render::plural(source.len(), "message"),
        render::plural(target.len(), "message")
    )
}

/// Checks that the target, read back, holds exactly `expected`: the count first, for a
/// clear message, then every message.
fn verify(copy: &[ChatMessage], expected: &[ChatMessage]) -> Result<()> {
    if copy.len() != expected.len() {
        bail!(
            "verification failed: the target holds {} after copying {}",
            render::plural(copy.len(), "message"),
            expected.len()
        );
    }
    if let Some(index) = (0..expected.len()).find(|&index| copy[index] != expected[index]) {
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
