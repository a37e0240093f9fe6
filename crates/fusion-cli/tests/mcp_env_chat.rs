//! `fusion chat --mcp COMMAND --mcp-env NAME`: a stdio server started from a command line
//! is given the variables `--mcp-env` names, and no other of chat's (it gets only `PATH`,
//! `HOME` and a few more by default); the tools past the servers' limit make one note on
//! stderr, not one each, naming `--mcp-max-tools`, which raises the limit, and no log
//! line says it again; `--mcp-max-description` cuts the descriptions offered. The server
//! is a few lines of Node.js that lists an `env` tool answering its environment, and as
//! many more tools as its argument says.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{chat_command, feed, text};
use fusion_agent::testing::MockLlmServer;

/// The variable `--mcp-env` names, and one it does not; both set for chat only.
const TOKEN: (&str, &str) = ("FUSION_TEST_MCP_TOKEN", "tok-for-the-server");
const OTHER: (&str, &str) = ("FUSION_TEST_MCP_OTHER", "kept-from-the-server");

const SERVER: &str = r#"
const extra = Number(process.argv[2] || 0);
const write = (msg) => process.stdout.write(JSON.stringify(msg) + '\n');
const tool = (name) => ({ name, description: 'The ' + name + ' tool.', inputSchema: { type: 'object' },
                          annotations: { readOnlyHint: true } });
require('readline').createInterface({ input: process.stdin }).on('line', (line) => {
  const msg = JSON.parse(line);
  if (msg.id === undefined) return;
  if (msg.method === 'initialize') {
    write({ jsonrpc: '2.0', id: msg.id, result: { protocolVersion: msg.params.protocolVersion,
            capabilities: { tools: {} }, serverInfo: { name: 'env-server', version: '1.0.0' } } });
  } else if (msg.method === 'tools/list') {
    const names = ['env', ...Array.from({ length: extra }, (_, n) => 'tool_' + (n + 1))];
    const tools = names.map(tool);
    // A name made to act on a terminal, on a tool whose broken schema has it left out.
    if (process.argv[3] === 'hostile') tools.push({ name: 'evil\u001b[2J\u202egpj.exe',
      inputSchema: { type: 'object', properties: { x: 5 } } });
    write({ jsonrpc: '2.0', id: msg.id, result: { tools } });
  } else {
    const text = JSON.stringify(process.env);
    write({ jsonrpc: '2.0', id: msg.id, result: { content: [{ type: 'text', text }] } });
  }
});
"#;

/// The server's script, written into `dir`.
fn server_script(dir: &Path) -> PathBuf {
    let path = dir.join("env-server.js");
    std::fs::write(&path, SERVER).unwrap();
    path
}

/// `fusion chat ARGS` with `input` on stdin, both variables set in its environment.
async fn chat(dir: &Path, llm: &MockLlmServer, args: &[&str], input: &str) -> Output {
    let mut command = chat_command(dir, &llm.base_url());
    command
        .args(["--storage", &dir.join("sessions").display().to_string()])
        .args(args)
        .env(TOKEN.0, TOKEN.1)
        .env(OTHER.0, OTHER.1);
    feed(command, input).await
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_env_passes_the_named_variable_on_to_the_mcp_servers_and_no_other() {
    let tmp = tempfile::tempdir().unwrap();
    let mcp = format!("node {}", server_script(tmp.path()).display());
    let llm = MockLlmServer::start().await;
    llm.push_tool_call("env-server__env", "{}")
        .push_text("That is its environment.");
    let args = ["--mcp", &mcp, "--mcp-env", TOKEN.0];
    let output = chat(tmp.path(), &llm, &args, "show the server's environment\n").await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("-> env-server__env("),
        "{}",
        text(&output.stdout)
    );
    // What the model read of the call: the server's environment.
    let observed = llm.requests()[1]["messages"].to_string();
    assert!(observed.contains(TOKEN.1), "{observed}");
    assert!(!observed.contains(OTHER.1), "{observed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_env_takes_a_name_not_a_value() {
    let tmp = tempfile::tempdir().unwrap();
    let mcp = format!("node {}", server_script(tmp.path()).display());
    let llm = MockLlmServer::start().await;
    let args = ["--mcp", &mcp, "--mcp-env", "GITHUB_TOKEN=ghp_secret"];
    let output = chat(tmp.path(), &llm, &args, "hi\n").await;
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("not a variable's name"), "{stderr}");
    assert!(llm.requests().is_empty(), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_past_the_limit_make_one_note_rather_than_one_each() {
    let tmp = tempfile::tempdir().unwrap();
    // `env` and 130 more: 11 past the 120 the servers offer together.
    let mcp = format!("node {} 130", server_script(tmp.path()).display());
    let llm = MockLlmServer::start().await;
    let output = chat(tmp.path(), &llm, &["--mcp", &mcp], "").await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    // Chat's note, and nothing else: no log warning says it again.
    let notes: Vec<&str> = stderr.lines().filter(|l| l.contains("left out")).collect();
    assert_eq!(notes.len(), 1, "{stderr}");
    assert!(notes[0].starts_with("note:"), "{stderr}");
    assert!(
        notes[0].contains("offers 11 tools that are left out (`tool_120`"),
        "{stderr}"
    );
    assert!(notes[0].contains("and 6 more"), "{stderr}");
    // What a chat user changes to have them offered: chat's flag, not the library's field.
    assert!(
        notes[0].contains("--mcp-max-tools N raises the limit"),
        "{stderr}"
    );
    assert!(!notes[0].contains("McpOptions"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_max_tools_and_mcp_max_description_set_what_the_model_is_offered() {
    let tmp = tempfile::tempdir().unwrap();
    let mcp = format!("node {} 130", server_script(tmp.path()).display());
    let llm = MockLlmServer::start().await;
    llm.push_text("Hello.");
    let args = [
        "--mcp",
        &mcp,
        "--mcp-max-tools",
        "131",
        "--mcp-max-description",
        "5",
    ];
    let output = chat(tmp.path(), &llm, &args, "hi\n").await;
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("left out"), "{stderr}");
    let offered = llm.requests()[0]["tools"].as_array().unwrap().clone();
    let function = |name: &str| {
        let tool = offered.iter().find(|t| t["function"]["name"] == name);
        tool.unwrap_or_else(|| panic!("{name} not offered"))["function"].clone()
    };
    // `env` and its 130 more, beside chat's own file tools.
    let servers = offered.iter().filter(|t| {
        let name = t["function"]["name"].as_str().unwrap_or_default();
        name.starts_with("env-server__")
    });
    assert_eq!(servers.count(), 131);
    // "The env tool.", cut to 5 characters (too few for the note saying it was cut).
    assert_eq!(function("env-server__env")["description"], "The e");
    assert_eq!(function("env-server__tool_130")["description"], "The t");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_flag_without_a_server_or_below_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mcp = format!("node {}", server_script(tmp.path()).display());
    let llm = MockLlmServer::start().await;
    for (args, says) in [
        (&["--mcp-max-tools", "200"][..], "--mcp"),
        (
            &["--mcp", &mcp, "--mcp-max-tools", "0"][..],
            "--mcp-max-tools",
        ),
        (
            &["--mcp", &mcp, "--mcp-max-description", "0"][..],
            "--mcp-max-description",
        ),
    ] {
        let output = chat(tmp.path(), &llm, args, "hi\n").await;
        assert!(!output.status.success(), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert!(llm.requests().is_empty());
}

/// A tool left out is named as the server named it, but shown, never obeyed: an escape
/// sequence or a bidi override in its name reaches the terminal as visible escapes.
#[tokio::test(flavor = "multi_thread")]
async fn a_left_out_tool_is_named_without_acting_on_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let mcp = format!("node {} 0 hostile", server_script(tmp.path()).display());
    let llm = MockLlmServer::start().await;
    let output = chat(tmp.path(), &llm, &["--mcp", &mcp], "").await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    let note = stderr
        .lines()
        .find(|l| l.starts_with("note:") && l.contains("left out"))
        .unwrap_or_else(|| panic!("no note: {stderr}"));
    assert!(note.contains(r"`evil\x1b[2J\u202egpj.exe`"), "{note}");
    assert!(!note.contains(['\u{1b}', '\u{202e}']), "{note:?}");
    // Said once, by the note: no log warning repeats it.
    assert_eq!(stderr.matches("evil").count(), 1, "{stderr}");
    assert!(!stderr.contains(['\u{1b}', '\u{202e}']), "{stderr:?}");
}
