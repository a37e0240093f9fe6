//! Shared fixtures for the session tests: a scripted OpenAI-compatible server on loopback
//! with the real `OpenAiClient`, a client wrapper that watches storage at each request,
//! one that holds a request until released, a storage wrapper that fails on demand, and
//! one that holds an append or lets another writer land just before a read.

#![allow(dead_code)] // Each test binary uses a different subset.

pub mod cancelled;
pub mod gated;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fusion_agent::testing::{MockLlmServer, MockReply, MockToolCall};
use fusion_agent::{
    AgentSession, ChatRequest, ChatResponse, LlmClient, OpenAiClient, OpenAiConfig, SessionBuilder,
};
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, Result, Revision, SessionInfo,
};
use fusion_storage_memory::InMemoryStorage;
use serde_json::Value;
use tokio::sync::Notify;

pub const SESSION: &str = "user-123";

/// A real `OpenAiClient` for `server`, without retries so a scripted error shows at once.
pub fn client(server: &MockLlmServer) -> OpenAiClient {
    OpenAiConfig::new("mock-model")
        .base_url(server.base_url())
        .max_retries(0)
        .build()
        .unwrap()
}

/// A text-ReAct client: the same server, native tool calling off.
pub fn text_client(server: &MockLlmServer) -> OpenAiClient {
    OpenAiConfig::new("mock-model")
        .base_url(server.base_url())
        .max_retries(0)
        .native_tools(false)
        .build()
        .unwrap()
}

/// A builder for `SESSION` talking to `llm`, storing in `storage`, with the file tools
/// confined to `workspace`.
pub fn builder(
    llm: Arc<dyn LlmClient>,
    storage: Arc<dyn ConversationStorage>,
    workspace: &std::path::Path,
) -> SessionBuilder {
    AgentSession::builder(SESSION)
        .llm(llm)
        .storage(storage)
        .workspace_roots([workspace])
        .system_prompt("You are a test agent.")
}

/// Everything a typical test needs: server, shared in-memory storage, a workspace.
pub struct Harness {
    pub server: MockLlmServer,
    pub storage: Arc<InMemoryStorage>,
    pub workspace: tempfile::TempDir,
}

impl Harness {
    pub async fn new() -> Self {
        Self {
            server: MockLlmServer::start().await,
            storage: Arc::new(InMemoryStorage::new()),
            workspace: tempfile::tempdir().unwrap(),
        }
    }

    pub fn builder(&self) -> SessionBuilder {
        builder(
            Arc::new(client(&self.server)),
            self.storage.clone(),
            self.workspace.path(),
        )
    }

    pub async fn session(&self) -> AgentSession {
        self.builder().build().await.unwrap()
    }

    pub async fn stored(&self) -> Vec<ChatMessage> {
        self.storage.load(SESSION).await.unwrap()
    }

    /// The `messages` array of request `n` (0-based) the server received.
    pub fn request_messages(&self, n: usize) -> Vec<Value> {
        let requests = self.server.requests();
        requests[n]["messages"].as_array().unwrap().clone()
    }
}

/// The `role` of each message in a recorded request.
pub fn roles(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect()
}

/// Panics unless every tool call in `messages` is followed, before any non-tool message,
/// by exactly one tool result with its id, and every tool result answers a call of the
/// message before its run of results: what OpenAI-compatible servers demand.
pub fn assert_every_call_answered(messages: &[Value]) {
    let mut calls: Vec<&str> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        if message["role"] == "tool" {
            let id = message["tool_call_id"].as_str().unwrap();
            let Some(at) = calls.iter().position(|call| *call == id) else {
                panic!("tool result {id} at message {i} answers no open call in {messages:#?}");
            };
            calls.remove(at);
            continue;
        }
        assert!(
            calls.is_empty(),
            "tool calls {calls:?} have no result before message {i} in {messages:#?}"
        );
        calls = message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|call| call["id"].as_str().unwrap())
            .collect();
    }
    assert!(
        calls.is_empty(),
        "tool calls {calls:?} have no result in {messages:#?}"
    );
}

/// The same check on stored messages.
pub fn assert_history_consistent(history: &[ChatMessage]) {
    let values: Vec<Value> = history
        .iter()
        .map(|m| serde_json::to_value(m).unwrap())
        .collect();
    assert_every_call_answered(&values);
}

/// Wraps a client: records what storage holds each time a request is made, and can hang
/// forever on one request (after saying so), to cancel a turn at that exact point.
pub struct Spy {
    pub inner: Arc<dyn LlmClient>,
    pub storage: Arc<dyn ConversationStorage>,
    pub snapshots: Mutex<Vec<Vec<ChatMessage>>>,
    calls: AtomicUsize,
    /// The 1-based call that never returns, if any.
    pub hang_on: Option<usize>,
    pub hanging: Notify,
}

impl Spy {
    pub fn new(inner: Arc<dyn LlmClient>, storage: Arc<dyn ConversationStorage>) -> Self {
        Self {
            inner,
            storage,
            snapshots: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            hang_on: None,
            hanging: Notify::new(),
        }
    }

    pub fn hanging_on(mut self, call: usize) -> Self {
        self.hang_on = Some(call);
        self
    }

    pub fn snapshots(&self) -> Vec<Vec<ChatMessage>> {
        self.snapshots.lock().unwrap().clone()
    }
}

#[async_trait]
impl LlmClient for Spy {
    async fn chat(&self, request: &ChatRequest<'_>) -> Result<ChatResponse> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let stored = self.storage.load(SESSION).await?;
        self.snapshots.lock().unwrap().push(stored);
        if self.hang_on == Some(n) {
            self.hanging.notify_one();
            std::future::pending::<()>().await;
        }
        self.inner.chat(request).await
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    fn supports_native_tools(&self) -> bool {
        self.inner.supports_native_tools()
    }
}

/// In-memory storage whose operations fail once switched to.
#[derive(Default)]
pub struct FlakyStorage {
    pub inner: InMemoryStorage,
    pub fail_load: AtomicBool,
    /// Appends succeed this many times, then fail (`usize::MAX`: never fail).
    pub appends_left: AtomicUsize,
}

impl FlakyStorage {
    pub fn failing_after_appends(n: usize) -> Self {
        Self {
            appends_left: AtomicUsize::new(n),
            ..Self::default()
        }
    }

    fn outage(op: &str) -> Error {
        Error::Backend {
            backend: "flaky",
            message: format!("{op} failed: disk on fire"),
            retryable: false,
            source: None,
        }
    }
}

#[async_trait]
impl ConversationStorage for FlakyStorage {
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        self.inner.save(session_id, history).await
    }

    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        if self.fail_load.load(Ordering::SeqCst) {
            return Err(Self::outage("load"));
        }
        self.inner.load(session_id).await
    }

    async fn delete(&self, session_id: &str) -> Result<()> {
        self.inner.delete(session_id).await
    }

    async fn list_sessions(&self) -> Result<Vec<String>> {
        self.inner.list_sessions().await
    }

    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        let left = self.appends_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(Self::outage("append"));
        }
        self.appends_left.store(left - 1, Ordering::SeqCst);
        self.inner.append(session_id, messages).await
    }
}

/// A client that, on its `hold_on`-th call (1-based), says so on `entered` and waits for
/// `release` before asking the real client: the model "thinking" for as long as a test
/// needs.
pub struct GatedLlm {
    inner: Arc<dyn LlmClient>,
    hold_on: usize,
    calls: AtomicUsize,
    pub entered: Notify,
    pub release: Notify,
}

impl GatedLlm {
    pub fn new(server: &MockLlmServer, hold_on: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::new(client(server)),
            hold_on,
            calls: AtomicUsize::new(0),
            entered: Notify::new(),
            release: Notify::new(),
        })
    }
}

#[async_trait]
impl LlmClient for GatedLlm {
    async fn chat(&self, request: &ChatRequest<'_>) -> Result<ChatResponse> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.hold_on {
            self.entered.notify_one();
            self.release.notified().await;
        }
        self.inner.chat(request).await
    }

    fn model(&self) -> &str {
        self.inner.model()
    }
}

/// Storage (in memory unless built [`over`](HookedStorage::over) another) with two hooks:
/// an append that stops, once entered, until released (a write still running after its
/// caller gave up), and another writer's messages that land just after the next
/// `load_revision` of a session has read it and before it returns, so the reader cannot
/// have seen them.
pub struct HookedStorage {
    pub inner: Arc<dyn ConversationStorage>,
    pub hold_next_append: AtomicBool,
    pub append_entered: Notify,
    pub append_release: Notify,
    /// The armed write, used once (see [`HookedStorage::before_returning_a_read`]).
    before_read: Mutex<Option<BeforeRead>>,
}

/// When session `read` is next read, `writer` appends `messages` to session `written`.
struct BeforeRead {
    read: String,
    writer: Arc<dyn ConversationStorage>,
    written: String,
    messages: Vec<ChatMessage>,
}

impl Default for HookedStorage {
    fn default() -> Self {
        Self::over(Arc::new(InMemoryStorage::new()))
    }
}

impl HookedStorage {
    /// Hooks around `inner`; everything not hooked goes straight to it, so its own
    /// conditional writes decide every race.
    pub fn over(inner: Arc<dyn ConversationStorage>) -> Self {
        Self {
            inner,
            hold_next_append: AtomicBool::new(false),
            append_entered: Notify::new(),
            append_release: Notify::new(),
            before_read: Mutex::new(None),
        }
    }

    /// Arms the read hook: when `read` is next read with `load_revision`, `writer` (another
    /// writer's own handle, or `inner`) appends `messages` to `written` before the read
    /// returns.
    pub fn before_returning_a_read(
        &self,
        read: &str,
        writer: Arc<dyn ConversationStorage>,
        written: &str,
        messages: Vec<ChatMessage>,
    ) {
        *self.before_read.lock().unwrap() = Some(BeforeRead {
            read: read.into(),
            writer,
            written: written.into(),
            messages,
        });
    }

    /// Whether the armed read hook has run.
    pub fn read_hook_fired(&self) -> bool {
        self.before_read.lock().unwrap().is_none()
    }
}

#[async_trait]
impl ConversationStorage for HookedStorage {
    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> Result<()> {
        self.inner.save(session_id, history).await
    }

    async fn load(&self, session_id: &str) -> Result<Vec<ChatMessage>> {
        self.inner.load(session_id).await
    }

    async fn delete(&self, session_id: &str) -> Result<()> {
        self.inner.delete(session_id).await
    }

    async fn list_sessions(&self) -> Result<Vec<String>> {
        self.inner.list_sessions().await
    }

    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> Result<()> {
        self.inner.append(session_id, messages).await
    }

    async fn truncate(&self, session_id: &str, len: usize) -> Result<()> {
        self.inner.truncate(session_id, len).await
    }

    async fn load_revision(&self, session_id: &str) -> Result<(Vec<ChatMessage>, Revision)> {
        let read = self.inner.load_revision(session_id).await?;
        let hook = {
            let mut hook = self.before_read.lock().unwrap();
            match hook.as_ref() {
                Some(armed) if armed.read == session_id => hook.take(),
                _ => None,
            }
        };
        if let Some(BeforeRead {
            writer,
            written,
            messages,
            ..
        }) = hook
        {
            writer.append(&written, &messages).await?;
        }
        Ok(read)
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        if matches!(change, Change::Append(_))
            && self.hold_next_append.swap(false, Ordering::SeqCst)
        {
            self.append_entered.notify_one();
            self.append_release.notified().await;
        }
        self.inner.write_if(session_id, expected, change).await
    }

    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        self.inner.session_info(session_id).await
    }

    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}

/// The text of each message.
pub fn contents(history: &[ChatMessage]) -> Vec<&str> {
    history.iter().map(|m| m.content.as_str()).collect()
}

/// One turn of `session` that asks `question` and gets `answer`.
pub async fn turn(
    server: &MockLlmServer,
    session: &mut AgentSession,
    question: &str,
    answer: &str,
) {
    server.push_text(answer);
    let result = session.send_message(question).await.unwrap();
    assert_eq!(result.result, answer);
}

/// A reply calling `list_directory` with id `call_0`, as servers that number each reply's
/// calls afresh send it in every reply.
pub fn numbered_afresh() -> MockReply {
    MockReply::ToolCalls {
        content: String::new(),
        calls: vec![MockToolCall {
            id: Some("call_0".into()),
            ..MockToolCall::new("list_directory", "{}")
        }],
    }
}

/// What the tool returned to [`another_writer_s_call_0`]'s call.
pub const ANOTHER_WRITER_S_RESULT: &str = "the other writer's listing";

/// Another writer's reply of such a server, and its result.
pub fn another_writer_s_call_0() -> [ChatMessage; 2] {
    [
        ChatMessage::assistant_with_tool_calls(
            "",
            vec![fusion_core::ToolCall::new("call_0", "list_directory", "{}")],
        ),
        ChatMessage::tool_result("call_0", ANOTHER_WRITER_S_RESULT),
    ]
}

/// Generous upper bound for a step that should be immediate; only guards against a hang.
pub const HANG_GUARD: Duration = Duration::from_secs(20);
