//! How the ids of stored tool calls are sent back: as stored by default (Kimi K2 writes
//! `functions.read_file:0` and its chat template renders those ids as the headers of the
//! calls the model reads, so servers running K2 natively need them unchanged), and in a
//! form every server takes with `OpenAiConfig::portable_call_ids(true)` (Anthropic's
//! OpenAI-compatible endpoint refuses anything outside `[a-zA-Z0-9_-]`, Mistral's anything
//! but 9 letters and digits). An endpoint refusing a stored id says to turn that option on.

use std::borrow::Cow;

use fusion_agent::testing::{MockLlmServer, MockReply};
use fusion_agent::{ChatRequest, LlmClient, OpenAiClient, OpenAiConfig};
use fusion_core::{ChatMessage, ToolCall};
use futures::StreamExt;
use serde_json::{Value, json};

const KIMI_ID: &str = "functions.read_file:0";

/// Every call id and result id in a request's history, in order.
fn ids(request: &Value) -> Vec<String> {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let mut ids = Vec::new();
    for message in &messages {
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            ids.push(call["id"].as_str().unwrap_or_default().to_owned());
        }
        if let Some(id) = message["tool_call_id"].as_str() {
            ids.push(id.to_owned());
        }
    }
    ids
}

/// Whether `id` has the form of Mistral's ids: exactly 9 of `[a-zA-Z0-9]`.
fn mistral_form(id: &str) -> bool {
    id.len() == 9 && id.chars().all(|c| c.is_ascii_alphanumeric())
}

/// A server that refuses ids as Mistral's endpoint does (and vLLM or mlx serving a
/// Mistral chat template), else answers "ok".
async fn mistral_like() -> MockLlmServer {
    MockLlmServer::start_with(|request| {
        match ids(request).into_iter().find(|id| !mistral_form(id)) {
            None => MockReply::text("ok"),
            Some(id) => MockReply::Raw {
                status: 400,
                body: json!({"object": "error", "message": format!("Tool call id was {id} but \
                    must be a-z, A-Z, 0-9, with a length of 9."), "type": "invalid_function_call",
                    "param": null, "code": "3280"})
                .to_string(),
            },
        }
    })
    .await
}

/// A server that refuses ids as Anthropic's endpoint does, else answers "ok".
async fn anthropic_like() -> MockLlmServer {
    MockLlmServer::start_with(|request| {
        let fits = |id: &String| {
            !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if ids(request).iter().all(fits) {
            return MockReply::text("ok");
        }
        MockReply::Raw {
            status: 400,
            body: json!({"type": "error", "error": {"type": "invalid_request_error",
                "message": "messages.1.content.0.tool_use.id: String should match pattern \
                    '^[a-zA-Z0-9_-]+$'"}})
            .to_string(),
        }
    })
    .await
}

fn client(server: &MockLlmServer, portable: bool, stream: bool) -> OpenAiClient {
    OpenAiConfig::new("kimi-k2")
        .base_url(server.base_url())
        .max_retries(0)
        .stream(stream)
        .portable_call_ids(portable)
        .build()
        .unwrap()
}

fn history() -> Vec<ChatMessage> {
    vec![
        ChatMessage::user("Read notes.txt"),
        ChatMessage::assistant_with_tool_calls(
            "",
            vec![ToolCall::new(
                KIMI_ID,
                "read_file",
                r#"{"path":"notes.txt"}"#,
            )],
        ),
        ChatMessage::tool_result(KIMI_ID, "hello"),
    ]
}

/// A plain call's answer, and a streamed call's (its first item when that is an error).
async fn ask(client: &OpenAiClient, messages: &[ChatMessage]) -> [Result<String, String>; 2] {
    let request = ChatRequest {
        messages: messages.iter().map(Cow::Borrowed).collect(),
        ..Default::default()
    };
    let plain = client.chat(&request).await;
    let plain = plain.map(|r| r.message.content).map_err(|e| e.to_string());
    let mut stream = client.chat_stream(&request);
    let mut streamed = Err("no item".to_owned());
    while let Some(item) = stream.next().await {
        match item {
            Ok(fusion_agent::ChatDelta::Done(response)) => {
                streamed = Ok(response.message.content);
            }
            Ok(_) => {}
            Err(error) => {
                streamed = Err(error.to_string());
                break;
            }
        }
    }
    [plain, streamed]
}

/// Found by a review of ef3fd2f: every id outside `[a-zA-Z0-9_-]` was sent replaced, so a
/// server running Kimi K2 natively got `functions_read_file_0_<hash>` for each past call
/// of the model's, silently degrading its view of its own history.
#[tokio::test]
async fn call_ids_are_sent_as_stored_by_default() {
    let server = MockLlmServer::start().await;
    server.set_default(MockReply::text("ok"));
    let client = client(&server, false, true);
    let messages = history();
    let body: Value = serde_json::from_slice(
        &client
            .request_body(&ChatRequest {
                messages: messages.iter().map(Cow::Borrowed).collect(),
                ..Default::default()
            })
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ids(&body), [KIMI_ID, KIMI_ID]);
    for answer in ask(&client, &messages).await {
        assert_eq!(answer.as_deref(), Ok("ok"));
    }
    for request in server.requests() {
        assert_eq!(ids(&request), [KIMI_ID, KIMI_ID]);
    }
}

/// An endpoint refusing a stored id fails the request loudly, and the error says which
/// option sends ids it takes; with the option on, the same history is answered.
#[tokio::test]
async fn a_refused_id_says_to_send_portable_ids_and_they_are_taken() {
    let server = anthropic_like().await;
    let messages = history();
    for stream in [false, true] {
        for answer in ask(&client(&server, false, stream), &messages).await {
            let error = answer.unwrap_err();
            for said in [
                "tool_use.id",
                "portable_call_ids",
                "FUSION_PORTABLE_CALL_IDS",
            ] {
                assert!(error.contains(said), "{said}: {error}");
            }
            assert!(error.contains(KIMI_ID), "{error}");
        }
        let refused = server.request_count();
        for answer in ask(&client(&server, true, stream), &messages).await {
            assert_eq!(answer.as_deref(), Ok("ok"));
        }
        for request in &server.requests()[refused..] {
            let sent = ids(request);
            assert_eq!(sent[0], sent[1], "a call and its result carry one id");
            assert!(mistral_form(&sent[0]), "{sent:?}");
        }
    }
}

/// Found by a review: Mistral's endpoint takes only ids of 9 letters and digits, and
/// portable ids kept OpenAI's `call_...` as they were and wrote others as
/// `functions_read_file_0_<hash>`, so a session begun with another provider (or a reply
/// whose ids Fusion replaced, `call_fusion_...`) failed every request to Mistral even with
/// portable ids on. Portable ids have Mistral's form now.
#[tokio::test]
async fn portable_ids_are_taken_by_mistral() {
    let server = mistral_like().await;
    let (openai, native) = ("call_Ab12Cd34Ef56Gh78Ij90Kl12", "aB3dE5gH7");
    let mut messages = history();
    messages.push(ChatMessage::assistant_with_tool_calls(
        "",
        vec![
            ToolCall::new(openai, "read_file", "{}"),
            ToolCall::new(native, "read_file", "{}"),
        ],
    ));
    messages.push(ChatMessage::tool_result(openai, "a"));
    messages.push(ChatMessage::tool_result(native, "b"));
    for stream in [false, true] {
        // OpenAI's ids alone, which other servers take, get the hint from Mistral too.
        for answer in ask(&client(&server, false, stream), &messages[3..]).await {
            let error = answer.unwrap_err();
            assert!(error.contains(&format!("was {openai} but")), "{error}");
            assert!(error.contains("FUSION_PORTABLE_CALL_IDS"), "{error}");
        }
        let refused = server.request_count();
        for answer in ask(&client(&server, true, stream), &messages).await {
            assert_eq!(answer.as_deref(), Ok("ok"));
        }
        for request in &server.requests()[refused..] {
            let sent = ids(request);
            assert_eq!(sent.len(), 6);
            assert_eq!(sent[0], sent[1], "a call and its result carry one id");
            assert_eq!((&sent[2], &sent[3]), (&sent[4], &sent[5]));
            assert!(sent.iter().all(|id| mistral_form(id)), "{sent:?}");
            assert!(sent[0] != sent[2] && sent[0] != sent[3] && sent[2] != sent[3]);
        }
    }
}

/// The ids `client` sends for `messages`.
fn sent_ids(client: &OpenAiClient, messages: &[ChatMessage]) -> Vec<String> {
    let body = client
        .request_body(&ChatRequest {
            messages: messages.iter().map(Cow::Borrowed).collect(),
            ..Default::default()
        })
        .unwrap();
    ids(&serde_json::from_slice(&body).unwrap())
}

/// Found by a review of 544473a: an id already of the portable form went as stored. A
/// model that writes its calls' ids (llama.cpp serving Mistral's format parses them from
/// its text) and repeats an earlier call as the request showed it copies the id sent for
/// a stored `call_fusion_...`: no stored call has that id, so the session kept it, and
/// every later request carried two calls, and two results, under one id, which the model
/// cannot tell apart and Anthropic refuses ("tool_use ids must be unique").
#[tokio::test]
async fn an_id_copied_from_a_request_is_sent_apart_from_the_one_it_copied() {
    let server = MockLlmServer::start().await;
    let client = client(&server, true, false);
    let stored = "call_fusion_1_0_8f3a";
    let mut messages = vec![
        ChatMessage::user("Read notes.txt"),
        ChatMessage::assistant_with_tool_calls("", vec![ToolCall::new(stored, "read_file", "{}")]),
        ChatMessage::tool_result(stored, "hello"),
    ];
    let copied = sent_ids(&client, &messages)[0].clone();
    messages.push(ChatMessage::assistant_with_tool_calls(
        "",
        vec![ToolCall::new(&copied, "read_file", "{}")],
    ));
    messages.push(ChatMessage::tool_result(&copied, "hello"));
    let sent = sent_ids(&client, &messages);
    assert_eq!(sent.len(), 4);
    assert_eq!((&sent[0], &sent[2]), (&sent[1], &sent[3]), "{sent:?}");
    assert_ne!(sent[0], sent[2], "two calls sent under one id");
    assert!(sent.iter().all(|id| mistral_form(id)), "{sent:?}");
}

/// Found by a review: with portable ids on, a server's refusal quotes the id it was sent
/// (9 letters and digits of a hash), which is nowhere in the stored session, so a person
/// debugging it could not find the call. The error names the stored id beside it, for a
/// plain and a streamed request, whether the refusal comes before the reply or amid it.
#[tokio::test]
async fn an_error_quoting_a_portable_id_names_the_stored_one() {
    let unanswered = |request: &Value| {
        format!(
            "An assistant message with 'tool_calls' must be followed by tool messages \
             responding to each 'tool_call_id'. The following tool_call_ids did not have \
             response messages: {}",
            ids(request)[0]
        )
    };
    let refusing = MockLlmServer::start_with(move |request| MockReply::Raw {
        status: 400,
        body: json!({"error": {"message": unanswered(request)}}).to_string(),
    })
    .await;
    let amid = MockLlmServer::start_with(move |request| {
        MockReply::partial(
            [fusion_agent::testing::MockDelta::text("Let me")],
            fusion_agent::testing::MockStreamEnd::Error(unanswered(request)),
        )
    })
    .await;
    let messages = &history()[..2];
    let sent = sent_ids(&client(&refusing, true, false), messages)[0].clone();
    assert!(mistral_form(&sent), "{sent}");
    for server in [&refusing, &amid] {
        for stream in [false, true] {
            for answer in ask(&client(server, true, stream), messages).await {
                let error = answer.unwrap_err();
                assert!(error.contains(&format!("messages: {sent}")), "{error}");
                let named = format!("`{sent}` is stored as `{KIMI_ID}`");
                assert!(error.contains(&named), "{error}");
                assert_eq!(error.matches(&named).count(), 1, "named once: {error}");
            }
        }
    }
    // Sent as stored, the server quotes the stored id itself: nothing is added.
    for answer in ask(&client(&refusing, false, false), messages).await {
        let error = answer.unwrap_err();
        assert!(!error.contains("is stored as"), "{error}");
    }
}
