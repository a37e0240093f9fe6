//! Faults that need no process, against an in-process rmcp server over streamable HTTP on
//! a loopback port: a hang past the per-call timeout (cancelled), a schema that is not an
//! object's, is broken inside or is too large (skipped), a 5 MB description (cut), a 10
//! MB result (cut), more tools than the servers may offer together (left out), `isError`,
//! structured and image content, `notifications/tools/list_changed`, and the headers an
//! HTTP server is sent.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{PATIENCE, offered, session};
use fusion_agent::testing::MockLlmServer;
use fusion_agent::{Tool, ToolRegistry, ToolSource};
use fusion_core::Error;
use fusion_core::testkit::logs::Logs;
use fusion_mcp::{HttpServerConfig, McpConfig, McpOptions, McpServer, McpServers, ToolLimit};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool as McpToolDef,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// What the server saw, shared with the test.
#[derive(Default)]
struct Seen {
    /// Requests' `Authorization` and `X-Team` headers.
    headers: Vec<(Option<String>, Option<String>)>,
}

#[derive(Clone)]
struct FaultyServer {
    tools: Arc<Mutex<Vec<McpToolDef>>>,
    cancelled: mpsc::UnboundedSender<()>,
}

fn def(name: &'static str, schema: Value) -> McpToolDef {
    let Value::Object(schema) = schema else {
        unreachable!("schemas here are objects")
    };
    McpToolDef::new(name, format!("The {name} tool."), Arc::new(schema))
}

fn object() -> Value {
    json!({"type": "object"})
}

impl FaultyServer {
    fn new(cancelled: mpsc::UnboundedSender<()>) -> Self {
        let tools = vec![
            def("hang", object()),
            def("bad_schema", json!({"type": "string"})),
            def("huge", object()),
            def("fails", object()),
            def("weather", object()),
            def("picture", object()),
            def("grow", object()),
        ];
        Self {
            tools: Arc::new(Mutex::new(tools)),
            cancelled,
        }
    }
}

impl ServerHandler for FaultyServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            self.tools.lock().unwrap().clone(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let result = match request.name.as_ref() {
            "hang" => {
                // Until the client's `notifications/cancelled` arrives.
                context.ct.cancelled().await;
                let _ = self.cancelled.send(());
                return Err(ErrorData::internal_error("cancelled", None));
            }
            "huge" => CallToolResult::success(vec![ContentBlock::text("x".repeat(10 << 20))]),
            "fails" => CallToolResult::error(vec![ContentBlock::text("no such city: Atlantis")]),
            "weather" => {
                let mut result = CallToolResult::success(vec![]);
                result.structured_content = Some(json!({"city": "Oslo", "celsius": -3}));
                result
            }
            // 3000 bytes of PNG, as base64.
            "picture" => CallToolResult::success(vec![
                ContentBlock::text("Here it is:"),
                ContentBlock::image("iVBO".repeat(1000), "image/png"),
            ]),
            "grow" => {
                self.tools.lock().unwrap().push(def("extra", object()));
                context
                    .peer
                    .notify_tool_list_changed()
                    .await
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                CallToolResult::success(vec![ContentBlock::text("grown")])
            }
            "extra" => CallToolResult::success(vec![ContentBlock::text("extra works")]),
            other => return Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
        };
        Ok(CallToolResponse::Complete(result))
    }
}

/// The server on a loopback port; dropped with the test's runtime.
struct Harness {
    url: String,
    seen: Arc<Mutex<Seen>>,
    cancelled: mpsc::UnboundedReceiver<()>,
}

async fn harness() -> Harness {
    harness_with(Vec::new()).await
}

/// The server with `extra` tools besides its own.
async fn harness_with(extra: Vec<McpToolDef>) -> Harness {
    let (cancel_tx, cancelled) = mpsc::unbounded_channel();
    let server = FaultyServer::new(cancel_tx);
    server.tools.lock().unwrap().extend(extra);
    let service: StreamableHttpService<FaultyServer, LocalSessionManager> =
        StreamableHttpService::new(
            move || Ok(server.clone()),
            Default::default(),
            StreamableHttpServerConfig::default(),
        );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let header = |name: &str| {
                    request
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let pair = (header("authorization"), header("x-team"));
                record.lock().unwrap().headers.push(pair);
                next.run(request)
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Harness {
        url,
        seen,
        cancelled,
    }
}

async fn start(h: &Harness, options: McpOptions) -> McpServer {
    let config = HttpServerConfig::new(h.url.clone())
        .bearer_token("tok-123")
        .header("X-Team", "blue");
    McpServer::start("faulty", config, options).await.unwrap()
}

fn tool(server: &McpServer, name: &str) -> Arc<dyn Tool> {
    let full = format!("faulty__{name}");
    let tools = server.tools();
    tools
        .iter()
        .find(|t| t.name() == full)
        .cloned()
        .unwrap_or_else(|| panic!("no {full}"))
}

fn tool_error(result: fusion_core::Result<String>) -> String {
    match result {
        Err(Error::Tool { message, .. }) => message,
        other => panic!("expected a tool error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_hanging_call_is_cancelled_at_the_timeout_and_the_server_is_told() {
    let mut h = harness().await;
    let options = McpOptions {
        call_timeout: Duration::from_secs(1),
        ..McpOptions::default()
    };
    let server = start(&h, options).await;
    let message = tool_error(tool(&server, "hang").call(json!({})).await);
    assert!(
        message.contains("MCP server `faulty` did not answer within 1 s"),
        "{message}"
    );
    assert!(message.contains("cancelled"), "{message}");
    tokio::time::timeout(PATIENCE, h.cancelled.recv())
        .await
        .expect("the server heard of the cancellation")
        .unwrap();
    // The server still answers.
    assert!(tool(&server, "weather").call(json!({})).await.is_ok());
}

#[tokio::test]
async fn a_tool_with_a_malformed_schema_is_skipped_with_its_reason() {
    let h = harness().await;
    let server = start(&h, McpOptions::default()).await;
    let skipped = server.skipped_tools();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].name, "bad_schema");
    // No option would offer it: a limit is for the tools past one.
    assert_eq!(skipped[0].limit, None);
    assert!(
        skipped[0].reason.contains("\"type\": \"string\""),
        "{}",
        skipped[0].reason
    );
    let names: Vec<String> = server.tools().iter().map(|t| t.name().to_owned()).collect();
    assert!(!names.contains(&"faulty__bad_schema".to_owned()));
    assert!(names.contains(&"faulty__hang".to_owned()));
}

#[tokio::test]
async fn a_ten_megabyte_result_is_cut_to_the_limit_with_a_note() {
    let h = harness().await;
    let options = McpOptions {
        max_observation_bytes: 64 * 1024,
        ..McpOptions::default()
    };
    let server = start(&h, options).await;
    let out = tool(&server, "huge").call(json!({})).await.unwrap();
    let (kept, note) = out.split_once('\n').unwrap();
    assert_eq!(kept.len(), 64 * 1024);
    assert_eq!(
        note,
        "[output cut: 64.0 KiB of 10.0 MiB shown; 9.9 MiB more not shown]"
    );
}

#[tokio::test]
async fn error_structured_and_image_results_read_well_in_a_session() {
    let h = harness().await;
    let server = start(&h, McpOptions::default()).await;
    let mut registry = ToolRegistry::new();
    registry.register_source(Arc::new(server.clone()));
    let llm = MockLlmServer::start().await;
    llm.push_tool_calls([
        ("faulty__fails", "{}"),
        ("faulty__weather", "{}"),
        ("faulty__picture", "{}"),
    ])
    .push_text("Done.");
    let mut session = session(&llm, registry).await;
    let result = session.send_message("Go.").await.unwrap();
    let steps = &result.steps;

    assert!(!steps[0].success);
    assert!(
        steps[0].observation.contains("no such city: Atlantis"),
        "{}",
        steps[0].observation
    );
    assert_eq!(steps[1].observation, r#"{"celsius":-3,"city":"Oslo"}"#);
    assert_eq!(
        steps[2].observation,
        "Here it is:\n[image image/png, 2.9 KiB, not shown]"
    );
    let seen = h.seen.lock().unwrap();
    assert!(
        seen.headers
            .iter()
            .all(|(auth, team)| auth.as_deref() == Some("Bearer tok-123")
                && team.as_deref() == Some("blue")),
        "{:?}",
        seen.headers
    );
    assert!(!format!("{server:?}").contains("tok-123"));
}

#[tokio::test]
async fn a_list_changed_notification_relists_the_tools_and_moves_the_revision() {
    let h = harness().await;
    let server = start(&h, McpOptions::default()).await;
    let mut registry = ToolRegistry::new();
    registry.register_source(Arc::new(server.clone()));
    let revision = registry.revision();
    assert!(registry.get("faulty__extra").is_none());

    let llm = MockLlmServer::start().await;
    llm.push_tool_call("faulty__grow", "{}").push_text("Grown.");
    let mut session = session(&llm, registry.clone()).await;
    session.send_message("Grow.").await.unwrap();
    tokio::time::timeout(PATIENCE, server.changed_since(revision))
        .await
        .expect("the tools were listed again");

    assert!(registry.revision() > revision);
    let extra = registry
        .get("faulty__extra")
        .expect("the new tool is offered");
    assert_eq!(extra.call(json!({})).await.unwrap(), "extra works");
    llm.push_text("I see it.");
    session.send_message("Anything new?").await.unwrap();
    assert!(offered(&llm, 2).contains(&"faulty__extra".to_owned()));
    assert!(!offered(&llm, 0).contains(&"faulty__extra".to_owned()));
}

#[tokio::test]
async fn a_five_megabyte_description_is_offered_cut_to_the_limit() {
    let mut verbose = def("verbose", object());
    verbose.description = Some(format!("Fetches pages. {}", "x".repeat(5 << 20)).into());
    let h = harness_with(vec![verbose]).await;
    let server = start(&h, McpOptions::default()).await;
    let mut registry = ToolRegistry::new();
    registry.register_source(Arc::new(server.clone()));
    let llm = MockLlmServer::start().await;
    llm.push_text("Fine.");
    let mut session = session(&llm, registry).await;
    session.send_message("Hello.").await.unwrap();

    let tools = llm.requests()[0]["tools"].as_array().unwrap().clone();
    let verbose = tools
        .iter()
        .find(|t| t["function"]["name"] == "faulty__verbose")
        .expect("the tool is offered");
    let description = verbose["function"]["description"].as_str().unwrap();
    assert_eq!(description.chars().count(), 1024);
    assert!(
        description.starts_with("Fetches pages. xxx"),
        "{description}"
    );
    assert!(
        description.ends_with("x… [description cut: 5242895 characters]"),
        "{description}"
    );
}

#[tokio::test]
async fn tools_whose_schemas_are_broken_inside_are_left_out_and_requests_go_on() {
    let huge: serde_json::Map<String, Value> = (0..2000)
        .map(|n| {
            (
                format!("p{n}"),
                json!({"type": "string", "description": "x".repeat(40)}),
            )
        })
        .collect();
    let h = harness_with(vec![
        def(
            "odd_property",
            json!({"type": "object", "properties": {"x": 5}}),
        ),
        def("odd_required", json!({"type": "object", "required": "x"})),
        def("huge_schema", json!({"type": "object", "properties": huge})),
    ])
    .await;
    let server = start(&h, McpOptions::default()).await;
    let reasons: Vec<(String, String)> = server
        .skipped_tools()
        .into_iter()
        .map(|s| (s.name, s.reason))
        .collect();
    let reason = |name: &str| {
        let found = reasons.iter().find(|(n, _)| n == name);
        found
            .unwrap_or_else(|| panic!("{name} not skipped: {reasons:?}"))
            .1
            .clone()
    };
    assert!(reason("odd_property").contains("`/properties/x` is a number, not a schema"));
    assert!(reason("odd_required").contains("`/required` is a string, not a list"));
    assert!(reason("huge_schema").contains("at most 64 KiB"));

    let mut registry = ToolRegistry::new();
    registry.register_source(Arc::new(server.clone()));
    let llm = MockLlmServer::start().await;
    llm.push_tool_call("faulty__weather", "{}")
        .push_text("Done.");
    let mut session = session(&llm, registry).await;
    let result = session.send_message("Weather?").await.unwrap();
    assert!(result.steps[0].success, "{}", result.steps[0].observation);
    let names = offered(&llm, 0);
    assert!(names.contains(&"faulty__weather".to_owned()), "{names:?}");
    for skipped in ["odd_property", "odd_required", "huge_schema"] {
        assert!(!names.contains(&format!("faulty__{skipped}")), "{names:?}");
    }
}

/// Tool `tNNN`, taking an object.
fn numbered(n: usize) -> McpToolDef {
    let Value::Object(schema) = object() else {
        unreachable!("an object")
    };
    McpToolDef::new(format!("t{n:03}"), "A numbered tool.", Arc::new(schema))
}

#[tokio::test]
async fn the_servers_of_a_set_offer_at_most_max_tools_together_also_after_a_change() {
    // Six usable tools of its own and 94 more: 100, listed by both `a` and `b`.
    let h = harness_with((0..94).map(numbered).collect()).await;
    let config = McpConfig::new()
        .with("a", HttpServerConfig::new(h.url.clone()))
        .with("b", HttpServerConfig::new(h.url.clone()));
    let servers = McpServers::start(&config, McpOptions::default())
        .await
        .unwrap();
    let (a, b) = (servers.get("a").unwrap(), servers.get("b").unwrap());
    assert_eq!((a.tools().len(), b.tools().len()), (100, 20));
    let left_out: Vec<String> = b
        .skipped_tools()
        .into_iter()
        .filter(|s| {
            s.limit == Some(ToolLimit::MaxTools) && s.reason.contains("at most 120 tools together")
        })
        .map(|s| s.name)
        .collect();
    assert_eq!(left_out.len(), 80, "{left_out:?}");
    assert_eq!(left_out[0], "t014");

    let mut registry = ToolRegistry::new();
    servers.register_into(&mut registry);
    let llm = MockLlmServer::start().await;
    llm.push_tool_call("a__grow", "{}").push_text("Grown.");
    let mut session = session(&llm, registry.clone()).await;
    let logs = Logs::new();
    // From here: the re-listing may finish during the next turn.
    let logging = tracing::subscriber::set_default(logs.subscriber(tracing::Level::WARN));
    let revision = a.revision();
    session.send_message("Grow.").await.unwrap();
    assert_eq!(offered(&llm, 0).len(), 120);

    // `a` now lists 101 usable tools; `b` holds its 20, so `extra` is left out, with a
    // warning: nobody is told of a later listing otherwise.
    tokio::time::timeout(PATIENCE, a.changed_since(revision))
        .await
        .expect("the tools were listed again");
    let tools = a.tools();
    drop(logging);
    assert_eq!(tools.len(), 100);
    let log = logs.text();
    assert!(
        log.contains("MCP tool left out") && log.contains("tool=extra"),
        "{log}"
    );
    let skipped = a.skipped_tools();
    assert!(
        skipped
            .iter()
            .any(|s| s.name == "extra" && s.limit == Some(ToolLimit::MaxTools)),
        "{skipped:?}"
    );
    llm.push_text("Still 120.");
    session.send_message("Anything new?").await.unwrap();
    let names = offered(&llm, 2);
    assert_eq!(names.len(), 120);
    assert!(!names.contains(&"a__extra".to_owned()));
    servers.shutdown().await;
}
