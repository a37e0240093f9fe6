//! What the model once wrote but a server cannot take back stays stored as written, and
//! later requests carry it in a form every server parses: a tool call whose arguments are
//! not a JSON object (a reply cut mid-call, a small model's slip), which Ollama refuses
//! ("invalid tool call arguments"), a call of a name no tool could have, which OpenAI
//! refuses ("string does not match pattern"), and a reply with no text and no calls, which
//! vLLM refuses ("Invalid assistant message"). Sent back as stored, one such message made
//! every later turn of the session fail.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{SESSION, builder, client};
use fusion_agent::AgentSession;
use fusion_agent::testing::{MockLlmServer, MockReply};
use fusion_core::{ChatMessage, ConversationStorage};
use fusion_storage_memory::InMemoryStorage;
use serde_json::{Value, json};

/// A session on `server`, in memory, with the file tools in a workspace of its own (kept
/// while the session is used).
async fn session_on(
    server: &MockLlmServer,
) -> (Arc<InMemoryStorage>, tempfile::TempDir, AgentSession) {
    let storage = Arc::new(InMemoryStorage::new());
    let workspace = tempfile::tempdir().unwrap();
    let session = builder(Arc::new(client(server)), storage.clone(), workspace.path())
        .build()
        .await
        .unwrap();
    (storage, workspace, session)
}

/// Whether every tool call in the request's history has arguments that read as a JSON
/// object, as Ollama's OpenAI endpoint demands before it answers anything.
fn calls_parse(request: &Value) -> bool {
    request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["tool_calls"].as_array().cloned().unwrap_or_default())
        .all(|call| {
            let arguments = call["function"]["arguments"].as_str().unwrap_or_default();
            serde_json::from_str::<Value>(arguments).is_ok_and(|v| v.is_object())
        })
}

#[tokio::test]
async fn a_call_with_broken_arguments_never_breaks_later_requests() {
    let replies = Arc::new(AtomicUsize::new(0));
    let counted = replies.clone();
    // Answers like Ollama: a 400 for a history it cannot parse, else the next reply of a
    // two-turn conversation whose first call's arguments stop mid-JSON.
    let server = MockLlmServer::start_with(move |request| {
        if !calls_parse(request) {
            return MockReply::Raw {
                status: 400,
                body: json!({"error": {"message": "invalid tool call arguments",
                    "type": "invalid_request_error"}})
                .to_string(),
            };
        }
        match counted.fetch_add(1, Ordering::SeqCst) {
            0 => MockReply::tool_call("read_file", r#"{"path": "notes.txt"#),
            1 => MockReply::text("I could not read it."),
            _ => MockReply::text("Hello again."),
        }
    })
    .await;
    let (storage, _workspace, mut session) = session_on(&server).await;

    let first = session.send_message("Read notes.txt").await.unwrap();
    assert_eq!(first.result, "I could not read it.");
    assert!(first.steps[0].observation.contains("not valid JSON"));
    let second = session.send_message("Hi").await.unwrap();
    assert_eq!(second.result, "Hello again.");

    // Storage keeps what the model wrote; only the requests carry it sendable.
    let stored = storage.load(SESSION).await.unwrap();
    let call = stored.iter().find_map(|m| m.tool_calls.first()).unwrap();
    assert_eq!(call.arguments, r#"{"path": "notes.txt"#);
}

/// Whether every reply in the request's history has text or tool calls, as vLLM's OpenAI
/// server demands before it answers anything.
fn replies_have_content(request: &Value) -> bool {
    request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "assistant" && m["tool_calls"].is_null())
        .all(|m| m["content"].as_str().is_some_and(|text| !text.is_empty()))
}

#[tokio::test]
async fn an_empty_reply_never_breaks_later_requests() {
    let replies = Arc::new(AtomicUsize::new(0));
    let counted = replies.clone();
    // Answers like vLLM: a 400 for a history holding an empty reply, else the next reply
    // of a two-turn conversation whose first answer is empty (a reasoning model that
    // spent its output limit thinking).
    let server = MockLlmServer::start_with(move |request| {
        if !replies_have_content(request) {
            return MockReply::Raw {
                status: 400,
                body: json!({"object": "error", "message": "Invalid assistant message: \
                    role='assistant' content=None tool_calls=None prefix=False",
                    "type": "BadRequestError", "param": null, "code": 400})
                .to_string(),
            };
        }
        match counted.fetch_add(1, Ordering::SeqCst) {
            0 => MockReply::finished("", "length"),
            _ => MockReply::text("Paris."),
        }
    })
    .await;
    let (storage, _workspace, mut session) = session_on(&server).await;

    let first = session.send_message("Capital of France?").await.unwrap();
    assert_eq!(first.result, "");
    assert!(first.answer_is_cut());
    let second = session.send_message("Try again, briefly.").await.unwrap();
    assert_eq!(second.result, "Paris.");

    // Storage keeps the reply as it came.
    let stored = storage.load(SESSION).await.unwrap();
    let replies: Vec<&str> = stored
        .iter()
        .filter(|m| m.role == fusion_core::Role::Assistant)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(replies, ["", "Paris."]);
}

/// Whether `name` is one OpenAI takes, for a tool or a participant: `^[a-zA-Z0-9_-]{1,64}$`.
fn fits_openai(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Whether every name in the request's history (a message's participant, a call's tool)
/// is one OpenAI takes, as it checks before it answers anything.
fn names_fit(request: &Value) -> bool {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let participants = messages.iter().filter_map(|m| m.get("name"));
    let calls = messages
        .iter()
        .flat_map(|m| m["tool_calls"].as_array().cloned().unwrap_or_default());
    let tools: Vec<Value> = calls.map(|call| call["function"]["name"].clone()).collect();
    participants
        .chain(&tools)
        .all(|name| name.as_str().is_some_and(fits_openai))
}

/// A 400 as OpenAI answers a name it does not take.
fn name_refused() -> MockReply {
    MockReply::Raw {
        status: 400,
        body: json!({"error": {"message": "Invalid 'messages[2].tool_calls[0].function.name': \
            string does not match pattern. Expected a string that matches the pattern \
            '^[a-zA-Z0-9_-]+$'.",
            "type": "invalid_request_error", "code": "invalid_value"}})
        .to_string(),
    }
}

/// Found by a review: a call of a tool name the model made up (a namespace before it, a
/// space in it) was answered "no tool named", and sent back as it was stored, so OpenAI
/// refused the next request, and every later one of the session.
#[tokio::test]
async fn a_call_of_a_name_no_tool_could_have_never_breaks_later_requests() {
    let replies = Arc::new(AtomicUsize::new(0));
    let counted = replies.clone();
    let made_up = ["functions.read_file", "read file", &"x".repeat(65), ""].map(String::from);
    let names = made_up.clone();
    let server = MockLlmServer::start_with(move |request| {
        if !names_fit(request) {
            return name_refused();
        }
        let at = counted.fetch_add(1, Ordering::SeqCst);
        match names.get(at) {
            Some(name) => MockReply::tool_call(name, "{}"),
            None => MockReply::text("Done."),
        }
    })
    .await;
    let (storage, _workspace, mut session) = session_on(&server).await;

    let first = session.send_message("Read notes.txt").await.unwrap();
    assert_eq!(first.result, "Done.");
    let tried: Vec<&str> = first.steps.iter().map(|s| s.tool.as_str()).collect();
    assert_eq!(tried, made_up);
    assert!(
        first
            .steps
            .iter()
            .all(|s| s.observation.contains("no tool named"))
    );
    let second = session.send_message("Hi").await.unwrap();
    assert_eq!(second.result, "Done.");

    // Storage keeps the names the model wrote; only the requests carry them sendable.
    let stored = storage.load(SESSION).await.unwrap();
    let names: Vec<&str> = stored
        .iter()
        .flat_map(|m| &m.tool_calls)
        .map(|call| call.name.as_str())
        .collect();
    assert_eq!(names, made_up);
}

/// Found by a review: a message stored with a participant's name OpenAI does not take (an
/// application's user "Ada Lovelace", an import's) was sent with it, and OpenAI refused
/// every request of the session.
#[tokio::test]
async fn a_participant_name_openai_does_not_take_never_breaks_requests() {
    let server = MockLlmServer::start_with(|request| match names_fit(request) {
        true => MockReply::text("Hello, Ada."),
        false => name_refused(),
    })
    .await;
    let (storage, _workspace, mut session) = session_on(&server).await;
    let named = [
        ChatMessage::user("I am Ada.").with_name("Ada Lovelace"),
        ChatMessage::assistant("Noted.").with_name(""),
    ];
    storage.append(SESSION, &named).await.unwrap();

    let answer = session.send_message("Greet me.").await.unwrap();
    assert_eq!(answer.result, "Hello, Ada.");
    let stored = storage.load(SESSION).await.unwrap();
    assert_eq!(stored[0].name.as_deref(), Some("Ada Lovelace"));
}
