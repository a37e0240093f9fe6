//! `fusion-mcp-test-server`: a small stdio MCP server for fusion-mcp's own tests of process
//! faults. Built only with the `test-server` feature.
//!
//! Arguments choose how it misbehaves:
//! - `--exit-at-once CODE`: writes a line to stderr and exits with `CODE` before reading
//!   anything;
//! - `--silent`: reads its input but never answers, not even `initialize`;
//! - `--once FILE`: serves when `FILE` does not exist, creating it; when it does (a
//!   restart), writes a line holding a secret to stderr, then 4 MiB without a line end,
//!   and exits with 1 before reading anything;
//! - `--grandchild`: starts `sleep 600` as a child first, standing for the `node` that
//!   `npx` starts, so tests can check a whole process group is stopped.
//!
//! Otherwise it serves four tools: `echo {text}`; `pids`, answering
//! `{"pid": …, "grandchild": …}`; `env`, answering its environment as a JSON object; and
//! `exit {code}`, which exits mid-call.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

struct TestServer {
    grandchild: Mutex<Option<Child>>,
}

fn tool(name: &'static str, description: &'static str, schema: Value) -> Tool {
    let Value::Object(schema) = schema else {
        unreachable!("schemas here are objects")
    };
    Tool::new(name, description, std::sync::Arc::new(schema))
}

impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![
            tool(
                "echo",
                "Returns its text.",
                json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
            ),
            tool(
                "pids",
                "Returns this process's pid and its grandchild's.",
                json!({"type": "object"}),
            ),
            tool(
                "env",
                "Returns this process's environment variables.",
                json!({"type": "object"}),
            ),
            tool(
                "exit",
                "Exits the server process with the given code, mid-call.",
                json!({"type": "object", "properties": {"code": {"type": "integer"}}}),
            ),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = Value::Object(request.arguments.unwrap_or_default());
        let text = match request.name.as_ref() {
            "echo" => args["text"].as_str().unwrap_or_default().to_owned(),
            "pids" => {
                let grandchild = self.grandchild.lock().unwrap().as_ref().map(Child::id);
                json!({"pid": std::process::id(), "grandchild": grandchild}).to_string()
            }
            "env" => {
                let vars: serde_json::Map<String, Value> = std::env::vars_os()
                    .map(|(name, value)| {
                        let value = value.to_string_lossy().into_owned();
                        (name.to_string_lossy().into_owned(), Value::String(value))
                    })
                    .collect();
                Value::Object(vars).to_string()
            }
            "exit" => {
                let code = args["code"].as_i64().unwrap_or(3) as i32;
                eprintln!("test server: exiting with {code} as asked");
                std::process::exit(code);
            }
            other => return Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
        };
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![
            ContentBlock::text(text),
        ])))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--exit-at-once") {
        let code = args.get(at + 1).and_then(|c| c.parse().ok()).unwrap_or(1);
        eprintln!("test server: failing at start as asked");
        std::process::exit(code);
    }
    if let Some(at) = args.iter().position(|a| a == "--once") {
        let marker = std::path::Path::new(args.get(at + 1).expect("--once FILE"));
        if marker.exists() {
            eprintln!("test server: config token=sk-SUPERSECRET is refused");
            // More than a pipe holds: the write returns only once the client has read past
            // the secret's line, so the client has it when it sees the exit, and a test
            // that it is not shown cannot pass because it was not read yet.
            let filler = vec![b'x'; 4 << 20];
            let _ = std::io::Write::write_all(&mut std::io::stderr(), &filler);
            std::process::exit(1);
        }
        std::fs::write(marker, b"started").expect("test server: cannot write the marker");
    }
    if args.iter().any(|a| a == "--silent") {
        // Keep reading so the client's writes never block, and never answer.
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        std::future::pending::<()>().await;
    }
    let grandchild = args.iter().any(|a| a == "--grandchild").then(|| {
        Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("test server: cannot start `sleep`")
    });
    let server = TestServer {
        grandchild: Mutex::new(grandchild),
    };
    match server.serve(rmcp::transport::io::stdio()).await {
        Ok(running) => {
            let _ = running.waiting().await;
        }
        Err(e) => eprintln!("test server: {e}"),
    }
}
