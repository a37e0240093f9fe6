//! A turn cancelled while some of one reply's tool calls have finished and others still
//! run: the finished calls' real results are stored by the next turn (not "interrupted"),
//! the others are answered as interrupted, every call exactly once, and undo still works.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use common::cancelled::Stuck;
use common::{Harness, SESSION, assert_history_consistent, client};
use fusion_agent::context::{LATE_RESULT_METADATA_KEY, is_interrupted, is_repair};
use fusion_agent::testing::{MockReply, MockToolCall};
use fusion_agent::{AgentEvent, SessionBuilder, Tool, ToolRegistry};
use fusion_core::{ConversationStorage, Result, Role};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// Answers at once, counting its calls.
struct Quick(Arc<AtomicUsize>);

#[async_trait]
impl Tool for Quick {
    fn name(&self) -> &str {
        "quick"
    }
    fn description(&self) -> &str {
        "answers at once"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}})
    }
    async fn call(&self, _args: Value) -> Result<String> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok("quick result".into())
    }
}

/// A session over `h` running `llm` with the two tools, and the count of `quick`'s runs
/// and the notice `stuck` gives when it starts.
async fn session_with_both(
    h: &Harness,
    llm: Arc<dyn fusion_agent::LlmClient>,
) -> (fusion_agent::AgentSession, Arc<AtomicUsize>, Arc<Notify>) {
    let ran = Arc::new(AtomicUsize::new(0));
    let stuck = Arc::new(Notify::new());
    let tools = ToolRegistry::new()
        .with(Quick(ran.clone()))
        .with(Stuck::new(stuck.clone()));
    let session = SessionBuilder::new(SESSION)
        .llm(llm)
        .storage(h.storage.clone())
        .system_prompt("You are a test agent.")
        .tools(tools)
        .build()
        .await
        .unwrap();
    (session, ran, stuck)
}

/// Runs a turn whose reply calls `stuck` and `quick`, and cancels it once `quick` has
/// finished and `stuck` runs.
async fn cancel_with_one_call_finished(
    h: &Harness,
    session: &mut fusion_agent::AgentSession,
    stuck: &Notify,
) {
    h.server.push(MockReply::ToolCalls {
        content: String::new(),
        calls: vec![
            MockToolCall {
                id: Some("call_stuck".into()),
                ..MockToolCall::new("stuck", "{}")
            },
            MockToolCall {
                id: Some("call_quick".into()),
                ..MockToolCall::new("quick", "{}")
            },
        ],
    });
    let mut events = session.send_message_stream("run both");
    // Polling the turn until it waits for `stuck` runs `quick` to its end: it never
    // waits. Then the stream is dropped, cancelling the turn.
    loop {
        tokio::select! {
            _ = stuck.notified() => break,
            event = events.next() => match event {
                Some(Ok(AgentEvent::Usage { .. } | AgentEvent::ToolCallStarted { .. })) => {}
                other => panic!("the turn moved on: {other:?}"),
            },
        }
    }
}

#[tokio::test]
async fn a_call_that_finished_before_the_cancel_keeps_its_real_result() {
    let h = Harness::new().await;
    let (mut session, ran, stuck) = session_with_both(&h, Arc::new(client(&h.server))).await;
    cancel_with_one_call_finished(&h, &mut session, &stuck).await;
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    // The cancelled turn stored the reply; no result yet.
    assert!(!h.stored().await.iter().any(|m| m.role == Role::Tool));

    h.server.push_text("Next answer.");
    session.send_message("next").await.unwrap();
    let stored = h.stored().await;
    assert_history_consistent(&stored);
    let result = |id: &str| {
        let found: Vec<_> = stored
            .iter()
            .filter(|m| m.tool_call_id.as_deref() == Some(id))
            .collect();
        assert_eq!(found.len(), 1, "{id} answered once: {stored:#?}");
        found[0].clone()
    };
    let quick = result("call_quick");
    assert_eq!(quick.content, "quick result");
    assert!(!is_interrupted(&quick) && is_repair(&quick));
    assert_eq!(quick.metadata[LATE_RESULT_METADATA_KEY], json!(true));
    assert!(is_interrupted(&result("call_stuck")));
    // The model is sent the real result, right after its call.
    let sent = h.server.requests().last().unwrap()["messages"].clone();
    let sent = sent.as_array().unwrap();
    assert!(
        sent.iter()
            .any(|m| m["tool_call_id"] == "call_quick" && m["content"] == "quick result"),
        "{sent:#?}"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 1, "nothing ran twice");

    // The cancelled turn counts as ended: undo takes the last turn only.
    assert_eq!(session.undo_last_turn().await.unwrap(), 2);
    assert_eq!(session.undo_last_turn().await.unwrap(), 4);
    assert_eq!(h.stored().await.len(), 1);
}

/// A client whose non-streamed calls (the summary's) wait until the test lets them go;
/// streamed calls (the turns') pass straight through.
struct HeldSummaries {
    inner: fusion_agent::OpenAiClient,
    entered: Arc<Notify>,
    go: Arc<Notify>,
}

#[async_trait]
impl fusion_agent::LlmClient for HeldSummaries {
    async fn chat(
        &self,
        request: &fusion_agent::ChatRequest<'_>,
    ) -> Result<fusion_agent::ChatResponse> {
        self.entered.notify_one();
        self.go.notified().await;
        self.inner.chat(request).await
    }
    fn chat_stream<'a>(
        &'a self,
        request: &'a fusion_agent::ChatRequest<'_>,
    ) -> fusion_agent::ChatStream<'a> {
        self.inner.chat_stream(request)
    }
    fn model(&self) -> &str {
        self.inner.model()
    }
}

/// The results a cancelled turn kept are stored only while nothing followed its reply:
/// when another writer's turn answered its calls (and went on) while a summary was being
/// written, the summary is stored alone, and every call stays answered exactly once.
#[tokio::test]
async fn kept_results_are_not_stored_after_another_writers_turn_answered_the_calls() {
    let h = Harness::new().await;
    let (entered, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let llm = HeldSummaries {
        inner: client(&h.server),
        entered: entered.clone(),
        go: go.clone(),
    };
    let (mut a, ran, stuck) = session_with_both(&h, Arc::new(llm)).await;
    // A first turn: what the summary condenses.
    h.server.push_text("Hello.");
    a.send_message("hi").await.unwrap();
    cancel_with_one_call_finished(&h, &mut a, &stuck).await;
    assert_eq!(ran.load(Ordering::SeqCst), 1);

    // A starts a summary; while its model call is held, B runs a whole turn, whose
    // opening answers A's calls as interrupted.
    h.server.push_text("A summary of the conversation.");
    let summary = tokio::spawn(async move {
        let result = a.summarize_history(0).await;
        (a, result)
    });
    entered.notified().await;
    let mut b = h.builder().build().await.unwrap();
    h.server.push_text("B's answer.");
    b.send_message("B asks").await.unwrap();
    go.notify_one();
    let (_a, result) = summary.await.unwrap();
    assert!(result.unwrap().is_some(), "the summary was stored");

    let stored = h.stored().await;
    assert_history_consistent(&stored);
    for id in ["call_quick", "call_stuck"] {
        let answers = stored
            .iter()
            .filter(|m| m.tool_call_id.as_deref() == Some(id))
            .count();
        assert_eq!(answers, 1, "{id} answered once: {stored:#?}");
    }
}

/// Applies every conditional write; the first one after it is armed then answers a
/// conflict, as if nothing had been written (a `RetryLayer` whose settling read failed
/// after a lost reply, before 8bb1054).
struct AppliedYetConflict {
    inner: fusion_storage_memory::InMemoryStorage,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl fusion_core::Intercept for AppliedYetConflict {
    fn inner(&self) -> &dyn fusion_core::ConversationStorage {
        &self.inner
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: fusion_core::Expect,
        change: fusion_core::Change<'_>,
    ) -> Result<u64> {
        let generation = self.inner.write_if(session_id, expected, change).await?;
        if self.armed.swap(false, Ordering::SeqCst) {
            let absent = fusion_core::Expect::Exactly(fusion_core::Revision::ABSENT);
            return Err(absent.conflict("memory", session_id, generation, None));
        }
        Ok(generation)
    }
}

/// A summary stored with the answers for a cancelled turn's calls, by an attempt
/// reported as a conflict, is not stored a second time by the next attempt (which finds
/// the calls answered and sent the record alone, under a new id).
#[tokio::test]
async fn a_record_stored_by_an_attempt_reported_as_a_conflict_is_stored_once() {
    let h = Harness::new().await;
    let storage = Arc::new(fusion_core::Intercepted(AppliedYetConflict {
        inner: fusion_storage_memory::InMemoryStorage::new(),
        armed: std::sync::atomic::AtomicBool::new(false),
    }));
    let ran = Arc::new(AtomicUsize::new(0));
    let stuck = Arc::new(Notify::new());
    let tools = ToolRegistry::new()
        .with(Quick(ran.clone()))
        .with(Stuck::new(stuck.clone()));
    let mut session = SessionBuilder::new(SESSION)
        .llm(Arc::new(client(&h.server)))
        .storage(storage.clone())
        .system_prompt("You are a test agent.")
        .tools(tools)
        .build()
        .await
        .unwrap();
    h.server.push_text("Hello.");
    session.send_message("hi").await.unwrap();
    cancel_with_one_call_finished(&h, &mut session, &stuck).await;

    storage.0.armed.store(true, Ordering::SeqCst);
    h.server.push_text("A summary of the conversation.");
    let report = session.summarize_history(0).await.unwrap();
    assert!(report.is_some(), "the summary was stored");
    let stored = storage.load(SESSION).await.unwrap();
    assert_history_consistent(&stored);
    let summaries = stored
        .iter()
        .filter(|m| m.content.contains("A summary of the conversation."))
        .count();
    assert_eq!(summaries, 1, "{stored:#?}");
    assert_eq!(session.history(), stored.as_slice());
}

/// A summary appended alone (no call left unanswered), its one attempt applied and
/// answered as a conflict: the reload finds it, so the summary is reported stored, not
/// refused (calling it again stored a second one).
#[tokio::test]
async fn a_record_whose_only_attempt_applied_yet_conflicted_is_reported_stored() {
    let h = Harness::new().await;
    let storage = Arc::new(fusion_core::Intercepted(AppliedYetConflict {
        inner: fusion_storage_memory::InMemoryStorage::new(),
        armed: std::sync::atomic::AtomicBool::new(false),
    }));
    let mut session = SessionBuilder::new(SESSION)
        .llm(Arc::new(client(&h.server)))
        .storage(storage.clone())
        .system_prompt("You are a test agent.")
        .build()
        .await
        .unwrap();
    h.server.push_text("Hello.");
    session.send_message("hi").await.unwrap();
    h.server.push_text("Again.");
    session.send_message("again").await.unwrap();

    storage.0.armed.store(true, Ordering::SeqCst);
    h.server.push_text("A summary of the conversation.");
    let report = session.summarize_history(0).await.unwrap();
    assert!(report.is_some(), "the summary was stored");
    let stored = storage.load(SESSION).await.unwrap();
    let summaries = stored
        .iter()
        .filter(|m| m.content.contains("A summary of the conversation."))
        .count();
    assert_eq!(summaries, 1, "{stored:#?}");
    assert_eq!(session.history(), stored.as_slice());
}
