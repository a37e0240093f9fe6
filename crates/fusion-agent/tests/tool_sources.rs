//! Tool sources (how MCP servers join a session): started when the session is built, a
//! failing start fails the build, and a source whose tools change is offered anew on the
//! next request.

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::Harness;
use fusion_agent::{AgentSession, Tool, ToolSource};
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
        self.offer_tools(
            names
                .iter()
                .map(|n| Arc::new(Named((*n).to_owned())) as Arc<dyn Tool>)
                .collect(),
        );
    }

    fn offer_tools(&self, tools: Vec<Arc<dyn Tool>>) {
        let mut state = self.0.lock().unwrap();
        state.0 += 1;
        state.1 = tools;
    }
}

/// A hand-written tool whose `parameters` panics after its first `fine` answers.
struct PanicsInParameters {
    fine: usize,
    asked: std::sync::atomic::AtomicUsize,
}

impl PanicsInParameters {
    fn after(fine: usize) -> Self {
        Self {
            fine,
            asked: Default::default(),
        }
    }
}

#[async_trait]
impl Tool for PanicsInParameters {
    fn name(&self) -> &str {
        "fragile"
    }
    fn description(&self) -> &str {
        "its schema is built by code that panics"
    }
    fn parameters(&self) -> Value {
        let asked = self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert!(asked < self.fine, "no schema today");
        json!({"type": "object", "properties": {}})
    }
    async fn call(&self, _args: Value) -> fusion_core::Result<String> {
        Ok("fragile ran".into())
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

/// A session of the harness with a [`Changing`] source offering `names`, and the source.
async fn with_source_offering(h: &Harness, names: &[&str]) -> (Arc<Changing>, AgentSession) {
    let source = Arc::new(Changing::default());
    source.offer(names);
    let loaded = source.clone();
    let session = h
        .builder()
        .tool_sources_from(async move { Ok(vec![loaded as Arc<dyn ToolSource>]) })
        .build()
        .await
        .unwrap();
    (source, session)
}

#[tokio::test]
async fn a_source_joins_at_build_and_its_changes_reach_the_next_request() {
    let h = Harness::new().await;
    let (source, mut session) = with_source_offering(&h, &["srv__one"]).await;
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

/// A session of the harness offering `tool` only.
fn with_tool(h: &Harness, tool: impl Tool + 'static) -> fusion_agent::SessionBuilder {
    fusion_agent::AgentSession::builder(common::SESSION)
        .llm(Arc::new(common::client(&h.server)))
        .storage(h.storage.clone())
        .tools(fusion_agent::ToolRegistry::new().with(tool))
}

/// Checks that `err` is the config error naming [`PanicsInParameters`] and its panic.
fn assert_names_fragile(err: &Error) {
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("tool `fragile` could not"), "{text}");
    assert!(text.contains("panicked: no schema today"), "{text}");
}

/// Found by a review: a hand-written tool whose `parameters` panicked, while the tool list
/// of a request was built, panicked through the caller (the build, or a turn once a
/// source's tools changed). It is an error naming the tool now, and a turn stores nothing.
#[tokio::test]
async fn a_tool_whose_definition_panics_fails_the_build_or_turn_naming_it() {
    let h = Harness::new().await;
    let err = with_tool(&h, PanicsInParameters::after(0))
        .build()
        .await
        .unwrap_err();
    assert_names_fragile(&err);

    let (source, mut session) = with_source_offering(&h, &["srv__one"]).await;
    source.offer_tools(vec![Arc::new(PanicsInParameters::after(0))]);
    let err = session.send_message("use it").await.unwrap_err();
    assert_names_fragile(&err);
    assert_eq!(h.server.request_count(), 0);
    assert!(h.stored().await.is_empty(), "nothing of the turn stored");
    // Its request view (which cannot fail) goes on with the tools it had.
    let _view = session.request_view();
    // Nothing is left half-changed: once the source is fixed, the next turn offers it.
    source.offer(&["srv__two"]);
    h.server.push_text("fixed");
    assert_eq!(session.send_message("again").await.unwrap().result, "fixed");
    assert_eq!(
        offered(&h.server.requests()[0]).last().map(String::as_str),
        Some("srv__two")
    );
    assert_eq!(
        common::contents(&h.stored().await),
        ["You are a test agent.", "again", "fixed"]
    );
}

/// Asked again for each call, a `parameters` that panics then fails that call only.
#[tokio::test]
async fn a_tool_whose_parameters_panic_at_a_call_fails_that_call() {
    let h = Harness::new().await;
    let mut session = with_tool(&h, PanicsInParameters::after(1))
        .build()
        .await
        .unwrap();
    h.server.push_tool_call("fragile", "{}").push_text("done");
    let result = session.send_message("use it").await.unwrap();
    assert_eq!(result.result, "done");
    let observation = &result.steps[0].observation;
    assert!(
        observation.contains("tool `fragile` crashed when asked for its parameters"),
        "{observation}"
    );
}

/// A source whose `tools` panics.
struct PanicsInTools;

impl ToolSource for PanicsInTools {
    fn source_name(&self) -> &str {
        "broken"
    }
    fn tools(&self) -> Arc<[Arc<dyn Tool>]> {
        panic!("no tools today")
    }
    fn revision(&self) -> u64 {
        0
    }
}

/// Found by a review: a source whose `tools` panicked failed the build with an error
/// blaming a tool's `name`; it names the source now.
#[tokio::test]
async fn a_source_whose_tools_panic_fails_the_build_naming_it() {
    let h = Harness::new().await;
    let err = h
        .builder()
        .tool_sources_from(async { Ok(vec![Arc::new(PanicsInTools) as Arc<dyn ToolSource>]) })
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("tool source `broken`"), "{text}");
    assert!(text.contains("panicked: no tools today"), "{text}");
}

/// Found by a review: two tools offered under one name (`a.b` is offered as `a_b_<hash>`,
/// and another tool may be named that form) were refused when the session was built, but
/// not when a source's tools changed: the request offered one name twice, and every call
/// of it ran the tool named so outright, whichever the model meant. Such a change now
/// fails the turn naming both, before anything is stored or asked, until it is undone.
#[tokio::test]
async fn a_source_change_offering_two_tools_alike_fails_the_turn_naming_both() {
    let h = Harness::new().await;
    let (source, mut session) = with_source_offering(&h, &["srv.dotted"]).await;
    h.server.push_text("first");
    session.send_message("hello").await.unwrap();
    let sent = offered(&h.server.requests()[0]).last().unwrap().clone();
    assert!(sent.starts_with("srv_dotted_"), "{sent}");

    source.offer(&["srv.dotted", &sent]);
    let err = session.send_message("use it").await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let text = err.to_string();
    for named in ["`srv.dotted`", &format!("`{sent}`"), "rename one"] {
        assert!(text.contains(named), "{named}: {text}");
    }
    assert_eq!(h.server.request_count(), 1, "nothing asked");
    assert_eq!(
        common::contents(&h.stored().await),
        ["You are a test agent.", "hello", "first"],
        "nothing of the turn stored"
    );

    source.offer(&["srv.dotted"]);
    h.server.push_text("fine");
    assert_eq!(session.send_message("again").await.unwrap().result, "fine");
}

/// Found by a review: the text ReAct mode failed every turn once a source offered two
/// tools whose names are offered alike as native tools, and its prompt kept the tools as
/// they were before the change; it writes the names as they are, so it takes them.
#[tokio::test]
async fn a_source_change_offering_two_tools_alike_natively_is_taken_in_text_mode() {
    let h = Harness::new().await;
    // The form `srv.dotted` is offered under natively, as a native session offers it.
    let (_, mut native) = with_source_offering(&h, &["srv.dotted"]).await;
    h.server.push_text("first");
    native.send_message("hello").await.unwrap();
    let sent = offered(&h.server.requests()[0]).last().unwrap().clone();

    let source = Arc::new(Changing::default());
    source.offer(&["srv.dotted"]);
    let loaded = source.clone();
    let mut session = AgentSession::builder("text-user")
        .llm(Arc::new(common::text_client(&h.server)))
        .storage(h.storage.clone())
        .tools(fusion_agent::ToolRegistry::new())
        .tool_sources_from(async move { Ok(vec![loaded as Arc<dyn ToolSource>]) })
        .build()
        .await
        .unwrap();
    source.offer(&["srv.dotted", &sent]);
    h.server
        .push_text(format!("Action: {sent}\nAction Input: {{}}"))
        .push_text("Final Answer: done");
    let answer = session.send_message("use it").await.unwrap();
    assert_eq!(answer.result, "done");
    assert_eq!(answer.steps[0].observation, format!("{sent} ran"));
    let system = h.request_messages(1)[0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        system.contains(&sent),
        "the prompt offers the new tool: {system}"
    );
}

/// Asked by a review of cfd9346: a native session the model's refusal of native tools
/// switched to text mode takes two tools offered alike natively once a source offers
/// them (it never offers tools natively again); the same session opened anew, with the
/// same client and so native again, is refused at build naming both.
#[tokio::test]
async fn a_session_switched_to_text_mode_takes_two_tools_alike_until_opened_natively_again() {
    let h = Harness::new().await;
    let (source, mut session) = with_source_offering(&h, &["srv.dotted"]).await;
    h.server.push_text("first");
    session.send_message("hello").await.unwrap();
    let sent = offered(&h.server.requests()[0]).last().unwrap().clone();

    h.server
        .reject_tools(true)
        .push_text("Final Answer: switched");
    let answer = session.send_message("again").await.unwrap();
    assert_eq!(answer.result, "switched");
    assert!(session.uses_text_react());

    source.offer(&["srv.dotted", &sent]);
    h.server
        .push_text(format!("Action: {sent}\nAction Input: {{}}"))
        .push_text("Final Answer: done");
    let answer = session.send_message("use it").await.unwrap();
    assert_eq!(answer.result, "done");
    assert_eq!(answer.steps[0].observation, format!("{sent} ran"));

    let loaded = source.clone();
    let err = h
        .builder()
        .tool_sources_from(async move { Ok(vec![loaded as Arc<dyn ToolSource>]) })
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let text = err.to_string();
    for named in ["`srv.dotted`", &format!("`{sent}`"), "rename one"] {
        assert!(text.contains(named), "{named}: {text}");
    }
}
