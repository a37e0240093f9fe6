//! A tool registered under a name servers refuse (outside `[a-zA-Z0-9_-]`, past 64
//! characters) is offered in the request's `tools` under the form its past calls are sent
//! back with (a readable part and a hash), a call of that form runs it and is stored under
//! its name, and two tools offered under one form are refused when the session is built.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::SESSION;
use fusion_agent::testing::{MockLlmServer, MockReply};
use fusion_agent::{AgentSession, Tool, ToolRegistry};
use fusion_core::{ConversationStorage, Error, Result};
use fusion_storage_memory::InMemoryStorage;
use serde_json::{Value, json};

const DOTTED: &str = "functions.read_file";

struct Named(String);

#[async_trait]
impl Tool for Named {
    fn name(&self) -> &str {
        &self.0
    }
    fn description(&self) -> &str {
        "reads"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object"})
    }
    async fn call(&self, _args: Value) -> Result<String> {
        Ok(format!("ran {}", self.0))
    }
}

fn session(server: &MockLlmServer, tools: ToolRegistry) -> fusion_agent::SessionBuilder {
    AgentSession::builder(SESSION)
        .llm(Arc::new(common::client(server)))
        .tools(tools)
}

/// The tool names a request offers, and those of the calls in its history.
fn names(request: &Value) -> (Vec<String>, Vec<String>) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let offered = request["tools"].as_array().into_iter().flatten();
    let messages = request["messages"].as_array().into_iter().flatten();
    let calls = messages.flat_map(|m| m["tool_calls"].as_array().cloned().unwrap_or_default());
    (
        offered.map(|t| text(&t["function"]["name"])).collect(),
        calls.map(|c| text(&c["function"]["name"])).collect(),
    )
}

/// Found by a review: such a tool was offered as written (which OpenAI refuses) while its
/// past calls went back mapped, so the model saw two names for one tool.
#[tokio::test]
async fn a_tool_with_a_name_servers_refuse_is_offered_and_called_as_its_calls_are_sent() {
    let server = MockLlmServer::start().await;
    let storage = Arc::new(InMemoryStorage::new());
    let tools = ToolRegistry::new().with(Named(DOTTED.into()));
    let mut session = session(&server, tools)
        .storage(storage.clone())
        .build()
        .await
        .unwrap();
    // The first request tells the name the tool is offered under; the model calls that.
    server.push(MockReply::text("first"));
    session.send_message("hi").await.unwrap();
    let (offered, _) = names(&server.requests()[0]);
    assert_eq!(offered.len(), 1);
    let sent = offered[0].clone();
    assert!(sent.starts_with("functions_read_file_"), "{sent}");
    server.push_tool_call(&sent, "{}").push_text("Done.");
    let answer = session.send_message("read").await.unwrap();
    assert_eq!(answer.result, "Done.");
    assert_eq!(answer.steps[0].tool, DOTTED);
    assert_eq!(answer.steps[0].observation, format!("ran {DOTTED}"));
    let last = server.requests().pop().unwrap();
    assert_eq!(names(&last), (vec![sent.clone()], vec![sent]));
    let stored = storage.load(SESSION).await.unwrap();
    let call = stored.iter().flat_map(|m| &m.tool_calls).next().unwrap();
    assert_eq!(call.name, DOTTED, "stored under the tool's name");
}

/// The form [`DOTTED`] is offered under, found as the client offers it: in a request's
/// tools (the request it takes is the server's last).
async fn offered_form(server: &MockLlmServer) -> String {
    server.push(MockReply::text("hello"));
    let mut probe = session(server, ToolRegistry::new().with(Named(DOTTED.into())))
        .storage(Arc::new(InMemoryStorage::new()))
        .build()
        .await
        .unwrap();
    probe.send_message("hi").await.unwrap();
    names(&server.requests().pop().unwrap()).0[0].clone()
}

#[tokio::test]
async fn two_tools_offered_under_one_name_are_refused_at_build() {
    let server = MockLlmServer::start().await;
    let sent = offered_form(&server).await;
    let tools = ToolRegistry::new()
        .with(Named(DOTTED.into()))
        .with(Named(sent.clone()));
    let refused = session(&server, tools)
        .storage(Arc::new(InMemoryStorage::new()))
        .build()
        .await;
    let Err(Error::Config(message)) = refused else {
        panic!("built, or another error: {:?}", refused.err());
    };
    assert!(
        message.contains(DOTTED) && message.contains(&sent),
        "{message}"
    );
}

/// Found by a review: the text ReAct mode, whose calls name tools as they are written
/// (`Action: functions.read_file`), refused to build beside a tool named the other's
/// sendable form, although no name is ever sent as a function name there. It takes them,
/// and each call runs the tool it names.
#[tokio::test]
async fn two_tools_offered_alike_natively_are_taken_by_the_text_react_mode() {
    let server = MockLlmServer::start().await;
    let sent = offered_form(&server).await;
    let tools = ToolRegistry::new()
        .with(Named(DOTTED.into()))
        .with(Named(sent.clone()));
    let mut session = AgentSession::builder(SESSION)
        .llm(Arc::new(common::text_client(&server)))
        .tools(tools)
        .storage(Arc::new(InMemoryStorage::new()))
        .build()
        .await
        .expect("the text ReAct mode sends no function names");
    assert!(session.uses_text_react());
    server
        .push_text(format!("Action: {DOTTED}\nAction Input: {{}}"))
        .push_text(format!("Action: {sent}\nAction Input: {{}}"))
        .push_text("Final Answer: both ran");
    let answer = session.send_message("run both").await.unwrap();
    assert_eq!(answer.result, "both ran");
    let ran: Vec<_> = answer
        .steps
        .iter()
        .map(|s| s.observation.as_str())
        .collect();
    assert_eq!(ran, [format!("ran {DOTTED}"), format!("ran {sent}")]);
}
