//! Several writers on one session (issue 13, cases 1 and 2): storage, not a session's
//! copy in memory, is the truth for undo, summaries and prune marks, and a session deleted
//! under a running turn is not resurrected as a fragment. Cancelled writes, concurrent
//! starts and forks are in `races.rs`.
//!
//! Other writers are other `AgentSession`s or other storage handles on the same store
//! (clones of one `InMemoryStorage` share it; `FileSystemStorage`s on one directory share
//! it as processes do). Races are forced with `Notify` gates and a barrier, never sleeps.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;

use common::gated::{Gated, overlap, shown, undo_b_s_turn_then_a_s};
use common::{GatedLlm, HANG_GUARD, Harness, SESSION, builder, contents, roles, turn};
use fusion_agent::AgentSession;
use fusion_agent::context::{PRUNE_KEY, SUMMARY_KEY};
use fusion_agent::testing::{MockLlmServer, MockReply, MockToolCall};
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, Intercept, Intercepted, Revision, Role,
};
use fusion_storage_fs::FileSystemStorage;
use fusion_storage_memory::InMemoryStorage;

/// One turn that reads `file` (holding 500 bytes, enough to be pruned) and answers.
async fn tool_turn(h: &Harness, session: &mut AgentSession, file: &str) {
    std::fs::write(h.workspace.path().join(file), "x".repeat(500)).unwrap();
    h.server
        .push(MockReply::ToolCalls {
            content: format!("I will read {file}."),
            calls: vec![MockToolCall::new(
                "read_file",
                format!(r#"{{"path": "{file}"}}"#),
            )],
        })
        .push_text(format!("read {file}"));
    let result = session.send_message(&format!("read {file}")).await.unwrap();
    assert!(result.success && result.steps[0].success);
}

#[tokio::test]
async fn case1_undo_after_another_writer_s_turn_undoes_nothing_and_keeps_both_writers_messages() {
    let h = Harness::new().await;
    let mut a = h.session().await;
    turn(&h.server, &mut a, "from A", "answer A").await;
    let mut b = h.session().await;
    turn(&h.server, &mut b, "from B", "answer B").await;

    let err = a.undo_last_turn().await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("nothing was undone"), "{text}");
    assert!(text.contains("now holds 5 messages"), "{text}");
    let stored = h.stored().await;
    assert_eq!(
        contents(&stored)[1..],
        ["from A", "answer A", "from B", "answer B"]
    );
    // A has reloaded: its copy is storage's now.
    assert_eq!(a.history(), stored.as_slice());

    // B's copy is current, so B's undo goes through and removes only B's turn.
    assert_eq!(b.undo_last_turn().await.unwrap(), 2);
    assert_eq!(contents(&h.stored().await)[1..], ["from A", "answer A"]);
}

#[tokio::test]
async fn case1_a_history_replaced_by_another_writer_is_never_undone_and_the_next_turn_continues_it()
{
    let h = Harness::new().await;
    let mut a = h.session().await;
    turn(&h.server, &mut a, "from A", "answer A").await;
    // `sessions import --replace` of this session, as another process would run it.
    let imported = vec![
        ChatMessage::system("You are a test agent."),
        ChatMessage::user("imported question"),
        ChatMessage::assistant("imported answer"),
    ];
    InMemoryStorage::clone(&h.storage)
        .save(SESSION, &imported)
        .await
        .unwrap();

    let err = a.undo_last_turn().await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("now holds 3 messages"), "{err}");
    assert_eq!(h.stored().await, imported);

    // A's next turn continues the imported conversation (no second system prompt).
    turn(&h.server, &mut a, "after import", "ok").await;
    assert_eq!(
        contents(&h.stored().await)[1..],
        ["imported question", "imported answer", "after import", "ok"]
    );
}

#[tokio::test]
async fn case1_a_summary_after_another_writer_s_message_summarizes_that_message_too() {
    let h = Harness::new().await;
    let mut a = h.session().await;
    turn(&h.server, &mut a, "My name is Ada.", "Hello Ada.").await;
    let mut b = h.session().await;
    turn(
        &h.server,
        &mut b,
        "Remember: my favorite color is blue.",
        "Noted.",
    )
    .await;
    // A's copy never saw B's turn, which now sits before A's next turns in storage.
    turn(&h.server, &mut a, "Where is Lisbon?", "In Portugal.").await;
    turn(&h.server, &mut a, "And Porto?", "Also Portugal.").await;

    h.server.push_text("The user is Ada and likes blue.");
    let report = a.summarize_history(2).await.unwrap().unwrap();
    // Storage: system, Ada x2, B x2, Lisbon x2, Porto x2. All but Porto's pair is covered.
    assert_eq!((report.covers, report.summarized), (7, 6));
    let requests = h.server.requests();
    let transcript = requests.last().unwrap()["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        transcript.contains("User: Remember: my favorite color is blue."),
        "{transcript}"
    );
    let stored = h.stored().await;
    assert_eq!(stored.len(), 10);
    assert_eq!(stored[9].metadata[SUMMARY_KEY]["covers"], 7);

    // A new process sends the summary (which read B's message) and the kept turn.
    let c = h.session().await;
    let view = c.request_view();
    assert!(view[0].content.ends_with("The user is Ada and likes blue."));
    assert_eq!(
        contents(&view.iter().map(|m| m.as_ref().clone()).collect::<Vec<_>>())[1..],
        ["And Porto?", "Also Portugal."]
    );
}

#[tokio::test]
async fn case1_prune_marks_name_the_stored_messages_they_shorten() {
    let h = Harness::new().await;
    let mut a = h.session().await;
    tool_turn(&h, &mut a, "f0.txt").await;
    let mut b = h.session().await;
    turn(&h.server, &mut b, "from B", "answer B").await;
    // A's copy lacks B's two messages, so its indices of these turns are off by two.
    for file in ["f1.txt", "f2.txt", "f3.txt"] {
        tool_turn(&h, &mut a, file).await;
    }

    let report = a.prune_unimportant_messages().await.unwrap();
    assert_eq!((report.tool_outputs, report.chatter), (2, 2));
    let stored = h.stored().await;
    let record = stored.last().unwrap();
    let marks = &record.metadata[PRUNE_KEY];
    for index in marks["tool_outputs"].as_array().unwrap() {
        let message = &stored[index.as_u64().unwrap() as usize];
        assert_eq!(message.role, Role::Tool, "{message:?}");
    }
    for index in marks["chatter"].as_array().unwrap() {
        let message = &stored[index.as_u64().unwrap() as usize];
        assert!(message.has_tool_calls(), "{message:?}");
    }

    // A new process sees B's turn and every question whole; only tool output is cut.
    let c = h.session().await;
    let view: Vec<ChatMessage> = c
        .request_view()
        .iter()
        .map(|m| m.as_ref().clone())
        .collect();
    let users: Vec<&str> = view
        .iter()
        .filter(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(
        users,
        [
            "read f0.txt",
            "from B",
            "read f1.txt",
            "read f2.txt",
            "read f3.txt"
        ]
    );
    assert!(view.iter().any(|m| m.content == "answer B"));
    let pruned = view
        .iter()
        .filter(|m| m.role == Role::Tool && m.content.starts_with("[pruned:"))
        .count();
    assert_eq!(pruned, 2);
}

#[tokio::test]
async fn case1_a_summary_whose_session_is_rewritten_during_the_model_call_stores_nothing() {
    let h = Harness::new().await;
    // Calls 1 and 2 answer turns; call 3 is the summary, held while another writer
    // replaces the history.
    let llm = GatedLlm::new(&h.server, 3);
    let mut session = builder(llm.clone(), h.storage.clone(), h.workspace.path())
        .build()
        .await
        .unwrap();
    turn(&h.server, &mut session, "one", "first").await;
    turn(&h.server, &mut session, "two", "second").await;
    let replacement = vec![ChatMessage::user("replaced")];

    h.server.push_text("A summary of a history that is gone.");
    let (result, ()) = tokio::time::timeout(HANG_GUARD, async {
        tokio::join!(session.summarize_history(0), async {
            llm.entered.notified().await;
            h.storage.save(SESSION, &replacement).await.unwrap();
            llm.release.notify_one();
        })
    })
    .await
    .unwrap();
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("nothing was stored"), "{err}");
    assert_eq!(h.stored().await, replacement);
    assert_eq!(session.history(), replacement.as_slice());
}

/// Case 2 on `storage` (a handle the session uses) and `other` (another handle on the
/// same store, as another process would have).
async fn delete_during_a_turn(
    storage: Arc<dyn ConversationStorage>,
    other: Arc<dyn ConversationStorage>,
) {
    let server = MockLlmServer::start().await;
    let workspace = tempfile::tempdir().unwrap();
    let llm = GatedLlm::new(&server, 2);
    let mut session = builder(llm.clone(), storage, workspace.path())
        .build()
        .await
        .unwrap();
    turn(&server, &mut session, "first", "first answer").await;

    server.push_text("an orphan reply");
    let (result, ()) = tokio::time::timeout(HANG_GUARD, async {
        tokio::join!(session.send_message("second"), async {
            llm.entered.notified().await;
            other.delete(SESSION).await.unwrap();
            llm.release.notify_one();
        })
    })
    .await
    .unwrap();
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("was not stored"), "{err}");
    // Nothing was resurrected: no orphan reply, no fragment.
    assert!(other.load(SESSION).await.unwrap().is_empty());

    // The next turn starts the conversation whole.
    turn(&server, &mut session, "third", "third answer").await;
    let stored = other.load(SESSION).await.unwrap();
    assert_eq!(
        contents(&stored),
        ["You are a test agent.", "third", "third answer"]
    );
    let requests = server.requests();
    let sent = requests.last().unwrap()["messages"].as_array().unwrap();
    assert_eq!(roles(sent), ["system", "user"]);
}

#[tokio::test]
async fn case2_a_delete_while_the_model_thinks_ends_the_turn_without_storing_a_fragment() {
    let store = InMemoryStorage::new();
    delete_during_a_turn(Arc::new(store.clone()), Arc::new(store)).await;
}

#[tokio::test]
async fn case2_a_delete_while_the_model_thinks_on_fs_ends_the_turn_without_storing_a_fragment() {
    let dir = tempfile::tempdir().unwrap();
    delete_during_a_turn(
        Arc::new(FileSystemStorage::new(dir.path())),
        Arc::new(FileSystemStorage::new(dir.path())),
    )
    .await;
}

/// A's turn asks for the `gated` tool; B's whole turn runs while it waits; then A's real
/// result and answer land after B's messages. Returns the two sessions after both turns.
async fn overlapping_turns(h: &Harness) -> (AgentSession, AgentSession) {
    let gated = Gated::default();
    let mut a = AgentSession::builder(SESSION)
        .llm(Arc::new(common::client(&h.server)))
        .storage(h.storage.clone())
        .tools(fusion_agent::ToolRegistry::new().with(gated.clone()))
        .build()
        .await
        .unwrap();
    let mut b = h.session().await;
    h.server
        .push_tool_call("gated", "{}")
        .push_text("B answer")
        .push_text("A answer");

    assert_eq!(overlap(&mut a, &mut b, &gated).await, "A answer");
    assert_eq!(
        shown(&h.stored().await)[1..],
        [
            "from A",
            "",
            "<interrupted>",
            "from B",
            "B answer",
            "the real result",
            "A answer"
        ]
    );
    (a, b)
}

#[tokio::test]
async fn a_turn_of_another_writer_while_a_tool_runs_leaves_every_later_request_sendable() {
    let h = Harness::new().await;
    overlapping_turns(&h).await;

    // A session reading storage afresh sends one result for the call, the real one.
    let mut c = h.session().await;
    h.server.push_text("C answer");
    c.send_message("from C").await.unwrap();
    for i in 0..3 {
        common::assert_every_call_answered(&h.request_messages(i));
    }
    let request = h.request_messages(3);
    common::assert_every_call_answered(&request);
    let sent: Vec<&str> = request
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(sent, ["the real result"]);
}

#[tokio::test]
async fn undoing_a_turn_another_writer_s_late_result_follows_removes_that_turn_alone() {
    let h = Harness::new().await;
    let (_a, mut b) = overlapping_turns(&h).await;
    // B's turn goes, and A's real result and answer stay, after A's call.
    let a_s_turn = ["from A", "", "<interrupted>", "the real result", "A answer"];
    undo_b_s_turn_then_a_s(&h, &mut b, &a_s_turn).await;
}

/// Storage that counts the writes made through it, and fails its loads while
/// `failing_loads` is on.
struct CountingWrites {
    inner: Arc<dyn ConversationStorage>,
    writes: Arc<AtomicUsize>,
    failing_loads: Arc<AtomicBool>,
}

impl CountingWrites {
    fn count(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Intercept for CountingWrites {
    fn inner(&self) -> &dyn ConversationStorage {
        self.inner.as_ref()
    }

    async fn save(&self, session_id: &str, history: &[ChatMessage]) -> fusion_core::Result<()> {
        self.count();
        self.inner.save(session_id, history).await
    }

    async fn append(&self, session_id: &str, messages: &[ChatMessage]) -> fusion_core::Result<()> {
        self.count();
        self.inner.append(session_id, messages).await
    }

    async fn truncate(&self, session_id: &str, len: usize) -> fusion_core::Result<()> {
        self.count();
        self.inner.truncate(session_id, len).await
    }

    async fn delete(&self, session_id: &str) -> fusion_core::Result<()> {
        self.count();
        self.inner.delete(session_id).await
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> fusion_core::Result<u64> {
        self.count();
        self.inner.write_if(session_id, expected, change).await
    }

    async fn load_revision(
        &self,
        session_id: &str,
    ) -> fusion_core::Result<(Vec<ChatMessage>, Revision)> {
        if self.failing_loads.load(Ordering::SeqCst) {
            return Err(Error::Backend {
                backend: "test",
                message: "unreachable for now".into(),
                retryable: true,
                source: None,
            });
        }
        self.inner.load_revision(session_id).await
    }
}

/// Session A of `h`, writing through a [`CountingWrites`] of `writes` and
/// `failing_loads`, after a turn whose reply met B's whole turn stored meanwhile: A's
/// first model call is held while B's turn is stored, so A's reply, which calls a tool,
/// then meets B's messages, which A counts as unread (its requests must end with its own).
async fn a_after_b_s_turn_unread(
    h: &Harness,
    writes: &Arc<AtomicUsize>,
    failing_loads: &Arc<AtomicBool>,
) -> AgentSession {
    let counting = Intercepted(CountingWrites {
        inner: h.storage.clone(),
        writes: Arc::clone(writes),
        failing_loads: Arc::clone(failing_loads),
    });
    let llm = GatedLlm::new(&h.server, 1);
    let mut a = builder(llm.clone(), Arc::new(counting), h.workspace.path())
        .build()
        .await
        .unwrap();
    let mut b = h.session().await;
    h.server
        .push_text("B answer")
        .push_tool_call("list_directory", r#"{"path": "."}"#)
        .push_text("A answer");
    let (a_result, ()) = tokio::time::timeout(HANG_GUARD, async {
        tokio::join!(a.send_message("from A"), async {
            llm.entered.notified().await;
            b.send_message("from B").await.unwrap();
            llm.release.notify_one();
        })
    })
    .await
    .unwrap();
    assert_eq!(a_result.unwrap().result, "A answer");
    let stored = h.stored().await;
    assert_eq!(contents(&stored)[1..4], ["from A", "from B", "B answer"]);
    assert_eq!((stored.len(), a.message_count()), (7, 5), "B's turn unread");
    a
}

/// Found by a review: after a turn that stored its reply behind another writer's
/// messages, which it counted as unread rather than read into memory (its requests must
/// end with its own), an undo still tried a write requiring memory's revision, sure to
/// miss, before it reloaded. It reloads at once.
#[tokio::test]
async fn an_undo_after_a_turn_that_counted_another_writer_s_messages_tries_no_write() {
    let h = Harness::new().await;
    let writes = Arc::new(AtomicUsize::new(0));
    let mut a = a_after_b_s_turn_unread(&h, &writes, &Arc::default()).await;

    let written = writes.load(Ordering::SeqCst);
    let err = a.undo_last_turn().await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("nothing was undone"), "{text}");
    assert!(text.contains("now holds 7 messages"), "{text}");
    assert_eq!(
        writes.load(Ordering::SeqCst),
        written,
        "an undo sure to miss wrote"
    );
    assert_eq!(a.history(), h.stored().await.as_slice(), "reloaded");
}

/// Found by a review: an undo refused for the messages a turn counted beyond memory made
/// no write, so nothing marked the session for reload; when its own reload then failed,
/// memory and that count stayed, and the next undo, storage unchanged and readable again,
/// was refused once more as if storage had changed since. It reloads first now.
#[tokio::test]
async fn an_undo_after_a_refused_undo_whose_reload_failed_reads_storage_first() {
    let h = Harness::new().await;
    let failing_loads = Arc::new(AtomicBool::new(false));
    let mut a = a_after_b_s_turn_unread(&h, &Arc::default(), &failing_loads).await;

    failing_loads.store(true, Ordering::SeqCst);
    let err = a.undo_last_turn().await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("could not be reloaded yet"), "{text}");
    failing_loads.store(false, Ordering::SeqCst);
    let stored = h.stored().await;
    // Storage unchanged since: what the next undo does is decided on it, as read now.
    let again = a.undo_last_turn().await;
    let said = format!("{again:?}");
    assert!(
        !said.contains("changed since this session read it"),
        "{said}"
    );
    assert_ne!(a.history(), &stored[..5], "read again");
}

#[tokio::test]
async fn a_turn_sees_the_turns_another_writer_stored_since_its_session_last_read() {
    let h = Harness::new().await;
    let mut a = h.session().await;
    let mut b = h.session().await;
    turn(&h.server, &mut a, "A1", "answer A1").await;
    turn(&h.server, &mut b, "B1 my name is Bob", "hello Bob").await;
    assert_eq!(a.message_count(), 3, "A has not read B's turn yet");

    turn(&h.server, &mut a, "A2 what is my name", "Bob").await;
    let request = h.request_messages(2);
    let sent: Vec<&str> = request
        .iter()
        .map(|m| m["content"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        sent[1..],
        [
            "A1",
            "answer A1",
            "B1 my name is Bob",
            "hello Bob",
            "A2 what is my name"
        ]
    );
    assert_eq!(a.history(), h.stored().await.as_slice());
    assert_eq!(a.message_count(), 7);

    // Between turns, catch_up reads what changed, and only then.
    turn(&h.server, &mut b, "B2", "answer B2").await;
    assert!(a.catch_up().await.unwrap());
    assert!(!a.catch_up().await.unwrap());
    assert_eq!(a.message_count(), 9);
}
