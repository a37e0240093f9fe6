//! Runs the built example programs as a user would, against a real loopback
//! OpenAI-compatible server configured through the environment.

use std::path::PathBuf;
use std::process::{Command, Output};

use fusion::storage::ConversationStorage;
use fusion_agent::testing::{MockLlmServer, MockReply};

/// `target/<profile>/examples/<name>`: cargo builds a package's examples before its tests.
fn example_binary(name: &str) -> PathBuf {
    let deps_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    deps_dir.parent().unwrap().join("examples").join(name)
}

fn run_example(name: &str, dir: &std::path::Path, server: Option<&MockLlmServer>) -> Output {
    run_example_with_args(name, &[], dir, server)
}

fn run_example_with_args(
    name: &str,
    args: &[&str],
    dir: &std::path::Path,
    server: Option<&MockLlmServer>,
) -> Output {
    let mut command = Command::new(example_binary(name));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL");
    if let Some(server) = server {
        command
            .env("OPENAI_BASE_URL", server.base_url())
            .env("OPENAI_API_KEY", "test-key")
            .env("FUSION_MODEL", "mock-model");
    }
    command
        .output()
        .expect("running the example (cargo builds examples before tests)")
}

/// The model answers the colour question from the conversation it is sent, nothing else.
fn colour_rule(request: &serde_json::Value) -> MockReply {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let told = messages.iter().any(|m| {
        m["content"]
            .as_str()
            .is_some_and(|c| c.contains("favorite color is blue"))
    });
    let last = messages
        .last()
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    match last {
        l if l.contains("What is my favorite color?") && told => {
            MockReply::text("Your favorite color is blue.")
        }
        l if l.contains("What is my favorite color?") => MockReply::text("You have not told me."),
        l if l.contains("Delete the .txt files you just found") => {
            let remembers = messages
                .iter()
                .any(|m| m["content"].as_str() == Some("What files are in /tmp?"));
            MockReply::text(if remembers {
                "Deleted a.txt from /tmp."
            } else {
                "Which files?"
            })
        }
        _ => MockReply::text("a.txt"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn session_usage_recalls_blue_on_the_second_run() {
    let server = MockLlmServer::start_with(colour_rule).await;
    let dir = tempfile::tempdir().unwrap();
    let first = run_example("session_usage", dir.path(), Some(&server));
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout.contains("Deleted: Deleted a.txt from /tmp."),
        "example 1 forgot turn one: {stdout}"
    );
    assert!(
        stdout.contains("Information stored. Run this program again!"),
        "{stdout}"
    );

    let second = run_example("session_usage", dir.path(), Some(&server));
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        stdout.contains("Agent recalled: Your favorite color is blue."),
        "{stdout}"
    );
}

#[test]
fn session_usage_without_an_llm_explains_the_setup_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_example("session_usage", dir.path(), None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OPENAI_API_KEY") && stderr.contains("Ollama"),
        "{stderr}"
    );
}

#[test]
fn storage_tour_writes_reloads_and_lists_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_example("storage_tour", dir.path(), None);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("after reopening: 5 messages"), "{stdout}");
    assert!(
        stdout.contains(r#"after delete: ["storage-tour"]"#),
        "{stdout}"
    );
    assert!(dir.path().join("sessions/storage-tour.jsonl").is_file());
}

/// The model repeats the password hint only when the conversation it is sent holds it.
fn hint_rule(request: &serde_json::Value) -> MockReply {
    let told = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| {
            m["content"]
                .as_str()
                .is_some_and(|c| c.contains("teal giraffe"))
        });
    let asked = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .is_some_and(|c| c.contains("What was the deploy password hint"));
    MockReply::text(match (asked, told) {
        (true, true) => "It was 'teal giraffe'.",
        (true, false) => "You never told me.",
        (false, _) => "Noted.",
    })
}

/// Runs `example` twice on storage `url`: the first run is told the hint, the second asks
/// for it and must get it back. Returns both runs' stdout.
fn hint_remembered_on_the_second_run(
    example: &str,
    url: &str,
    dir: &std::path::Path,
    server: &MockLlmServer,
) -> Vec<String> {
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let output = run_example_with_args(example, &[url], dir, Some(server));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        outputs.push(stdout);
    }
    assert!(outputs[0].contains("agent: Noted."), "{}", outputs[0]);
    assert!(
        outputs[1].contains("agent: It was 'teal giraffe'."),
        "{}",
        outputs[1]
    );
    outputs
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_session_continues_the_conversation_on_the_second_run() {
    let server = MockLlmServer::start_with(hint_rule).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    let outputs = hint_remembered_on_the_second_run("sqlite_session", &url, dir.path(), &server);
    assert!(
        outputs[1].contains(r#"5 messages stored in sqlite://"#)
            && outputs[1].contains(r#"sessions there: ["sqlite-demo"]"#),
        "{}",
        outputs[1]
    );
}

/// A tool call while the conversation ends with the user, a text answer once the tool's
/// result is in (the mock server streams both, as `"stream": true` asks).
fn listing_rule(request: &serde_json::Value) -> MockReply {
    let last_role = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["role"].as_str())
        .unwrap_or_default()
        .to_string();
    if last_role == "tool" {
        MockReply::text("There is one file here: notes.txt.")
    } else {
        MockReply::tool_call("list_directory", r#"{"path": "."}"#)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_chat_prints_the_streamed_reply_and_the_tool_call() {
    let server = MockLlmServer::start_with(listing_rule).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let output = run_example_with_args(
        "streaming_chat",
        &["Which files are here?"],
        dir.path(),
        Some(&server),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("-> list_directory("), "{stdout}");
    assert!(stdout.contains("<- "), "{stdout}");
    assert!(
        stdout.contains("There is one file here: notes.txt."),
        "{stdout}"
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests
            .iter()
            .all(|r| r["stream"] == serde_json::json!(true)),
        "the example streams"
    );
    // The turn is stored: system prompt, user message, the call, its result, the answer.
    let stored = std::fs::read_to_string(dir.path().join("sessions/streaming.jsonl")).unwrap();
    assert_eq!(stored.lines().count(), 5, "{stored}");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_session_continues_the_conversation_on_the_second_run() {
    // A schema of the test's own (`FUSION_POSTGRES_URL`, ...), dropped when it is dropped.
    let Some(schema) = fusion_storage_postgres::testing::harness().await else {
        return;
    };
    let server = MockLlmServer::start_with(hint_rule).await;
    let dir = tempfile::tempdir().unwrap();
    let url = schema.storage_url();
    let outputs = hint_remembered_on_the_second_run("postgres_session", &url, dir.path(), &server);
    assert!(
        outputs[1].contains("5 messages stored in postgres")
            && outputs[1].contains(&format!("schema={}", schema.schema))
            && outputs[1].contains(r#"sessions there: ["postgres-demo"]"#),
        "{}",
        outputs[1]
    );
    // The session is in the URL's schema: a storage opened on that schema reads it whole.
    let storage = fusion::storage::PostgresStorage::connect_with(schema.options())
        .await
        .unwrap();
    assert_eq!(storage.load("postgres-demo").await.unwrap().len(), 5);
    storage.close().await;
}

#[test]
fn redis_changes_prints_each_change_in_the_order_it_was_made() {
    let Some(url) = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
    else {
        fusion_core::testkit::unavailable::<()>("redis", "set REDIS_URL to run");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let output = run_example_with_args("redis_changes", &[&url], dir.path(), None);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("subscribed to redis-changes-demo-") && lines[0].ends_with(":changes"),
        "{stdout}"
    );
    let expected = [
        "created demo: 1 message",
        "appended demo: 2 messages",
        "replaced demo: 1 message",
        "deleted demo: 0 messages",
        "the session is gone; 4 changes followed",
    ];
    assert_eq!(lines[1..], expected, "{stdout}");
}
