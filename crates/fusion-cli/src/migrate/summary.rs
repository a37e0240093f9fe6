//! The counts `fusion migrate` keeps as it goes, and what it prints and exits with at the
//! end.

use std::fmt::Display;
use std::io::ErrorKind;
use std::process::ExitCode;

use anyhow::{Result, bail};
use fusion::storage::StorageType;

use crate::{MigrateArgs, render};

/// Prints one line of migrate's report to stdout. A reader that went away (`fusion migrate
/// ... | head -1`) does not stop the run: the sessions left are migrated all the same, and the
/// exit code still says how it went. (Stopping between two sessions would be safe, but
/// would leave the store half migrated for want of anyone reading the lines.)
pub(super) fn say(line: impl Display) -> Result<()> {
    match render::say(line) {
        Err(err) if err.kind() != ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
}

/// Counts for the summary line.
#[derive(Default)]
pub(super) struct Summary {
    pub(super) copied: usize,
    pub(super) extended: usize,
    pub(super) up_to_date: usize,
    /// Listed in the source but empty when read ([`Outcome::Gone`](super::Outcome::Gone)).
    pub(super) gone: usize,
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
