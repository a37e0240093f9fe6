//! `OpenAiClient` against `MockLlmServer`, a real HTTP server on loopback: the request
//! shape, reply parsing, retries and error messages, end to end through reqwest.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use fusion_agent::testing::{MockLlmServer, MockReply};
use fusion_agent::{
    ChatRequest, LlmClient, OpenAiClient, OpenAiConfig, SamplingOptions, ToolDefinition,
};
use fusion_core::{ChatMessage, Error, ToolCall};
use serde_json::json;

const KEY: &str = "sk-test-secret-4242";

/// A client for `base_url` with tiny backoffs so retry tests stay fast.
fn config(base_url: String) -> OpenAiConfig {
    OpenAiConfig::new("mock-model")
        .base_url(base_url)
        .max_retries(2)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
}

fn client(server: &MockLlmServer) -> OpenAiClient {
    config(server.base_url()).build().unwrap()
}

fn ask(messages: &[ChatMessage]) -> ChatRequest<'_> {
    ChatRequest {
        messages: messages.iter().map(Cow::Borrowed).collect(),
        ..Default::default()
    }
}

fn llm_error(err: Error) -> (String, Option<u16>, bool) {
    let text = err.to_string();
    match err {
        Error::Llm {
            status, retryable, ..
        } => (text, status, retryable),
        other => panic!("expected Error::Llm, got {other:?}"),
    }
}

/// What `client(server)` answers "hi" with, retries included: the reply's text, or the
/// error's text, status and retryability.
async fn asked_hi(server: &MockLlmServer) -> Result<String, (String, Option<u16>, bool)> {
    client(server)
        .chat(&ask(&[ChatMessage::user("hi")]))
        .await
        .map(|reply| reply.message.content)
        .map_err(llm_error)
}

#[tokio::test]
async fn a_text_reply_becomes_an_assistant_message() {
    let server = MockLlmServer::start().await;
    server.push_text("Hello there.");
    let reply = client(&server)
        .chat(&ask(&[ChatMessage::user("hi")]))
        .await
        .unwrap();
    assert_eq!(reply.message, ChatMessage::assistant("Hello there."));
    assert_eq!(reply.finish_reason.as_deref(), Some("stop"));
    assert!(reply.usage.is_some());
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn tool_call_arguments_are_kept_verbatim_even_when_invalid_json() {
    let server = MockLlmServer::start().await;
    server.push_tool_calls([
        ("read_file", r#"{"path": "a.txt"}"#),
        ("write_file", r#"{"path": "b.txt", "content": unterminated"#),
    ]);
    let reply = client(&server)
        .chat(&ask(&[ChatMessage::user("go")]))
        .await
        .unwrap();
    let calls = &reply.message.tool_calls;
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].name, "read_file");
    assert_eq!(calls[0].arguments, r#"{"path": "a.txt"}"#);
    assert_eq!(
        calls[1].arguments,
        r#"{"path": "b.txt", "content": unterminated"#
    );
    assert_ne!(calls[0].id, calls[1].id);
    assert_eq!(reply.message.content, "");
    assert_eq!(reply.finish_reason.as_deref(), Some("tool_calls"));
}

#[tokio::test]
async fn the_request_has_the_openai_shape_without_metadata() {
    let server = MockLlmServer::start().await;
    server.require_api_key(KEY).push_text("ok");
    let client = config(server.base_url()).api_key(KEY).build().unwrap();
    let history = vec![
        ChatMessage::system("be brief").with_metadata("kind", json!("prompt")),
        ChatMessage::user("read a.txt"),
        ChatMessage::assistant_with_tool_calls(
            "",
            vec![ToolCall::new("call_1", "read_file", r#"{"path":"a.txt"}"#)],
        ),
        ChatMessage::tool_result("call_1", "hi").with_metadata("pruned", json!(false)),
    ];
    let tool = ToolDefinition {
        name: "read_file".into(),
        description: "Reads a file.".into(),
        parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
    };
    let request = ChatRequest {
        tools: vec![tool],
        options: SamplingOptions {
            temperature: Some(0.5),
            max_tokens: Some(100),
        },
        ..ask(&history)
    };
    client.chat(&request).await.unwrap();

    let recorded = server.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].header("authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
    assert_eq!(
        recorded[0].body,
        json!({
            "model": "mock-model",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "read a.txt"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                    "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"a.txt\"}"}}]},
                {"role": "tool", "content": "hi", "tool_call_id": "call_1"},
            ],
            "tools": [{"type": "function", "function": {"name": "read_file",
                "description": "Reads a file.",
                "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}],
            "temperature": 0.5,
            "max_tokens": 100,
        })
    );
    assert!(!recorded[0].body.to_string().contains("metadata"));
}

#[tokio::test]
async fn text_mode_sends_no_tools() {
    let server = MockLlmServer::start().await;
    server.push_text("Final Answer: ok");
    let client = config(server.base_url())
        .native_tools(false)
        .build()
        .unwrap();
    assert!(!client.supports_native_tools());
    let question = [ChatMessage::user("q")];
    let request = ChatRequest {
        tools: vec![ToolDefinition {
            name: "t".into(),
            description: "d".into(),
            parameters: json!({}),
        }],
        ..ask(&question)
    };
    client.chat(&request).await.unwrap();
    assert!(server.requests()[0].get("tools").is_none());
}

#[tokio::test]
async fn a_server_error_is_retried() {
    let server = MockLlmServer::start().await;
    server
        .push_status(500)
        .push_status(503)
        .push_text("recovered");
    assert_eq!(asked_hi(&server).await.unwrap(), "recovered");
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn a_rate_limit_with_retry_after_is_retried() {
    let server = MockLlmServer::start().await;
    server
        .push_status_with_retry_after(429, 1)
        .push_text("after the wait");
    assert_eq!(asked_hi(&server).await.unwrap(), "after the wait");
    assert_eq!(server.request_count(), 2);
}

/// A client whose own backoff is an hour, so a retry that came quickly can only have
/// followed the server's `Retry-After` (capped at `retry_after_max`).
fn patient_client(server: &MockLlmServer, retry_after_max: Duration) -> OpenAiClient {
    let hour = Duration::from_secs(3600);
    config(server.base_url())
        .backoff(hour, hour)
        .retry_after_max(retry_after_max)
        .build()
        .unwrap()
}

/// `chat`, failing (instead of hanging) if the client waits on its hour-long backoff or
/// on a far date rather than on the capped `Retry-After`.
async fn chat_soon(client: &OpenAiClient, what: &str) -> String {
    let question = [ChatMessage::user("hi")];
    let request = ask(&question);
    let reply = tokio::time::timeout(Duration::from_secs(60), client.chat(&request))
        .await
        .unwrap_or_else(|_| panic!("{what}"))
        .unwrap();
    reply.message.content
}

#[tokio::test]
async fn a_retry_after_date_in_the_past_means_retry_now() {
    let server = MockLlmServer::start().await;
    server
        .push_status_with_retry_at(429, SystemTime::now() - Duration::from_secs(3600))
        .push_text("at once");
    let client = patient_client(&server, Duration::from_secs(3600));
    let content = chat_soon(&client, "a past date must mean no wait").await;
    assert_eq!(content, "at once");
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn a_retry_after_date_in_an_obsolete_form_is_read() {
    let server = MockLlmServer::start().await;
    server
        .push(MockReply::Status {
            status: 503,
            retry_after: Some("Sun Nov  6 08:49:37 1994".into()), // asctime, long past
        })
        .push_text("read it");
    let client = patient_client(&server, Duration::from_secs(3600));
    let content = chat_soon(&client, "an asctime date must be read as a date").await;
    assert_eq!(content, "read it");
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn a_far_retry_after_date_is_cut_to_retry_after_max() {
    let server = MockLlmServer::start().await;
    server
        .push_status_with_retry_at(503, SystemTime::now() + Duration::from_secs(86_400))
        .push_text("after the capped wait");
    let client = patient_client(&server, Duration::from_millis(20));
    let content = chat_soon(&client, "a date a day away must be capped").await;
    assert_eq!(content, "after the capped wait");
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn retries_stop_at_max_retries_with_a_retryable_error() {
    let server = MockLlmServer::start().await;
    server.set_default(MockReply::status(502));
    let err = client(&server)
        .chat(&ask(&[ChatMessage::user("hi")]))
        .await
        .unwrap_err();
    let (text, status, retryable) = llm_error(err);
    assert_eq!(status, Some(502));
    assert!(retryable);
    assert!(text.contains("gave up after 3 attempts"), "{text}");
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn an_exhausted_script_is_reported_clearly() {
    let server = MockLlmServer::start().await;
    let err = config(server.base_url())
        .max_retries(0)
        .build()
        .unwrap()
        .chat(&ask(&[ChatMessage::user("hi")]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mock script exhausted"), "{err}");
}

#[tokio::test]
async fn unauthorized_fails_at_once_and_names_the_key_variable() {
    let server = MockLlmServer::start().await;
    server
        .require_api_key("the-right-key")
        .push_text("never sent");
    let client = config(server.base_url()).api_key(KEY).build().unwrap();
    let err = client
        .chat(&ask(&[ChatMessage::user("hi")]))
        .await
        .unwrap_err();
    let (text, status, retryable) = llm_error(err);
    assert_eq!(status, Some(401));
    assert!(!retryable);
    assert!(text.contains("OPENAI_API_KEY"), "{text}");
    assert!(!text.contains(KEY), "{text}");
    assert_eq!(server.request_count(), 1);
    assert_eq!(
        server.pending(),
        1,
        "a rejected request does not consume the script"
    );
}

#[tokio::test]
async fn not_found_names_the_base_url_and_the_model() {
    let server = MockLlmServer::start().await;
    server.push_raw(
        404,
        r#"{"error":{"message":"model \"mock-model\" not found, try pulling it first"}}"#,
    );
    let err = client(&server)
        .chat(&ask(&[ChatMessage::user("hi")]))
        .await
        .unwrap_err();
    let (text, status, retryable) = llm_error(err);
    assert_eq!((status, retryable), (Some(404), false));
    assert!(
        text.contains("FUSION_MODEL") && text.contains("`mock-model`"),
        "{text}"
    );
    assert!(text.contains("OPENAI_BASE_URL"), "{text}");
    assert!(text.contains("try pulling it first"), "{text}");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_wrong_path_is_a_404_naming_the_base_url() {
    let server = MockLlmServer::start().await;
    // The mock serves only /v1/...; forgetting /v1 is a classic misconfiguration.
    let base = server.base_url().trim_end_matches("/v1").to_owned();
    let err = config(base)
        .build()
        .unwrap()
        .chat(&ask(&[ChatMessage::user("hi")]))
        .await
        .unwrap_err();
    let (text, status, _) = llm_error(err);
    assert_eq!(status, Some(404));
    assert!(text.contains("usually end in /v1"), "{text}");
}

#[tokio::test]
async fn a_bad_request_quotes_the_server_and_is_not_retried() {
    let server = MockLlmServer::start().await;
    server.push_raw(
        400,
        r#"{"error":{"message":"this model does not support tools","type":"invalid_request_error"}}"#,
    );
    let err = client(&server)
        .chat(&ask(&[ChatMessage::user("hi")]))
        .await
        .unwrap_err();
    let (text, status, retryable) = llm_error(err);
    assert_eq!((status, retryable), (Some(400), false));
    assert!(text.contains("this model does not support tools"), "{text}");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_malformed_success_body_is_a_clear_final_error() {
    for body in ["<html>proxy login</html>", r#"{"object":"list","data":[]}"#] {
        let server = MockLlmServer::start().await;
        server.push_raw(200, body);
        let err = client(&server)
            .chat(&ask(&[ChatMessage::user("hi")]))
            .await
            .unwrap_err();
        let (text, status, retryable) = llm_error(err);
        assert_eq!((status, retryable), (Some(200), false), "{text}");
        assert!(text.contains("not with a chat completion"), "{text}");
        assert_eq!(server.request_count(), 1);
    }
}

/// A reply with no choice (`{"choices":[]}`) is no answer, the endpoint's fault: retried
/// like a stream that ends before any choice, and when the retries run out an error that
/// says so, where it was a final "not a chat completion" telling to check the base URL.
#[tokio::test]
async fn a_reply_with_no_choice_is_retried_and_blames_the_endpoint() {
    let server = MockLlmServer::start().await;
    server
        .push_raw(200, r#"{"choices":[]}"#)
        .push_text("recovered");
    assert_eq!(asked_hi(&server).await.unwrap(), "recovered");
    assert_eq!(server.request_count(), 2);

    let server = MockLlmServer::start().await;
    server.set_default(MockReply::Raw {
        status: 200,
        body: r#"{"choices":[],"usage":{"prompt_tokens":3}}"#.into(),
    });
    let (text, status, retryable) = asked_hi(&server).await.unwrap_err();
    assert_eq!((status, retryable), (Some(200), true), "{text}");
    assert!(text.contains("no choice in the reply"), "{text}");
    assert!(text.contains("the endpoint's fault"), "{text}");
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn connection_refused_is_retried_then_fails_retryably() {
    // A port bound and never listened on: connections to it are refused for as long as
    // the socket holds it. (One bound and released could be taken meanwhile by another
    // test's server, which would answer.)
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let client = config(format!("http://127.0.0.1:{port}/v1"))
        .api_key(KEY)
        .build()
        .unwrap();
    let err = client
        .chat(&ask(&[ChatMessage::user("hi")]))
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    let (text, status, _) = llm_error(err);
    assert_eq!(status, None);
    assert!(text.contains("could not connect"), "{text}");
    assert!(text.contains("gave up after 3 attempts"), "{text}");
    assert!(!text.contains(KEY), "{text}");
    drop(socket);
}

#[tokio::test]
async fn the_api_key_never_shows_in_debug_output() {
    let client = config("http://127.0.0.1:9/v1".into())
        .api_key(KEY)
        .build()
        .unwrap();
    let shown = format!("{client:?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains(r#"api_key: Some("***")"#), "{shown}");
    let shown = format!("{:?}", client.config());
    assert!(!shown.contains(KEY), "{shown}");
}

#[tokio::test]
async fn a_key_echoed_by_the_server_is_masked() {
    let server = MockLlmServer::start().await;
    server.push_raw(
        401,
        format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}"}}}}"#),
    );
    let client = config(server.base_url()).api_key(KEY).build().unwrap();
    let err = client
        .chat(&ask(&[ChatMessage::user("hi")]))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(!text.contains(KEY), "{text}");
    assert!(text.contains("***"), "{text}");
}

#[tokio::test]
async fn fast_mode_answers_from_a_rule_and_measures_its_own_time() {
    // One tool call, then a final answer once the tool result is in the history.
    let server = MockLlmServer::start_with(|request| {
        let last_role = request["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["role"].as_str())
            .unwrap_or_default()
            .to_owned();
        if last_role == "tool" {
            MockReply::text("done")
        } else {
            MockReply::tool_call("read_file", "{}")
        }
    })
    .await;
    server.set_record_requests(false);
    let client = client(&server);
    let first = client.chat(&ask(&[ChatMessage::user("go")])).await.unwrap();
    assert_eq!(first.message.tool_calls.len(), 1);
    let call_id = first.message.tool_calls[0].id.clone();
    let history = [
        ChatMessage::user("go"),
        first.message,
        ChatMessage::tool_result(call_id, "contents"),
    ];
    let second = client.chat(&ask(&history)).await.unwrap();
    assert_eq!(second.message.content, "done");
    assert_eq!(server.request_count(), 2);
    assert!(server.requests().is_empty(), "recording was turned off");
    assert!(server.server_time() > Duration::ZERO);
}

#[test]
fn the_default_endpoint_without_a_key_is_a_config_error() {
    let err = OpenAiConfig::from_env_with(|_| None)
        .unwrap()
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("OPENAI_API_KEY"), "{err}");
    assert!(err.to_string().contains("OPENAI_BASE_URL"), "{err}");
}

#[tokio::test]
async fn a_history_of_several_megabytes_goes_through() {
    // Benchmarks send 10,000-message histories; the mock must not cap the body size.
    let server = MockLlmServer::start().await;
    server.push_text("ok");
    let history: Vec<ChatMessage> = (0..5_000)
        .map(|i| ChatMessage::user(format!("{i:04} {}", "x".repeat(1_000))))
        .collect();
    let reply = client(&server).chat(&ask(&history)).await.unwrap();
    assert_eq!(reply.message.content, "ok");
    assert_eq!(
        server.requests()[0]["messages"].as_array().unwrap().len(),
        5_000
    );
}

#[test]
fn an_empty_key_counts_as_no_key() {
    let err = OpenAiConfig::new("gpt-4o-mini")
        .api_key("  ")
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}
