//! Tool sources (how MCP servers join a session): started when the session is built, a
//! failing start fails the build, and a source whose tools change is offered anew on the
//! next request.

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::Harness;
use fusion_agent::{Tool, ToolSource};
use fusion_core::Error;
use serde_json::{Value, json};

struct Named(String);

#[async_trait]
impl Tool for Named {
    fn name(&self) -> &str {
        &self.0
    }
    fn description(&self) -> &str {
        "a tool of the source"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}})
    }
    async fn call(&self, _args: Value) -> fusion_core::Result<String> {
        Ok(format!("{} ran", self.0))
    }
}

/// A source whose tool list the test replaces, as a server announcing a change would.
#[derive(Default)]
struct Changing(Mutex<(u64, Vec<Arc<dyn Tool>>)>);

impl Changing {
    fn offer(&self, names: &[&str]) {
        let mut state = self.0.lock().unwrap();
        state.0 += 1;
        state.1 = names
            .iter()
            .map(|n| Arc::new(Named((*n).to_owned())) as Arc<dyn Tool>)
            .collect();
    }
}

impl ToolSource for Changing {
    fn source_name(&self) -> &str {
        "changing"
    }
    fn tools(&self) -> Arc<[Arc<dyn Tool>]> {
        Arc::from(self.0.lock().unwrap().1.clone())
    }
    fn revision(&self) -> u64 {
        self.0.lock().unwrap().0
    }
}

fn offered(request: &Value) -> Vec<String> {
    request["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_source_joins_at_build_and_its_changes_reach_the_next_request() {
    let h = Harness::new().await;
    let source = Arc::new(Changing::default());
    source.offer(&["srv__one"]);
    let loaded = source.clone();
    let mut session = h
        .builder()
        .tool_sources_from(async move { Ok(vec![loaded as Arc<dyn ToolSource>]) })
        .build()
        .await
        .unwrap();
    h.server.push_tool_call("srv__one", "{}").push_text("done");
    let result = session.send_message("use it").await.unwrap();
    assert_eq!(result.steps[0].observation, "srv__one ran");
    let first = &h.server.requests()[0];
    assert_eq!(
        offered(first),
        [
            "read_file",
            "write_file",
            "list_directory",
            "delete_file",
            "srv__one"
        ]
    );

    source.offer(&["srv__two"]);
    h.server.push_text("fine");
    session.send_message("again").await.unwrap();
    let last = h.server.requests().last().unwrap().clone();
    assert_eq!(offered(&last).last().unwrap(), "srv__two");
    assert!(!offered(&last).contains(&"srv__one".to_owned()));
}

#[tokio::test]
async fn a_source_that_fails_to_start_fails_the_build() {
    let h = Harness::new().await;
    let err = h
        .builder()
        .tool_sources_from(async { Err(Error::Config("server `x` failed to start".into())) })
        .build()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("server `x` failed to start"),
        "{err}"
    );
}
