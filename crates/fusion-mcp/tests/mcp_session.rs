//! `SessionBuilder::mcp_config(..)` ([`McpSessionExt`]): the servers start with the
//! session, their tools join the built-in ones, a server that cannot start fails the
//! build naming it, the server's process ends when the session is dropped, and a second
//! configuration offering a tool name the first offers fails the build.

mod common;

use common::{assert_process_ends, offered, test_server};
use fusion_agent::testing::MockLlmServer;
use fusion_core::Error;
use fusion_mcp::{McpConfig, McpSessionExt, StdioServerConfig};
use serde_json::Value;

fn builder(llm: &MockLlmServer, workspace: &std::path::Path) -> fusion_agent::SessionBuilder {
    common::builder(llm).workspace_roots([workspace])
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_start_with_the_session_beside_the_file_tools_and_stop_with_it() {
    let llm = MockLlmServer::start().await;
    let workspace = tempfile::tempdir().unwrap();
    let config = McpConfig::new().with("probe", StdioServerConfig::new(test_server()));
    let mut session = builder(&llm, workspace.path())
        .mcp_config(config)
        .build()
        .await
        .unwrap();
    llm.push_tool_call("probe__pids", "{}").push_text("done");
    let result = session.send_message("which pid?").await.unwrap();

    let names = offered(&llm, 0);
    assert_eq!(
        &names[..4],
        ["read_file", "write_file", "list_directory", "delete_file"]
    );
    assert!(names.contains(&"probe__echo".to_owned()), "{names:?}");
    let pids: Value = serde_json::from_str(&result.steps[0].observation).unwrap();
    let pid = pids["pid"].as_u64().unwrap() as u32;

    drop(session);
    assert_process_ends(pid);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_cannot_start_fails_the_build_naming_it() {
    let llm = MockLlmServer::start().await;
    let workspace = tempfile::tempdir().unwrap();
    let config = McpConfig::new().with(
        "broken",
        StdioServerConfig::new(test_server()).args(["--exit-at-once", "5"]),
    );
    let err = builder(&llm, workspace.path())
        .mcp_config(config)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("broken"), "{err}");
    assert!(llm.requests().is_empty());
}

/// Two configurations naming one server offer its tools twice under one name, which a
/// provider refuses and of which only the first could ever be called: the build says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_configuration_offering_a_name_the_first_gives_fails_the_build() {
    let llm = MockLlmServer::start().await;
    let workspace = tempfile::tempdir().unwrap();
    let probe = || McpConfig::new().with("probe", StdioServerConfig::new(test_server()));
    let err = builder(&llm, workspace.path())
        .mcp_config(probe())
        .mcp_config(probe())
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("`probe__"), "{message}");
    assert!(
        message.contains("by tool source `probe` and again by tool source `probe`"),
        "{message}"
    );
    assert!(llm.requests().is_empty());
}
