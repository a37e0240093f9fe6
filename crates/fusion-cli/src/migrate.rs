//! `fusion migrate`: copy every session from one storage to another without ever
//! destroying a message the target holds, verifying each copy.
//!
//! Per session: an empty target gets the source's history, a target whose history is a
//! prefix of the source's gets the missing suffix appended, an equal one is up to date,
//! and any other is "diverged": reported, left as it is, and the command exits non-zero
//! (`--force` replaces it with the source's history).
//!
//! Every write is conditional on the target's revision as it was read
//! ([`ConversationStorage::write_if`] with [`Expect::Exactly`]): the copy is written only
//! if nobody wrote to the target session between the read and the write. Otherwise
//! nothing is written, and the session is read and decided again (a writer's message now
//! in the target makes it diverged), up to [`ATTEMPTS`] times. So a message another writer
//! stores while this runs can never end up before the source's messages, nor be wiped by
//! `--force` without having been seen. A message stored after the copy shows in the
//! read-back as the target holding more than the source: the session is reported
//! diverged with every message kept. Safe to re-run, also after the application switched
//! to the target.
//!
//! Metadata (owner, title, tags, data) and times travel with the messages: a copied
//! session is created with the source's metadata, creation and last write in the same step
//! ([`create_session_with_times`](ConversationStorage::create_session_with_times)); one
//! extended or replaced keeps the target's creation. A target that already
//! exists gets what it lacks (an owner or title it has none of, tags, data keys), and one
//! holding a different owner, title or data value is reported diverged and left as it is,
//! unless `--force` makes it the source's. A replaced history takes the source's metadata
//! whole.
//!
//! Both sides are read through the encryption layer (see [`crate::store`]), so histories
//! are compared as clear text whatever each side stores: an encrypted source decrypts with
//! the key given, or its sessions fail naming the key they need. The target is written
//! encrypted whenever a key is given, as every command writes. `--encrypt` insists on it
//! (a missing key is an error rather than a clear-text copy) and converts the rest: each
//! migrated session is then rekeyed in the target, so messages it already held in clear
//! text (an earlier plain migrate) or under an older key are encrypted with the current key.
//! A dry run with `--encrypt` says, per session, what it would copy and what it would
//! encrypt ([`encrypt`]).
//!
//! The source's messages are read before its times and metadata, so a copy's last write is
//! never older than the messages it holds (see `read_source`). A copy created with an
//! expiry that has run out by the target's clock is reported expired, not failed; an
//! expiry instant past by the target's clock is never synced to a target session that
//! exists, which it would make gone at once: that session is reported expired, kept live
//! (see `sync_meta`).
//!
//! Reads of both sides go through the retry layer; the copies are written around it, and a
//! write whose reply was lost is settled by reading the target back, by the rule
//! `sessions import` shares ([`copies::write_once`]).

mod compare;
mod encrypt;
mod order;
mod outcome;
mod summary;

use std::collections::HashSet;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use fusion::ChatMessage;
use fusion::storage::{
    Change, ConversationStorage, Expect, MetaUpdate, Revision, SessionInfo, SessionMeta,
    SessionTimes, StorageType,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::copies::WriteKind;
use crate::store::{self, Layers, Store, Views, require_key};
use crate::{MigrateArgs, copies, meta, parse_storage, render};
use compare::{copied, divergence, verify};
use outcome::Outcome;
use summary::Summary;

/// How many times one session is read, decided and conditionally written before migrate
/// gives up on it: each failed try means another writer changed the target session in the
/// instant between the read and the write, so several in a row mean a busy writer, whose
/// session is better reported than fought over.
const ATTEMPTS: usize = 5;

/// Runs `fusion migrate`.
pub async fn run(args: MigrateArgs, layers: Layers) -> Result<ExitCode> {
    let encryption = layers.encryption().clone();
    if args.encrypt {
        require_key(&encryption, "migrate --encrypt")?;
    }
    let from_type = parse_storage(&args.from).context("bad --from")?;
    let to_type = parse_storage(&args.to).context("bad --to")?;
    // By what the URLs open, not how they are spelled: `./d` and `/abs/d` are one place.
    // Each location is read once (it may canonicalize paths), then compared the way
    // `StorageType::same_storage` compares them: no location (an in-memory SQLite
    // database) is the same as nothing.
    let from_location = from_type.location().context("bad --from")?;
    let to_location = to_type.location().context("bad --to")?;
    if let Some(place) = from_location
        .as_ref()
        .filter(|at| to_location.as_ref().is_some_and(|to| at.same_data(to)))
    {
        bail!("--from and --to are the same storage ({place})");
    }
    check_ends(&from_type, &to_type)?;
    // A PostgreSQL schema that does not exist is refused here, as `check_ends` refuses a
    // missing directory or file: opening it would create it.
    let from = Store::new(from_type.clone(), layers.clone())
        .open_if_exists()
        .await?
        .with_context(|| format!("--from {from_type}: no such storage"))?;
    // Its copies are written unretried (see `migrate_one`), and the raw target is there for
    // the rekey of `--encrypt`, which has to see the stored form.
    let target = Store::new(to_type.clone(), layers)
        .open_views(args.dry_run)
        .await?;
    let (to, to_raw) = (target.storage.clone(), target.raw.clone());

    let ids = from
        .list_sessions()
        .await
        .with_context(|| format!("cannot list sessions in {from_type}"))?;
    let ids = order::oldest_first(from.as_ref(), ids)
        .await
        .with_context(|| format!("cannot list sessions in {from_type} by update time"))?;
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
    let mut storage_failures_in_a_row = 0;
    // Sessions are copied one at a time: output stays in order, and the embedded backends
    // serialise writes anyway.
    for (done, id) in ids.iter().enumerate() {
        bar.set_message(id.clone());
        let mut sealed = None;
        let outcome = match migrate_one(from.as_ref(), &target, id, &args).await {
            // A diverged session is left as it is, in whatever form it is stored.
            Ok(outcome) if args.encrypt && !outcome.left_alone() => {
                let done = if args.dry_run {
                    encrypt::would_seal(&encryption, to_raw.as_ref(), id, &outcome).await
                } else {
                    encryption.rekey_session(to_raw.as_ref(), id).await
                };
                done.context("cannot encrypt what the target already held")
                    .map(|done| {
                        summary.sealed += done.encrypted + done.reencrypted;
                        sealed = Some(done);
                        outcome
                    })
            }
            other => other,
        };
        // In a dry run with `--encrypt`, every session that would be written gets a line
        // saying what would be copied and encrypted; elsewhere only the unusual ones do.
        let plan = sealed
            .filter(|_| args.dry_run)
            .zip(outcome.as_ref().ok())
            .map(|(sealed, outcome)| encrypt::plan(&encryption, outcome, &sealed));
        storage_failures_in_a_row = match &outcome {
            Err(err) if storage_failure(err) => storage_failures_in_a_row + 1,
            _ => 0,
        };
        let line = summary.record(id, outcome, plan, &args);
        if let Some(line) = line {
            bar.suspend(|| summary::say(&line))?;
        }
        bar.inc(1);
        let left = ids.len() - done - 1;
        if storage_failures_in_a_row == STOP_AFTER && left > 0 {
            summary.not_tried = left;
            bar.suspend(|| {
                summary::say(format_args!(
                    "stopped: {STOP_AFTER} sessions in a row failed as they do when a storage \
                     is unreachable or failing; {} not tried",
                    render::plural(left, "session")
                ))
            })?;
            break;
        }
    }
    bar.finish_and_clear();
    summary.report(&args, ids.len(), &from_type, &to_type, target_only)
}

/// Refuses ends a migrate cannot mean: a storage that keeps nothing after this process
/// (`memory://`, an in-memory SQLite database), and a source directory or database file
/// that does not exist (a typo, not an empty store: opening it would create it and report
/// 0 sessions migrated).
fn check_ends(from: &StorageType, to: &StorageType) -> Result<()> {
    for (flag, kind) in [("--from", from), ("--to", to)] {
        if store::ephemeral(kind) {
            bail!(
                "{flag} {kind} holds nothing before this command and keeps nothing after it; \
                 name a storage that persists"
            );
        }
    }
    if let Some(path) = from.missing_path() {
        bail!("--from {}: no such storage", path.display());
    }
    Ok(())
}

/// How many sessions in a row may fail as with an unreachable or failing storage
/// ([`storage_failure`]) before the run stops: each waits out the storage's timeouts and
/// retries, which would otherwise repeat for every session left. One such failure alone
/// may be one session's (a statement timeout on a very long history, a lock another
/// writer holds), so the run goes on after it.
const STOP_AFTER: usize = 3;

/// Whether a session failed as it does when the storage is unreachable or failing: a
/// retryable error that outlasted the retry layer's attempts. A conflict is retryable but
/// is an answer about one busy session, and any other error is about the session itself.
fn storage_failure(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<fusion::Error>())
        .any(|err| err.is_retryable() && !matches!(err, fusion::Error::Conflict { .. }))
}

/// Brings one session of the target up to date with the source, never removing a target
/// message unless `--force` is given, then reads it back to verify.
///
/// The copy is written without the retry layer, which would give the source's messages
/// without an id one, and the copy would no longer be the source's history. A lost reply
/// is settled by reading the target back ([`copies::write_once`]): the write was
/// conditional on the revision read, so it is written again only if it did not apply, and
/// a target another writer changed meanwhile is read and decided anew, as after a
/// conflict.
async fn migrate_one(
    from: &dyn ConversationStorage,
    views: &Views,
    id: &str,
    args: &MigrateArgs,
) -> Result<Outcome> {
    let to = views.storage.as_ref();
    // Deleted from the source since it was listed (or unreadable there): nothing to copy,
    // and whatever the target holds is not this command's to delete, even with --force.
    // Said as such: counted as up to date, a torn source file read as a success.
    let Some((source, source_info)) = read_source(from, id).await? else {
        return Ok(Outcome::Gone);
    };
    let source_meta = &source_info.meta;
    for _ in 0..ATTEMPTS {
        let (target, at) = to
            .load_revision(id)
            .await
            .context("cannot read the target")?;
        let held = copied(&source, &target);
        let (outcome, change) = if held == source.len() && held == target.len() {
            return sync_meta(to, id, source_meta, Outcome::UpToDate, args).await;
        } else if held == target.len() {
            // Only what the target lacks, so a re-run after an interrupted one never
            // duplicates.
            let missing = &source[target.len()..];
            let outcome = if target.is_empty() {
                Outcome::Copied(missing.len())
            } else {
                Outcome::Extended(missing.len())
            };
            (outcome, Change::Append(missing))
        } else if args.force {
            let outcome = Outcome::Replaced {
                previous: target.len(),
                written: source.len(),
            };
            (outcome, Change::Replace(&source))
        } else {
            return Ok(Outcome::Diverged(divergence(&source, &target)));
        };
        if args.dry_run {
            return match outcome {
                // A copy would carry the metadata with it.
                Outcome::Copied(_) => Ok(outcome),
                _ => sync_meta(to, id, source_meta, outcome, args).await,
            };
        }
        // `at` is `Revision::ABSENT` for an empty target: then the write only creates,
        // with the source's metadata and times in the same step. Either way the target
        // then holds the source's history.
        let written = if at == Revision::ABSENT {
            let times = SessionTimes::of(&source_info);
            copies::create_once(views, id, source_meta, times, &source).await
        } else {
            let writer = views.unretried.as_ref();
            let write = move || writer.write_if(id, Expect::Exactly(at), change);
            let kind = match change {
                Change::Append(_) => WriteKind::Append,
                _ => WriteKind::Replace,
            };
            copies::write_once(views, id, at, &target, &source, kind, write).await
        };
        match written {
            Ok(read_back) => {
                let stored = match read_back {
                    Some(stored) => stored,
                    None => to.load(id).await.context("cannot read the copy back")?,
                };
                return match verify_written(&stored, &source, &source_info, outcome)? {
                    done @ (Outcome::Diverged(_) | Outcome::Expired { .. }) => Ok(done),
                    outcome => sync_meta(to, id, source_meta, outcome, args).await,
                };
            }
            // Another writer changed the target since it was read; nothing was written.
            // Read it again: what it holds now decides.
            Err(fusion::Error::Conflict { .. }) => continue,
            Err(err) => return Err(copies::refused_in_copy(err, source.len(), change)),
        }
    }
    bail!(
        "the target session kept changing while it was migrated (another writer changed it \
         between each of {ATTEMPTS} reads and the write that followed); nothing of the source \
         was written, re-run when that writer is idle"
    )
}

/// Reads session `id` of the source: its messages, then its facts (times and metadata),
/// or `None` if it holds no message (deleted or expired since it was listed, or
/// unreadable) or its facts are gone by then (deleted between the two reads).
///
/// In that order, so the times the copy gets are never older than the messages it copies:
/// facts read first would miss a message another writer appends before the messages are
/// read, and the copy's last write would be older than its last message (listed too far
/// down, its idle expiry and `purge --older-than` counting from before it). An append
/// between the two reads keeps the generation, and the messages read are still the start
/// of the history the facts describe: the copy gets that history's times, a re-run its
/// later messages. A rewrite, or a delete and a new session under the same id, changes the
/// generation: those facts belong to another history, so both are read again.
async fn read_source(
    from: &dyn ConversationStorage,
    id: &str,
) -> Result<Option<(Vec<ChatMessage>, SessionInfo)>> {
    for _ in 0..ATTEMPTS {
        let (messages, at) = from
            .load_revision(id)
            .await
            .context("cannot read the source")?;
        if messages.is_empty() {
            return Ok(None);
        }
        let Some(info) = from
            .session_info(id)
            .await
            .context("cannot read the source")?
        else {
            return Ok(None);
        };
        if info.generation == at.generation {
            return Ok(Some((messages, info)));
        }
    }
    bail!(
        "the source session kept being rewritten while it was read (its history changed \
         between reading its messages and its facts, {ATTEMPTS} times); re-run when its \
         writer is idle"
    )
}

/// Brings the target's metadata in line with the source's after its messages were
/// (`outcome`): fills in what the target lacks; a value both hold differently makes the
/// session diverged, or with `--force` the target takes the source's metadata, as it does
/// whenever its history was replaced. In a dry run, says what would happen.
///
/// An expiry instant the sync would set that has passed by the target's clock is left out:
/// written, it would make the target's session, live, gone for every reader at once. That
/// clock is read by the session's last write there when this run just wrote its messages,
/// else as far as it can be read without writing ([`copies::clock_reading`]).
/// The session is reported [`Outcome::Expired`], kept, as the source's is gone by then.
async fn sync_meta(
    to: &dyn ConversationStorage,
    id: &str,
    source: &SessionMeta,
    outcome: Outcome,
    args: &MigrateArgs,
) -> Result<Outcome> {
    let info = to
        .session_info(id)
        .await
        .context("cannot read the target's metadata")?;
    let exists = info.is_some();
    let (target, last_write) = info
        .map(|info| (info.meta, info.updated_at))
        .unwrap_or_default();
    if target == *source {
        return Ok(outcome);
    }
    // This run's append or replace of the session's messages (not a copy, created with its
    // source's times) stamped it with the target's clock.
    let written_now =
        !args.dry_run && matches!(outcome, Outcome::Extended(_) | Outcome::Replaced { .. });
    let merge = meta::merge(source, &target);
    let (mut update, outcome) = match outcome {
        Outcome::Replaced { .. } => (meta::overwrite(&target, source), outcome),
        _ if merge.differs.is_empty() => (merge.fill, outcome),
        _ if args.force => (
            meta::overwrite(&target, source),
            Outcome::MetaReplaced {
                why: merge.differs.join("; "),
                written: outcome.written(),
            },
        ),
        _ => {
            return Ok(Outcome::Diverged(format!(
                "the metadata differs ({})",
                merge.differs.join("; ")
            )));
        }
    };
    // The target's clock: as the write this run just made to the session read it (its
    // stamp, however far that clock runs behind this machine's or ahead), else as far as
    // it can be read without writing.
    let clock = match last_write {
        Some(stamped) if written_now => stamped,
        stamped => copies::clock_reading(stamped),
    };
    // A session deleted since has nothing to keep live: the update is made, and says so.
    let past = match update.expiry {
        Some(Some(expiry)) if exists => copies::run_out_by(expiry, None, clock),
        _ => None,
    };
    let outcome = match past {
        Some(why) => {
            update.expiry = None;
            let kept = Some(Box::new(outcome));
            Outcome::Expired { why, kept }
        }
        None => outcome,
    };
    if !args.dry_run && !update.is_empty() {
        write_meta(to, id, &update).await?;
    }
    Ok(outcome)
}

/// Applies `update` to the target session, which must still exist.
async fn write_meta(to: &dyn ConversationStorage, id: &str, update: &MetaUpdate) -> Result<()> {
    let updated = to
        .update_session(id, update)
        .await
        .context("cannot write the target's metadata")?;
    if updated.is_none() {
        bail!("the target session was deleted while its metadata was written; re-run to copy it");
    }
    Ok(())
}

/// Checks that the target, `stored` as read back after a successful write of `outcome`
/// (by the write itself when its reply was lost, else read for this), starts with the
/// source's history (`source`, whose facts are `source_info`).
fn verify_written(
    stored: &[ChatMessage],
    source: &[ChatMessage],
    source_info: &SessionInfo,
    outcome: Outcome,
) -> Result<Outcome> {
    if let (Outcome::Copied(_), Some(expiry), true) =
        (&outcome, source_info.meta.expiry, stored.is_empty())
    {
        // Created with the source's expiry, counted from the source's times, and run out
        // by the target's clock at the write (a clock ahead of the source's, or a slow
        // copy): the copy is stored, gone for every reader, as the source's session is
        // from then on. Not a failure, and nothing of it is left to sync.
        let times = SessionTimes::of(source_info);
        let why = copies::ran_out(expiry, times);
        return Ok(Outcome::Expired { why, kept: None });
    }
    if stored.len() > source.len() && copied(source, stored) == source.len() {
        // Another writer stored messages in this session right after the copy landed.
        return Ok(Outcome::Diverged(format!(
            "the target gained messages while it was migrated ({})",
            divergence(source, stored)
        )));
    }
    verify(stored, source)?;
    Ok(outcome)
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

#[cfg(test)]
mod tests;
