//! `fusion sessions expire` and `fusion sessions purge`: when a session goes, and removing
//! the ones that have.
//!
//! Two kinds of old session, two flags of `purge`:
//! - `--older-than DUR`: sessions nobody has written for DUR, whatever their expiry,
//!   walked newest-first from the cutoff ([`purge_not_written_since`]) so only the
//!   sessions that go are read; each delete is conditional, so one written meanwhile stays.
//! - `--expired`: sessions whose expiry has passed. Readers stopped seeing them at that
//!   instant; this frees their space, a bounded batch at a time ([`purge_all_expired`]).
//!   It cannot be previewed: an expired session cannot be read, only purged.

use std::io::Write;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use fusion::storage::{
    ConversationStorage, Expiry, MetaUpdate, SessionInfo, SessionQuery, StalePurge,
    purge_all_expired, purge_not_written_since, validate_owner,
};

use crate::store::Store;
use crate::time::{self, format_span};
use crate::{ExpiryChoice, PurgeArgs, meta, render};

/// `sessions expire ID (--in DUR | --at TIME | --idle DUR | --never)`: sets the expiry and
/// prints the one storage now holds.
pub async fn expire(store: &Store, id: &str, when: &ExpiryChoice) -> Result<()> {
    let expiry = chosen(when, SystemTime::now())?;
    let info = meta::apply(store, id, &MetaUpdate::new().expiry(expiry)).await?;
    if expiry.is_some() && info.meta.expiry.is_none() {
        bail!("storage {store} did not keep the expiry of session \"{id}\"");
    }
    render::say(expire_line(id, &info))?;
    Ok(())
}

/// The expiry `when` asks for, checked before any storage is opened.
fn chosen(when: &ExpiryChoice, now: SystemTime) -> Result<Option<Expiry>> {
    let expiry = if let Some(span) = when.expire_in {
        Expiry::At(time::after(now, span, "--in")?)
    } else if let Some(at) = when.at {
        if at <= now {
            bail!(
                "--at {} has passed, so the session would be gone at once; \
                 `fusion sessions delete` deletes a session",
                time::rfc3339(at)
            );
        }
        time::at(at, "--at")?
    } else if let Some(span) = when.idle {
        time::idle(span, "--idle")?
    } else {
        // clap requires one of the four flags, so this is --never.
        return Ok(None);
    };
    expiry.validate().context("cannot set that expiry")?;
    Ok(Some(expiry))
}

/// What `sessions expire` prints: `session ID expires at TIME (after 30d idle)`, or that it
/// never expires.
fn expire_line(id: &str, info: &SessionInfo) -> String {
    match render::expires(info) {
        Some(expires) if info.expires_at.is_some() => format!("session {id} expires at {expires}"),
        Some(expires) => format!("session {id} expires {expires}"),
        None => format!("session {id} never expires"),
    }
}

/// `sessions purge`: refuses flag combinations it cannot honour before opening storage,
/// then purges and prints what it did.
pub async fn purge(store: &Store, args: &PurgeArgs) -> Result<()> {
    check(args)?;
    let storage = store.open_existing().await?;
    run_purge(
        storage.as_ref(),
        args,
        SystemTime::now(),
        &mut render::stdout(),
    )
    .await
    .with_context(|| format!("cannot purge sessions in {store}"))
}

/// Refuses `--dry-run` and `--owner` with `--expired` (see the module docs), and a bad
/// owner.
fn check(args: &PurgeArgs) -> Result<()> {
    if args.expired && args.dry_run {
        bail!(
            "--dry-run cannot preview --expired: expired sessions are already invisible and \
             cannot be counted without purging them; run --older-than alone with --dry-run"
        );
    }
    if args.expired && args.owner.is_some() {
        bail!(
            "--owner cannot narrow --expired, which purges every owner's expired sessions; \
             pass --owner with --older-than alone"
        );
    }
    if let Some(owner) = &args.owner {
        validate_owner(owner)?;
    }
    Ok(())
}

/// The purge `args` ask for, with `now` as the time `--older-than` counts back from,
/// printing to `out`: the sessions a dry run would delete (as `sessions list` shows them)
/// and a count, or the counts of what went. Printed once both purges are done, so a
/// reader that went away after the first line (`| head -1`) does not skip `--expired`.
async fn run_purge(
    storage: &dyn ConversationStorage,
    args: &PurgeArgs,
    now: SystemTime,
    out: &mut dyn Write,
) -> Result<()> {
    let mut said = Vec::new();
    if let Some(span) = args.older_than {
        // Nothing was written before the epoch, and no instant before it can be printed
        // or stored.
        let before = now
            .checked_sub(span)
            .filter(|before| *before >= SystemTime::UNIX_EPOCH)
            .with_context(|| {
                format!(
                    "--older-than {} reaches back before 1970 (the Unix epoch)",
                    format_span(span)
                )
            })?;
        let purge = StalePurge {
            owner: args.owner.clone(),
            dry_run: args.dry_run,
            page: (args.batch as usize).min(SessionQuery::MAX_LIMIT),
            ..StalePurge::before(before)
        };
        let mut listed = Vec::new();
        let report = purge_not_written_since(storage, &purge, |info| {
            if args.dry_run {
                listed.push(info.clone());
            }
        })
        .await?;
        let count = render::plural(report.deleted, "session");
        let before = time::rfc3339(before);
        if args.dry_run {
            if !listed.is_empty() {
                said.write_all(render::session_table(&listed, None).as_bytes())?;
            }
            writeln!(said, "would delete {count} last written before {before}")?;
        } else {
            writeln!(said, "deleted {count} last written before {before}")?;
            if report.written_meanwhile > 0 {
                writeln!(said, "kept {} written meanwhile", report.written_meanwhile)?;
            }
        }
    }
    if args.expired {
        match purge_all_expired(storage, args.batch as usize).await {
            Ok(purged) => writeln!(said, "purged {}", render::plural(purged, "expired session"))?,
            // What `--older-than` did is still said.
            Err(err) => {
                let _ = out.write_all(&said);
                return Err(err.into());
            }
        }
    }
    out.write_all(&said)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;
    use fusion::ChatMessage;
    use fusion::storage::{InMemoryStorage, SessionMeta};

    use super::*;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        purge: PurgeArgs,
    }

    #[derive(Parser)]
    struct ExpireWrapper {
        #[command(flatten)]
        when: ExpiryChoice,
    }

    fn args(argv: &[&str]) -> PurgeArgs {
        Wrapper::try_parse_from(std::iter::once("purge").chain(argv.iter().copied()))
            .unwrap()
            .purge
    }

    fn choice(argv: &[&str]) -> ExpiryChoice {
        ExpireWrapper::try_parse_from(std::iter::once("expire").chain(argv.iter().copied()))
            .unwrap()
            .when
    }

    async fn purged(store: &InMemoryStorage, argv: &[&str], now: SystemTime) -> String {
        let mut out = Vec::new();
        run_purge(store, &args(argv), now, &mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Waits on the real clock until it has passed `instant`.
    async fn wait_past(instant: SystemTime) {
        while SystemTime::now() <= instant {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn older_than_reaching_back_before_the_epoch_is_refused() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 365 * 50);
        let mut out = Vec::new();
        for span in ["9223372036854775807s", "60000d"] {
            let err = run_purge(
                &InMemoryStorage::new(),
                &args(&["--older-than", span, "--dry-run"]),
                now,
                &mut out,
            )
            .await
            .unwrap_err()
            .to_string();
            assert!(
                err.ends_with("reaches back before 1970 (the Unix epoch)"),
                "{err}"
            );
        }
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn older_than_lists_in_a_dry_run_and_deletes_in_a_real_one() {
        let store = InMemoryStorage::new();
        let said = [ChatMessage::user("hi")];
        let amy = SessionMeta::new().owner("amy").title("Amy's");
        store.create_session("a", &amy, &said).await.unwrap();
        store.append("b", &said).await.unwrap();
        // Counting back an hour from two hours ahead: both were written before the cutoff.
        let later = SystemTime::now() + Duration::from_secs(2 * 3_600);

        let dry = purged(&store, &["--older-than", "1h", "--dry-run"], later).await;
        let lines: Vec<&str> = dry.lines().collect();
        assert!(lines[0].starts_with("ID "), "{dry}");
        assert_eq!(lines.len(), 4, "{dry}");
        assert!(
            lines[1..3]
                .iter()
                .any(|line| line.starts_with("a ") && line.contains("Amy's")),
            "{dry}"
        );
        let cutoff = time::rfc3339(later - Duration::from_secs(3_600));
        assert_eq!(
            lines[3],
            format!("would delete 2 sessions last written before {cutoff}")
        );
        assert_eq!(store.list_sessions().await.unwrap().len(), 2, "a dry run");

        let now = SystemTime::now();
        let none = purged(&store, &["--older-than", "1h", "--dry-run"], now).await;
        assert!(none.starts_with("would delete 0 sessions"), "{none}");

        let real = purged(&store, &["--older-than", "1h", "--owner", "amy"], later).await;
        assert_eq!(
            real,
            format!("deleted 1 session last written before {cutoff}\n")
        );
        assert_eq!(store.list_sessions().await.unwrap(), ["b"]);
    }

    #[tokio::test]
    async fn expired_purges_only_what_has_expired() {
        let store = InMemoryStorage::new();
        let said = [ChatMessage::user("hi")];
        let soon = SystemTime::now() + Duration::from_millis(20);
        let meta = SessionMeta::new().expiry(Expiry::At(soon));
        for id in ["x1", "x2", "x3"] {
            store.create_session(id, &meta, &said).await.unwrap();
        }
        let idle = SessionMeta::new().expiry(Expiry::Idle(Duration::from_secs(3_600)));
        store.create_session("idle", &idle, &said).await.unwrap();
        wait_past(soon).await;
        let now = SystemTime::now();
        let out = purged(&store, &["--expired", "--batch", "2"], now).await;
        assert_eq!(out, "purged 3 expired sessions\n");
        assert_eq!(store.list_sessions().await.unwrap(), ["idle"]);

        // Both flags: the stale purge first, then the expired one.
        let later = now + Duration::from_secs(2 * 3_600);
        let both = purged(&store, &["--older-than", "1h", "--expired"], later).await;
        assert!(
            both.starts_with("deleted 1 session last written before"),
            "{both}"
        );
        assert!(both.ends_with("purged 0 expired sessions\n"), "{both}");
    }

    /// Stdout whose reader went away (`| true`): every write fails.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    #[tokio::test]
    async fn both_purges_run_when_nobody_reads_what_the_first_says() {
        let store = InMemoryStorage::new();
        let said = [ChatMessage::user("hi")];
        let soon = SystemTime::now() + Duration::from_millis(20);
        let meta = SessionMeta::new().expiry(Expiry::At(soon));
        store.create_session("x", &meta, &said).await.unwrap();
        store.append("stale", &said).await.unwrap();
        wait_past(soon).await;
        let later = SystemTime::now() + Duration::from_secs(2 * 3_600);
        let argv = args(&["--older-than", "1h", "--expired"]);
        let err = run_purge(&store, &argv, later, &mut ClosedPipe)
            .await
            .unwrap_err();
        let io = err
            .downcast_ref::<std::io::Error>()
            .expect("the write's error");
        assert_eq!(io.kind(), std::io::ErrorKind::BrokenPipe);
        assert!(store.list_sessions().await.unwrap().is_empty());
        // `x` is gone for readers either way; only the purge frees its space.
        assert_eq!(purge_all_expired(&store, 10).await.unwrap(), 0, "purged");
    }

    #[test]
    fn flags_purge_cannot_honour_are_refused_with_the_reason() {
        let err = check(&args(&["--expired", "--dry-run"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot be counted without purging"), "{err}");
        let err = check(&args(&["--older-than", "1d", "--expired", "--dry-run"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--dry-run cannot preview --expired"), "{err}");
        let err = check(&args(&["--expired", "--owner", "amy"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--owner cannot narrow --expired"), "{err}");
        let err = format!(
            "{:#}",
            check(&args(&["--older-than", "1d", "--owner", "../x"])).unwrap_err()
        );
        assert!(err.contains("invalid owner"), "{err}");
        check(&args(&[
            "--older-than",
            "1d",
            "--owner",
            "amy",
            "--dry-run",
        ]))
        .unwrap();

        let parse = |argv: &[&str]| {
            Wrapper::try_parse_from(std::iter::once("purge").chain(argv.iter().copied()))
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let err = parse(&["--dry-run"]);
        assert!(
            err.contains("--older-than") && err.contains("--expired"),
            "{err}"
        );
        let err = parse(&["--older-than", "0d"]);
        assert!(
            err.contains("--older-than") && err.contains("zero"),
            "{err}"
        );
        let err = parse(&["--expired", "--batch", "0"]);
        assert!(err.contains("--batch"), "{err}");
        assert_eq!(args(&["--expired"]).batch, 1000);
    }

    #[test]
    fn the_expiry_flags_become_one_expiry() {
        let now = SystemTime::now();
        assert_eq!(
            chosen(&choice(&["--in", "2h"]), now).unwrap(),
            Some(Expiry::At(now + Duration::from_secs(7_200)))
        );
        assert_eq!(
            chosen(&choice(&["--idle", "30d"]), now).unwrap(),
            Some(Expiry::Idle(Duration::from_secs(30 * 86_400)))
        );
        assert_eq!(chosen(&choice(&["--never"]), now).unwrap(), None);
        let at = choice(&["--at", "2100-01-01T00:00:00Z"]);
        assert_eq!(
            chosen(&at, now)
                .unwrap()
                .map(|e| render::expiry(&e))
                .as_deref(),
            Some("at 2100-01-01T00:00:00Z")
        );
        let err = chosen(&choice(&["--at", "2000-01-01T00:00:00Z"]), now).unwrap_err();
        assert!(err.to_string().contains("has passed"), "{err}");
        let err = format!(
            "{:#}",
            chosen(&choice(&["--idle", "9999w"]), now).unwrap_err()
        );
        assert!(err.contains("idle expiry"), "{err}");

        let parse = |argv: &[&str]| {
            ExpireWrapper::try_parse_from(std::iter::once("expire").chain(argv.iter().copied()))
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert!(parse(&[]).contains("--in"), "one flag is required");
        let err = parse(&["--in", "1d", "--never"]);
        assert!(err.contains("cannot be used with"), "{err}");
        let err = parse(&["--at", "tomorrow"]);
        assert!(
            err.contains("--at") && err.contains("2026-01-31T09:00:00Z"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn expire_prints_the_expiry_storage_holds() {
        let store = InMemoryStorage::new();
        store.append("s", &[ChatMessage::user("hi")]).await.unwrap();
        let idle = MetaUpdate::new().expiry(Some(Expiry::Idle(Duration::from_secs(86_400))));
        let info = store.update_session("s", &idle).await.unwrap().unwrap();
        let at = time::rfc3339(info.updated_at.unwrap() + Duration::from_secs(86_400));
        assert_eq!(
            expire_line("s", &info),
            format!("session s expires at {at} (after 1d idle)")
        );
        let never = MetaUpdate::new().expiry(None);
        let info = store.update_session("s", &never).await.unwrap().unwrap();
        assert_eq!(expire_line("s", &info), "session s never expires");
    }
}
