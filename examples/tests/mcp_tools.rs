//! Runs the `mcp_tools` example as a user would, against a scripted loopback LLM and the
//! installed npm `server-everything`: it lists the server's tools, the agent calls one, and
//! a call of a tool that may change something is declined when the user says no.

use std::io::Write;
use std::process::{Command, Stdio};

use fusion_agent::testing::MockLlmServer;
use fusion_mcp::testing::{EVERYTHING, npm_server};

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_uses_the_servers_tools_and_asks_before_changing_anything() {
    let llm = MockLlmServer::start().await;
    llm.push_tool_call("server-everything__get-sum", r#"{"a": 2, "b": 3}"#)
        .push_tool_call("server-everything__toggle-simulated-logging", "{}")
        .push_text("The sum is 5; I did not toggle logging.");
    let workdir = tempfile::tempdir().unwrap();
    // `target/<profile>/examples/mcp_tools`: cargo builds examples before tests.
    let deps = std::env::current_exe().unwrap();
    let binary = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/mcp_tools");
    let server = format!("node {} stdio", npm_server(EVERYTHING).display());
    let mut child = Command::new(binary)
        .args(["Add 2 and 3.", &server])
        .current_dir(workdir.path())
        .env("OPENAI_BASE_URL", llm.base_url())
        .env("OPENAI_API_KEY", "test-key")
        .env("FUSION_MODEL", "mock-model")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example runs");
    // The answer to the one question it asks (toggling logging may change something).
    child.stdin.take().unwrap().write_all(b"n\n").unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("tools: server-everything__echo"),
        "{stdout}"
    );
    assert!(
        stdout.contains("allow server-everything__toggle-simulated-logging()? [y/N]"),
        "{stdout}"
    );
    assert!(stdout.contains("<- The sum of 2 and 3 is 5"), "{stdout}");
    assert!(
        stdout.contains("<- Error: the user declined this call"),
        "{stdout}"
    );
    assert!(
        stdout.contains("agent> The sum is 5; I did not toggle logging."),
        "{stdout}"
    );
}
