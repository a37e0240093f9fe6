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
