//! `fusion sessions watch` against the Redis server at `REDIS_URL` (and the cluster at
//! `FUSION_REDIS_CLUSTER_URL`): the changes other `fusion` processes make through a
//! storage URL with `publish_changes=true`, printed one line each in the order made; a
//! storage that is not Redis refused.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{clean_up_async, redis_cluster_url, redis_url, text};
use fusion::storage::StorageType;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// How long a step may take before the test calls it a hang (not a timing: each step
/// waits for something that has happened or will).
const NO_HANG: Duration = Duration::from_secs(60);

async fn fusion(dir: &Path, args: &[&str]) -> Output {
    let mut command = common::fusion(dir);
    command.args(args);
    tokio::process::Command::from(command)
        .output()
        .await
        .expect("the fusion binary runs")
}

/// Watches `url` for three changes while other `fusion` processes import a session, tag
/// it and delete it through the same URL with `publish_changes=true`.
async fn watch_prints_the_changes_other_processes_make(url: String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut watching = common::fusion(dir);
    watching
        .args(["--storage", &url, "sessions", "watch", "--count", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut watch = tokio::process::Command::from(watching)
        .kill_on_drop(true)
        .spawn()
        .expect("fusion sessions watch starts");
    // It says so once subscribed: only then can no change be missed.
    let mut stderr = BufReader::new(watch.stderr.take().unwrap());
    let mut said = String::new();
    tokio::time::timeout(NO_HANG, stderr.read_line(&mut said))
        .await
        .expect("the watch subscribes")
        .unwrap();
    assert!(
        said.starts_with("watching ") && said.contains(":changes"),
        "{said}"
    );

    let writer = format!("{url}&publish_changes=true");
    let export = dir.join("s1.json");
    std::fs::write(
        &export,
        r#"{"id":"s1","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .unwrap();
    let export = export.display().to_string();
    for args in [
        vec!["sessions", "import", &export],
        vec!["sessions", "tag", "s1", "--add", "demo"],
        vec!["sessions", "delete", "s1"],
    ] {
        let done = fusion(dir, &[&["--storage", &writer], &args[..]].concat()).await;
        assert!(done.status.success(), "{args:?}: {}", text(&done.stderr));
    }

    let status = tokio::time::timeout(NO_HANG, watch.wait())
        .await
        .expect("the watch stops after three changes")
        .unwrap();
    let mut out = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert!(status.success(), "{out}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let shown: Vec<(&str, &str, &str)> = lines.iter().map(|w| (w[0], w[1], w[2])).collect();
    assert_eq!(
        shown,
        [
            ("created", "s1", "1"),
            ("updated", "s1", "1"),
            ("deleted", "s1", "0")
        ],
        "{out}"
    );
    let storage: StorageType = url.parse().unwrap();
    clean_up_async(&storage).await;
}

#[tokio::test]
async fn watch_prints_the_changes_other_processes_make_on_one_server() {
    let Some(url) = redis_url("watch") else {
        return;
    };
    watch_prints_the_changes_other_processes_make(url).await;
}

#[tokio::test]
async fn watch_prints_the_changes_other_processes_make_on_a_cluster() {
    let Some(url) = redis_cluster_url("watch") else {
        return;
    };
    watch_prints_the_changes_other_processes_make(url).await;
}

/// `PUBLISH channel payload` on the server of the Redis `url`, in the protocol's own words
/// (the test has no Redis client): what anyone with access to the server can do.
async fn publish(url: &str, channel: &str, payload: &str) {
    use tokio::io::AsyncWriteExt;
    let rest = url.strip_prefix("redis://").expect("a redis:// URL");
    let address = rest.split(['/', '?']).next().unwrap();
    let mut server = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut request = String::from("*3\r\n");
    for word in ["PUBLISH", channel, payload] {
        request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
    }
    server.write_all(request.as_bytes()).await.unwrap();
    let mut reply = [0; 64];
    let read = tokio::time::timeout(NO_HANG, server.read(&mut reply))
        .await
        .expect("the server answers the PUBLISH")
        .unwrap();
    assert!(reply[..read].starts_with(b":"), "{:?}", &reply[..read]);
}

/// A change on the channel whose session id no storage could hold, published by someone
/// else (a line feed in it, or a terminal's escape sequence), printed a forged change line
/// of its own and sent the escape to the terminal: it is now a warning, the message escaped,
/// and only real changes reach stdout.
#[tokio::test]
async fn a_change_of_no_valid_session_is_a_warning_not_a_line() {
    let Some(url) = redis_url("watch-forged") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut watching = common::fusion(tmp.path());
    watching
        .args(["--storage", &url, "sessions", "watch", "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut watch = tokio::process::Command::from(watching)
        .kill_on_drop(true)
        .spawn()
        .expect("fusion sessions watch starts");
    let mut stderr = BufReader::new(watch.stderr.take().unwrap());
    let mut said = String::new();
    tokio::time::timeout(NO_HANG, stderr.read_line(&mut said))
        .await
        .expect("the watch subscribes")
        .unwrap();
    let channel = said
        .strip_prefix("watching ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{said}"))
        .to_string();
    publish(&url, &channel, "appended 1 2 x\ncreated 9 9 forged").await;
    publish(&url, &channel, "appended 1 2 \u{1b}]0;title\u{7}").await;
    publish(&url, &channel, "deleted 0 0 real-1").await;

    let status = tokio::time::timeout(NO_HANG, watch.wait())
        .await
        .expect("the watch stops after one change")
        .unwrap();
    let mut out = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    let mut warned = String::new();
    stderr.read_to_string(&mut warned).await.unwrap();
    assert!(status.success(), "{out}{warned}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    assert!(
        lines[0].starts_with("deleted    real-1  0 messages"),
        "{out:?}"
    );
    assert!(!warned.contains('\u{1b}'), "{warned:?}");
    for shown in [
        r#""appended 1 2 x\ncreated 9 9 forged""#,
        r#""appended 1 2 \u{1b}]0;title\u{7}""#,
    ] {
        assert!(
            warned.contains(&format!("is not a session change: {shown}")),
            "{warned}"
        );
    }
}

#[tokio::test]
async fn watching_a_storage_that_is_not_redis_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sessions = dir.join("sessions").display().to_string();
    let refused = fusion(dir, &["--storage", &sessions, "sessions", "watch"]).await;
    assert!(!refused.status.success());
    let said = text(&refused.stderr);
    assert!(
        said.contains("is not Redis: only a Redis storage publishes"),
        "{said}"
    );
}

/// `--count 0` subscribed, said it was watching, and exited at once (found by an audit).
#[tokio::test]
async fn a_count_of_zero_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let refused = fusion(tmp.path(), &["sessions", "watch", "--count", "0"]).await;
    assert!(!refused.status.success());
    let said = text(&refused.stderr);
    assert!(
        said.contains("invalid value '0' for '--count <N>'"),
        "{said}"
    );
    assert!(!said.contains("watching"), "{said}");
}
