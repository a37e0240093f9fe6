//! What a stdio server is given of the environment the agent runs in: the defaults
//! (`PATH`, `HOME`, …), the variables its configuration names and its `env`, never the
//! rest (the provider's key, `FUSION_ENCRYPTION_KEY`, a database password), unless it is
//! configured to inherit everything.
//!
//! The secret is set in a child copy of this test binary, never in this process: setting
//! a variable while other test threads run races their reads of the environment.

mod common;

use std::process::Command;

use common::test_server;
use fusion_agent::ToolSource;
use fusion_mcp::{DEFAULT_INHERITED_ENV, McpConfig, McpOptions, McpServer, McpServers};
use fusion_mcp::{McpServerConfig, StdioServerConfig};
use serde_json::{Map, Value, json};

/// The variable standing for a secret of the agent's, set only in the child copy.
const SECRET_NAME: &str = "FUSION_MCP_TEST_AGENT_SECRET";
const SECRET: &str = "sk-agent-secret-must-not-leak";

/// This test's name, which the child copy runs alone.
const THIS_TEST: &str = "a_secret_in_the_agents_environment_reaches_a_stdio_server_only_when_named";

/// The environment the test server reports, started as `probe` with `config`.
async fn environment_of(config: impl Into<McpServerConfig>) -> Map<String, Value> {
    let server = McpServer::start("probe", config, McpOptions::default())
        .await
        .unwrap();
    let report = call_env(&server).await;
    server.shutdown().await;
    report
}

async fn call_env(server: &McpServer) -> Map<String, Value> {
    let tools = server.tools();
    let env = tools.iter().find(|t| t.name() == "probe__env").unwrap();
    let text = env.call(json!({})).await.unwrap();
    match serde_json::from_str(&text).unwrap() {
        Value::Object(vars) => vars,
        other => panic!("not an environment: {other}"),
    }
}

#[test]
fn a_secret_in_the_agents_environment_reaches_a_stdio_server_only_when_named() {
    if std::env::var_os(SECRET_NAME).is_none() {
        let output = Command::new(std::env::current_exe().unwrap())
            .args([THIS_TEST, "--exact", "--nocapture"])
            .env(SECRET_NAME, SECRET)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        assert!(
            stdout.contains("1 passed"),
            "the copy ran no test: {stdout}"
        );
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // By default: the defaults that are set, and the configured `env`; no secret.
        let plain = StdioServerConfig::new(test_server()).env("LOG_LEVEL", "warn");
        let given = environment_of(plain).await;
        assert!(!given.contains_key(SECRET_NAME), "{given:?}");
        assert!(!given.values().any(|v| v == SECRET), "{given:?}");
        assert_eq!(given["LOG_LEVEL"], "warn");
        for name in given.keys().filter(|n| *n != "LOG_LEVEL") {
            assert!(
                DEFAULT_INHERITED_ENV.contains(&name.as_str()),
                "{name} was passed on"
            );
        }
        assert_eq!(
            given.get("PATH").and_then(Value::as_str),
            std::env::var("PATH").ok().as_deref()
        );

        // Named, in code and in the JSON configuration.
        let named = StdioServerConfig::new(test_server()).inherit_env(SECRET_NAME);
        assert_eq!(environment_of(named).await[SECRET_NAME], SECRET);
        let json = json!({"mcpServers": {"probe": {
            "command": test_server(), "inheritEnv": [SECRET_NAME]}}});
        let config = McpConfig::from_json_str(&json.to_string()).unwrap();
        let servers = McpServers::start(&config, McpOptions::default())
            .await
            .unwrap();
        let given = call_env(servers.get("probe").unwrap()).await;
        assert_eq!(given[SECRET_NAME], SECRET);
        servers.shutdown().await;

        // Everything, when asked; the configured `env` still wins.
        let all = StdioServerConfig::new(test_server())
            .inherit_all_env()
            .env("LOG_LEVEL", "warn");
        let given = environment_of(all).await;
        assert_eq!(given[SECRET_NAME], SECRET);
        assert_eq!(given["LOG_LEVEL"], "warn");
        let overridden = StdioServerConfig::new(test_server())
            .inherit_env(SECRET_NAME)
            .env(SECRET_NAME, "from-config");
        assert_eq!(environment_of(overridden).await[SECRET_NAME], "from-config");
    });
}

/// An `env` entry whose name is none (a value put in it by mistake, `NAME=value`; empty; a
/// NUL byte) fails the start naming the entry up to its `=`, never what follows it: set
/// as it is, `TOKEN=sk-…` would reach the server as `TOKEN`, its value put after the key.
#[tokio::test]
async fn an_env_entry_whose_name_is_no_variable_name_fails_the_start_without_its_value() {
    for (name, shown) in [
        ("API_TOKEN=sk-SUPERSECRET", "`API_TOKEN…`"),
        ("API_TOKEN\0sk-SUPERSECRET", "`API_TOKEN…`"),
        ("", "an empty name"),
    ] {
        let config = StdioServerConfig::new(test_server()).env(name, "more");
        let started = McpServer::start("probe", config, McpOptions::default()).await;
        let Err(fusion_core::Error::Config(message)) = started else {
            panic!("{name:?}: started, or failed otherwise: {started:?}")
        };
        assert!(
            message.contains("MCP server `probe`")
                && message.contains("`env`")
                && message.contains(shown),
            "{message}"
        );
        assert!(!message.contains("SUPERSECRET"), "{message}");
    }
}
