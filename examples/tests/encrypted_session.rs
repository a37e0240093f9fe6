//! Runs the `encrypted_session` example as a user would: the agent recalls a secret on the
//! second run, the SQLite file never holds it, and another key cannot read it.

use std::path::Path;
use std::process::{Command, Output};

use fusion_agent::testing::{MockLlmServer, MockReply};

/// Answers the question from the conversation it is sent, nothing else.
fn vault_rule(request: &serde_json::Value) -> MockReply {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let told = messages.iter().any(|m| {
        m["content"]
            .as_str()
            .is_some_and(|c| c.contains("vault code is 7-3-9-1"))
    });
    let asked = messages
        .last()
        .and_then(|m| m["content"].as_str())
        .is_some_and(|c| c.contains("What is the vault code"));
    MockReply::text(match (asked, told) {
        (true, true) => "The vault code is 7-3-9-1.",
        (true, false) => "You never told me.",
        (false, _) => "Noted.",
    })
}

fn run(dir: &Path, server: &MockLlmServer, key: Option<&str>) -> Output {
    // `target/<profile>/examples/encrypted_session`: cargo builds examples before tests.
    let deps = std::env::current_exe().unwrap();
    let binary = deps.parent().unwrap().parent().unwrap();
    let mut command = Command::new(binary.join("examples/encrypted_session"));
    let url = format!("sqlite://{}", dir.join("vault.db").display());
    command
        .arg(url)
        .current_dir(dir)
        .env("OPENAI_BASE_URL", server.base_url())
        .env("OPENAI_API_KEY", "test-key")
        .env("FUSION_MODEL", "mock-model")
        .env_remove("FUSION_ENCRYPTION_KEY");
    if let Some(key) = key {
        command.env("FUSION_ENCRYPTION_KEY", key);
    }
    command.output().expect("the example runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secret_is_recalled_but_never_stored_readable() {
    let server = MockLlmServer::start_with(vault_rule).await;
    let dir = tempfile::tempdir().unwrap();
    // Two keys: base64 of 32 bytes each.
    let key = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let other = "k1:Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

    let first = run(dir.path(), &server, Some(key));
    assert!(first.status.success(), "{}", text(&first.stderr));
    let second = run(dir.path(), &server, Some(key));
    let stdout = text(&second.stdout);
    assert!(second.status.success(), "{stdout}{}", text(&second.stderr));
    assert!(
        stdout.contains("agent> The vault code is 7-3-9-1."),
        "{stdout}"
    );
    assert!(stdout.contains("stored encrypted in sqlite://"), "{stdout}");
    assert!(stdout.contains("(key id k1)"), "{stdout}");

    // Neither the database nor its write-ahead log holds the secret.
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(!text(&bytes).contains("7-3-9-1"));
    }

    let missing = run(dir.path(), &server, None);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("FUSION_ENCRYPTION_KEY is not set"));
    let wrong = run(dir.path(), &server, Some(other));
    assert!(!wrong.status.success());
    let stderr = text(&wrong.stderr);
    assert!(
        stderr.contains("encrypted-demo") && stderr.contains("k1"),
        "{stderr}"
    );
}
