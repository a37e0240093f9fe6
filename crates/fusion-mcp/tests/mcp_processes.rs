//! Process faults of stdio servers, with this crate's `fusion-mcp-test-server`: servers
//! that cannot start, that exit mid-call (and are started again on the next call), and no
//! process left behind after shutdown or drop.

mod common;

use std::time::Duration;

use common::{PATIENCE, assert_process_ends, test_server};
use fusion_agent::{Tool, ToolRegistry, ToolSource};
use fusion_core::Error;
use fusion_mcp::{McpConfig, McpOptions, McpServer, McpServers, StdioServerConfig};
use serde_json::{Value, json};

fn server(args: &[&str]) -> StdioServerConfig {
    StdioServerConfig::new(test_server()).args(args.iter().copied())
}

async fn start_error(config: StdioServerConfig, options: McpOptions) -> String {
    let config = McpConfig::new().with("flaky", config);
    match McpServers::start(&config, options).await {
        Err(Error::Config(message)) => message,
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("the server should not have started"),
    }
}

async fn pids(server: &McpServer) -> (u32, Option<u32>) {
    let tool = tool(server, "pids");
    let out: Value = serde_json::from_str(&tool.call(json!({})).await.unwrap()).unwrap();
    (
        out["pid"].as_u64().unwrap() as u32,
        out["grandchild"].as_u64().map(|p| p as u32),
    )
}

fn tool(server: &McpServer, name: &str) -> std::sync::Arc<dyn Tool> {
    let full = format!("{}__{name}", server.prefix());
    server
        .tools()
        .iter()
        .find(|t| t.name() == full)
        .cloned()
        .unwrap_or_else(|| panic!("no tool {full}"))
}

#[tokio::test]
async fn a_missing_command_fails_startup_naming_the_server_and_command() {
    let message = start_error(
        StdioServerConfig::new("fusion-no-such-mcp-server").arg("--x"),
        McpOptions::default(),
    )
    .await;
    assert!(message.contains("MCP server `flaky`"), "{message}");
    assert!(
        message.contains("`fusion-no-such-mcp-server --x`"),
        "{message}"
    );
    assert!(message.contains("not found"), "{message}");
}

/// std refuses a NUL byte anywhere in what a program is given, naming none: the error
/// names the part (an `env` value by its variable), never the value.
#[tokio::test]
async fn a_nul_byte_in_what_the_server_is_given_is_named_by_where_it_is() {
    let cases = [
        (server(&["--x", "a\0b"]), "its argument 2 holds a NUL byte"),
        (
            server(&[]).env("API_KEY", "sk-SUPERSECRET\0"),
            "the value of its `env` variable `API_KEY` holds a NUL byte",
        ),
        (
            server(&[]).cwd("/tmp/a\0b"),
            "its working directory holds a NUL byte",
        ),
    ];
    for (config, says) in cases {
        let message = start_error(config, McpOptions::default()).await;
        assert!(message.contains(says), "{message}");
        assert!(!message.contains("SUPERSECRET"), "{message}");
        assert!(!message.contains('\0'), "a raw NUL: {message:?}");
    }
}

/// Found by a review: the command line a message names (to the person, the log, and by
/// its program to the model) showed a NUL byte, a line break or an escape sequence of the
/// configured command raw, which cuts the line, forges another log line or drives the
/// terminal. Each is shown escaped.
#[tokio::test]
async fn control_characters_of_the_command_are_shown_escaped() {
    let config = StdioServerConfig::new("fusion-no-such\u{1b}[2J-server\0").args([
        "--x",
        "a\0b",
        "line\nforged",
    ]);
    let message = start_error(config, McpOptions::default()).await;
    assert!(
        message.contains(r"`fusion-no-such\u{1b}[2J-server\u{0} --x a\u{0}b line\nforged`"),
        "{message}"
    );
    assert!(
        !message.contains(['\0', '\u{1b}', '\n']),
        "a raw control character: {message:?}"
    );
}

#[tokio::test]
async fn a_missing_working_directory_is_named_rather_than_taken_for_a_missing_command() {
    let missing = tempfile::tempdir().unwrap().path().join("gone");
    let message = start_error(server(&[]).cwd(&missing), McpOptions::default()).await;
    assert!(message.contains("MCP server `flaky`"), "{message}");
    assert!(
        message.contains(&format!("working directory `{}`", missing.display())),
        "{message}"
    );
    assert!(!message.contains("on PATH"), "{message}");
}

#[cfg(unix)]
#[tokio::test]
async fn a_script_whose_interpreter_is_missing_is_not_called_a_missing_command() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("server.sh");
    std::fs::write(&script, "#!/fusion/no/such/interpreter\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let command = script.to_str().unwrap();
    let message = start_error(StdioServerConfig::new(command), McpOptions::default()).await;
    assert!(
        message.contains(&format!("`{command}` exists, but the interpreter it names")),
        "{message}"
    );
    assert!(!message.contains("on PATH"), "{message}");
}

#[cfg(unix)]
#[tokio::test]
async fn a_command_on_path_whose_interpreter_is_missing_is_not_called_missing_from_path() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fusion-broken-interpreter-server");
    std::fs::write(&script, "#!/fusion/no/such/interpreter\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The child is given this PATH, and looks the name up there.
    let config = StdioServerConfig::new("fusion-broken-interpreter-server")
        .env("PATH", dir.path().to_str().unwrap());
    let message = start_error(config, McpOptions::default()).await;
    assert!(
        message.contains(&format!(
            "`fusion-broken-interpreter-server` is on PATH (`{}`), but the interpreter it names",
            script.display()
        )),
        "{message}"
    );
    assert!(!message.contains("is it installed"), "{message}");
}

#[cfg(unix)]
#[tokio::test]
async fn a_relative_command_is_looked_for_in_the_servers_working_directory() {
    use std::os::unix::fs::PermissionsExt;
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::create_dir(elsewhere.path().join("bin")).unwrap();
    let script = elsewhere.path().join("bin/server");
    std::fs::write(&script, "#!/fusion/no/such/interpreter\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = StdioServerConfig::new("./bin/server").cwd(elsewhere.path());
    let message = start_error(config, McpOptions::default()).await;
    assert!(
        message.contains("`./bin/server` exists, but the interpreter it names"),
        "{message}"
    );

    // `Cargo.toml` is in this test's directory (the crate's), not in the server's.
    assert!(std::path::Path::new("Cargo.toml").is_file());
    let config = StdioServerConfig::new("./Cargo.toml").cwd(elsewhere.path());
    let message = start_error(config, McpOptions::default()).await;
    assert!(
        message.contains(&format!(
            "`./Cargo.toml` not found (a relative path is taken from its working directory, `{}`)",
            elsewhere.path().display()
        )),
        "{message}"
    );
    assert!(!message.contains("exists"), "{message}");
}

#[tokio::test]
async fn a_server_that_exits_at_once_fails_startup_with_its_status_and_stderr() {
    let message = start_error(server(&["--exit-at-once", "7"]), McpOptions::default()).await;
    assert!(message.contains("MCP server `flaky`"), "{message}");
    assert!(message.contains("exit status: 7"), "{message}");
    assert!(message.contains("failing at start as asked"), "{message}");
}

#[tokio::test]
async fn a_handshake_the_server_refuses_is_not_reported_as_the_server_exiting() {
    // Refuses `initialize` and runs until its input ends, as a server should: it exits
    // only once the client, giving up, closes its stdin.
    const REFUSING: &str = r#"
      require('readline').createInterface({ input: process.stdin }).on('line', (line) => {
        const msg = JSON.parse(line);
        if (msg.method === 'initialize') process.stdout.write(JSON.stringify({ jsonrpc: '2.0',
          id: msg.id, error: { code: -32602, message: 'unsupported protocol version' } }) + '\n');
      });
    "#;
    let config = StdioServerConfig::new("node").args(["-e", REFUSING]);
    let message = start_error(config, McpOptions::default()).await;
    assert!(message.contains("failed the MCP handshake"), "{message}");
    assert!(
        message.contains("unsupported protocol version"),
        "{message}"
    );
    assert!(!message.contains("exited"), "{message}");
}

#[tokio::test]
async fn a_server_that_never_answers_fails_startup_at_the_startup_timeout() {
    let options = McpOptions {
        startup_timeout: Duration::from_secs(2),
        ..McpOptions::default()
    };
    let message = start_error(server(&["--silent"]), options).await;
    assert!(message.contains("MCP server `flaky`"), "{message}");
    assert!(
        message.contains("did not complete the MCP handshake within 2 s"),
        "{message}"
    );
}

#[tokio::test]
async fn a_server_exiting_mid_call_is_reported_then_restarted_on_the_next_call() {
    let server = McpServer::start("proc", server(&[]), McpOptions::default())
        .await
        .unwrap();
    let (first_pid, _) = pids(&server).await;
    let revision = server.revision();

    let error = tool(&server, "exit")
        .call(json!({"code": 3}))
        .await
        .unwrap_err();
    let Error::Tool {
        tool: name,
        message,
    } = error
    else {
        panic!("a tool error")
    };
    assert_eq!(name, "proc__exit");
    assert!(message.contains("MCP server `proc` exited"), "{message}");
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(message.contains("restarted on the next call"), "{message}");
    // What the server printed goes to the log, not to the model (found by an audit: a
    // crashing server's stderr can hold its configuration or a token).
    assert!(!message.contains("exiting with 3 as asked"), "{message}");

    let echoed = tool(&server, "echo")
        .call(json!({"text": "back"}))
        .await
        .unwrap();
    assert_eq!(echoed, "back");
    let (second_pid, _) = pids(&server).await;
    assert_ne!(first_pid, second_pid, "a new process serves the calls");
    assert!(server.revision() > revision, "the tools were listed again");
    assert_process_ends(first_pid);
    server.shutdown().await;
}

#[tokio::test]
async fn a_restart_that_fails_tells_the_model_why_but_not_what_the_server_printed() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    // A key among its arguments, as servers take one (`--api-key`, `-e TOKEN=…`).
    let config = server(&[
        "--once",
        marker.to_str().unwrap(),
        "--api-key",
        "sk-ARGSECRET",
    ]);
    let server = McpServer::start("proc", config, McpOptions::default())
        .await
        .unwrap();
    let exit = tool(&server, "exit").call(json!({"code": 3})).await;
    assert!(exit.is_err());
    // Started again, the server prints a secret to stderr and exits before the handshake;
    // it writes more after the secret than a pipe holds, so this client has read the
    // secret when it sees the exit, and the message leaves it out because it must.
    let Err(Error::Tool { message, .. }) = tool(&server, "echo").call(json!({"text": "x"})).await
    else {
        panic!("the restart should fail")
    };
    assert!(
        message.contains("MCP server `proc` could not be restarted"),
        "{message}"
    );
    assert!(message.contains("exit status: 1"), "{message}");
    // The stderr goes to the log: the observation is sent to the provider and stored.
    assert!(!message.contains("SUPERSECRET"), "{message}");
    // Nor are its arguments said to the model: the program alone names the command.
    assert!(!message.contains("ARGSECRET"), "{message}");
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_the_server_and_everything_it_started() {
    let servers = McpServers::start(
        &McpConfig::new().with("proc", server(&["--grandchild"])),
        McpOptions::default(),
    )
    .await
    .unwrap();
    let server = servers.get("proc").unwrap().clone();
    let (pid, grandchild) = pids(&server).await;
    assert_eq!(server.process_id().await, Some(pid));
    servers.shutdown().await;
    assert_process_ends(pid);
    assert_process_ends(grandchild.unwrap());
    let error = tool(&server, "echo")
        .call(json!({"text": "x"}))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("shut down"), "{error}");
}

#[tokio::test]
async fn dropping_the_servers_and_registry_leaves_no_process_behind() {
    let servers = McpServers::start(
        &McpConfig::new().with("proc", server(&["--grandchild"])),
        McpOptions::default(),
    )
    .await
    .unwrap();
    let mut registry = ToolRegistry::new();
    servers.register_into(&mut registry);
    let (pid, grandchild) = pids(servers.get("proc").unwrap()).await;
    drop(servers);
    // The registry still holds the server: it keeps running for the session.
    let echo = registry.get("proc__echo").unwrap();
    assert_eq!(echo.call(json!({"text": "alive"})).await.unwrap(), "alive");
    drop(echo);
    drop(registry);
    assert_process_ends(pid);
    assert_process_ends(grandchild.unwrap());
}

#[tokio::test]
async fn calls_after_the_process_vanished_between_calls_restart_it() {
    let server = McpServer::start("proc", server(&[]), McpOptions::default())
        .await
        .unwrap();
    let (pid, _) = pids(&server).await;
    // Killed from outside while idle, as an OOM killer would.
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert_process_ends(pid);
    let echoed = tokio::time::timeout(
        PATIENCE,
        tool(&server, "echo").call(json!({"text": "again"})),
    )
    .await
    .unwrap();
    // The death may be noticed before the call (restart at once) or by the call itself
    // (reported, then restarted on the next one).
    let echoed = match echoed {
        Ok(text) => text,
        Err(e) => {
            assert!(e.to_string().contains("restarted on the next call"), "{e}");
            tool(&server, "echo")
                .call(json!({"text": "again"}))
                .await
                .unwrap()
        }
    };
    assert_eq!(echoed, "again");
    server.shutdown().await;
}

/// Found by a review: a URL given as the command itself (`https://user:secret@host/…`,
/// an HTTP server's URL mistaken for a program, or a path that reads as one) was shown
/// as written where its program alone names it: in the reason a start fails for (`…
/// not found`) and, on a failed restart, to the model, whose provider is sent it and
/// whose session stores it, where the arguments' URLs were already shown redacted.
#[cfg(unix)]
#[tokio::test]
async fn a_url_given_as_the_command_is_shown_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    // A relative path is run from the working directory: `https:/user:s3cret@host/server`.
    let home = dir.path().join("https:").join("user:s3cret@host");
    std::fs::create_dir_all(&home).unwrap();
    let command = "https://user:s3cret@host/server";
    let missing = StdioServerConfig::new(command).cwd(dir.path());
    let message = start_error(missing, McpOptions::default()).await;
    assert!(
        message.contains("https://user:***@host/server"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");

    std::os::unix::fs::symlink(test_server(), home.join("server")).unwrap();
    let marker = dir.path().join("started");
    let config = StdioServerConfig::new(command)
        .args(["--once", marker.to_str().unwrap()])
        .cwd(dir.path());
    let server = McpServer::start("proc", config, McpOptions::default())
        .await
        .unwrap();
    assert!(
        tool(&server, "exit")
            .call(json!({"code": 3}))
            .await
            .is_err()
    );
    let Err(Error::Tool { message, .. }) = tool(&server, "echo").call(json!({"text": "x"})).await
    else {
        panic!("the restart should fail")
    };
    assert!(message.contains("could not be restarted"), "{message}");
    assert!(
        message.contains("https://user:***@host/server"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    server.shutdown().await;
}
