//! How many writes a turn's replies with tool calls cost when another writer appends to
//! the session during the turn: each such reply is stored against the exact revision the
//! session knows storage to hold, so once a reread has told it of the other writer's
//! messages, the turn's later replies store at the first attempt (and their call ids stay
//! unique against those messages), though memory, and so the model, still sees only the
//! turn's own messages until the next turn.
//!
//! Other writers land through a storage wrapper that counts the stores of replies with
//! calls and their misses; no timing is involved.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{
    ANOTHER_WRITER_S_RESULT, Harness, another_writer_s_call_0, builder, client, contents,
    numbered_afresh, turn,
};
use fusion_agent::{AgentSession, ContextPolicy};
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, Intercept, Intercepted, Revision,
};

/// Storage that counts the stores of replies with calls (and how many of them missed the
/// revision they expected), and lets another writer append [`another_writer_s_call_0`]
/// once: just before the first such store, or just before the first read after
/// [`Counting::arm_before_read`].
struct Counting {
    inner: Arc<dyn ConversationStorage>,
    calling_stores: AtomicUsize,
    calling_misses: AtomicUsize,
    /// The other writer's messages, appended once before the first calling store.
    before_calling_store: Mutex<Option<Vec<ChatMessage>>>,
    /// Whether they go before the next `load_revision` instead.
    before_read: AtomicBool,
}

impl Counting {
    fn new(inner: Arc<dyn ConversationStorage>) -> Self {
        Self {
            inner,
            calling_stores: AtomicUsize::new(0),
            calling_misses: AtomicUsize::new(0),
            before_calling_store: Mutex::new(Some(another_writer_s_call_0().to_vec())),
            before_read: AtomicBool::new(false),
        }
    }

    /// The other writer appends at the next `load_revision`, before it reads.
    fn arm_before_read(&self) {
        self.before_read.store(true, Ordering::SeqCst);
    }

    async fn other_writer_appends(&self, session_id: &str) -> fusion_core::Result<()> {
        let messages = self.before_calling_store.lock().unwrap().take();
        if let Some(messages) = messages {
            self.inner.append(session_id, &messages).await?;
        }
        Ok(())
    }

    /// (stores, misses) of replies with calls so far.
    fn counts(&self) -> (usize, usize) {
        (
            self.calling_stores.load(Ordering::SeqCst),
            self.calling_misses.load(Ordering::SeqCst),
        )
    }
}

#[async_trait::async_trait]
impl Intercept for Counting {
    fn inner(&self) -> &dyn ConversationStorage {
        self.inner.as_ref()
    }

    async fn load_revision(
        &self,
        session_id: &str,
    ) -> fusion_core::Result<(Vec<ChatMessage>, Revision)> {
        if self.before_read.swap(false, Ordering::SeqCst) {
            self.other_writer_appends(session_id).await?;
        }
        self.inner.load_revision(session_id).await
    }

    async fn write_if(
        &self,
        session_id: &str,
        expected: Expect,
        change: Change<'_>,
    ) -> fusion_core::Result<u64> {
        let calling = matches!(change, Change::Append(batch)
            if batch.iter().any(ChatMessage::has_tool_calls));
        if !calling {
            return self.inner.write_if(session_id, expected, change).await;
        }
        if !self.before_read.load(Ordering::SeqCst) {
            self.other_writer_appends(session_id).await?;
        }
        self.calling_stores.fetch_add(1, Ordering::SeqCst);
        let written = self.inner.write_if(session_id, expected, change).await;
        if matches!(written, Err(Error::Conflict { .. })) {
            self.calling_misses.fetch_add(1, Ordering::SeqCst);
        }
        written
    }
}

/// A session on `storage` and `h`'s server.
async fn session_on(h: &Harness, storage: &Arc<Intercepted<Counting>>) -> AgentSession {
    builder(
        Arc::new(client(&h.server)),
        storage.clone(),
        h.workspace.path(),
    )
    .build()
    .await
    .unwrap()
}

/// Scripts `replies` replies with calls, then the answer "done".
fn push_replies(h: &Harness, replies: usize) {
    for _ in 0..replies {
        h.server.push(numbered_afresh());
    }
    h.server.push_text("done");
}

/// Checks that `stored` holds the other writer's two messages once, and this session's
/// `replies` replies once each, every call with an id of its own answered once, right
/// after its reply or (the other writer's) anywhere after its own.
fn assert_nothing_lost_or_doubled(stored: &[ChatMessage], replies: usize) {
    let theirs = contents(stored)
        .iter()
        .filter(|c| **c == ANOTHER_WRITER_S_RESULT)
        .count();
    assert_eq!(theirs, 1, "{:?}", contents(stored));
    let calls: Vec<&str> = stored
        .iter()
        .flat_map(|m| m.tool_calls.iter().map(|call| call.id.as_str()))
        .collect();
    assert_eq!(calls.len(), replies + 1, "{calls:?}");
    let mut unique = calls.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), calls.len(), "a call id is shared: {calls:?}");
    let ids: Vec<_> = stored.iter().filter_map(|m| m.id.as_ref()).collect();
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "a message is stored twice");
    for call in calls {
        let answers = stored
            .iter()
            .filter(|m| m.tool_call_id.as_deref() == Some(call))
            .count();
        assert_eq!(answers, 1, "call {call}: {:?}", contents(stored));
    }
}

/// Found by a review: after one miss (another writer appended before the turn's first
/// reply with calls was stored) the reply was stored after a reread, but memory still
/// lacked the other writer's messages, so every later reply of the turn expected a
/// revision storage had left behind and missed once more: a failed write and a read each,
/// and "another writer appended" logged again though nobody had. The session now keeps
/// how much storage holds beyond memory, and the call ids there.
#[tokio::test]
async fn after_one_miss_the_turn_s_later_replies_store_at_the_first_attempt() {
    const REPLIES: usize = 3;
    let h = Harness::new().await;
    let storage = Arc::new(Intercepted(Counting::new(h.storage.clone())));
    let mut session = session_on(&h, &storage).await;
    push_replies(&h, REPLIES);

    let result = session.send_message("list it, thrice").await.unwrap();

    assert_eq!(result.result, "done");
    assert_eq!(result.steps.len(), REPLIES);
    assert_eq!(storage.0.counts(), (REPLIES + 1, 1), "(stores, misses)");
    let stored = h.stored().await;
    assert_nothing_lost_or_doubled(&stored, REPLIES);

    // Memory, and so every request of the turn, holds the turn's own messages alone (a
    // request ends with them); the next read brings the other writer's in.
    let sent = h.request_messages(REPLIES);
    assert!(
        !sent.iter().any(|m| m["content"] == ANOTHER_WRITER_S_RESULT),
        "{sent:?}"
    );
    assert_eq!(
        session.history().len(),
        stored.len() - another_writer_s_call_0().len()
    );
    assert!(session.catch_up().await.unwrap());
    assert_eq!(session.history(), &stored[..]);
}

/// The same when the turn's automatic summary reread the session, which another writer
/// had appended to after the turn's message: memory keeps the history up to that
/// message, and the turn's first reply with calls missed for what it left out.
#[tokio::test]
async fn after_a_summary_s_reread_the_turn_s_replies_store_at_the_first_attempt() {
    const REPLIES: usize = 2;
    let h = Harness::new().await;
    let storage = Arc::new(Intercepted(Counting::new(h.storage.clone())));
    let mut session = session_on(&h, &storage).await;
    turn(&h.server, &mut session, "hi", "hello").await;
    session.set_context_policy(ContextPolicy {
        summary_keep_last: 0,
        auto_summarize_at_tokens: Some(1),
        ..ContextPolicy::default()
    });
    h.server.push_text("They greeted each other.");
    push_replies(&h, REPLIES);
    storage.0.arm_before_read();

    let result = session.send_message("now list it").await.unwrap();

    assert_eq!(result.result, "done");
    assert_eq!(storage.0.counts(), (REPLIES, 0), "(stores, misses)");
    let stored = h.stored().await;
    assert_nothing_lost_or_doubled(&stored, REPLIES);
    assert!(session.catch_up().await.unwrap());
    assert_eq!(session.history(), &stored[..]);
}
