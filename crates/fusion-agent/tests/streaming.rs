//! `AgentSession::send_message_stream`: events in order, the same turn as `send_message`,
//! text ReAct answers streamed without their reasoning, the switch to text ReAct when a
//! model rejects tools, and cancellation at every point of a turn leaving a history the next
//! turn can send, with nothing duplicated. Against the real `OpenAiClient` streaming from
//! the loopback mock server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{Harness, SESSION, assert_every_call_answered, client, contents, text_client};
use fusion_agent::testing::{MockDelta, MockReply, MockStreamEnd};
use fusion_agent::{AgentEvent, SessionBuilder, TaskResult, Tool, ToolRegistry, TurnStream};
use fusion_core::{ConversationStorage, Result, Role};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// Never reached when the code works: turns a hang into a failure.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Every event of a turn until it ends, and its result.
async fn collect(mut events: TurnStream<'_>) -> (Vec<AgentEvent>, Result<TaskResult>) {
    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(AgentEvent::Finished(result)) => {
                assert!(events.next().await.is_none(), "nothing follows Finished");
                return (seen, Ok(result));
            }
            Ok(event) => seen.push(event),
            Err(error) => {
                assert!(events.next().await.is_none(), "nothing follows an error");
                return (seen, Err(error));
            }
        }
    }
    panic!("the stream ended without Finished or an error: {seen:?}");
}

/// Polls `events` until `found` accepts one (panics if the turn ends first).
async fn until(events: &mut TurnStream<'_>, found: impl Fn(&AgentEvent) -> bool) -> AgentEvent {
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            match events.next().await {
                Some(Ok(event)) if found(&event) => return event,
                Some(Ok(AgentEvent::Finished(result))) => panic!("the turn ended: {result:?}"),
                Some(Ok(_)) => {}
                Some(Err(error)) => panic!("the turn failed: {error}"),
                None => panic!("the stream ended"),
            }
        }
    })
    .await
    .expect("the awaited event never came")
}

fn text_of(events: &[AgentEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            AgentEvent::TextDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// A short name for each event, for asserting the order.
fn kinds(events: &[AgentEvent]) -> Vec<&'static str> {
    let mut kinds: Vec<&'static str> = Vec::new();
    for event in events {
        let kind = match event {
            AgentEvent::TextDelta { .. } => "text",
            AgentEvent::ToolCallStarted { .. } => "started",
            AgentEvent::ToolCallFinished(_) => "finished",
            AgentEvent::Usage { .. } => "usage",
            AgentEvent::IterationFinished { .. } => "iteration",
            AgentEvent::SwitchedToTextReact { .. } => "switched",
            AgentEvent::Finished(_) => "done",
            _ => "other",
        };
        // Consecutive text deltas read as one: how many there are is the server's choice.
        if !(kind == "text" && kinds.last() == Some(&"text")) {
            kinds.push(kind);
        }
    }
    kinds
}

#[tokio::test]
async fn a_streamed_turn_reports_text_as_it_comes_then_the_result() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    h.server
        .push_text("The capital of France is Paris, of course.");
    let (events, result) = collect(session.send_message_stream("Capital of France?")).await;
    let result = result.unwrap();

    let deltas = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::TextDelta { .. }))
        .count();
    assert!(deltas > 1, "the mock streams word by word: {events:?}");
    assert_eq!(text_of(&events), result.result);
    assert_eq!(kinds(&events), ["text", "usage", "iteration"]);
    assert_eq!(result.result, "The capital of France is Paris, of course.");
    assert!(result.success);
    let usage = result.usage.expect("the mock reports usage when asked to");
    assert!(usage.total_tokens > 0);

    let request = &h.server.requests()[0];
    assert_eq!(request["stream"], true);
    assert_eq!(request["stream_options"]["include_usage"], true);
    assert_eq!(
        contents(&h.stored().await),
        [
            "You are a test agent.",
            "Capital of France?",
            "The capital of France is Paris, of course."
        ]
    );
}

#[tokio::test]
async fn tool_calls_stream_as_started_and_finished_and_usage_sums_over_the_turn() {
    let h = Harness::new().await;
    std::fs::write(h.workspace.path().join("a.txt"), "A").unwrap();
    let mut session = h.session().await;
    h.server
        .push_tool_calls([
            ("read_file", r#"{"path": "a.txt"}"#),
            ("list_directory", "{}"),
        ])
        .push_text("Read it.");
    let (events, result) = collect(session.send_message_stream("Read a.txt")).await;
    let result = result.unwrap();

    assert_eq!(
        kinds(&events),
        [
            "usage",
            "started",
            "started",
            "finished",
            "finished",
            "iteration",
            "text",
            "usage",
            "iteration"
        ]
    );
    let AgentEvent::ToolCallStarted {
        iteration,
        tool,
        arguments,
    } = &events[1]
    else {
        panic!("{events:?}")
    };
    assert_eq!((*iteration, tool.as_str()), (1, "read_file"));
    assert_eq!(arguments, r#"{"path": "a.txt"}"#);
    assert!(matches!(
        &events[5],
        AgentEvent::IterationFinished {
            iteration: 1,
            tool_calls: 2
        }
    ));
    assert_eq!(result.steps.len(), 2);
    assert_eq!(result.steps[0].observation, "A");

    let per_request: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Usage { usage, .. } => Some(usage.total_tokens),
            _ => None,
        })
        .collect();
    assert_eq!(per_request.len(), 2);
    assert_eq!(
        result.usage.unwrap().total_tokens,
        per_request.iter().sum::<u32>()
    );
    // The reply's calls arrived in pieces over the stream and were stored whole.
    let stored = h.stored().await;
    assert_eq!(stored[2].tool_calls.len(), 2);
    assert_eq!(stored[2].tool_calls[0].arguments, r#"{"path": "a.txt"}"#);
}

#[tokio::test]
async fn send_message_is_the_stream_collected() {
    let streamed = Harness::new().await;
    let collected = Harness::new().await;
    for h in [&streamed, &collected] {
        std::fs::write(h.workspace.path().join("a.txt"), "A").unwrap();
        h.server
            .push_tool_call("read_file", r#"{"path": "a.txt"}"#)
            .push_text("It says A.");
    }
    let mut session = streamed.session().await;
    let (_, from_stream) = collect(session.send_message_stream("What is in a.txt?")).await;
    let mut session = collected.session().await;
    let from_send = session.send_message("What is in a.txt?").await.unwrap();

    let from_stream = from_stream.unwrap();
    assert_eq!(from_stream.result, from_send.result);
    assert_eq!(from_stream.iterations, from_send.iterations);
    assert_eq!(from_stream.steps.len(), from_send.steps.len());
    assert_eq!(
        without_ids(streamed.stored().await),
        without_ids(collected.stored().await)
    );
    assert_eq!(streamed.server.requests(), collected.server.requests());
}

#[tokio::test]
async fn streamed_requests_reuse_one_connection() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    h.server
        .push_tool_call("list_directory", "{}")
        .push_text("Nothing much.")
        .push_text("Still nothing.");
    session.send_message("What is here?").await.unwrap();
    session.send_message("And now?").await.unwrap();
    assert_eq!(h.server.request_count(), 3);
    // A streamed reply leaves its connection reusable, as a whole one does.
    assert_eq!(h.server.connection_count(), 1);
}

#[tokio::test]
async fn a_stream_a_proxy_buffered_into_one_body_reads_the_same() {
    let chunked = Harness::new().await;
    let buffered = Harness::new().await;
    buffered.server.buffer_streams(true);
    for h in [&chunked, &buffered] {
        std::fs::write(h.workspace.path().join("a.txt"), "A").unwrap();
        h.server
            .push_tool_call("read_file", r#"{"path": "a.txt"}"#)
            .push_text("It says A, as the file shows.");
    }
    let mut session = chunked.session().await;
    let (chunked_events, chunked_result) = collect(session.send_message_stream("a.txt?")).await;
    let mut session = buffered.session().await;
    let (buffered_events, buffered_result) = collect(session.send_message_stream("a.txt?")).await;

    let (chunked_result, buffered_result) = (chunked_result.unwrap(), buffered_result.unwrap());
    assert_eq!(buffered_result.result, "It says A, as the file shows.");
    assert_eq!(buffered_result.result, chunked_result.result);
    // The same events, except that the text arrives in one piece instead of word by word.
    assert_eq!(text_of(&buffered_events), text_of(&chunked_events));
    let without_text = |events: &[AgentEvent]| {
        kinds(events)
            .into_iter()
            .filter(|kind| *kind != "text")
            .collect::<Vec<_>>()
    };
    assert_eq!(
        without_text(&buffered_events),
        without_text(&chunked_events)
    );
    assert_eq!(
        without_ids(buffered.stored().await),
        without_ids(chunked.stored().await)
    );
}

#[tokio::test]
async fn text_react_mode_streams_only_the_final_answer() {
    let h = Harness::new().await;
    std::fs::write(h.workspace.path().join("a.txt"), "A").unwrap();
    let mut session = h
        .builder()
        .llm(Arc::new(text_client(&h.server)))
        .build()
        .await
        .unwrap();
    h.server
        .push_text(
            "Thought: I should read the file.\nAction: read_file\nAction Input: {\"path\": \"a.txt\"}",
        )
        .push_text("Thought: Now I know.\nFinal Answer: The file says A.\nIt is short.");
    let (events, result) = collect(session.send_message_stream("What is in a.txt?")).await;
    let result = result.unwrap();

    let text = text_of(&events);
    assert_eq!(text.trim_end(), "The file says A.\nIt is short.");
    assert_eq!(result.result, "The file says A.\nIt is short.");
    assert!(
        !text.contains("Thought") && !text.contains("Action"),
        "{text:?}"
    );
    assert_eq!(
        kinds(&events),
        [
            "usage",
            "started",
            "finished",
            "iteration",
            "text",
            "usage",
            "iteration"
        ]
    );
}

#[tokio::test]
async fn a_model_that_rejects_tools_switches_the_session_to_text_react_once() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    assert!(!session.uses_text_react());
    h.server.reject_tools(true);
    h.server.push_text("Final Answer: hello without tools");
    let (events, result) = collect(session.send_message_stream("hi")).await;
    assert_eq!(result.unwrap().result, "hello without tools");
    assert!(
        matches!(&events[0], AgentEvent::SwitchedToTextReact { reason } if reason.contains("does not support tools")),
        "{events:?}"
    );
    assert!(session.uses_text_react());

    // The retry carried no tools and taught the text format in its system prompt.
    let requests = h.server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[0].get("tools").is_some());
    assert!(requests[1].get("tools").is_none());
    let system = requests[1]["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("Action Input"), "{system}");

    // Later turns go straight to text mode: one request each, no second rejection.
    h.server.push_text("Final Answer: again");
    let (events, result) = collect(session.send_message_stream("and again")).await;
    assert_eq!(result.unwrap().result, "again");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, AgentEvent::SwitchedToTextReact { .. }))
    );
    assert_eq!(h.server.request_count(), 3);
}

#[tokio::test]
async fn an_error_mid_reply_fails_the_turn_and_stores_none_of_the_reply() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    h.server.push_partial(
        [MockDelta::text("Half of an ")],
        MockStreamEnd::Error("the model crashed".into()),
    );
    let (events, result) = collect(session.send_message_stream("hi")).await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("the model crashed"), "{error}");
    assert_eq!(text_of(&events), "Half of an ");
    assert_eq!(contents(&h.stored().await), ["You are a test agent.", "hi"]);

    // A connection closed mid-reply is an error too, and the session goes on.
    h.server
        .push_partial([MockDelta::text("Cut ")], MockStreamEnd::Close);
    assert!(session.send_message("again").await.is_err());
    h.server.push_text("Fine now.");
    let result = session.send_message("third").await.unwrap();
    assert_eq!(result.result, "Fine now.");
    let stored = h.stored().await;
    assert_eq!(
        contents(&stored),
        ["You are a test agent.", "hi", "again", "third", "Fine now."]
    );
}

/// What the next turn's request looks like after a turn was dropped: valid (every call
/// answered) and holding each stored message once.
async fn next_turn_after_cancel(h: &Harness, session: &mut fusion_agent::AgentSession) -> Value {
    h.server.push_text("Next answer.");
    let result = tokio::time::timeout(HANG_GUARD, session.send_message("next"))
        .await
        .expect("the next turn hung")
        .unwrap();
    assert_eq!(result.result, "Next answer.");
    let request = h.server.requests().last().cloned().unwrap();
    let messages = request["messages"].as_array().unwrap().clone();
    assert_every_call_answered(&messages);
    let stored = h.stored().await;
    let mut seen = std::collections::HashSet::new();
    for message in &stored {
        let key = serde_json::to_string(message).unwrap();
        assert!(seen.insert(key), "stored twice: {message:?} in {stored:#?}");
    }
    json!(messages)
}

#[tokio::test]
async fn cancelling_before_the_first_delta_keeps_the_user_message_only() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    h.server
        .push_delayed(HANG_GUARD, MockReply::text("too late"));
    {
        let mut events = session.send_message_stream("first");
        // Poll the turn until its request is at the server, then drop it.
        tokio::time::timeout(HANG_GUARD, async {
            while h.server.request_count() == 0 {
                tokio::select! {
                    event = events.next() => panic!("the turn moved on: {event:?}"),
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        })
        .await
        .unwrap();
    }
    assert_eq!(
        contents(&h.stored().await),
        ["You are a test agent.", "first"]
    );
    let messages = next_turn_after_cancel(&h, &mut session).await;
    let roles: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "user"]);
}

#[tokio::test]
async fn cancelling_mid_text_stores_none_of_the_partial_reply() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    h.server.push_partial(
        [MockDelta::text("Here is the beginning of a long ")],
        MockStreamEnd::Stall,
    );
    {
        let mut events = session.send_message_stream("first");
        let first = until(&mut events, |e| matches!(e, AgentEvent::TextDelta { .. })).await;
        assert!(
            matches!(first, AgentEvent::TextDelta { ref text, .. } if text.contains("beginning"))
        );
    }
    // Dropping the stream hung up on the server.
    tokio::time::timeout(HANG_GUARD, h.server.replies_finished())
        .await
        .unwrap();
    assert_eq!(
        contents(&h.stored().await),
        ["You are a test agent.", "first"]
    );
    next_turn_after_cancel(&h, &mut session).await;
    assert_eq!(
        contents(&h.stored().await),
        ["You are a test agent.", "first", "next", "Next answer."]
    );
}

#[tokio::test]
async fn cancelling_mid_tool_call_arguments_stores_no_half_call() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    h.server.push_partial(
        [
            MockDelta::text("Let me look. "),
            MockDelta::tool_call_start(0, "call_a", "read_file"),
            MockDelta::tool_call_arguments(0, r#"{"pa"#),
        ],
        MockStreamEnd::Stall,
    );
    {
        let mut events = session.send_message_stream("first");
        until(&mut events, |e| matches!(e, AgentEvent::TextDelta { .. })).await;
    }
    tokio::time::timeout(HANG_GUARD, h.server.replies_finished())
        .await
        .unwrap();
    let stored = h.stored().await;
    assert!(
        stored.iter().all(|m| m.tool_calls.is_empty()),
        "{stored:#?}"
    );
    assert_eq!(contents(&stored), ["You are a test agent.", "first"]);
    next_turn_after_cancel(&h, &mut session).await;
}

/// A tool that waits until the test lets it finish, and says when it has started.
struct Waiting {
    started: Arc<Notify>,
    release: Arc<Notify>,
}

#[async_trait]
impl Tool for Waiting {
    fn name(&self) -> &str {
        "wait_for_it"
    }
    fn description(&self) -> &str {
        "waits"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}})
    }
    async fn call(&self, _args: Value) -> Result<String> {
        self.started.notify_one();
        self.release.notified().await;
        Ok("waited".into())
    }
}

#[tokio::test]
async fn cancelling_during_a_tool_answers_the_call_as_interrupted_next_turn() {
    let h = Harness::new().await;
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let tools = ToolRegistry::new().with(Waiting {
        started: started.clone(),
        release,
    });
    let mut session = SessionBuilder::new(SESSION)
        .llm(Arc::new(client(&h.server)))
        .storage(h.storage.clone())
        .system_prompt("You are a test agent.")
        .tools(tools)
        .build()
        .await
        .unwrap();
    h.server.push_tool_call("wait_for_it", "{}");
    {
        let mut events = session.send_message_stream("first");
        until(&mut events, |e| {
            matches!(e, AgentEvent::ToolCallStarted { .. })
        })
        .await;
        // The call is running when the stream is dropped.
        tokio::select! {
            _ = started.notified() => {}
            event = events.next() => panic!("the turn moved on: {event:?}"),
        }
    }
    let stored = h.stored().await;
    assert_eq!(stored.len(), 3, "{stored:#?}");
    assert_eq!(stored[2].tool_calls.len(), 1, "the call was stored whole");

    let messages = next_turn_after_cancel(&h, &mut session).await;
    let messages = messages.as_array().unwrap();
    let result = messages
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("the call is answered");
    assert!(
        result["content"].as_str().unwrap().contains("interrupted"),
        "{result}"
    );
    let stored = h.stored().await;
    assert_eq!(
        stored.iter().filter(|m| m.role == Role::Tool).count(),
        1,
        "{stored:#?}"
    );
    assert_eq!(
        h.storage
            .load(SESSION)
            .await
            .unwrap()
            .last()
            .unwrap()
            .content,
        "Next answer."
    );
}

/// `history` without message ids, which differ between two sessions of the same talk.
fn without_ids(history: Vec<fusion_core::ChatMessage>) -> Vec<fusion_core::ChatMessage> {
    history
        .into_iter()
        .map(|m| fusion_core::ChatMessage { id: None, ..m })
        .collect()
}
