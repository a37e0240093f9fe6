//! `OpenAiClient::chat_stream` against a raw HTTP/1.1 server on loopback that writes the
//! recorded event streams in `tests/fixtures/sse/` (shapes of OpenAI, vLLM, Ollama and the
//! llama.cpp server) byte for byte: deltas, the assembled reply, retries until the first
//! delta, failures after it, and servers that do not stream.
//!
//! The server is hand-written rather than `MockLlmServer` so that a test decides every
//! byte and every write: where the body is cut, whether it is close-delimited or chunked,
//! and whether it ends early.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fusion_agent::{
    AgentSession, ChatDelta, ChatRequest, LlmClient, OpenAiClient, OpenAiConfig, Tool,
    ToolRegistry, Usage,
};
use fusion_core::{ChatMessage, ConversationStorage, Error, Role, ToolCall};
use fusion_storage_memory::InMemoryStorage;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "sk-stream-secret-77";

/// How a reply's body is delimited.
#[derive(Clone, Copy, PartialEq)]
enum Framing {
    /// `Content-Length`.
    Length,
    /// No length: the body ends when the server closes the connection.
    Close,
    /// `Transfer-Encoding: chunked`, one chunk per piece.
    Chunked,
    /// Chunked, but the connection closes without the last chunk: a broken body.
    ChunkedCut,
}

/// One scripted answer.
#[derive(Clone)]
struct Reply {
    status: u16,
    content_type: &'static str,
    /// Written one after another, each flushed, so the client may read them separately.
    pieces: Vec<Vec<u8>>,
    framing: Framing,
    /// After the pieces, keep the connection open (sending nothing) until the client
    /// closes it.
    hang: bool,
    /// After the pieces, send this one again and again, as fast as it goes, until the
    /// client closes the connection.
    endless: Option<Vec<u8>>,
}

impl Reply {
    fn sse(body: impl Into<Vec<u8>>) -> Self {
        Self::sse_pieces(vec![body.into()], Framing::Close)
    }

    fn sse_pieces(pieces: Vec<Vec<u8>>, framing: Framing) -> Self {
        Self {
            status: 200,
            content_type: "text/event-stream",
            pieces,
            framing,
            hang: false,
            endless: None,
        }
    }

    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            pieces: vec![body.to_string().into_bytes()],
            framing: Framing::Length,
            hang: false,
            endless: None,
        }
    }
}

/// A loopback server answering request `n` (from 0) with `script(n)`, one request per
/// connection, and keeping every request body.
struct RawServer {
    base_url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl RawServer {
    async fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let seen = Arc::clone(&bodies);
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let (script, seen) = (Arc::clone(&script), Arc::clone(&seen));
                tokio::spawn(async move { serve(socket, &*script, &seen).await });
            }
        });
        Self { base_url, bodies }
    }

    /// Answers the requests with `replies` in order; any further request gets a 400.
    async fn serving(replies: Vec<Reply>) -> Self {
        Self::start(move |n| {
            replies.get(n).cloned().unwrap_or_else(|| {
                Reply::json(400, json!({"error": {"message": "unscripted request"}}))
            })
        })
        .await
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    fn request_count(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }
}

async fn serve(
    mut socket: TcpStream,
    script: &(dyn Fn(usize) -> Reply + Sync),
    seen: &Mutex<Vec<Value>>,
) {
    socket.set_nodelay(true).unwrap();
    let Some(body) = read_request(&mut socket).await else {
        return;
    };
    let reply = {
        let mut seen = seen.lock().unwrap();
        seen.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
        script(seen.len() - 1)
    };
    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\nContent-Type: {}\r\nConnection: close\r\n",
        reply.status, reply.content_type
    );
    match reply.framing {
        Framing::Length => {
            let length: usize = reply.pieces.iter().map(Vec::len).sum();
            head.push_str(&format!("Content-Length: {length}\r\n"));
        }
        Framing::Close => {}
        Framing::Chunked | Framing::ChunkedCut => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let chunked = matches!(reply.framing, Framing::Chunked | Framing::ChunkedCut);
    for piece in &reply.pieces {
        let mut bytes = Vec::new();
        if chunked {
            bytes.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        }
        bytes.extend_from_slice(piece);
        if chunked {
            bytes.extend_from_slice(b"\r\n");
        }
        if socket.write_all(&bytes).await.is_err() || socket.flush().await.is_err() {
            return;
        }
    }
    if let Some(piece) = &reply.endless {
        // Ends when the client gives up and the write fails.
        while socket.write_all(piece).await.is_ok() {}
        return;
    }
    if reply.framing == Framing::Chunked {
        let _ = socket.write_all(b"0\r\n\r\n").await;
    }
    if reply.hang {
        // Returns when the client gives up and closes its end.
        let _ = socket.read(&mut [0; 1]).await;
    }
}

/// Reads one request and returns its body, or `None` if the client went away.
async fn read_request(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = socket.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    while data.len() < head_end + length {
        let read = socket.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..read]);
    }
    Some(data[head_end..head_end + length].to_vec())
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/sse/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A client with tiny backoffs so retry tests stay fast.
fn config(server: &RawServer) -> OpenAiConfig {
    OpenAiConfig::new("stream-model")
        .base_url(&server.base_url)
        .api_key(KEY)
        .max_retries(2)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
}

fn client(server: &RawServer) -> OpenAiClient {
    config(server).build().unwrap()
}

/// Everything one `chat_stream` call yields: its deltas, and the error that ended it.
async fn collect(client: &OpenAiClient) -> (Vec<ChatDelta>, Option<Error>) {
    let question = [ChatMessage::user("hi")];
    let request = ChatRequest {
        messages: question.iter().map(Cow::Borrowed).collect(),
        ..Default::default()
    };
    let mut stream = client.chat_stream(&request);
    let mut deltas = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(delta) => deltas.push(delta),
            Err(error) => return (deltas, Some(error)),
        }
    }
    (deltas, None)
}

/// The reply the deltas end with, after checking that the pieces before it add up to it:
/// the texts to its content, and per call its start and argument fragments.
fn assembled(deltas: &[ChatDelta]) -> (ChatMessage, Option<Usage>, Option<String>) {
    let Some((ChatDelta::Done(response), pieces)) = deltas.split_last() else {
        panic!("the stream did not end with Done: {deltas:?}");
    };
    let mut text = String::new();
    let mut calls: BTreeMap<usize, ToolCall> = BTreeMap::new();
    for piece in pieces {
        match piece {
            ChatDelta::Text(more) => text.push_str(more),
            ChatDelta::ToolCallStarted { index, id, name } => {
                let fresh = ToolCall::new(id.clone(), name.clone(), "");
                assert!(
                    calls.insert(*index, fresh).is_none(),
                    "call {index} started twice"
                );
            }
            ChatDelta::ToolCallArguments { index, fragment } => {
                let call = calls
                    .get_mut(index)
                    .expect("arguments before the call started");
                call.arguments.push_str(fragment);
            }
            other => panic!("unexpected delta before Done: {other:?}"),
        }
    }
    assert_eq!(text, response.message.content);
    let streamed: Vec<ToolCall> = calls.into_values().collect();
    assert_eq!(streamed, response.message.tool_calls);
    (
        response.message.clone(),
        response.usage,
        response.finish_reason.clone(),
    )
}

fn usage(prompt_tokens: u32, completion_tokens: u32) -> Option<Usage> {
    Some(Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    })
}

/// Serves fixture `name` and checks the reply it streams to.
async fn check_fixture(name: &str, message: ChatMessage, usage: Option<Usage>, finish: &str) {
    let server = RawServer::serving(vec![Reply::sse(fixture(name))]).await;
    let (deltas, error) = collect(&client(&server)).await;
    assert!(error.is_none(), "{name}: {error:?}");
    let (got, got_usage, got_finish) = assembled(&deltas);
    assert_eq!(got, message, "{name}");
    assert_eq!(got_usage, usage, "{name}");
    assert_eq!(got_finish.as_deref(), Some(finish), "{name}");
    assert_eq!(server.request_count(), 1, "{name}");
}

fn calls(calls: &[(&str, &str, &str)]) -> ChatMessage {
    ChatMessage::assistant_with_tool_calls(
        "",
        calls
            .iter()
            .map(|(id, name, arguments)| ToolCall::new(*id, *name, *arguments))
            .collect(),
    )
}

#[tokio::test]
async fn openai_text_reply_streams() {
    let message = ChatMessage::assistant("Hello! How can I help?");
    check_fixture("openai_text.sse", message, usage(9, 7), "stop").await;
}

#[tokio::test]
async fn openai_tool_calls_in_many_pieces_are_assembled() {
    let message = calls(&[
        (
            "call_DdmO9pD3xa9XTPNJ32zg2hcA",
            "get_weather",
            "{\"location\":\"Montr\u{e9}al\"}",
        ),
        (
            "call_9uaKlpw4jrG2Z4pCJhnkRzyq",
            "get_time",
            r#"{"tz": "Europe/Paris"}"#,
        ),
    ]);
    check_fixture(
        "openai_tool_calls.sse",
        message,
        usage(80, 41),
        "tool_calls",
    )
    .await;
}

#[tokio::test]
async fn vllm_text_reply_streams() {
    let message = ChatMessage::assistant("Bonjour \u{e0} tous.");
    check_fixture("vllm_text.sse", message, usage(20, 4), "stop").await;
}

#[tokio::test]
async fn vllm_tool_call_named_first_then_argued_is_assembled() {
    let message = calls(&[(
        "chatcmpl-tool-8e1b2c4d5f",
        "read_file",
        r#"{"path": "notes/todo.md"}"#,
    )]);
    check_fixture("vllm_tool_calls.sse", message, usage(215, 23), "tool_calls").await;
}

#[tokio::test]
async fn ollama_text_reply_with_role_in_every_chunk_streams() {
    let message = ChatMessage::assistant("The sky is blue.");
    check_fixture("ollama_text.sse", message, usage(14, 5), "stop").await;
}

#[tokio::test]
async fn ollama_whole_tool_calls_in_one_piece_each_are_read() {
    let message = calls(&[
        ("call_wteop8bt", "run_command", r#"{"command":"ls"}"#),
        ("call_rk2xye1l", "run_command", r#"{"command":"ls -l"}"#),
    ]);
    check_fixture(
        "ollama_tool_calls.sse",
        message,
        usage(161, 38),
        "tool_calls",
    )
    .await;
}

/// Ollama numbers every parallel call 0 (ollama/ollama#15457); the ids tell them apart.
#[tokio::test]
async fn ollama_parallel_calls_all_at_index_0_stay_separate_calls() {
    let message = calls(&[
        ("call_a1", "echo", r#"{"x":"hello.py"}"#),
        ("call_b2", "count", "{}"),
    ]);
    check_fixture(
        "ollama_parallel_calls_all_index_0.sse",
        message,
        usage(170, 31),
        "tool_calls",
    )
    .await;
}

#[tokio::test]
async fn llamacpp_text_reply_with_usage_in_the_finish_chunk_streams() {
    let message = ChatMessage::assistant("Hi there");
    check_fixture("llamacpp_text.sse", message, usage(11, 3), "stop").await;
}

#[tokio::test]
async fn llamacpp_tool_call_streams() {
    let message = calls(&[(
        "EKMWqeIyhJ5qOAFaYTb8PCsRSHmw6d3E",
        "search",
        r#"{"query":"rust sse"}"#,
    )]);
    check_fixture(
        "llamacpp_tool_calls.sse",
        message,
        usage(140, 12),
        "tool_calls",
    )
    .await;
}

#[tokio::test]
async fn a_fixture_written_in_two_pieces_cut_at_every_byte_reads_the_same() {
    let body = fixture("ollama_tool_calls.sse");
    let cuts = 1..body.len();
    let served = body.clone();
    // Request n is cut after byte n + 1, chunked and close-delimited in turn.
    let server = RawServer::start(move |n| {
        let cut = n + 1;
        let framing = if n % 2 == 0 {
            Framing::Close
        } else {
            Framing::Chunked
        };
        Reply::sse_pieces(
            vec![served[..cut].to_vec(), served[cut..].to_vec()],
            framing,
        )
    })
    .await;
    let client = client(&server);
    let (reference, error) = collect(&client).await;
    assert!(error.is_none(), "{error:?}");
    assembled(&reference);
    for cut in cuts.skip(1) {
        let (deltas, error) = collect(&client).await;
        assert!(error.is_none(), "cut at byte {cut}: {error:?}");
        assert_eq!(deltas, reference, "cut at byte {cut}");
    }
    assert_eq!(server.request_count(), body.len() - 1);
}

/// A 64,000-token answer in OpenAI's framing (an event of some 270 bytes per token) has
/// 250 KiB of text in a body past 16 MiB: the cap is on what is assembled, not the body.
#[tokio::test]
async fn a_long_answer_one_token_an_event_is_read_whole_past_16_mib_of_body() {
    let tokens = 64_000;
    let event = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"chatcmpl-AaBbCcDdEeFfGgHhIiJjKkLlMmNn\",\"object\":\"chat.completion.chunk\",\
             \"created\":1744446075,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\
             \"system_fingerprint\":\"fp_f5bdcc3276\",\"choices\":[{{\"index\":0,\"delta\":{delta},\
             \"logprobs\":null,\"finish_reason\":{finish}}}],\"usage\":null}}\n\n"
        )
    };
    let mut body = event(
        r#"{"role":"assistant","content":"","refusal":null}"#,
        "null",
    );
    for _ in 0..tokens {
        body.push_str(&event(r#"{"content":" tok"}"#, "null"));
    }
    body.push_str(&event("{}", r#""stop""#));
    body.push_str("data: [DONE]\n\n");
    assert!(body.len() > 16 << 20, "{}", body.len());
    let pieces = body
        .as_bytes()
        .chunks(64 << 10)
        .map(<[u8]>::to_vec)
        .collect();
    let server = RawServer::serving(vec![Reply::sse_pieces(pieces, Framing::Chunked)]).await;
    let (deltas, error) = collect(&client(&server)).await;
    assert!(error.is_none(), "{error:?}");
    let (message, _, finish) = assembled(&deltas);
    assert_eq!(message.content.len(), tokens * " tok".len());
    assert_eq!(finish.as_deref(), Some("stop"));
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn the_streaming_request_asks_for_a_stream_with_usage_and_a_plain_one_does_not() {
    let server = RawServer::serving(vec![
        Reply::sse(fixture("openai_text.sse")),
        Reply::json(200, json!({"choices": [{"message": {"content": "plain"}}]})),
    ])
    .await;
    let client = client(&server);
    assert!(client.streams());
    collect(&client).await;
    let question = [ChatMessage::user("hi")];
    let request = ChatRequest {
        messages: question.iter().map(Cow::Borrowed).collect(),
        ..Default::default()
    };
    client.chat(&request).await.unwrap();
    let bodies = server.bodies();
    assert_eq!(bodies[0]["stream"], json!(true));
    assert_eq!(bodies[0]["stream_options"], json!({"include_usage": true}));
    assert_eq!(bodies[0]["messages"], bodies[1]["messages"]);
    let plain: Value = serde_json::from_slice(&client.request_body(&request).unwrap()).unwrap();
    assert_eq!(bodies[1], plain);
    assert!(bodies[1].get("stream").is_none());
}

#[tokio::test]
async fn an_error_event_mid_stream_is_an_err_item_with_the_servers_message() {
    let body = format!(
        "{}event: error\ndata: {{\"error\":{{\"message\":\"the model crashed (key {KEY})\"}}}}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n"
    );
    let server = RawServer::serving(vec![Reply::sse(body)]).await;
    let (deltas, error) = collect(&client(&server)).await;
    assert_eq!(deltas, [ChatDelta::Text("Hel".into())]);
    let Some(error @ Error::Llm { .. }) = error else {
        panic!("expected Error::Llm, got {error:?}");
    };
    let text = error.to_string();
    assert!(text.contains("the model crashed"), "{text}");
    assert!(!text.contains(KEY), "{text}");
    assert_eq!(server.request_count(), 1);
}

/// An error event before any delta is the streamed form of an error status: retried when
/// its code is one a plain call retries (OpenRouter's upstream 502, a 503 "overloaded").
/// The same error after a delta is final.
#[tokio::test]
async fn an_error_event_before_the_first_delta_is_retried_when_its_code_says_so() {
    let openrouter = concat!(
        ": OPENROUTER PROCESSING\n\n",
        "data: {\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"error\":{\"code\":502,",
        "\"message\":\"Provider returned error\"},\"choices\":[{\"index\":0,\"delta\":",
        "{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n",
    );
    let overloaded = "data: {\"error\":{\"message\":\"overloaded\",\"code\":503}}\n\n";
    let server = RawServer::serving(vec![
        Reply::sse(openrouter),
        Reply::sse(overloaded),
        Reply::sse(fixture("llamacpp_text.sse")),
    ])
    .await;
    let (deltas, error) = collect(&client(&server)).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(assembled(&deltas).0, ChatMessage::assistant("Hi there"));
    assert_eq!(server.request_count(), 3);

    let after_a_delta = format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"Hel\"}}}}]}}\n\n{overloaded}"
    );
    let server = RawServer::serving(vec![
        Reply::sse(after_a_delta),
        Reply::sse(fixture("llamacpp_text.sse")),
    ])
    .await;
    let (deltas, error) = collect(&client(&server)).await;
    assert_eq!(deltas, [ChatDelta::Text("Hel".into())]);
    let Some(Error::Llm {
        message, retryable, ..
    }) = error
    else {
        panic!("expected Error::Llm, got {error:?}");
    };
    assert!(message.contains("overloaded"), "{message}");
    assert!(!retryable);
    assert_eq!(server.request_count(), 1);
}

/// An event stream whose one tool call, of `name`, has `arguments` so far, then
/// `[DONE]` with no finish reason: what a proxy that lost its upstream mid-call sends.
fn call_cut_by_done(name: &str, arguments: &str) -> Reply {
    let call = json!({"choices": [{"index": 0, "delta": {"tool_calls": [{
        "index": 0, "id": "call_1", "type": "function",
        "function": {"name": name, "arguments": arguments},
    }]}, "finish_reason": null}]});
    Reply::sse(format!("data: {call}\n\ndata: [DONE]\n\n"))
}

/// `[DONE]` in the middle of a call's arguments, with no finish reason, is the reply cut
/// off there, as a connection closed there is: an `Err` naming the tool (retryable, but
/// not retried here: the call's start was delivered), never a `Done` holding half a call.
#[tokio::test]
async fn done_in_the_middle_of_a_calls_arguments_is_an_err_naming_the_tool() {
    let server = RawServer::serving(vec![call_cut_by_done("delete_file", r#"{"path": "a"#)]).await;
    let (deltas, error) = collect(&client(&server)).await;
    assert!(
        matches!(&deltas[0], ChatDelta::ToolCallStarted { name, .. } if name == "delete_file"),
        "{deltas:?}"
    );
    assert!(
        !deltas.iter().any(|d| matches!(d, ChatDelta::Done(_))),
        "{deltas:?}"
    );
    let Some(Error::Llm {
        message, retryable, ..
    }) = error
    else {
        panic!("expected Error::Llm, got {error:?}");
    };
    assert!(retryable, "{message}");
    assert!(message.contains("`delete_file`"), "{message}");
    assert!(message.contains("stop mid-JSON"), "{message}");
    assert!(message.contains("not run"), "{message}");
    assert_eq!(server.request_count(), 1);
}

/// Counts its runs; takes optional arguments, so a call with none would run.
struct Counted(Arc<AtomicUsize>);

#[async_trait]
impl Tool for Counted {
    fn name(&self) -> &str {
        "counted"
    }
    fn description(&self) -> &str {
        "counts its runs"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {"path": {"type": "string"}}})
    }
    async fn call(&self, _args: Value) -> fusion_core::Result<String> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok("counted".into())
    }
}

/// In a session, a call cut by `[DONE]` (here mid-JSON) fails the turn with a retryable
/// error: the tool does not run (with what JSON it has, or `{}`) and no half a reply is
/// stored.
#[tokio::test]
async fn a_session_does_not_run_or_store_a_call_cut_by_done() {
    let server = RawServer::serving(vec![call_cut_by_done("counted", r#"{"path": "a"#)]).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let storage = Arc::new(InMemoryStorage::new());
    let mut session = AgentSession::builder("cut")
        .llm(Arc::new(client(&server)))
        .storage(storage.clone())
        .tools(ToolRegistry::new().with(Counted(runs.clone())))
        .build()
        .await
        .unwrap();
    let error = session.send_message("count").await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains("`counted`"), "{error}");
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the cut call ran");
    let stored = storage.load("cut").await.unwrap();
    assert!(
        stored
            .iter()
            .all(|m| m.role != Role::Assistant && m.role != Role::Tool),
        "{stored:?}"
    );
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_connection_closed_mid_reply_is_an_err_without_done() {
    let body = fixture("openai_text.sse");
    let cut = body.len() / 2;
    let server = RawServer::serving(vec![Reply::sse(body[..cut].to_vec())]).await;
    let (deltas, error) = collect(&client(&server)).await;
    assert!(!deltas.is_empty());
    assert!(
        !deltas.iter().any(|d| matches!(d, ChatDelta::Done(_))),
        "{deltas:?}"
    );
    let text = error
        .expect("a cut reply must end with an error")
        .to_string();
    assert!(
        text.contains(&format!("closed mid-reply after {cut} bytes")),
        "{text}"
    );
    assert!(text.contains("/v1/chat/completions"), "{text}");
}

#[tokio::test]
async fn a_failure_after_the_first_delta_is_not_retried() {
    let body = fixture("vllm_text.sse");
    let cut = body.len() / 2;
    // A broken chunked body: the transport fails rather than ending cleanly.
    let broken = Reply::sse_pieces(vec![body[..cut].to_vec()], Framing::ChunkedCut);
    let server = RawServer::serving(vec![broken, Reply::sse(body.clone())]).await;
    let (deltas, error) = collect(&client(&server)).await;
    assert!(
        matches!(deltas.first(), Some(ChatDelta::Text(_))),
        "{deltas:?}"
    );
    let Some(Error::Llm { message, .. }) = error else {
        panic!("expected Error::Llm, got {error:?}");
    };
    assert!(message.contains("closed mid-reply"), "{message}");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_503_then_a_good_stream_is_retried() {
    let server = RawServer::serving(vec![
        Reply::json(503, json!({"error": {"message": "overloaded"}})),
        Reply::sse(fixture("llamacpp_text.sse")),
    ])
    .await;
    let (deltas, error) = collect(&client(&server)).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(assembled(&deltas).0, ChatMessage::assistant("Hi there"));
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn a_stream_cut_before_its_first_delta_is_retried() {
    let role_only = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n";
    let server = RawServer::serving(vec![
        Reply::sse(role_only.to_vec()),
        Reply::sse(fixture("vllm_text.sse")),
    ])
    .await;
    let (deltas, error) = collect(&client(&server)).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        assembled(&deltas).0,
        ChatMessage::assistant("Bonjour \u{e0} tous.")
    );
    assert_eq!(server.request_count(), 2);
}

/// `[DONE]` alone is no answer (as `{"choices":[]}` is none for a plain call): retried,
/// and an error when the retries run out, never an empty answer.
#[tokio::test]
async fn a_stream_of_only_done_is_retried_and_never_an_empty_answer() {
    let done_only = Reply::sse(&b"data: [DONE]\n\n"[..]);
    let server = RawServer::serving(vec![
        done_only.clone(),
        Reply::sse(fixture("vllm_text.sse")),
    ])
    .await;
    let (deltas, error) = collect(&client(&server)).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        assembled(&deltas).0,
        ChatMessage::assistant("Bonjour \u{e0} tous.")
    );
    assert_eq!(server.request_count(), 2);

    let server = RawServer::serving(vec![done_only; 3]).await;
    let (deltas, error) = collect(&client(&server)).await;
    assert_eq!(deltas, []);
    let Some(Error::Llm { message, .. }) = error else {
        panic!("expected Error::Llm, got {error:?}");
    };
    assert!(message.contains("no answer"), "{message}");
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn a_server_that_refuses_streaming_is_asked_again_without_it_from_then_on() {
    let whole = |text: &str| {
        Reply::json(
            200,
            json!({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}),
        )
    };
    let server = RawServer::serving(vec![
        Reply::json(
            400,
            json!({"error": {"message": "stream is not supported"}}),
        ),
        whole("first"),
        whole("second"),
    ])
    .await;
    let client = client(&server);
    let sibling = client.clone();
    let (deltas, error) = collect(&client).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(assembled(&deltas).0, ChatMessage::assistant("first"));
    assert!(!client.streams());
    assert!(!sibling.streams(), "clones share what the server said");
    let (deltas, error) = collect(&sibling).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(assembled(&deltas).0, ChatMessage::assistant("second"));
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 3);
    assert_eq!(bodies[0]["stream"], json!(true));
    assert!(bodies[1].get("stream").is_none());
    assert!(bodies[2].get("stream").is_none());
}

#[tokio::test]
async fn a_json_reply_to_a_streaming_request_is_replayed_as_deltas() {
    let reply = json!({"choices": [{"message": {"role": "assistant", "content": "whole",
        "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "ls", "arguments": "{}"}}]},
        "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}});
    let server = RawServer::serving(vec![Reply::json(200, reply)]).await;
    let client = client(&server);
    let (deltas, error) = collect(&client).await;
    assert!(error.is_none(), "{error:?}");
    let (message, got_usage, finish) = assembled(&deltas);
    assert_eq!(
        message,
        ChatMessage::assistant_with_tool_calls("whole", vec![ToolCall::new("c1", "ls", "{}")])
    );
    assert_eq!(got_usage, usage(5, 2));
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert!(
        client.streams(),
        "a server that ignores `stream` is not a refusal"
    );
}

#[tokio::test]
async fn with_streaming_off_the_reply_of_a_plain_call_is_replayed() {
    let server = RawServer::serving(vec![Reply::json(
        200,
        json!({"choices": [{"message": {"content": "plain"}, "finish_reason": "stop"}]}),
    )])
    .await;
    let client = config(&server).stream(false).build().unwrap();
    assert!(!client.streams());
    let (deltas, error) = collect(&client).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(assembled(&deltas).0, ChatMessage::assistant("plain"));
    assert!(server.bodies()[0].get("stream").is_none());
}

#[tokio::test]
async fn a_stream_that_stalls_after_its_first_delta_fails_after_the_idle_timeout() {
    let mut stalled =
        Reply::sse(&b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n"[..]);
    stalled.hang = true;
    let server = RawServer::serving(vec![stalled]).await;
    // The first delta must arrive within it too, or the attempt is retried (and meets an
    // unscripted reply): long enough for a loaded machine, and waited for once.
    let client = config(&server)
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (deltas, error) = collect(&client).await;
    assert_eq!(deltas, [ChatDelta::Text("Hel".into())]);
    let text = error.expect("a stalled stream must fail").to_string();
    assert!(text.contains("no next piece of the reply"), "{text}");
    assert_eq!(server.request_count(), 1);
}

/// A server that answers with keep-alive comments and empty chunks as fast as it can, and
/// never with the reply, is given up on at the progress timeout: retried while nothing
/// was delivered, an `Err` item after a delta. The idle timeout between pieces never
/// runs out on such a stream.
#[tokio::test]
async fn a_stream_of_pings_and_empty_chunks_fails_at_the_progress_timeout() {
    let nothing = b": ping\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{}}]}\n\n".to_vec();
    let pinging = |first: &[u8]| {
        let mut reply = Reply::sse(first.to_vec());
        reply.endless = Some(nothing.clone());
        reply
    };
    // The first delta must arrive within it too, or the attempt is retried (and meets an
    // unscripted reply): long enough for a loaded machine, and waited for once per case.
    let client = |server: &RawServer| {
        config(server)
            .progress_timeout(Duration::from_secs(1))
            .build()
            .unwrap()
    };

    let hel = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
    // Without the bound the stream never ends: a guard against a hang, not a timing.
    let guarded = |client| async move {
        tokio::time::timeout(Duration::from_secs(60), async { collect(&client).await })
            .await
            .expect("the progress timeout ends the stream")
    };
    let server = RawServer::serving(vec![pinging(hel)]).await;
    let (deltas, error) = guarded(client(&server)).await;
    assert_eq!(deltas, [ChatDelta::Text("Hel".into())]);
    let Some(Error::Llm {
        message, retryable, ..
    }) = error
    else {
        panic!("expected Error::Llm, got {error:?}");
    };
    assert!(retryable, "{message}");
    assert!(message.contains("sent nothing of the reply"), "{message}");
    assert!(message.contains("progress_timeout"), "{message}");
    assert_eq!(server.request_count(), 1);

    // Before any delta, the failure is retried like a stalled stream.
    let server = RawServer::serving(vec![
        pinging(b": hello\n\n"),
        Reply::sse(fixture("vllm_text.sse")),
    ])
    .await;
    let (deltas, error) = guarded(client(&server)).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        assembled(&deltas).0,
        ChatMessage::assistant("Bonjour \u{e0} tous.")
    );
    assert_eq!(server.request_count(), 2);
}
