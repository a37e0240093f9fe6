//! Errors a server reports in the body of a 200 reply, as OpenRouter does once a model
//! started answering: retried when their code says a retry may help, like the same error
//! sent as an event of a stream, and never taken for an answer or for a wrong base URL.
//! And a 400 that only mentions "upstream", or that fails unstreamed too, is not taken
//! for a refusal of streaming.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use fusion_agent::testing::MockLlmServer;
use fusion_agent::{AgentSession, ChatRequest, LlmClient, OpenAiClient, OpenAiConfig};
use fusion_core::{ChatMessage, ConversationStorage, Error, Role};
use fusion_storage_memory::InMemoryStorage;

/// OpenRouter's body for an upstream that failed after it answered 200.
const UPSTREAM_502: &str = r#"{"error":{"code":502,"message":"Provider returned error"}}"#;

/// The same, with the empty choice OpenRouter may send beside it.
const UPSTREAM_502_WITH_CHOICE: &str = r#"{"error":{"code":502,"message":"Provider returned error"},"choices":[{"index":0,"message":{"role":"assistant","content":""},"finish_reason":"error"}]}"#;

fn client(server: &MockLlmServer) -> OpenAiClient {
    OpenAiConfig::new("mock-model")
        .base_url(server.base_url())
        .max_retries(2)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build()
        .unwrap()
}

/// A request asking "hi".
fn hi() -> ChatRequest<'static> {
    ChatRequest {
        messages: vec![Cow::Owned(ChatMessage::user("hi"))],
        ..Default::default()
    }
}

async fn ask(client: &OpenAiClient) -> fusion_core::Result<String> {
    let request = hi();
    Ok(client.chat(&request).await?.message.content)
}

/// The message of the error that ends a streamed "hi".
async fn stream_error(client: &OpenAiClient) -> String {
    let request = hi();
    let mut stream = client.chat_stream(&request);
    match futures::StreamExt::next(&mut stream).await {
        Some(Err(Error::Llm { message, .. })) => message,
        other => panic!("expected an Error::Llm, got {other:?}"),
    }
}

#[tokio::test]
async fn an_upstream_failure_reported_in_a_200_is_retried() {
    for body in [UPSTREAM_502, UPSTREAM_502_WITH_CHOICE] {
        let server = MockLlmServer::start().await;
        server.push_raw(200, body).push_text("recovered");
        assert_eq!(ask(&client(&server)).await.unwrap(), "recovered", "{body}");
        assert_eq!(server.request_count(), 2, "{body}");
    }
}

#[tokio::test]
async fn a_final_error_reported_in_a_200_quotes_the_server_and_is_not_retried() {
    let server = MockLlmServer::start().await;
    server.push_raw(
        200,
        r#"{"error":{"code":400,"message":"This model's maximum context length is 8192 tokens"}}"#,
    );
    let Err(Error::Llm {
        message, retryable, ..
    }) = ask(&client(&server)).await
    else {
        panic!("expected an Error::Llm");
    };
    assert!(!retryable);
    assert!(message.contains("maximum context length"), "{message}");
    // Not blamed on the base URL: the server is an OpenAI-compatible one that failed.
    assert!(!message.contains("OPENAI_BASE_URL"), "{message}");
    assert_eq!(server.request_count(), 1);
}

/// The empty choice beside the error is no answer: the turn asks again and stores only
/// the answer it then gets.
#[tokio::test]
async fn a_turn_never_stores_the_empty_choice_beside_a_reported_error() {
    let server = MockLlmServer::start().await;
    server
        .push_raw(200, UPSTREAM_502_WITH_CHOICE)
        .push_text("Hello!");
    let storage = Arc::new(InMemoryStorage::new());
    let workspace = tempfile::tempdir().unwrap();
    let mut session = AgentSession::builder("reported-errors")
        .llm(Arc::new(client(&server)))
        .storage(storage.clone())
        .workspace_roots([workspace.path()])
        .build()
        .await
        .unwrap();
    let result = session.send_message("hi").await.unwrap();
    assert!(result.success);
    assert_eq!(result.result, "Hello!");
    let stored = storage.load("reported-errors").await.unwrap();
    let replies: Vec<&str> = stored
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(replies, ["Hello!"]);
}

/// A proxy's 400 about its "upstream" is the request's error, not a refusal of `stream`:
/// reported once, and the client keeps streaming (taken for a refusal, streaming was off
/// for the client and its clones for good, and the request was sent again unstreamed).
#[tokio::test]
async fn a_400_about_the_upstream_does_not_turn_streaming_off() {
    let server = MockLlmServer::start().await;
    server.push_raw(
        400,
        r#"{"error":{"message":"upstream provider rejected the request: context length exceeded"}}"#,
    );
    let client = client(&server);
    let message = stream_error(&client).await;
    assert!(message.contains("context length exceeded"), "{message}");
    assert_eq!(server.request_count(), 1);
    assert!(client.streams());
}

/// A 400 that names a word starting `stream` but is not about streaming (here a tool
/// called `stream_logs`) fails the same without streaming: then it was no refusal, and
/// the client keeps streaming (it turned streaming off for the client and its clones for
/// good as soon as the body named `stream`).
#[tokio::test]
async fn a_400_that_also_fails_unstreamed_does_not_turn_streaming_off() {
    let server = MockLlmServer::start().await;
    let invalid = r#"{"error":{"message":"Invalid schema for function 'stream_logs': 'object' is not valid"}}"#;
    server
        .push_raw(400, invalid)
        .push_raw(400, invalid)
        .push_text("streamed");
    let client = client(&server);
    let message = stream_error(&client).await;
    assert!(message.contains("Invalid schema"), "{message}");
    assert!(client.streams());
    assert!(client.clone().streams());
    // The next call streams again.
    let request = hi();
    let deltas: Vec<_> = futures::StreamExt::collect(client.chat_stream(&request)).await;
    assert!(deltas.iter().all(Result::is_ok), "{deltas:?}");
    let streamed: Vec<bool> = server
        .requests()
        .iter()
        .map(|body| body["stream"] == true)
        .collect();
    assert_eq!(streamed, [true, false, true]);
}
