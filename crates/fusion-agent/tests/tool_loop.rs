//! The tool loop end to end over HTTP: tool calls run and their results reach the model,
//! model mistakes become observations, the iteration limit, and turns cancelled mid-flight.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::cancelled::{Stuck, assert_answered_as_interrupted, cancel_once_its_tool_runs};
use common::{
    HANG_GUARD, Harness, Spy, assert_every_call_answered, assert_history_consistent, client, roles,
};
use fusion_agent::testing::MockReply;
use fusion_agent::{AgentEvent, TaskResult, Tool, ToolRegistry};
use fusion_core::Role;
use serde_json::{Value, json};
use tokio::sync::Notify;

#[tokio::test]
async fn a_tool_call_runs_its_result_reaches_the_model_and_steps_record_it() {
    let h = Harness::new().await;
    std::fs::write(h.workspace.path().join("notes.txt"), "buy milk").unwrap();
    let mut session = h.session().await;
    h.server
        .push_tool_call("read_file", r#"{"path": "notes.txt"}"#)
        .push_text("Your notes say: buy milk.");
    let result = session.send_message("What do my notes say?").await.unwrap();

    assert!(result.success);
    assert_eq!(result.result, "Your notes say: buy milk.");
    assert_eq!(result.iterations, 2);
    assert_eq!(result.steps.len(), 1);
    let step = &result.steps[0];
    assert_eq!(step.tool, "read_file");
    assert_eq!(step.arguments, r#"{"path": "notes.txt"}"#);
    assert_eq!(step.observation, "buy milk");
    assert!(step.success);
    assert_eq!(step.iteration, 1);

    let first = h.server.requests()[0].clone();
    let offered: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        offered,
        ["read_file", "write_file", "list_directory", "delete_file"]
    );
    let second = h.request_messages(1);
    assert_eq!(roles(&second), ["system", "user", "assistant", "tool"]);
    assert_eq!(second[3]["content"], "buy milk");
    assert_eq!(second[3]["tool_call_id"], second[2]["tool_calls"][0]["id"]);
}

/// The observer hears each call of a reply start, then each finish with the step the turn
/// reports, failures included, then the end of each iteration and of the turn.
#[tokio::test]
async fn the_event_observer_sees_each_call_start_and_finish() {
    let h = Harness::new().await;
    std::fs::write(h.workspace.path().join("a.txt"), "A").unwrap();
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    let mut session = h
        .builder()
        .on_event(move |event| {
            let line = match event {
                AgentEvent::ToolCallStarted {
                    iteration,
                    tool,
                    arguments,
                } => {
                    format!("start {iteration} {tool} {arguments}")
                }
                AgentEvent::ToolCallFinished(step) => {
                    format!("finish {} {} {}", step.tool, step.observation, step.success)
                }
                AgentEvent::IterationFinished {
                    iteration,
                    tool_calls,
                } => format!("iteration {iteration} {tool_calls}"),
                AgentEvent::TextDelta { text, .. } => format!("text {text}"),
                AgentEvent::Finished(result) => format!("finished {}", result.result),
                // The mock server reports usage; token counts are not this test's subject.
                AgentEvent::Usage { .. } => return,
                other => format!("unexpected {other:?}"),
            };
            seen.lock().unwrap().push(line);
        })
        .build()
        .await
        .unwrap();
    h.server
        .push_tool_calls([
            ("read_file", r#"{"path": "a.txt"}"#),
            ("read_file", r#"{"path": "missing.txt"}"#),
        ])
        .push_text("done");
    let result = session
        .send_message("Read a.txt and missing.txt")
        .await
        .unwrap();
    assert_eq!(result.steps.len(), 2);

    let events = events.lock().unwrap().clone();
    assert_eq!(events.len(), 8, "{events:?}");
    assert_eq!(events[0], r#"start 1 read_file {"path": "a.txt"}"#);
    assert_eq!(events[1], r#"start 1 read_file {"path": "missing.txt"}"#);
    assert_eq!(events[2], "finish read_file A true");
    assert!(
        events[3].starts_with("finish read_file Error:") && events[3].ends_with("false"),
        "{events:?}"
    );
    assert_eq!(
        events[4..],
        [
            "iteration 1 2",
            "text done",
            "iteration 2 0",
            "finished done"
        ]
    );
}

#[tokio::test]
async fn several_calls_in_one_message_all_run_and_answer_in_call_order() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    h.server
        .push_tool_calls([
            ("write_file", r#"{"path": "a.txt", "content": "A"}"#),
            ("write_file", r#"{"path": "b.txt", "content": "B"}"#),
        ])
        .push_text("Both written.");
    let result = session.send_message("Write a.txt and b.txt").await.unwrap();
    assert_eq!(result.steps.len(), 2);
    assert!(result.steps.iter().all(|s| s.success));
    assert_eq!(
        std::fs::read_to_string(h.workspace.path().join("b.txt")).unwrap(),
        "B"
    );
    let second = h.request_messages(1);
    assert_eq!(
        roles(&second),
        ["system", "user", "assistant", "tool", "tool"]
    );
    let calls = second[2]["tool_calls"].as_array().unwrap();
    assert_eq!(second[3]["tool_call_id"], calls[0]["id"]);
    assert_eq!(second[4]["tool_call_id"], calls[1]["id"]);
}

#[tokio::test]
async fn malformed_arguments_and_unknown_tools_become_observations_and_the_loop_goes_on() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    h.server
        .push_tool_call("read_file", r#"{"path": "a.txt""#)
        .push_tool_call("read_file", r#"{"file": "a.txt"}"#)
        .push_tool_call("launch_rockets", "{}")
        .push_text("I could not do it.");
    let result = session.send_message("Read a.txt").await.unwrap();

    assert!(result.success);
    assert_eq!(result.steps.len(), 3);
    assert!(result.steps.iter().all(|s| !s.success));
    assert_eq!(result.steps[0].arguments, r#"{"path": "a.txt""#);
    let observations: Vec<&str> = result
        .steps
        .iter()
        .map(|s| s.observation.as_str())
        .collect();
    assert!(
        observations[0].contains("not valid JSON"),
        "{}",
        observations[0]
    );
    assert!(
        observations[1].contains("missing required property `path`"),
        "{}",
        observations[1]
    );
    assert!(
        observations[2].contains("no tool named `launch_rockets`")
            && observations[2].contains("read_file, write_file, list_directory, delete_file"),
        "{}",
        observations[2]
    );
    // The model saw each explanation.
    let last = h.request_messages(3);
    let tool_results: Vec<&str> = last
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(tool_results, observations);
}

/// A tool that greets whoever it is given.
struct Greet;

#[async_trait]
impl Tool for Greet {
    fn name(&self) -> &str {
        "greet"
    }
    fn description(&self) -> &str {
        "says hello"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {"name": {"type": "string"}}})
    }
    async fn call(&self, args: Value) -> fusion_core::Result<String> {
        Ok(format!("Hello, {}", args["name"].as_str().unwrap_or("you")))
    }
}

/// A reply stopped by the output token limit may end inside its last call, whatever its
/// arguments look like on arrival: empty, left out or `null` (read as `{}`), or JSON a
/// server closed. That call is not run (the model is told it was cut) and the turn goes
/// on; a complete call before it in the same reply runs.
#[tokio::test]
async fn the_last_call_of_a_reply_cut_by_the_token_limit_is_answered_not_run() {
    let last_calls = [
        json!({"name": "stuck", "arguments": ""}),
        json!({"name": "stuck"}),
        json!({"name": "stuck", "arguments": null}),
        json!({"name": "stuck", "arguments": "{}"}),
    ];
    for function in last_calls {
        let h = Harness::new().await;
        let started = Arc::new(Notify::new());
        let tools = ToolRegistry::new()
            .with(Stuck::new(started.clone()))
            .with(Greet);
        let mut session = fusion_agent::AgentSession::builder(common::SESSION)
            .llm(Arc::new(client(&h.server)))
            .storage(h.storage.clone())
            .tools(tools)
            .build()
            .await
            .unwrap();
        let body = json!({
            "id": "chatcmpl-cut",
            "object": "chat.completion",
            "model": "mock-model",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function",
                     "function": {"name": "greet", "arguments": "{\"name\": \"Ada\"}"}},
                    {"id": "call_b", "type": "function", "function": function},
                ]},
                "finish_reason": "length",
            }],
        });
        h.server
            .push(MockReply::Raw {
                status: 200,
                body: body.to_string(),
            })
            .push_text("Done.");
        let result = tokio::time::timeout(HANG_GUARD, session.send_message("Greet, then wait"))
            .await
            .unwrap_or_else(|_| panic!("the cut call {function} ran (the tool never returns)"))
            .unwrap();

        assert!(result.success);
        assert_eq!(result.steps.len(), 2);
        assert!(result.steps[0].success, "{:?}", result.steps[0]);
        assert_eq!(result.steps[0].observation, "Hello, Ada");
        let cut = &result.steps[1];
        assert!(!cut.success);
        assert!(
            cut.observation.contains("not run") && cut.observation.contains("output token limit"),
            "{}",
            cut.observation
        );
        let request = h.request_messages(1);
        assert_every_call_answered(&request);
        assert_history_consistent(&h.stored().await);
    }
}

#[tokio::test]
async fn the_iteration_limit_stops_the_turn_with_steps_and_a_consistent_history() {
    let h = Harness::new().await;
    let mut session = h.builder().max_iterations(3).build().await.unwrap();
    h.server
        .set_default(MockReply::tool_call("list_directory", r#"{"path": "."}"#));
    let result = session.send_message("Loop forever").await.unwrap();

    assert!(!result.success);
    assert!(result.result.contains("3 iterations"), "{}", result.result);
    assert_eq!(result.steps.len(), 3);
    assert_eq!(result.iterations, 3);
    assert_eq!(h.server.request_count(), 3);
    let stored = h.stored().await;
    assert_history_consistent(&stored);
    assert_eq!(stored.last().unwrap().role, Role::Tool);

    // The next turn can go on from there, with a per-call limit.
    h.server.push_text("Done now.");
    let result = session
        .send_message_with_iterations("Stop and answer", 1)
        .await
        .unwrap();
    assert!(result.success);
    assert_every_call_answered(&h.request_messages(3));
}

#[tokio::test]
async fn a_turn_cancelled_while_its_tool_runs_leaves_a_history_the_next_turn_can_send() {
    let h = Harness::new().await;
    let started = Arc::new(Notify::new());
    let tools = ToolRegistry::new().with(Stuck::new(started.clone()));
    let llm = Arc::new(client(&h.server));
    let mut session = fusion_agent::AgentSession::builder(common::SESSION)
        .llm(llm)
        .storage(h.storage.clone())
        .tools(tools)
        .build()
        .await
        .unwrap();
    h.server.push_tool_call("stuck", "{}");
    cancel_once_its_tool_runs(&mut session, "Do the stuck thing", &started).await;
    let stored = h.stored().await;
    assert_eq!(stored.last().unwrap().role, Role::Assistant);
    assert!(stored.last().unwrap().has_tool_calls());

    h.server.push_text("Sorry about that.");
    let result = session.send_message("Are you there?").await.unwrap();
    assert!(result.success);
    let request = h.request_messages(1);
    assert_every_call_answered(&request);
    assert_eq!(
        roles(&request),
        ["system", "user", "assistant", "tool", "user"]
    );
    assert!(
        request[3]["content"]
            .as_str()
            .unwrap()
            .contains("interrupted")
    );
    // The repair was stored too, so storage itself is consistent again.
    assert_history_consistent(&h.stored().await);
    assert_eq!(h.stored().await.len(), 6);
}

#[tokio::test]
async fn a_reopened_session_repairs_a_dangling_tool_call_in_its_first_request() {
    let h = Harness::new().await;
    let started = Arc::new(Notify::new());
    let open = |started: Arc<Notify>| {
        fusion_agent::AgentSession::builder(common::SESSION)
            .llm(Arc::new(client(&h.server)))
            .storage(h.storage.clone())
            .tools(ToolRegistry::new().with(Stuck::new(started)))
            .build()
    };
    let mut crashed = open(started.clone()).await.unwrap();
    h.server.push_tool_call("stuck", "{}");
    tokio::select! {
        _ = crashed.send_message("go") => panic!("the turn should hang"),
        _ = started.notified() => {}
    }
    drop(crashed);

    let mut reopened = open(started).await.unwrap();
    assert_eq!(reopened.message_count(), 3);
    let view = reopened.request_view();
    assert_eq!(view.len(), 4, "the view answers the dangling call");
    drop(view);
    h.server.push_text("Recovered.");
    reopened.send_message("and now?").await.unwrap();
    assert_every_call_answered(&h.request_messages(1));
}

#[tokio::test]
async fn a_turn_cancelled_while_the_model_thinks_keeps_everything_already_said() {
    let h = Harness::new().await;
    let spy = Arc::new(Spy::new(Arc::new(client(&h.server)), h.storage.clone()).hanging_on(2));
    let mut session = common::builder(spy.clone(), h.storage.clone(), h.workspace.path())
        .build()
        .await
        .unwrap();
    h.server.push_tool_call("list_directory", "{}");
    tokio::time::timeout(HANG_GUARD, async {
        tokio::select! {
            _ = session.send_message("What is here?") => panic!("the turn should hang"),
            _ = spy.hanging.notified() => {}
        }
    })
    .await
    .unwrap();
    let stored = h.stored().await;
    let stored_roles: Vec<Role> = stored.iter().map(|m| m.role).collect();
    assert_eq!(
        stored_roles,
        [Role::System, Role::User, Role::Assistant, Role::Tool]
    );

    h.server.push_text("It is empty.");
    let result = session.send_message("Well?").await.unwrap();
    assert_eq!(result.result, "It is empty.");
    let request = h.request_messages(1);
    assert_every_call_answered(&request);
    assert_eq!(
        roles(&request),
        ["system", "user", "assistant", "tool", "user"]
    );
}

#[tokio::test]
async fn a_text_mode_action_cancelled_while_its_tool_runs_is_answered_as_interrupted() {
    let h = Harness::new().await;
    let started = Arc::new(Notify::new());
    let tools = ToolRegistry::new().with(Stuck::new(started.clone()));
    let mut session = fusion_agent::AgentSession::builder(common::SESSION)
        .llm(Arc::new(common::text_client(&h.server)))
        .storage(h.storage.clone())
        .tools(tools)
        .build()
        .await
        .unwrap();
    h.server
        .push_text("Thought: try it.\nAction: stuck\nAction Input: {}");
    cancel_once_its_tool_runs(&mut session, "Do the stuck thing", &started).await;
    assert_eq!(h.stored().await.last().unwrap().role, Role::Assistant);

    h.server
        .push_text("Thought: it stopped.\nFinal Answer: Sorry about that.");
    let result = session.send_message("Are you there?").await.unwrap();
    assert!(result.success);
    // Stored too, and read as the action's observation: undo takes the new turn only.
    assert_answered_as_interrupted(&h, &mut session, "stuck", "Are you there?").await;
}

/// Ollama writes the arguments of a call without any as `null` (Go's empty map). That is
/// a call with no arguments, run as one, not an error the model cannot fix (it does not
/// choose how the server writes its calls).
#[tokio::test]
async fn a_call_whose_arguments_are_null_runs_with_none() {
    let h = Harness::new().await;
    std::fs::write(h.workspace.path().join("a.txt"), "a").unwrap();
    let mut session = h.session().await;
    h.server
        .push_tool_call("list_directory", "null")
        .push_text("There is a.txt.");
    let result = session.send_message("What is here?").await.unwrap();
    assert_eq!(result.steps.len(), 1);
    let step = &result.steps[0];
    assert!(step.success, "{}", step.observation);
    assert!(step.observation.contains("a.txt"), "{}", step.observation);
    assert_eq!(step.arguments, "null");
}

/// Found by a hunt: a server that encodes a call's arguments twice (a JSON string holding
/// the object, `"{\"path\": \"a.txt\"}"` as text) had every call refused as "expected a
/// JSON object but got a string", which the model cannot fix: it does not choose how the
/// server writes its calls. The object inside is run, as the model meant it.
#[tokio::test]
async fn a_call_whose_arguments_are_encoded_twice_runs_with_the_object_inside() {
    let (_harness, twice, result) = a_call_encoded_twice_then_a_bare_string().await;
    assert_eq!(result.steps.len(), 2);
    let step = &result.steps[0];
    assert!(step.success, "{}", step.observation);
    assert!(
        step.observation.contains("inside a"),
        "{}",
        step.observation
    );
    assert_eq!(step.arguments, twice, "stored as the server sent them");
    // A string that holds no object is still refused, naming what was wrong.
    let refused = &result.steps[1];
    assert!(!refused.success);
    assert!(
        refused
            .observation
            .contains("expected a JSON object but got a string"),
        "{}",
        refused.observation
    );
}

/// Found by a review of fdad962: a call whose arguments a server encoded twice runs with
/// the object inside, but later requests sent it back with `{}` (what goes for arguments
/// that are no JSON object), so the model read that `read_file` with no path had answered
/// with the file. It goes back with the object that ran; the session stores the text as
/// the server sent it, and a string holding no object still goes as `{}`.
#[tokio::test]
async fn a_call_encoded_twice_is_sent_back_with_the_object_that_ran() {
    let (h, twice, result) = a_call_encoded_twice_then_a_bare_string().await;
    assert!(result.steps[0].success, "{}", result.steps[0].observation);
    let sent = h.request_messages(2);
    let arguments: Vec<&str> = sent
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| {
            m["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(arguments, [r#"{"path": "a.txt"}"#, "{}"]);
    let stored: Vec<String> = h
        .stored()
        .await
        .iter()
        .flat_map(|m| m.tool_calls.iter().map(|call| call.arguments.clone()))
        .collect();
    assert_eq!(stored, [twice.as_str(), r#""a.txt""#]);
}

/// The turn both tests above read: `read_file` called with its arguments encoded twice
/// (a JSON string holding the object), then with a bare string holding no object, then
/// the answer. Returns the harness, the first call's arguments as sent, and the turn.
async fn a_call_encoded_twice_then_a_bare_string() -> (Harness, String, TaskResult) {
    let h = Harness::new().await;
    std::fs::write(h.workspace.path().join("a.txt"), "inside a").unwrap();
    let mut session = h.session().await;
    let twice = serde_json::to_string(r#"{"path": "a.txt"}"#).unwrap();
    h.server
        .push_tool_call("read_file", twice.clone())
        .push_tool_call("read_file", r#""a.txt""#)
        .push_text("It says inside a.");
    let result = session.send_message("Read a.txt").await.unwrap();
    (h, twice, result)
}

/// A tool written without `async_trait` whose `call` panics before it makes its future
/// (an argument unwrapped up front, say).
struct PanicsAtOnce;

impl Tool for PanicsAtOnce {
    fn name(&self) -> &str {
        "panics_at_once"
    }
    fn description(&self) -> &str {
        "panics as soon as it is called"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}})
    }
    fn call<'a, 'b>(
        &'a self,
        _args: Value,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = fusion_core::Result<String>> + Send + 'b>>
    where
        'a: 'b,
    {
        panic!("no argument to unwrap")
    }
}

/// A tool's panic is an observation, like any failure of the tool, also when it panics
/// in `call` itself, before its future exists: the turn goes on, the other call of the
/// reply keeps its result, and the model reads what happened.
#[tokio::test]
async fn a_tool_that_panics_before_its_future_exists_is_an_observation() {
    let h = Harness::new().await;
    let mut session = fusion_agent::AgentSession::builder(common::SESSION)
        .llm(Arc::new(client(&h.server)))
        .storage(h.storage.clone())
        .tools(ToolRegistry::new().with(PanicsAtOnce).with(Greet))
        .build()
        .await
        .unwrap();
    h.server
        .push_tool_calls([("panics_at_once", "{}"), ("greet", r#"{"name": "Ada"}"#)])
        .push_text("The first tool crashed.");
    let result = session.send_message("go").await.unwrap();
    assert!(result.success);
    assert_eq!(result.result, "The first tool crashed.");
    let observations: Vec<&str> = result
        .steps
        .iter()
        .map(|s| s.observation.as_str())
        .collect();
    assert_eq!(
        observations,
        [
            "Error: tool `panics_at_once` crashed (panicked: no argument to unwrap); its \
             result is unknown.",
            "Hello, Ada",
        ]
    );
    assert_history_consistent(&h.stored().await);
    assert_every_call_answered(&h.request_messages(1));
}

/// A server that numbers each reply's calls afresh (`call_0` in every reply, as some
/// proxies of Kimi's API and local servers do): the second reply's call gets an id of its
/// own, so no two calls of the session share one and each result answers its own call.
#[tokio::test]
async fn a_call_id_an_earlier_reply_used_is_replaced() {
    use fusion_agent::testing::MockToolCall;

    let h = Harness::new().await;
    std::fs::write(h.workspace.path().join("a.txt"), "A").unwrap();
    std::fs::write(h.workspace.path().join("b.txt"), "B").unwrap();
    let mut session = h.session().await;
    let call_0 = |path: &str| MockReply::ToolCalls {
        content: String::new(),
        calls: vec![MockToolCall {
            id: Some("call_0".into()),
            ..MockToolCall::new("read_file", format!(r#"{{"path": "{path}"}}"#))
        }],
    };
    h.server
        .push(call_0("a.txt"))
        .push(call_0("b.txt"))
        .push_text("A and B.");
    let result = session
        .send_message("Read a.txt, then b.txt.")
        .await
        .unwrap();
    assert_eq!(result.result, "A and B.");

    let last = h.request_messages(2);
    assert_eq!(
        roles(&last),
        ["system", "user", "assistant", "tool", "assistant", "tool"]
    );
    let (first_id, second_id) = (
        &last[2]["tool_calls"][0]["id"],
        &last[4]["tool_calls"][0]["id"],
    );
    assert_eq!(first_id, "call_0", "the first use is kept");
    assert_ne!(second_id, first_id);
    assert_eq!(last[3]["tool_call_id"], *first_id);
    assert_eq!(last[3]["content"], "A");
    assert_eq!(last[5]["tool_call_id"], *second_id);
    assert_eq!(last[5]["content"], "B");
    assert_every_call_answered(&last);
    assert_history_consistent(&h.stored().await);
}
