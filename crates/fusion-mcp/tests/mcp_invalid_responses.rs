//! A stdio server's response that is JSON but not a valid JSON-RPC response (neither
//! `result` nor `error`, an `error` without a `message`, a member too many, a typo) ends
//! the call at once with an observation saying the response was invalid, where the SDK
//! alone skips the line and the call waits out its whole timeout; a JSON log line on
//! stdout that carries a request's id is not such a response, even when its other members
//! are named `result` or `error`. A batch (an array of messages, which servers of MCP
//! revisions before 2025-06-18 may send) is read message by message, also when its line is
//! over the 64 KiB a line is checked within. The server is a few lines of Node.js.

mod common;

use common::PATIENCE;
use fusion_agent::ToolSource;
use fusion_mcp::{McpOptions, McpServer};
use serde_json::json;

/// `nothing` answers `{"jsonrpc":"2.0","id":N}`, `no_message` an error with only a code,
/// `extra` such an error with a `data` member beside it, `typo` a `results`; `logged` logs
/// JSON lines carrying the request's id to stdout (as servers using a JSON logger on
/// stdout do), one of them of response members alone, and then answers; `batched` answers
/// in a batch, after a notification, and `batched_large` so in a batch line over 64 KiB;
/// `fine` answers a valid result.
const ON_CALL: &str = r#"
    if (msg.params.name === 'nothing') {
      write({ jsonrpc: '2.0', id: msg.id });
    } else if (msg.params.name === 'no_message') {
      write({ jsonrpc: '2.0', id: msg.id, error: { code: -1 } });
    } else if (msg.params.name === 'extra') {
      write({ jsonrpc: '2.0', id: msg.id, error: { code: -1 }, data: 1 });
    } else if (msg.params.name === 'typo') {
      write({ jsonrpc: '2.0', id: msg.id, results: { content: [] } });
    } else if (msg.params.name === 'logged') {
      write({ level: 30, id: msg.id, msg: 'handling tools/call' });
      write({ id: msg.id, result: 'started' });
      write({ id: msg.id, error: 'ENOENT' });
      text(msg.id, 'logged');
    } else if (msg.params.name === 'batched_large') {
      // Over the 64 KiB a line is checked within, the result in it too.
      write([
        { jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'x'.repeat(100 << 10) } },
        { jsonrpc: '2.0', id: msg.id, result: { content: [{ type: 'text', text: 'y'.repeat(70 << 10) }] } },
      ]);
    } else if (msg.params.name === 'batched') {
      write([
        { jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'x' } },
        { jsonrpc: '2.0', id: msg.id, result: { content: [{ type: 'text', text: 'batched' }] } },
      ]);
    } else {
      text(msg.id, 'fine');
    }
"#;

const TOOLS: &[&str] = &[
    "nothing",
    "no_message",
    "extra",
    "typo",
    "logged",
    "batched",
    "batched_large",
    "fine",
];

/// The server, whose calls end at the latest at [`PATIENCE`]: were a response skipped, a
/// call would end there, saying the server did not answer; the bound is only for the
/// failure.
async fn start() -> McpServer {
    let config = common::node_server("invalid", TOOLS, "", ON_CALL);
    let options = McpOptions {
        call_timeout: PATIENCE,
        ..McpOptions::default()
    };
    McpServer::start("invalid", config, options).await.unwrap()
}

/// Calls `tool` of `server` with no arguments.
async fn call(server: &McpServer, tool: &str) -> fusion_core::Result<String> {
    let tools = server.tools();
    let tool = tools.iter().find(|t| t.name() == tool).unwrap().clone();
    tool.call(json!({})).await
}

#[tokio::test]
async fn an_invalid_response_ends_the_call_at_once_saying_so() {
    let server = start().await;
    for name in [
        "invalid__nothing",
        "invalid__no_message",
        "invalid__extra",
        "invalid__typo",
    ] {
        let err = call(&server, name).await.unwrap_err().to_string();
        assert!(
            err.contains("MCP server `invalid` sent an invalid response"),
            "{name}: {err}"
        );
    }
    // The session goes on.
    assert_eq!(call(&server, "invalid__fine").await.unwrap(), "fine");
    server.shutdown().await;
}

#[tokio::test]
async fn a_json_log_line_carrying_the_call_id_is_not_taken_for_its_response() {
    let server = start().await;
    assert_eq!(call(&server, "invalid__logged").await.unwrap(), "logged");
    server.shutdown().await;
}

#[tokio::test]
async fn a_response_in_a_batch_ends_its_call() {
    let server = start().await;
    assert_eq!(call(&server, "invalid__batched").await.unwrap(), "batched");
    server.shutdown().await;
}

#[tokio::test]
async fn a_response_in_a_batch_line_over_64_kib_ends_its_call() {
    let server = start().await;
    let answer = call(&server, "invalid__batched_large").await.unwrap();
    assert_eq!(answer, "y".repeat(70 << 10));
    server.shutdown().await;
}

/// Found by a review: a log line whose first value is JSON but no message (`[0] listening`,
/// as `concurrently` writes; `[]`; a JSON log line `{"level":30,"id":1}`) is one rmcp,
/// which reads a line as far as its first value, answers by sending the server an
/// `Invalid request` error, once per such line; a line that is not JSON (`[INFO] ready`)
/// it skips. Such a line is not passed on, and the server is sent no error for it. `errors` answers with how many
/// errors the server was sent: rmcp sends its error before it reads the line after the
/// log lines, the call's answer, so before the call that asks.
#[tokio::test]
async fn a_log_line_of_json_gets_the_server_no_error() {
    let prelude = r#"
        let errors = 0;
        require('readline').createInterface({ input: process.stdin }).on('line', (line) => {
          if (JSON.parse(line).error !== undefined) errors++;
        });
    "#;
    let on_call = r#"
        if (msg.params.name === 'log') {
          process.stdout.write('[0] listening\n[]\n[1, 2]\n[INFO] ready\n');
          process.stdout.write('{"level":30,"id":1,"msg":"handling"}\n{"id":1,"result":"started"}\n');
          text(msg.id, 'logged');
        } else {
          text(msg.id, String(errors));
        }
    "#;
    let config = common::node_server("logs", &["log", "errors"], prelude, on_call);
    let options = McpOptions {
        call_timeout: PATIENCE,
        ..McpOptions::default()
    };
    let server = McpServer::start("logs", config, options).await.unwrap();
    assert_eq!(call(&server, "logs__log").await.unwrap(), "logged");
    assert_eq!(call(&server, "logs__errors").await.unwrap(), "0");
    server.shutdown().await;
}

/// Found by a review: a server that cannot read a request answers with an error whose `id`
/// is null (JSON-RPC's parse error), which rmcp drops, naming no request: the call waited
/// out its whole timeout and the model read that the server did not answer. With that
/// call alone in flight, the error can only be its answer, and ends it at once.
#[tokio::test]
async fn an_error_without_an_id_ends_the_one_call_in_flight() {
    let on_call = r#"
        if (msg.params.name === 'unreadable') {
          write({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error at 1:17' } });
        } else {
          text(msg.id, 'fine');
        }
    "#;
    let config = common::node_server("unread", &["unreadable", "fine"], "", on_call);
    let options = McpOptions {
        call_timeout: PATIENCE,
        ..McpOptions::default()
    };
    let server = McpServer::start("unread", config, options).await.unwrap();
    let err = call(&server, "unread__unreadable")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Parse error at 1:17"), "{err}");
    assert!(!err.contains("did not answer"), "{err}");
    // The session goes on, its calls answered as before.
    assert_eq!(call(&server, "unread__fine").await.unwrap(), "fine");
    server.shutdown().await;
}
