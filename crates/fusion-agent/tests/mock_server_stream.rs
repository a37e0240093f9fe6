//! `MockLlmServer` answering `"stream": true` with server-sent events, and the script
//! controls for streams that break off, start late, are held, or are refused — checked
//! over real HTTP with plain reqwest and a deliberately simple SSE reader.

use std::time::Duration;

use fusion_agent::testing::{MockDelta, MockLlmServer, MockReply, MockStreamEnd, MockToolCall};
use serde_json::{Value, json};

/// Generous bound on every wait, so a broken server fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn streaming_request(include_usage: bool) -> Value {
    json!({
        "model": "mock-model",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": true,
        "stream_options": {"include_usage": include_usage},
    })
}

async fn post(server: &MockLlmServer, body: &Value) -> reqwest::Response {
    let url = format!("{}/chat/completions", server.base_url());
    within(
        "the response headers",
        fusion_agent::http_client_builder()
            .unwrap()
            .build()
            .unwrap()
            .post(url)
            .json(body)
            .send(),
    )
    .await
    .expect("the request reaches the mock server")
}

/// Reads `data:` payloads off a response, one event at a time (events end at a blank
/// line; only `data:` lines are kept).
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    fn new(response: reqwest::Response) -> Self {
        let content_type = response.headers()[reqwest::header::CONTENT_TYPE].clone();
        assert_eq!(content_type, "text/event-stream");
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's data, `Ok(None)` at the end of the body, `Err` if the connection
    /// broke.
    async fn try_next(&mut self) -> Result<Option<String>, reqwest::Error> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|line| line.strip_prefix("data: "))
                    .collect();
                return Ok(Some(data.join("\n")));
            }
            match within("the next event", self.response.chunk()).await? {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => {
                    assert!(self.buffer.is_empty(), "body ended mid-event");
                    return Ok(None);
                }
            }
        }
    }

    async fn next(&mut self) -> Option<String> {
        self.try_next().await.expect("the stream reads cleanly")
    }

    async fn next_json(&mut self) -> Value {
        let data = self.next().await.expect("another event");
        serde_json::from_str(&data).unwrap_or_else(|e| panic!("{data:?} is not JSON: {e}"))
    }

    /// Every remaining event.
    async fn rest(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

fn as_json(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|event| *event != "[DONE]")
        .map(|event| serde_json::from_str(event).unwrap())
        .collect()
}

/// The concatenated `content` of the chunks' deltas.
fn text_of(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test]
async fn a_streamed_text_reply_arrives_word_by_word_then_usage_and_done() {
    let server = MockLlmServer::start().await;
    server.push_text("The quick brown fox.");
    let mut events = Events::new(post(&server, &streaming_request(true)).await);
    let events = events.rest().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks = as_json(&events);
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(text_of(&chunks), "The quick brown fox.");
    let pieces = chunks
        .iter()
        .filter(|chunk| chunk["choices"][0]["delta"]["content"].as_str() > Some(""))
        .count();
    assert_eq!(pieces, 4, "one chunk per word");
    let (finish, usage) = (&chunks[chunks.len() - 2], &chunks[chunks.len() - 1]);
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64() > Some(0));
    assert_eq!(server.requests()[0]["stream"], true);
}

#[tokio::test]
async fn streamed_tool_calls_open_with_id_and_name_then_send_argument_fragments() {
    let server = MockLlmServer::start().await;
    let arguments = r#"{"path":"notes \"draft\".txt"}"#;
    server.push(MockReply::ToolCalls {
        content: String::new(),
        calls: vec![
            MockToolCall::new("read_file", arguments),
            MockToolCall {
                id: Some("call_mine".to_owned()),
                ..MockToolCall::new("list_dir", "{}")
            },
        ],
    });
    let chunks = as_json(
        &Events::new(post(&server, &streaming_request(false)).await)
            .rest()
            .await,
    );
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    let first: Vec<&&Value> = calls.iter().filter(|call| call["index"] == 0).collect();
    assert_eq!(first[0]["id"], "call_1");
    assert_eq!(first[0]["type"], "function");
    assert_eq!(first[0]["function"]["name"], "read_file");
    assert_eq!(first[0]["function"]["arguments"], "");
    let fragments: Vec<&str> = first[1..]
        .iter()
        .map(|call| call["function"]["arguments"].as_str().unwrap())
        .collect();
    assert!(fragments.len() > 1, "{fragments:?}");
    assert_eq!(fragments.concat(), arguments);
    let second: Vec<&&Value> = calls.iter().filter(|call| call["index"] == 1).collect();
    assert_eq!(second[0]["id"], "call_mine");
    let finish = chunks.last().unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    assert!(chunks.iter().all(|chunk| chunk["choices"] != json!([])));
}

fn partial_deltas() -> Vec<MockDelta> {
    vec![
        MockDelta::text("Reading "),
        MockDelta::tool_call_start(0, "call_7", "read_file"),
        MockDelta::tool_call_arguments(0, r#"{"path":"#),
    ]
}

/// Reads the role chunk and the three deltas of [`partial_deltas`].
async fn read_partial_deltas(events: &mut Events) -> Vec<Value> {
    let mut chunks = Vec::new();
    for _ in 0..4 {
        chunks.push(events.next_json().await);
    }
    assert_eq!(text_of(&chunks), "Reading ");
    assert_eq!(
        chunks[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
        r#"{"path":"#
    );
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk["choices"][0]["finish_reason"].is_null())
    );
    chunks
}

#[tokio::test]
async fn a_stalled_stream_stays_open_until_the_client_goes_away() {
    let server = MockLlmServer::start().await;
    server.push_partial(partial_deltas(), MockStreamEnd::Stall);
    let mut events = Events::new(post(&server, &streaming_request(true)).await);
    read_partial_deltas(&mut events).await;
    assert_eq!(server.replies_in_progress(), 1);
    drop(events);
    within(
        "the server to see the client leave",
        server.replies_finished(),
    )
    .await;
    assert_eq!(server.replies_in_progress(), 0);
}

#[tokio::test]
async fn a_closed_stream_breaks_the_connection_after_its_deltas() {
    let server = MockLlmServer::start().await;
    server.push_partial(partial_deltas(), MockStreamEnd::Close);
    let mut events = Events::new(post(&server, &streaming_request(true)).await);
    read_partial_deltas(&mut events).await;
    assert!(
        events.try_next().await.is_err(),
        "the body ends in a broken connection, not a clean end"
    );
}

#[tokio::test]
async fn an_error_ending_sends_an_error_event_and_ends_the_body() {
    let server = MockLlmServer::start().await;
    server.push_partial(
        partial_deltas(),
        MockStreamEnd::Error("model overloaded".to_owned()),
    );
    let mut events = Events::new(post(&server, &streaming_request(true)).await);
    read_partial_deltas(&mut events).await;
    assert_eq!(
        events.next_json().await,
        json!({"error": {"message": "model overloaded", "type": "server_error"}})
    );
    assert_eq!(events.next().await, None, "no [DONE] after an error");
}

#[tokio::test]
async fn a_plain_request_gets_only_the_ending_of_a_partial_reply() {
    let server = MockLlmServer::start().await;
    let url = format!("{}/chat/completions", server.base_url());
    let plain = json!({"model": "m", "messages": []});
    let client = fusion_agent::http_client_builder()
        .unwrap()
        .build()
        .unwrap();

    server.push_partial(partial_deltas(), MockStreamEnd::Error("boom".to_owned()));
    let response = post(&server, &plain).await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], "boom");

    server.push_partial(partial_deltas(), MockStreamEnd::Close);
    let outcome = within("the dropped reply", async {
        client.post(&url).json(&plain).send().await?.bytes().await
    })
    .await;
    assert!(outcome.is_err(), "{outcome:?}");

    server.push_partial(partial_deltas(), MockStreamEnd::Stall);
    let stalled = tokio::spawn(client.post(&url).json(&plain).send());
    within("the stalled request to arrive", async {
        while server.request_count() < 3 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    stalled.abort();
    within(
        "the server to see the client leave",
        server.replies_finished(),
    )
    .await;
}

#[tokio::test]
async fn a_delayed_stream_sends_its_headers_before_the_first_chunk() {
    let server = MockLlmServer::start().await;
    // Far longer than the test's patience: the headers can only arrive ahead of it.
    server.push_delayed(Duration::from_secs(3600), MockReply::text("late"));
    let response = post(&server, &streaming_request(true)).await;
    assert_eq!(response.status(), 200);
    let events = Events::new(response);
    assert_eq!(server.replies_in_progress(), 1);
    drop(events);
    within(
        "the server to see the client leave",
        server.replies_finished(),
    )
    .await;
}

#[tokio::test]
async fn a_delayed_reply_arrives_whole_after_its_delay() {
    let server = MockLlmServer::start().await;
    server
        .push_delayed(Duration::from_millis(20), MockReply::text("slow start"))
        .push_delayed(
            Duration::from_millis(20),
            MockReply::delayed(Duration::from_millis(5), MockReply::text("plain")),
        );
    let events = Events::new(post(&server, &streaming_request(true)).await)
        .rest()
        .await;
    assert_eq!(text_of(&as_json(&events)), "slow start");
    let plain: Value = post(&server, &json!({"model": "m", "messages": []}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(plain["choices"][0]["message"]["content"], "plain");
}

#[tokio::test]
async fn a_held_stream_sends_its_first_word_and_the_rest_only_when_released() {
    let server = MockLlmServer::start().await;
    let gate = server.hold_next_stream();
    server
        .push_text("plain answer")
        .push_text("first then the rest");

    // A plain request passes by without taking the gate.
    let plain: Value = post(&server, &json!({"model": "m", "messages": []}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(plain["choices"][0]["message"]["content"], "plain answer");
    assert!(!gate.is_first_part_sent());

    let mut events = Events::new(post(&server, &streaming_request(true)).await);
    within("the first part", gate.first_part_sent()).await;
    let first_part = [events.next_json().await, events.next_json().await];
    assert_eq!(text_of(&first_part), "first ");
    // Nothing more can have been sent: the server is waiting for the gate.
    gate.release();
    let rest = as_json(&events.rest().await);
    assert_eq!(text_of(&rest), "then the rest");
}

#[tokio::test]
async fn dropping_a_gate_releases_its_stream() {
    let server = MockLlmServer::start().await;
    drop(server.hold_next_stream());
    server.push_text("not held for long");
    let events = Events::new(post(&server, &streaming_request(false)).await)
        .rest()
        .await;
    assert_eq!(text_of(&as_json(&events)), "not held for long");
}

#[tokio::test]
async fn reject_streaming_refuses_streams_and_keeps_the_reply_for_the_fallback() {
    let server = MockLlmServer::start().await;
    server.reject_streaming(true).push_text("unstreamed");
    let refused = post(&server, &streaming_request(true)).await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "stream is not supported by this server"
    );
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(server.pending(), 1);
    assert_eq!(server.requests()[0]["stream"], true);

    let mut fallback = streaming_request(false);
    fallback["stream"] = json!(false);
    let answer: Value = post(&server, &fallback).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "unstreamed");
}

#[tokio::test]
async fn reject_tools_refuses_requests_offering_tools_in_ollamas_words() {
    let server = MockLlmServer::start().await;
    server
        .reject_tools(true)
        .push_text("Thought: no tools here");
    let mut with_tools = json!({"model": "m", "messages": []});
    with_tools["tools"] = json!([{"type": "function", "function": {"name": "read_file"}}]);
    let refused = post(&server, &with_tools).await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "registry.ollama.ai/library/mock does not support tools"
    );
    assert_eq!(server.pending(), 1);

    let answer: Value = post(&server, &json!({"model": "m", "messages": []}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Thought: no tools here"
    );
}

#[tokio::test]
async fn a_request_without_stream_true_is_answered_whole() {
    let server = MockLlmServer::start().await;
    server.push_text("whole").push_tool_call("ls", "{}");
    for (stream, finish) in [(json!(false), "stop"), (Value::Null, "tool_calls")] {
        let mut request = json!({"model": "m", "messages": []});
        if !stream.is_null() {
            request["stream"] = stream;
        }
        let response = post(&server, &request).await;
        assert_eq!(
            response.headers()[reqwest::header::CONTENT_TYPE],
            "application/json"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["choices"][0]["finish_reason"], finish);
    }
    assert_eq!(server.replies_in_progress(), 0);
}

#[tokio::test]
async fn buffered_streams_arrive_as_one_body_with_a_length_holding_the_same_events() {
    let chunked = MockLlmServer::start().await;
    let buffered = MockLlmServer::start().await;
    buffered.buffer_streams(true);
    for server in [&chunked, &buffered] {
        server.push_text("Three small words");
    }
    let plain = post(&chunked, &streaming_request(true)).await;
    assert_eq!(plain.content_length(), None, "each event its own chunk");
    let whole = post(&buffered, &streaming_request(true)).await;
    assert!(whole.content_length().is_some_and(|length| length > 0));
    let plain = Events::new(plain).rest().await;
    let whole = Events::new(whole).rest().await;
    assert!(whole.len() > 3, "{whole:?}");
    assert_eq!(whole.len(), plain.len());
    assert_eq!(whole.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(plain.last().map(String::as_str), Some("[DONE]"));
    // The ids differ per server; everything else is the same.
    let without_ids = |events: &[String]| -> Vec<Value> {
        as_json(events)
            .into_iter()
            .map(|mut chunk| {
                chunk["id"] = Value::Null;
                chunk
            })
            .collect()
    };
    assert_eq!(without_ids(&whole), without_ids(&plain));
}
