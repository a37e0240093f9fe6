//! The counts `fusion migrate` keeps as it goes, and what it prints and exits with at the
//! end.

use std::fmt::Display;
use std::process::ExitCode;

use anyhow::{Result, bail};
use fusion::storage::StorageType;

use super::outcome::Outcome;
use crate::{MigrateArgs, render};

/// Prints one line of migrate's report to stdout. A reader that went away (`fusion migrate
/// ... | head -1`) does not stop the run: the sessions left are migrated all the same, and the
/// exit code still says how it went. (Stopping between two sessions would be safe, but
/// would leave the store half migrated for want of anyone reading the lines.)
pub(super) fn say(line: impl Display) -> Result<()> {
    Ok(render::say_unless_gone(line)?)
}

/// Counts for the summary line.
#[derive(Default)]
pub(super) struct Summary {
    pub(super) copied: usize,
    pub(super) extended: usize,
    pub(super) up_to_date: usize,
    /// Listed in the source but empty when read ([`Outcome::Gone`]).
    pub(super) gone: usize,
    /// Copied, but gone as soon as written, their expiry run out ([`Outcome::Expired`]).
    pub(super) expired: usize,
    /// Their expiry run out by the time it was synced to a target's session that existed,
    /// which is kept live without it ([`Outcome::Expired`], kept); counted as what was done
    /// to them too (up to date, extended, replaced).
    pub(super) expired_kept: usize,
    pub(super) diverged: usize,
    pub(super) replaced: usize,
    pub(super) failed: usize,
    /// Sessions left untried after a failure that no retry got past (`stops_the_run`).
    pub(super) not_tried: usize,
    /// Messages the target already held, in clear text or under an older key, that
    /// `--encrypt` encrypted (or, in a dry run, would encrypt) with the current key.
    pub(super) sealed: usize,
}

impl Summary {
    /// Counts what was done to session `id` (`outcome`) and returns the line that says so,
    /// if it gets one: in a dry run with `--encrypt`, every session that would be written
    /// does (`plan` says what it would encrypt); elsewhere only the unusual ones.
    pub(super) fn record(
        &mut self,
        id: &str,
        outcome: Result<Outcome>,
        plan: Option<String>,
        args: &MigrateArgs,
    ) -> Option<String> {
        let replace_verb = if args.dry_run {
            "would replace"
        } else {
            "replaced"
        };
        let plan_clause = |plan: Option<String>| plan.map(|plan| format!("; {plan}"));
        match outcome {
            Ok(Outcome::Copied(_)) => {
                self.copied += 1;
                plan.map(|plan| format!("would copy {id}: {plan}"))
            }
            Ok(Outcome::Extended(_)) => {
                self.extended += 1;
                plan.map(|plan| format!("would extend {id}: {plan}"))
            }
            Ok(Outcome::UpToDate) => {
                self.up_to_date += 1;
                plan.map(|plan| format!("up to date {id}: {plan}"))
            }
            Ok(Outcome::Gone) => {
                self.gone += 1;
                Some(format!(
                    "skipped {id}: the source held no message for it when read (deleted or \
                     expired since it was listed, or unreadable: see the source's warnings); \
                     nothing written"
                ))
            }
            Ok(Outcome::Expired { why, kept: None }) => {
                self.expired += 1;
                Some(format!(
                    "expired {id}: the copy was gone for every reader as soon as it was \
                     written, {why} by the target's clock (the source's session is gone from \
                     then on too); nothing else written"
                ))
            }
            Ok(Outcome::Expired {
                why,
                kept: Some(done),
            }) => {
                self.expired_kept += 1;
                let (copied, synced) = if args.dry_run {
                    ("to be copied", "to be synced")
                } else {
                    ("copied", "synced")
                };
                let written = match done.written() {
                    0 => String::new(),
                    n => format!(", {} {copied} to it", render::plural(n, "message")),
                };
                // Counted, and for a replace said, as what was done to its messages and
                // metadata: a replace deleted what the target held.
                let done = self.record(id, Ok(*done), None, args);
                let expired = format!(
                    "expired {id}: {why} by the target's clock (the source's session is gone \
                     from then on too); the target's session, which existed, is kept live{written}, \
                     its metadata {synced} but for that expiry, which would have made it gone for \
                     every reader at once{}",
                    plan_clause(plan).unwrap_or_default()
                );
                Some(match done {
                    Some(done) => format!("{done}; {expired}"),
                    None => expired,
                })
            }
            Ok(Outcome::Diverged(why)) => {
                self.diverged += 1;
                Some(format!(
                    "diverged {id}: {why}; left as it is (--force replaces it)"
                ))
            }
            Ok(Outcome::Replaced { previous, .. }) => {
                self.replaced += 1;
                Some(format!(
                    "{replace_verb} {id}: the target held a different history ({}){}",
                    render::plural(previous, "message"),
                    plan_clause(plan).unwrap_or_default()
                ))
            }
            Ok(Outcome::MetaReplaced { why, .. }) => {
                self.replaced += 1;
                Some(format!(
                    "{replace_verb} the metadata of {id}: the target held different metadata \
                     ({why}){}",
                    plan_clause(plan).unwrap_or_default()
                ))
            }
            Err(err) => {
                self.failed += 1;
                Some(format!("failed {id}: {}", crate::one_line(&err)))
            }
        }
    }

    /// Prints the summary of a run over `sessions` sessions (`target_only` more were only
    /// in the target), and turns it into the exit code: an error unless every session was
    /// migrated.
    pub(super) fn report(
        self,
        args: &MigrateArgs,
        sessions: usize,
        from_type: &StorageType,
        to_type: &StorageType,
        target_only: usize,
    ) -> Result<ExitCode> {
        let Summary {
            copied,
            extended,
            up_to_date,
            gone,
            expired,
            expired_kept,
            diverged,
            replaced,
            failed,
            not_tried,
            sealed,
        } = self;
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
        say(format_args!(
            "{head}: {} from {from_type} to {to_type}: {copied} {copied_word}, {extended} {extended_word}, \
             {up_to_date} up to date, {diverged} diverged, {replaced} {replaced_word}, {failed} failed",
            render::plural(sessions, "session"),
        ))?;
        if gone > 0 {
            say(format_args!(
                "{} listed in {from_type} held no message when read, and {} skipped",
                render::plural(gone, "session"),
                if gone == 1 { "was" } else { "were" }
            ))?;
        }
        if expired > 0 {
            say(format_args!(
                "{} listed in {from_type} expired by the time {} copied, and {} gone for \
                 every reader",
                render::plural(expired, "session"),
                if expired == 1 { "it was" } else { "they were" },
                if expired == 1 { "is" } else { "are" }
            ))?;
        }
        if expired_kept > 0 {
            say(format_args!(
                "{} listed in {from_type} expired by the target's clock before {} metadata was \
                 synced; the target's {} kept live without that expiry",
                render::plural(expired_kept, "session"),
                if expired_kept == 1 { "its" } else { "their" },
                if expired_kept == 1 {
                    "session is"
                } else {
                    "sessions are"
                }
            ))?;
        }
        if sealed > 0 {
            let verb = if args.dry_run {
                "would encrypt"
            } else {
                "encrypted"
            };
            say(format_args!(
                "{verb} {} the target already held in clear text or under an older key",
                render::plural(sealed, "message")
            ))?;
        }
        if target_only > 0 {
            say(format_args!(
                "{} only in {to_type} left as they are",
                render::plural(target_only, "session")
            ))?;
        }
        let total = render::plural(sessions, "session");
        if not_tried > 0 {
            let diverged = match diverged {
                0 => String::new(),
                n => format!(", {n} diverged (left as they are; --force replaces them)"),
            };
            let untried = if not_tried == 1 { "was" } else { "were" };
            bail!(
                "{failed} of {total} failed to migrate{diverged}, and {not_tried} {untried} not \
                 tried; fix the cause and re-run (finished sessions are skipped)"
            );
        }
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
}
