//! Races between writers of one session (issue 13, cases 7, 8 and 10): a cancelled
//! turn's write lands before the session reads storage again, sessions started at once
//! store one system prompt, a fork and another writer of its target never interleave, and
//! the user's message is stored before the automatic summary runs.
//!
//! Other writers are other `AgentSession`s or other storage handles on the same store.
//! Races are forced with `Notify` gates, storage hooks and a barrier, never sleeps.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{
    GatedLlm, HANG_GUARD, Harness, HookedStorage, SESSION, another_writer_s_call_0, builder,
    client, contents, numbered_afresh, roles, turn,
};
use fusion_agent::context::{SUMMARY_KEY, is_context_record};
use fusion_agent::testing::{MockLlmServer, MockReply};
use fusion_agent::{AgentSession, ContextPolicy};
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, Intercept, Intercepted, Role,
};
use fusion_storage_fs::FileSystemStorage;
use fusion_storage_memory::InMemoryStorage;
use tokio::sync::Barrier;

#[tokio::test]
async fn case7_a_reload_after_a_cancelled_turn_waits_for_the_turn_s_write() {
    let h = Harness::new().await;
    let storage = Arc::new(HookedStorage::default());
    let mut session = builder(
        Arc::new(client(&h.server)),
        storage.clone(),
        h.workspace.path(),
    )
    .build()
    .await
    .unwrap();

    // The opening's append is entered and held; then the turn is dropped (Ctrl-C).
    storage.hold_next_append.store(true, Ordering::SeqCst);
    tokio::time::timeout(HANG_GUARD, async {
        tokio::select! {
            _ = session.send_message("first") => panic!("the append is held"),
            _ = storage.append_entered.notified() => {}
        }
    })
    .await
    .unwrap();
    assert!(storage.inner.load(SESSION).await.unwrap().is_empty());

    // The reload starts while the write is still held, and the write is released only
    // then: the reload can only see it by waiting for it.
    let (reloaded, ()) = tokio::time::timeout(HANG_GUARD, async {
        tokio::join!(session.reload(), async {
            storage.append_release.notify_one();
        })
    })
    .await
    .unwrap();
    reloaded.unwrap();
    assert_eq!(
        contents(session.history()),
        ["You are a test agent.", "first"]
    );

    // The next turn adds no second system prompt, and undo removes exactly that turn.
    turn(&h.server, &mut session, "second", "second answer").await;
    let stored = storage.inner.load(SESSION).await.unwrap();
    assert_eq!(
        contents(&stored),
        ["You are a test agent.", "first", "second", "second answer"]
    );
    assert_eq!(session.undo_last_turn().await.unwrap(), 2);
    assert_eq!(
        contents(&storage.inner.load(SESSION).await.unwrap()),
        ["You are a test agent.", "first"]
    );
}

/// Case 8 with one storage handle per session from `open`, all on one store.
async fn concurrent_starts(open: impl Fn() -> Arc<dyn ConversationStorage>) {
    const STARTERS: usize = 4;
    let server = MockLlmServer::start().await;
    server.set_default(MockReply::text("ok"));
    let workspace = tempfile::tempdir().unwrap();
    let barrier = Arc::new(Barrier::new(STARTERS));
    let mut tasks = Vec::new();
    for n in 0..STARTERS {
        // Every session reads the empty session before any of them writes.
        let mut session = builder(Arc::new(client(&server)), open(), workspace.path())
            .build()
            .await
            .unwrap();
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            session.send_message(&format!("hello from {n}")).await
        }));
    }
    for task in tasks {
        let result = tokio::time::timeout(HANG_GUARD, task).await.unwrap();
        assert_eq!(result.unwrap().unwrap().result, "ok");
    }

    let stored = open().load(SESSION).await.unwrap();
    let systems: Vec<usize> = (0..stored.len())
        .filter(|&i| stored[i].role == Role::System && !is_context_record(&stored[i]))
        .collect();
    assert_eq!(systems, [0], "{stored:#?}");
    for n in 0..STARTERS {
        let hello = format!("hello from {n}");
        assert_eq!(stored.iter().filter(|m| m.content == hello).count(), 1);
    }
    assert_eq!(stored.len(), 1 + 2 * STARTERS);
}

#[tokio::test]
async fn case8_sessions_starting_one_new_session_at_once_store_the_system_prompt_once() {
    let store = InMemoryStorage::new();
    concurrent_starts(|| Arc::new(store.clone())).await;
}

#[tokio::test]
async fn case8_sessions_starting_one_new_session_at_once_on_fs_store_the_system_prompt_once() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_starts(|| Arc::new(FileSystemStorage::new(dir.path()))).await;
}

#[tokio::test]
async fn case10_a_fork_racing_a_writer_that_creates_the_target_leaves_that_writer_whole() {
    let h = Harness::new().await;
    let storage = Arc::new(HookedStorage::default());
    let mut session = builder(
        Arc::new(client(&h.server)),
        storage.clone(),
        h.workspace.path(),
    )
    .build()
    .await
    .unwrap();
    turn(&h.server, &mut session, "hello", "hi").await;

    // Another writer creates the target after the fork read its source, before it writes.
    storage.before_returning_a_read(
        SESSION,
        storage.inner.clone(),
        "target",
        vec![ChatMessage::user("theirs")],
    );
    let err = session.fork("target").await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(
        err.to_string().contains("already holds 1 messages"),
        "{err}"
    );
    assert_eq!(
        contents(&storage.inner.load("target").await.unwrap()),
        ["theirs"]
    );
}

#[tokio::test]
async fn case10_a_writer_that_loses_the_race_to_a_fork_continues_after_the_copy() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    turn(&h.server, &mut session, "hello", "hi").await;
    // The other writer read the target while it was still empty.
    let mut other_on_target = AgentSession::builder("target")
        .llm(Arc::new(client(&h.server)))
        .storage(h.storage.clone())
        .workspace_roots([h.workspace.path()])
        .system_prompt("You are a test agent.")
        .build()
        .await
        .unwrap();
    assert_eq!(other_on_target.message_count(), 0);

    let fork = session.fork("target").await.unwrap();
    assert_eq!(fork.message_count(), 3);
    turn(&h.server, &mut other_on_target, "late", "late answer").await;
    assert_eq!(
        contents(&h.storage.load("target").await.unwrap()),
        [
            "You are a test agent.",
            "hello",
            "hi",
            "late",
            "late answer"
        ]
    );
    // The source is untouched by either.
    assert_eq!(contents(&h.stored().await)[1..], ["hello", "hi"]);
}

#[tokio::test]
async fn case10_a_turn_interrupted_during_its_automatic_summary_has_stored_the_user_message() {
    let h = Harness::new().await;
    // Call 1 answers the first turn; call 2 is the second turn's summary, held forever.
    let llm = GatedLlm::new(&h.server, 2);
    let mut session = builder(llm.clone(), h.storage.clone(), h.workspace.path())
        .build()
        .await
        .unwrap();
    turn(&h.server, &mut session, "hi", "hello").await;
    session.set_context_policy(ContextPolicy {
        summary_keep_last: 0,
        auto_summarize_at_tokens: Some(1),
        ..ContextPolicy::default()
    });

    tokio::time::timeout(HANG_GUARD, async {
        tokio::select! {
            _ = session.send_message("remember this") => panic!("the summary is held"),
            _ = llm.entered.notified() => {}
        }
    })
    .await
    .unwrap();
    assert_eq!(
        contents(&h.stored().await),
        ["You are a test agent.", "hi", "hello", "remember this"]
    );
}

#[tokio::test]
async fn case10_an_automatic_summary_never_covers_the_turn_s_own_message() {
    let h = Harness::new().await;
    let mut session = h.session().await;
    turn(&h.server, &mut session, "hi", "hello").await;
    session.set_context_policy(ContextPolicy {
        summary_keep_last: 0,
        auto_summarize_at_tokens: Some(1),
        ..ContextPolicy::default()
    });

    // A failing summary: the turn goes on, its message stored and not in the transcript.
    h.server.push_status(500).push_text("still here");
    let result = session.send_message("second").await.unwrap();
    assert_eq!(result.result, "still here");
    let transcript = h.request_messages(1)[1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(transcript.contains("User: hi"), "{transcript}");
    assert!(!transcript.contains("second"), "{transcript}");
    assert!(h.stored().await.iter().any(|m| m.content == "second"));

    // A working summary stops right before the turn's message, which the model then sees.
    h.server.push_text("They greeted twice.").push_text("fine");
    session.send_message("third").await.unwrap();
    let stored = h.stored().await;
    let third = stored.iter().position(|m| m.content == "third").unwrap();
    let record = stored.iter().find(|m| is_context_record(m)).unwrap();
    assert_eq!(record.metadata[SUMMARY_KEY]["covers"], third);
    // Requests: turn 1, failed summary, turn 2, summary, turn 3.
    let sent = h.request_messages(4);
    assert_eq!(roles(&sent), ["system", "user"]);
    assert_eq!(sent[1]["content"], "third");
    assert!(
        sent[0]["content"]
            .as_str()
            .unwrap()
            .ends_with("They greeted twice.")
    );
}

/// The ids of the calls `stored` holds, in order, after checking that each is answered
/// once, in the same order: the other writer's `call_0` first, then this session's.
fn call_ids_answered_once(stored: &[ChatMessage]) -> Vec<&str> {
    let calls: Vec<&str> = stored
        .iter()
        .flat_map(|m| m.tool_calls.iter().map(|call| call.id.as_str()))
        .collect();
    assert_eq!(calls.len(), 2, "{:?}", contents(stored));
    assert_eq!(calls[0], "call_0", "the other writer's");
    assert_ne!(calls[1], "call_0", "this session's, made its own");
    let answered = stored.iter().filter_map(|m| m.tool_call_id.as_deref());
    assert_eq!(answered.collect::<Vec<_>>(), calls);
    calls
}

/// Found by a review: a reply's call ids were made unique against the history this
/// session had read, and another writer's reply appended since (which the append allows)
/// could hold the same ids: servers that number each reply's calls afresh send `call_0`
/// in every reply. The store checks them against the session as stored now.
#[tokio::test]
async fn a_reply_s_call_ids_stay_unique_against_another_writer_s_reply_stored_meanwhile() {
    let h = Harness::new().await;
    let llm = GatedLlm::new(&h.server, 1);
    let mut session = builder(llm.clone(), h.storage.clone(), h.workspace.path())
        .build()
        .await
        .unwrap();
    h.server.push(numbered_afresh()).push_text("done");
    let (result, ()) = tokio::time::timeout(HANG_GUARD, async {
        tokio::join!(session.send_message("list"), async {
            llm.entered.notified().await;
            h.storage
                .append(SESSION, &another_writer_s_call_0())
                .await
                .unwrap();
            llm.release.notify_one();
        })
    })
    .await
    .unwrap();
    assert_eq!(result.unwrap().result, "done");
    call_ids_answered_once(&h.stored().await);
}

/// Storage where another writer appends just before each write of a reply with calls:
/// a note before each of the first [`CROWDED`], so each misses the revision it expects,
/// then [`another_writer_s_call_0`] before the next (after the last read it made).
struct Crowded {
    inner: Arc<dyn ConversationStorage>,
    calling_writes: AtomicUsize,
}

/// How many times in a row [`Crowded`] makes a reply's store miss: the session's limit.
const CROWDED: usize = 3;

#[async_trait::async_trait]
impl Intercept for Crowded {
    fn inner(&self) -> &dyn ConversationStorage {
        self.inner.as_ref()
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> fusion_core::Result<u64> {
        if let Change::Append(batch) = change
            && batch.iter().any(ChatMessage::has_tool_calls)
        {
            let other = match self.calling_writes.fetch_add(1, Ordering::SeqCst) {
                n if n < CROWDED => vec![ChatMessage::user(format!("note {n}"))],
                _ => another_writer_s_call_0().to_vec(),
            };
            self.inner.append(session_id, &other).await?;
        }
        self.inner.write_if(session_id, expected, change).await
    }
}

/// Found by a review: after [`CROWDED`] misses the reply went as a plain append, its ids
/// checked only against the last read, and another writer's reply stored after that read
/// with the same `call_0` was stored beside it, silently. The plain append gives the calls
/// ids of the session's own making, which no other writer's reply holds.
#[tokio::test]
async fn a_reply_stored_after_its_last_miss_still_gets_call_ids_of_its_own() {
    let h = Harness::new().await;
    let storage = Arc::new(Intercepted(Crowded {
        inner: h.storage.clone(),
        calling_writes: AtomicUsize::new(0),
    }));
    let mut session = builder(Arc::new(client(&h.server)), storage, h.workspace.path())
        .build()
        .await
        .unwrap();
    h.server.push(numbered_afresh()).push_text("done");
    let result = session.send_message("list").await.unwrap();
    assert_eq!(result.result, "done");
    let stored = h.stored().await;
    let notes = (0..CROWDED).map(|n| format!("note {n}"));
    assert!(
        notes
            .into_iter()
            .all(|note| contents(&stored).contains(&note.as_str()))
    );
    call_ids_answered_once(&stored);
}
