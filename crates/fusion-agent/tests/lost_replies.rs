//! A turn's opening whose write applied although the storage answered a conflict or a
//! retryable error: what a `RetryLayer` answers when an attempt applied, its reply was
//! lost, another writer changed the session, and the read that should have settled it
//! failed too (found by `fusion-stress --faults` on PostgreSQL, where the user message
//! was stored twice).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use common::{builder, client, contents};
use fusion_agent::testing::MockLlmServer;
use fusion_agent::{AgentSession, ContextPolicy};
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, Intercept, Intercepted, Result,
    Revision,
};
use fusion_storage_memory::InMemoryStorage;

/// Once armed, makes the first `conflicts` conditional writes meet another writer's
/// rewrite of the session (a genuine conflict, nothing written), then applies the next
/// one and answers it with `refusal` as if nothing had been written.
struct AppliedYetRefused {
    inner: InMemoryStorage,
    conflicts: AtomicUsize,
    refusal: fn(&str, u64) -> Error,
    armed: AtomicBool,
    /// Another writer's turn, stored right after the write that applied.
    interloper: Option<[&'static str; 2]>,
    /// Whether only a write of a reply with calls is refused so (the others pass).
    calling_only: bool,
}

impl AppliedYetRefused {
    fn new(conflicts: usize, refusal: fn(&str, u64) -> Error) -> Self {
        Self {
            inner: InMemoryStorage::new(),
            conflicts: AtomicUsize::new(conflicts),
            refusal,
            armed: AtomicBool::new(false),
            interloper: None,
            calling_only: false,
        }
    }

    /// Refuses so only the write of a reply with calls, not the opening before it.
    fn on_a_reply_with_calls(self) -> Self {
        Self {
            calling_only: true,
            ..self
        }
    }

    /// Another writer stores the turn `[question, answer]` right after the write that
    /// applied, before this writer reads the session again.
    fn then_another_turn(self, turn: [&'static str; 2]) -> Self {
        Self {
            interloper: Some(turn),
            ..self
        }
    }
}

/// A conflict, as a `RetryLayer` that could not settle one answered before.
fn conflict(session_id: &str, generation: u64) -> Error {
    Expect::Exactly(Revision::ABSENT).conflict("memory", session_id, generation, None)
}

/// The retryable error a `RetryLayer` answers when it cannot tell whether a write applied.
fn unknown(_: &str, _: u64) -> Error {
    Error::Backend {
        backend: "memory",
        message: "whether this write applied is unknown".into(),
        retryable: true,
        source: None,
    }
}

#[async_trait]
impl Intercept for AppliedYetRefused {
    fn inner(&self) -> &dyn ConversationStorage {
        &self.inner
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> Result<u64> {
        let calling = matches!(change, Change::Append(batch)
            if batch.iter().any(ChatMessage::has_tool_calls));
        if !self.armed.load(Ordering::SeqCst) || (self.calling_only && !calling) {
            return self.inner.write_if(session_id, expected, change).await;
        }
        let left = self.conflicts.load(Ordering::SeqCst);
        if left > 0 {
            self.conflicts.store(left - 1, Ordering::SeqCst);
            let (history, revision) = self.inner.load_revision(session_id).await?;
            let theirs = Expect::Generation(revision.generation);
            self.inner
                .write_if(session_id, theirs, Change::Rewrite(&history))
                .await?;
            return self.inner.write_if(session_id, expected, change).await;
        }
        self.armed.store(false, Ordering::SeqCst);
        let generation = self.inner.write_if(session_id, expected, change).await?;
        if let Some([question, answer]) = self.interloper {
            let turn = [ChatMessage::user(question), ChatMessage::assistant(answer)];
            self.inner.append(session_id, &turn).await?;
        }
        Err((self.refusal)(session_id, generation))
    }
}

/// A session on `storage` (not yet armed) after its first turn, with the LLM server
/// answering it (recording requests), and the session's workspace.
async fn after_a_first_turn(
    storage: AppliedYetRefused,
) -> (
    MockLlmServer,
    Arc<Intercepted<AppliedYetRefused>>,
    AgentSession,
    tempfile::TempDir,
) {
    let server = MockLlmServer::start().await;
    server.set_record_requests(true);
    let workspace = tempfile::tempdir().unwrap();
    let storage = Arc::new(Intercepted(storage));
    let mut session = builder(Arc::new(client(&server)), storage.clone(), workspace.path())
        .build()
        .await
        .unwrap();
    server.push_text("first answer");
    session.send_message("first").await.unwrap();
    (server, storage, session, workspace)
}

/// Two turns on `storage`, armed for the second: each message is stored once, the second
/// turn answers, and the session's copy is storage's.
async fn the_second_turn_is_stored_once(storage: AppliedYetRefused) {
    let (server, storage, mut session, _workspace) = after_a_first_turn(storage).await;
    storage.0.armed.store(true, Ordering::SeqCst);
    server.push_text("second answer");
    let result = session.send_message("second").await.unwrap();
    assert_eq!(result.result, "second answer");
    let stored = storage.load(common::SESSION).await.unwrap();
    assert_eq!(
        contents(&stored)[1..],
        ["first", "first answer", "second", "second answer"]
    );
    assert_eq!(session.history(), stored.as_slice());
}

#[tokio::test]
async fn an_opening_stored_by_an_attempt_reported_as_a_conflict_is_not_stored_again() {
    the_second_turn_is_stored_once(AppliedYetRefused::new(0, conflict)).await;
}

#[tokio::test]
async fn an_opening_stored_by_its_last_attempt_reported_as_a_conflict_is_not_an_error() {
    the_second_turn_is_stored_once(AppliedYetRefused::new(2, conflict)).await;
}

#[tokio::test]
async fn an_opening_stored_by_an_attempt_whose_outcome_was_unknown_goes_on() {
    the_second_turn_is_stored_once(AppliedYetRefused::new(0, unknown)).await;
}

/// A reply with calls whose store applied although the storage answered a conflict (a
/// `RetryLayer` that could not settle it) is found by the reread, not stored again with
/// its calls renamed as if another writer's ids were in the way: its calls are answered
/// under the ids stored.
#[tokio::test]
async fn a_reply_with_calls_stored_by_an_attempt_reported_as_a_conflict_is_not_stored_again() {
    let storage = AppliedYetRefused::new(0, conflict).on_a_reply_with_calls();
    let (server, storage, mut session, _workspace) = after_a_first_turn(storage).await;
    storage.0.armed.store(true, Ordering::SeqCst);
    server
        .push_tool_call("list_directory", "{}")
        .push_text("second answer");
    let result = session.send_message("second").await.unwrap();
    assert_eq!(result.result, "second answer");
    assert!(!storage.0.armed.load(Ordering::SeqCst), "the hook ran");
    let stored = storage.load(common::SESSION).await.unwrap();
    assert_eq!(stored.iter().filter(|m| m.has_tool_calls()).count(), 1);
    common::assert_history_consistent(&stored);
    assert_eq!(session.history(), stored.as_slice());
}

/// An opening found stored by the reread after another writer's turn landed behind it:
/// the request this turn sends ends with its own message, not the other writer's, so the
/// answer is to its own question (found by `fusion-stress --faults` on PostgreSQL, where
/// a turn stored the answer to another worker's note).
async fn the_turn_answers_its_own_question(refusal: fn(&str, u64) -> Error) {
    let storage = AppliedYetRefused::new(0, refusal).then_another_turn(["theirs", "their answer"]);
    let (server, storage, mut session, _workspace) = after_a_first_turn(storage).await;
    storage.0.armed.store(true, Ordering::SeqCst);
    server.push_text("second answer");
    session.send_message("second").await.unwrap();
    let asked = server.requests().pop().unwrap();
    let last = asked["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["content"], "second", "{asked}");
    let stored = storage.load(common::SESSION).await.unwrap();
    assert_eq!(
        contents(&stored)[1..],
        [
            "first",
            "first answer",
            "second",
            "theirs",
            "their answer",
            "second answer"
        ]
    );

    // The next turn reads what the other writer stored.
    server.push_text("third answer");
    session.send_message("third").await.unwrap();
    assert_eq!(
        session.history(),
        storage.load(common::SESSION).await.unwrap().as_slice()
    );
}

#[tokio::test]
async fn a_turn_whose_opening_was_found_behind_another_writers_answers_its_own_question() {
    the_turn_answers_its_own_question(conflict).await;
    the_turn_answers_its_own_question(unknown).await;
}

/// The same with an automatic summary due at the second turn: the summary rereads the
/// session after the opening, and what it reads (the other writer's turn behind this
/// turn's message) stays out of the request too, which ends with this turn's message.
#[tokio::test]
async fn a_turn_summarized_after_its_opening_was_found_behind_another_writers_answers_its_own_question()
 {
    for refusal in [conflict, unknown] {
        let storage =
            AppliedYetRefused::new(0, refusal).then_another_turn(["theirs", "their answer"]);
        let (server, storage, mut session, _workspace) = after_a_first_turn(storage).await;

        session.set_context_policy(ContextPolicy {
            summary_keep_last: 0,
            ..ContextPolicy::default()
        });
        session.set_auto_summarize(1);
        storage.0.armed.store(true, Ordering::SeqCst);
        server.push_text("Summary: a first question, answered.");
        server.push_text("second answer");
        session.send_message("second").await.unwrap();
        let mut requests = server.requests();
        assert_eq!(
            requests.len(),
            3,
            "the first turn, the summary, the second turn"
        );
        let asked = requests.pop().unwrap();
        let sent = asked["messages"].as_array().unwrap();
        assert_eq!(sent.last().unwrap()["content"], "second", "{asked}");
        assert!(
            !sent.iter().any(|message| message["content"] == "theirs"),
            "{asked}"
        );
        let stored = storage.load(common::SESSION).await.unwrap();
        assert_eq!(stored.last().unwrap().content, "second answer");
        assert_eq!(
            stored.iter().filter(|m| m.content == "second").count(),
            1,
            "{:?}",
            contents(&stored)
        );

        // The next turn reads what the other writer stored.
        session.set_context_policy(ContextPolicy::default());
        server.push_text("third answer");
        session.send_message("third").await.unwrap();
        assert_eq!(
            session.history(),
            storage.load(common::SESSION).await.unwrap().as_slice()
        );
    }
}
