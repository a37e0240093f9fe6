//! `fusion chat --mcp-config FILE` and `--mcp COMMAND` with the npm reference server
//! `@modelcontextprotocol/server-everything`: `/tools` lists its tools, the agent calls
//! them, a call of a tool that may change something asks first, and a server that cannot
//! start stops the chat with an error naming it.

mod common;

use std::path::Path;

use common::repl::Repl;
use common::{chat_with_input, text};
use fusion_agent::testing::MockLlmServer;
use fusion_mcp::testing::{EVERYTHING, npm_server};

/// An `mcp.json` in `dir` naming the everything server `everything`; returns its path.
fn mcp_config(dir: &Path) -> String {
    let script = npm_server(EVERYTHING);
    let config = serde_json::json!({
        "mcpServers": {
            "everything": {"command": "node", "args": [script, "stdio"]},
            "off": {"command": "definitely-not-a-program", "disabled": true}
        }
    });
    let path = dir.join("mcp.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path.display().to_string()
}

fn storage(dir: &Path) -> String {
    dir.join("sessions").display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_lists_the_servers_tools_and_the_agent_calls_them() {
    let tmp = tempfile::tempdir().unwrap();
    let config = mcp_config(tmp.path());
    let server = MockLlmServer::start().await;
    server
        .push_tool_call("everything__get-sum", r#"{"a": 2, "b": 3}"#)
        .push_text("2 + 3 is 5.");
    let url = storage(tmp.path());
    let args = [
        "--session",
        "m",
        "--storage",
        &url,
        "--mcp-config",
        &config,
        "--approve",
        "none",
    ];
    let output = chat_with_input(tmp.path(), &server, &args, "/tools\nadd 2 and 3\n").await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in /tools:\n{stdout}"))
            .to_owned()
    };
    assert!(
        !line("everything__echo").contains('['),
        "read-only: {stdout}"
    );
    assert!(
        line("everything__toggle-simulated-logging").contains("[refused]"),
        "{stdout}"
    );
    assert!(line("read_file").starts_with("  read_file"), "{stdout}");
    assert!(stdout.contains("-> everything__get-sum("), "{stdout}");
    assert!(stdout.contains("2 + 3 is 5."), "{stdout}");

    // The model saw the server's answer.
    let second = server.requests()[1]["messages"].to_string();
    assert!(second.contains("The sum of 2 and 3 is 5"), "{second}");
    // The offered tools were the file tools, then the server's.
    let offered: Vec<String> = server.requests()[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(offered[0], "read_file");
    assert!(
        offered.iter().any(|n| n == "everything__echo"),
        "{offered:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_that_may_change_something_asks_on_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let script = npm_server(EVERYTHING);
    let mcp = format!("node {} stdio", script.display());
    let server = MockLlmServer::start().await;
    server
        .push_tool_call("server-everything__toggle-simulated-logging", "{}")
        .push_text("Logging toggled.");
    let url = storage(tmp.path());
    let args = [
        "--session",
        "a",
        "--storage",
        &url,
        "--mcp",
        &mcp,
        "--approve",
        "ask",
    ];
    let mut repl = Repl::start(tmp.path(), &server.base_url(), &args);
    repl.send("toggle logging");
    repl.stdout("allow server-everything__toggle-simulated-logging()? [y]es / [n]o / [a]lways for this tool: ")
        .await;
    repl.send("y");
    repl.stdout("Logging toggled.").await;
    let (status, _) = repl.exit().await;
    assert!(status.success());
    let second = server.requests()[1]["messages"].to_string();
    assert!(
        second.contains("[The user approved this call.]"),
        "{second}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_cannot_start_stops_the_chat_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = MockLlmServer::start().await;
    let url = storage(tmp.path());
    let args = [
        "--session",
        "x",
        "--storage",
        &url,
        "--mcp",
        "definitely-not-a-program --flag",
    ];
    let output = chat_with_input(tmp.path(), &server, &args, "hi\n").await;
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("definitely-not-a-program"), "{stderr}");
    assert!(server.requests().is_empty(), "{stderr}");
}
