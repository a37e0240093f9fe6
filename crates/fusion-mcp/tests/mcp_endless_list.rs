//! A server whose tool list never ends (every page names a next one, or comes back to a
//! page it gave) is refused at start with an error saying so, instead of being read until
//! the memory runs out and then reported as a handshake that timed out. One that ends its
//! list with an empty `nextCursor` is not such a server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fusion_agent::ToolSource;
use fusion_mcp::{HttpServerConfig, MAX_LIST_PAGES, McpOptions, McpServer};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool as McpToolDef,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler};

/// The `nextCursor` each page gives.
#[derive(Clone, Copy, PartialEq)]
enum Next {
    /// A new page every time: the list never ends.
    New,
    /// The same page every time: the list comes back to a page it gave.
    Same,
    /// `""`, this server's way of saying there is no more; a cursor it treats as the
    /// start, like a missing one.
    Empty,
}

/// Pages as `next` says, one tool a page.
#[derive(Clone)]
struct Endless {
    next: Next,
    pages: Arc<AtomicUsize>,
}

impl ServerHandler for Endless {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let page = self.pages.fetch_add(1, Ordering::SeqCst);
        let schema = serde_json::json!({"type": "object"});
        let serde_json::Value::Object(schema) = schema else {
            unreachable!()
        };
        let tool = McpToolDef::new(format!("t{page}"), "A tool.", Arc::new(schema));
        let mut result = ListToolsResult::with_all_items(vec![tool]);
        result.next_cursor = Some(match self.next {
            Next::New => format!("page-{}", page + 1),
            Next::Same => "again".to_string(),
            Next::Empty => String::new(),
        });
        Ok(result)
    }

    async fn call_tool(
        &self,
        _request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        Err(ErrorData::invalid_params("no tools here", None))
    }
}

/// The server on a loopback port, and how many pages it has served.
async fn serve(next: Next) -> (String, Arc<AtomicUsize>) {
    let pages = Arc::new(AtomicUsize::new(0));
    let server = Endless {
        next,
        pages: pages.clone(),
    };
    let service: StreamableHttpService<Endless, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(server.clone()),
        Default::default(),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, pages)
}

#[tokio::test]
async fn a_tool_list_that_never_ends_is_refused_at_start_saying_so() {
    // Generous: the refusal comes from the page count, not from this timeout.
    let options = McpOptions {
        startup_timeout: Duration::from_secs(120),
        ..McpOptions::default()
    };
    for next in [Next::New, Next::Same] {
        let (url, pages) = serve(next).await;
        let started =
            McpServer::start("endless", HttpServerConfig::new(url), options.clone()).await;
        let Err(err) = started else {
            panic!("a list that never ends was taken")
        };
        let err = err.to_string();
        let served = pages.load(Ordering::SeqCst);
        if next == Next::Same {
            assert!(
                err.contains("comes back to a page it already gave"),
                "{err}"
            );
            assert_eq!(served, 2, "the first page, then the one it named twice");
        } else {
            assert!(
                err.contains(&format!("goes on past {MAX_LIST_PAGES} pages")),
                "{err}"
            );
            assert_eq!(served, MAX_LIST_PAGES);
        }
    }
}

#[tokio::test]
async fn an_empty_next_cursor_ends_the_list() {
    let (url, pages) = serve(Next::Empty).await;
    let server = McpServer::start("paged", HttpServerConfig::new(url), McpOptions::default())
        .await
        .unwrap();
    let names: Vec<String> = server.tools().iter().map(|t| t.name().to_owned()).collect();
    assert_eq!(names, ["paged__t0"]);
    assert_eq!(
        pages.load(Ordering::SeqCst),
        1,
        "no page asked after the last"
    );
    server.shutdown().await;
}
