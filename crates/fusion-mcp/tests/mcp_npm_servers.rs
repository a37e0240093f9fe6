//! The npm reference servers (`server-everything`, `server-filesystem`), installed by the
//! test setup and run with `node`, driven through an `AgentSession` by the loopback LLM
//! server: tools listed and called, files read and written inside the allowed directory
//! and refused outside it, a long-running tool stopped by the per-call timeout.

mod common;

use std::time::Duration;

use common::{offered, session};
use fusion_agent::testing::MockLlmServer;
use fusion_agent::{ToolEffects, ToolRegistry};
use fusion_mcp::testing::{EVERYTHING, FILESYSTEM, npm_server};
use fusion_mcp::{McpConfig, McpOptions, McpServers, StdioServerConfig};

fn everything() -> StdioServerConfig {
    StdioServerConfig::new("node")
        .arg(npm_server(EVERYTHING).to_str().unwrap())
        .arg("stdio")
}

async fn start(config: McpConfig, options: McpOptions) -> (McpServers, ToolRegistry) {
    let servers = McpServers::start(&config, options).await.unwrap();
    let mut registry = ToolRegistry::new();
    servers.register_into(&mut registry);
    (servers, registry)
}

#[tokio::test]
async fn everything_server_tools_are_offered_and_called_in_a_session() {
    let (servers, registry) = start(
        McpConfig::new().with("everything", everything()),
        McpOptions::default(),
    )
    .await;
    let names = registry.names();
    for expected in [
        "everything__echo",
        "everything__get-sum",
        "everything__get-tiny-image",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(servers.servers()[0].skipped_tools().is_empty());
    let echo = registry.get("everything__echo").unwrap();
    assert_eq!(echo.effects(), ToolEffects::READ_ONLY);
    assert!(echo.parameters()["properties"]["message"].is_object());

    let llm = MockLlmServer::start().await;
    llm.push_tool_calls([
        ("everything__echo", r#"{"message": "hello from fusion"}"#),
        ("everything__get-sum", r#"{"a": 2, "b": 3}"#),
        ("everything__get-tiny-image", "{}"),
    ])
    .push_text("Done.");
    let mut session = session(&llm, registry).await;
    let result = session.send_message("Try the tools.").await.unwrap();

    assert_eq!(result.result, "Done.");
    let steps = &result.steps;
    assert!(steps.iter().all(|s| s.success), "{steps:#?}");
    assert!(
        steps[0].observation.contains("hello from fusion"),
        "{}",
        steps[0].observation
    );
    assert!(
        steps[1].observation.contains('5'),
        "{}",
        steps[1].observation
    );
    let image = &steps[2].observation;
    assert!(image.contains("[image image/png, "), "{image}");
    assert!(image.len() < 1000, "no base64 in the history: {image}");
    assert!(offered(&llm, 0).contains(&"everything__echo".to_owned()));
    servers.shutdown().await;
}

#[tokio::test]
async fn filesystem_server_writes_and_reads_inside_its_directory_and_refuses_outside() {
    let allowed = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "top secret").unwrap();
    // The server compares real paths: resolve symbolic links (macOS's /var → /private/var).
    let allowed_dir = allowed.path().canonicalize().unwrap();
    let filesystem = StdioServerConfig::new("node")
        .arg(npm_server(FILESYSTEM).to_str().unwrap())
        .arg(allowed_dir.to_str().unwrap());
    let (servers, registry) = start(
        McpConfig::new().with("files", filesystem),
        McpOptions::default(),
    )
    .await;
    assert_eq!(
        registry.get("files__write_file").unwrap().effects(),
        ToolEffects::DESTRUCTIVE
    );
    assert_eq!(
        registry.get("files__read_text_file").unwrap().effects(),
        ToolEffects::READ_ONLY
    );

    let inside = allowed_dir.join("notes.txt");
    let secret = outside.path().canonicalize().unwrap().join("secret.txt");
    let args = |value: serde_json::Value| value.to_string();
    let llm = MockLlmServer::start().await;
    llm.push_tool_call(
        "files__write_file",
        args(serde_json::json!({"path": inside, "content": "buy milk"})),
    )
    .push_tool_call(
        "files__read_text_file",
        args(serde_json::json!({"path": inside})),
    )
    .push_tool_call(
        "files__read_text_file",
        args(serde_json::json!({"path": secret})),
    )
    .push_text("Done.");
    let mut session = session(&llm, registry).await;
    let result = session
        .send_message("Write, read, and peek.")
        .await
        .unwrap();

    let steps = &result.steps;
    assert!(steps[0].success, "{}", steps[0].observation);
    assert_eq!(std::fs::read_to_string(&inside).unwrap(), "buy milk");
    assert!(steps[1].success);
    assert_eq!(steps[1].observation, "buy milk");
    assert!(!steps[2].success);
    assert!(
        steps[2].observation.contains("Access denied"),
        "{}",
        steps[2].observation
    );
    assert!(!steps[2].observation.contains("top secret"));
    servers.shutdown().await;
}

#[tokio::test]
async fn a_long_running_tool_is_cancelled_at_the_per_call_timeout() {
    let options = McpOptions {
        call_timeout: Duration::from_secs(1),
        ..McpOptions::default()
    };
    let (servers, registry) =
        start(McpConfig::new().with("everything", everything()), options).await;
    let llm = MockLlmServer::start().await;
    llm.push_tool_call(
        "everything__trigger-long-running-operation",
        r#"{"duration": 600, "steps": 2}"#,
    )
    .push_tool_call("everything__echo", r#"{"message": "still here"}"#)
    .push_text("Gave up waiting.");
    let mut session = session(&llm, registry).await;
    let result = session
        .send_message("Run the long operation.")
        .await
        .unwrap();

    let timed_out = &result.steps[0];
    assert!(!timed_out.success);
    assert!(
        timed_out.observation.contains("did not answer within 1 s")
            && timed_out.observation.contains("cancelled"),
        "{}",
        timed_out.observation
    );
    // The server is still usable after the cancelled call.
    assert!(result.steps[1].success, "{}", result.steps[1].observation);
    assert!(result.steps[1].observation.contains("still here"));
    servers.shutdown().await;
}
