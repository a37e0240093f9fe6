//! The `fusion` command retries what may pass on a second try, and still stores each
//! message once: run as a process against the Redis server at `REDIS_URL`, reached through
//! a [`FaultProxy`] that lets one write through, waits for the server's answer, then drops
//! it and closes the connection. The server applied the write; the command saw a dropped
//! connection. `--no-retry` shows what the retries save.
//!
//! `cargo test -p fusion-cli --test retry`; without `REDIS_URL` each test prints a skip
//! (or fails under `FUSION_REQUIRE_BACKENDS`).

mod common;

use std::path::Path;
use std::process::Output;

use common::{clean_up_async, load_async, redis_url, seed_async, text};
use std::time::{Duration, UNIX_EPOCH};

use fusion::ChatMessage;
use fusion::api::export::{self, ExportFormat};
use fusion::storage::{SessionInfo, SessionMeta, SessionTimes, StorageType};
use fusion_core::testkit::faults::FaultProxy;

/// Runs `fusion ARGS` without blocking the runtime, so the proxy's tasks keep relaying.
async fn fusion(dir: &Path, args: &[&str]) -> Output {
    fusion_with(dir, args, &[]).await
}

/// [`fusion`] with the environment variables `vars` set.
async fn fusion_with(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = common::fusion(dir);
    command.envs(vars.iter().copied()).args(args);
    tokio::process::Command::from(command)
        .output()
        .await
        .expect("the fusion binary runs")
}

/// A session's messages, the last naming `marker`, which only a write of them carries.
fn conversation(marker: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You answer briefly."),
        ChatMessage::user("What is the capital of France?"),
        ChatMessage::assistant(format!("Paris. ({marker})")),
    ]
}

/// `messages` as a jsonl export file (one message per line) in `dir`.
fn export_file(dir: &Path, name: &str, messages: &[ChatMessage]) -> String {
    let lines: Vec<String> = messages
        .iter()
        .map(|m| serde_json::to_string(m).unwrap())
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn an_import_whose_reply_was_lost_is_retried_and_stored_once() {
    let Some(url) = redis_url("retry-import") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (proxy, through) = FaultProxy::start_for_url(&url, 6379).await;
    let storage: StorageType = url.parse().unwrap();

    let retried = conversation("marker-retried");
    let file = export_file(dir, "retried.jsonl", &retried);
    proxy.cut_after_reply_to("marker-retried");
    let args = [
        "sessions",
        "import",
        &file,
        "--id",
        "s1",
        "--storage",
        &through,
    ];
    let out = fusion(dir, &args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(proxy.cuts(), 1, "the write applied and lost its reply");
    assert_eq!(load_async(&storage, "s1").await, retried, "stored once");

    let lost = conversation("marker-no-retry");
    let file = export_file(dir, "lost.jsonl", &lost);
    proxy.cut_after_reply_to("marker-no-retry");
    let args = [
        "sessions",
        "import",
        &file,
        "--id",
        "s2",
        "--storage",
        &through,
    ];
    let out = fusion(dir, &[&args[..], &["--no-retry"]].concat()).await;
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "the lost reply is the command's error"
    );
    assert!(
        stderr.starts_with("fusion: error: cannot save session \"s2\""),
        "{stderr}"
    );
    assert_eq!(proxy.cuts(), 2);
    assert_eq!(
        load_async(&storage, "s2").await,
        lost,
        "though the server applied it"
    );

    // The same from the variable, in any of the words a yes-or-no setting takes.
    let lost = conversation("marker-variable");
    let file = export_file(dir, "variable.jsonl", &lost);
    proxy.cut_after_reply_to("marker-variable");
    let args = [
        "sessions",
        "import",
        &file,
        "--id",
        "s3",
        "--storage",
        &through,
    ];
    let out = fusion_with(dir, &args, &[("FUSION_NO_RETRY", "on")]).await;
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "FUSION_NO_RETRY=on turns retries off"
    );
    assert!(
        stderr.starts_with("fusion: error: cannot save session \"s3\""),
        "{stderr}"
    );
    assert_eq!(proxy.cuts(), 3);
    clean_up_async(&storage).await;
}

/// A json export with metadata and times imports as the very history it holds, messages
/// without ids staying without (the retry layer, which would give each one an id, is not
/// in the way of its creation), and a creation whose reply was lost is settled by reading
/// the session back: imported once, with its times, and not reported as a failure.
#[tokio::test]
async fn a_json_import_whose_reply_was_lost_is_stored_once_exactly_with_its_times() {
    let Some(url) = redis_url("retry-import-json") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (proxy, through) = FaultProxy::start_for_url(&url, 6379).await;
    let storage: StorageType = url.parse().unwrap();

    let messages = conversation("marker-json");
    let mut info = SessionInfo::new("s1", messages.len());
    info.meta = SessionMeta::new().title("Kept");
    let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
    info.created_at = Some(at(1_700_000_000));
    info.updated_at = Some(at(1_700_000_060));
    let text_of = export::write_session(ExportFormat::Json, &info, &messages).unwrap();
    let file = dir.join("s1.json");
    std::fs::write(&file, text_of).unwrap();
    let file = file.display().to_string();

    proxy.cut_after_reply_to("marker-json");
    let args = ["sessions", "import", &file, "--storage", &through];
    let out = fusion(dir, &args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(proxy.cuts(), 1, "the creation applied and lost its reply");
    assert_eq!(
        load_async(&storage, "s1").await,
        messages,
        "stored once, exactly"
    );
    let store = storage.open().await.unwrap();
    let stored = store.session_info("s1").await.unwrap().unwrap();
    assert_eq!(SessionTimes::of(&stored), SessionTimes::of(&info));
    assert_eq!(stored.meta, info.meta);
    clean_up_async(&storage).await;
}

#[tokio::test]
async fn a_migrate_whose_copy_lost_its_reply_reads_the_target_again_and_copies_once() {
    let Some(url) = redis_url("retry-migrate") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (proxy, through) = FaultProxy::start_for_url(&url, 6379).await;
    let target: StorageType = url.parse().unwrap();
    let from_url = dir.join("source").display().to_string();
    let source: StorageType = from_url.parse().unwrap();
    // No ids, as histories written before ids existed: the copy must not gain any.
    seed_async(&source, "s1", &conversation("marker-copy")).await;
    let migrate = ["migrate", "--from", &from_url, "--to", &through];

    proxy.cut_after_reply_to("marker-copy");
    let out = fusion(dir, &migrate).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("1 copied, 0 extended, 0 up to date"),
        "{stdout}"
    );
    assert_eq!(proxy.cuts(), 1, "the copy applied and lost its reply");
    assert_eq!(
        load_async(&target, "s1").await,
        conversation("marker-copy"),
        "one exact copy"
    );

    // Without retries the lost reply fails the session, though the copy landed; a re-run
    // finds it there.
    seed_async(&source, "s2", &conversation("marker-again")).await;
    proxy.cut_after_reply_to("marker-again");
    let out = fusion(dir, &[&migrate[..], &["--no-retry"]].concat()).await;
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("failed s2: "), "{stdout}");
    assert_eq!(proxy.cuts(), 2);
    let out = fusion(dir, &migrate).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("0 copied, 0 extended, 2 up to date"),
        "{stdout}"
    );
    assert_eq!(
        load_async(&target, "s2").await,
        conversation("marker-again")
    );
    clean_up_async(&target).await;
}

#[tokio::test]
async fn a_migrate_whose_target_keeps_failing_past_every_retry_stops_instead_of_trying_every_session()
 {
    let Some(url) = redis_url("retry-migrate-stops") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let from_url = dir.join("from").display().to_string();
    let from: StorageType = from_url.parse().unwrap();
    for id in ["s1", "s2", "s3", "s4"] {
        seed_async(&from, id, &conversation(id)).await;
    }
    // Every request naming a session's list (`PREFIX:s:{id}`) loses its answer, as from a
    // server that went away: the listing at the start goes through, each session's first
    // read of the target does not, however often it is retried.
    let (proxy, through) = FaultProxy::start_for_url(&url, 6379).await;
    proxy.cut_randomly_containing(":s:{", 1.0, 1);

    let output = fusion(dir, &["migrate", "--from", &from_url, "--to", &through]).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(!output.status.success(), "{stdout}{stderr}");
    assert!(
        ["s1", "s2", "s3"]
            .iter()
            .all(|id| stdout.contains(&format!("failed {id}:"))),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "stopped: 3 sessions in a row failed as they do when a storage is unreachable"
        ) && stdout.contains("1 session not tried"),
        "{stdout}"
    );
    assert!(!stdout.contains("failed s4"), "{stdout}");
    assert!(
        stderr.contains("3 of 4 sessions failed to migrate, and 1 was not tried"),
        "{stderr}"
    );
    assert!(proxy.cuts() > 0);

    // Once the server answers again, the same command finishes the job.
    proxy.stop_cutting();
    let output = fusion(dir, &["migrate", "--from", &from_url, "--to", &through]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let to: StorageType = url.parse().unwrap();
    for id in ["s1", "s2", "s3", "s4"] {
        assert_eq!(load_async(&to, id).await, conversation(id), "{id}");
    }
    clean_up_async(&to).await;
}
