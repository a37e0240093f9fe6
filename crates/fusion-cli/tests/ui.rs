//! `fusion ui` as a person starts it: the real binary on a port the system picks, its
//! printed URL, pages over real HTTP from the storage named by `--storage`, and the
//! defences it is started with (a token when the bind is not loopback).

#![cfg(feature = "ui")]

mod common;

use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use fusion::agent::testing::MockLlmServer;
use fusion::storage::StorageType;
use futures::StreamExt;
use tokio::process::{Child, Command};

/// `fusion ui` started with `args` and the environment variables `env`, the URL it
/// printed, and the lines it wrote before it (stdout and stderr share one pipe, so what
/// it wrote on stderr before the URL is among them, whatever the scheduling).
async fn start(
    data_dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, String, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    let mut command = Command::from(common::fusion(data_dir));
    command
        .current_dir(data_dir)
        .arg("ui")
        .args(args)
        .envs(env.iter().copied())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .kill_on_drop(true);
    let child = command.spawn().expect("fusion ui starts");
    // The command holds the pipe's write end too; the child alone keeps it open now.
    drop(command);
    let (sender, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufRead::lines(std::io::BufReader::new(reader)) {
            if line.is_err() || sender.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut before = String::new();
    let url = loop {
        // Generous: the URL comes once the storage is open and the port bound.
        let line = tokio::time::timeout(Duration::from_secs(120), lines.recv())
            .await
            .expect("fusion ui prints its URL")
            .expect("a line of output");
        match line.strip_prefix("Fusion UI: ") {
            Some(url) => break url.to_string(),
            None => before.push_str(&format!("{line}\n")),
        }
    };
    // Keep reading so the child never blocks on a full pipe.
    tokio::spawn(async move { while lines.recv().await.is_some() {} });
    (child, url, before)
}

fn client() -> reqwest::Client {
    fusion::agent::http_client_builder()
        .unwrap()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn ui_serves_the_sessions_and_transcripts_of_the_storage_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ui.db");
    let url_arg = format!("sqlite://{}", db.display());
    let storage = StorageType::Sqlite(url_arg.clone());
    common::seed_async(&storage, "first-session", &common::conversation(1)).await;
    let (mut child, url, _) = start(
        dir.path(),
        &["--storage", &url_arg, "--bind", "127.0.0.1:0"],
        &[],
    )
    .await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(!url.contains("token"), "loopback needs no token: {url}");

    let client = client();
    let list = client.get(format!("{url}sessions")).send().await.unwrap();
    assert_eq!(list.status(), 200);
    let body = list.text().await.unwrap();
    assert!(body.contains("first-session"), "{body}");

    let page = client
        .get(format!("{url}sessions/first-session"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(
        body.contains("list_directory"),
        "the tool call's card: {body}"
    );
    assert!(body.contains("notes.txt"), "its result: {body}");

    // A name other than the one it was bound by is refused (DNS rebinding).
    let rebound = client
        .get(format!("{url}sessions"))
        .header("Host", "attacker.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_bind_beyond_loopback_prints_a_url_with_a_token_and_requires_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, before) = start(
        dir.path(),
        &["--storage", "memory://", "--bind", "0.0.0.0:0"],
        &[],
    )
    .await;
    let (base, token) = url.split_once("?token=").expect("the URL carries a token");
    assert!(token.len() >= 16, "{token}");
    let port = base
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let local = format!("http://127.0.0.1:{port}/sessions");

    let client = client();
    let refused = client.get(&local).send().await.unwrap();
    assert_eq!(refused.status(), 401, "no token");
    let with_bearer = client.get(&local).bearer_auth(token).send().await.unwrap();
    assert_eq!(with_bearer.status(), 200);
    // The printed URL names 127.0.0.1: a warning before it says the app is open to the
    // network.
    assert!(
        before.contains("listening on every network interface") && !before.contains(token),
        "{before}"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_token_given_on_the_command_line_must_be_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let output = common::fusion(dir.path())
        .args(["ui", "--storage", "memory://", "--bind", "127.0.0.1:0"])
        .args(["--token", "short"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = common::text(&output.stderr);
    assert!(stderr.contains("fusion: error"), "{stderr}");
    assert!(stderr.contains("token"), "{stderr}");
    assert!(
        !stderr.contains("short"),
        "the token is not echoed: {stderr}"
    );
}

#[tokio::test]
async fn the_transcript_chats_through_the_llm_the_environment_names() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ui.db");
    let url_arg = format!("sqlite://{}", db.display());
    let storage = StorageType::Sqlite(url_arg.clone());
    common::seed_async(&storage, "chatty", &common::conversation(1)).await;
    let llm = MockLlmServer::start().await;
    llm.push_text("Hello from the page.");
    let base_url = llm.base_url();
    let (mut child, url, _) = start(
        dir.path(),
        &["--storage", &url_arg, "--bind", "127.0.0.1:0"],
        &[
            ("OPENAI_BASE_URL", &base_url),
            ("OPENAI_API_KEY", "test-key"),
        ],
    )
    .await;
    let origin = url.trim_end_matches('/');
    let client = client();
    let started = client
        .post(format!("{url}sessions/chatty/chat"))
        .header("Origin", origin)
        .header("HX-Request", "true")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("message=say+hello")
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
    let panel = started.text().await.unwrap();
    let events = panel
        .split("sse-connect=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("a live panel: {panel}"))
        .to_string();
    let mut stream = client
        .get(format!("{origin}{events}"))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    // The server closes the stream after the turn's `end` event.
    let mut seen = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(120), stream.next())
        .await
        .expect("the turn ends")
    {
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let end = seen.split("event: end").nth(1).expect("an end event");
    assert!(
        end.contains("Hello from the page."),
        "the stored reply: {seen}"
    );
    let stored = storage.open().await.unwrap().load("chatty").await.unwrap();
    assert_eq!(stored.last().unwrap().content, "Hello from the page.");
    child.kill().await.unwrap();
}

/// `fusion ui | head -1`: the reader gone, the app goes on serving (its work), as a
/// migrate goes on migrating. Its lines went through `println!`, which panicked at the
/// first write, exit 101, and the app was gone. A stdout that fails otherwise (a full
/// disk) fails the start, naming stdout: nobody got the address.
#[tokio::test]
async fn ui_goes_on_serving_when_its_reader_went_away_and_fails_on_a_full_stdout() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // With stdout closed, `--open` is how the test learns the address: the `xdg-open` it
    // runs is a script that writes the URL into a FIFO the test reads.
    let opened = dir.path().join("opened");
    let made = std::process::Command::new("mkfifo")
        .arg(&opened)
        .status()
        .unwrap();
    assert!(made.success());
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let opener = bin.join("xdg-open");
    std::fs::write(
        &opener,
        "#!/bin/sh\nprintf '%s\\n' \"$1\" > \"$FUSION_TEST_OPENED\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut command = Command::from(common::fusion(dir.path()));
    command
        .current_dir(dir.path())
        .args([
            "ui",
            "--storage",
            "memory://",
            "--bind",
            "127.0.0.1:0",
            "--open",
        ])
        .env("PATH", &path)
        .env("FUSION_TEST_OPENED", &opened)
        .stdout(common::unwritable(false))
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("fusion ui starts");
    drop(command);
    // A thread of its own: opening a FIFO blocks until the other side opens it, which an
    // app that ended never does.
    let (sender, url) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = sender.send(std::fs::read_to_string(opened));
    });
    let ended = tokio::select! {
        url = url => Ok(url.unwrap().unwrap()),
        status = child.wait() => Err(status.unwrap()),
    };
    let url = match ended {
        Ok(url) => url.trim_end().to_string(),
        Err(status) => {
            let mut stderr = String::new();
            let mut pipe = child.stderr.take().unwrap();
            tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut stderr)
                .await
                .unwrap();
            panic!("fusion ui ended ({status}) rather than serve:\n{stderr}");
        }
    };
    let list = client().get(format!("{url}sessions")).send().await.unwrap();
    assert_eq!(list.status(), 200, "{url}");
    child.kill().await.unwrap();
    let mut stderr = String::new();
    let mut pipe = child.stderr.take().unwrap();
    tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut stderr)
        .await
        .unwrap();
    assert_eq!(stderr, "", "nothing said of the closed pipe");

    // Spawned, not `output()`, which would make stdout a pipe of its own.
    let full = Command::from(common::fusion(dir.path()))
        .args(["ui", "--storage", "memory://", "--bind", "127.0.0.1:0"])
        .stdout(common::unwritable(true))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("fusion ui starts");
    let output = tokio::time::timeout(Duration::from_secs(120), full.wait_with_output())
        .await
        .expect("fusion ui ends")
        .unwrap();
    assert!(!output.status.success());
    let stderr = common::text(&output.stderr);
    assert!(
        stderr.starts_with("fusion: error: cannot write to stdout: ")
            && stderr.contains("No space left on device"),
        "{stderr}"
    );
}
