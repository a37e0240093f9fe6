//! The conformance cases. Each takes a fresh [`StorageHarness`] and panics on a violation.

use std::sync::Arc;

use serde_json::json;

use super::{StorageHarness, assert_nothing_lost_in_writer_order, open};
use crate::{
    Change, ChatMessage, ConversationStorage, Error, Expect, MAX_METADATA_DEPTH, MetaUpdate,
    SessionMeta, SessionTimes, ToolCall,
};

/// A history exercising every field: unicode, empty content, tool calls (one with invalid
/// JSON arguments), a tool result, a name, metadata, and characters that need escaping.
pub fn sample_history() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You are a helpful agent."),
        ChatMessage::user("Héllo, wörld! 你好 🦀 \"quotes\" \\ back\nslash\ttab \u{2028} end"),
        ChatMessage::assistant_with_tool_calls(
            "",
            vec![
                ToolCall::new("call_1", "list_directory", r#"{"path":"/tmp"}"#),
                ToolCall::new("call_2", "read_file", "{not valid json"),
            ],
        ),
        ChatMessage::tool_result("call_1", "a.txt\nb.txt"),
        ChatMessage::tool_result("call_2", ""),
        ChatMessage::assistant("Found a.txt and b.txt.").with_name("agent-7"),
        ChatMessage::system("summary of earlier turns")
            .with_metadata("fusion_summary", json!({"covers": 3})),
        ChatMessage::user(""),
    ]
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<ChatMessage> {
    range
        .map(|i| ChatMessage::user(format!("{prefix}-{i}")))
        .collect()
}

/// Save then load returns the identical history.
pub async fn round_trip_keeps_every_field<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let history = sample_history();
    store.save("round-trip", &history).await.unwrap();
    assert_eq!(store.load("round-trip").await.unwrap(), history);
}

/// A 1 MiB message survives save, append and load.
pub async fn large_message_round_trips<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let big = ChatMessage::tool_result("call_big", "x".repeat(1 << 20));
    store
        .save("large", std::slice::from_ref(&big))
        .await
        .unwrap();
    store
        .append("large", std::slice::from_ref(&big))
        .await
        .unwrap();
    let loaded = store.load("large").await.unwrap();
    assert_eq!(loaded.len(), 2);
    assert!(loaded.iter().all(|m| *m == big));
}

/// Loading a session that was never written gives an empty history, not an error.
pub async fn load_of_unknown_session_is_empty<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    assert!(store.load("never-written").await.unwrap().is_empty());
    assert!(store.session_info("never-written").await.unwrap().is_none());
}

/// Appending after a save extends the saved history in order.
pub async fn append_after_save_extends_history<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let mut expected = sample_history();
    store.save("s", &expected).await.unwrap();
    let more = numbered("more", 0..3);
    store.append("s", &more[..1]).await.unwrap();
    store.append("s", &more[1..]).await.unwrap();
    expected.extend(more);
    assert_eq!(store.load("s").await.unwrap(), expected);
}

/// Appending to a session that does not exist creates it.
pub async fn append_creates_a_new_session<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let turn = sample_history();
    store.append("fresh", &turn).await.unwrap();
    assert_eq!(store.load("fresh").await.unwrap(), turn);
    assert_eq!(
        store.list_sessions().await.unwrap(),
        vec!["fresh".to_string()]
    );
}

/// Appending an empty slice creates nothing and changes nothing.
pub async fn append_of_nothing_changes_nothing<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    store.append("empty", &[]).await.unwrap();
    assert!(store.list_sessions().await.unwrap().is_empty());
    let history = numbered("m", 0..2);
    store.save("kept", &history).await.unwrap();
    store.append("kept", &[]).await.unwrap();
    assert_eq!(store.load("kept").await.unwrap(), history);
}

/// Save replaces, it does not add.
pub async fn save_replaces_existing_history<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    store.save("s", &numbered("old", 0..5)).await.unwrap();
    let new = numbered("new", 0..2);
    store.save("s", &new).await.unwrap();
    assert_eq!(store.load("s").await.unwrap(), new);
    store.append("s", &numbered("after", 0..1)).await.unwrap();
    assert_eq!(store.load("s").await.unwrap().len(), 3);
}

/// A session with no messages does not exist: saving an empty history removes it.
pub async fn save_of_empty_history_removes_session<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    store.save("s", &numbered("m", 0..3)).await.unwrap();
    store.save("s", &[]).await.unwrap();
    assert!(store.load("s").await.unwrap().is_empty());
    assert!(store.list_sessions().await.unwrap().is_empty());
    store.append("s", &numbered("again", 0..1)).await.unwrap();
    assert_eq!(store.load("s").await.unwrap().len(), 1);
}

/// Delete removes the session; deleting an unknown session is fine.
pub async fn delete_removes_session_and_unknown_is_ok<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    store.save("doomed", &sample_history()).await.unwrap();
    store.save("kept", &sample_history()).await.unwrap();
    store.delete("doomed").await.unwrap();
    assert!(store.load("doomed").await.unwrap().is_empty());
    assert_eq!(
        store.list_sessions().await.unwrap(),
        vec!["kept".to_string()]
    );
    store.delete("doomed").await.unwrap();
    store.delete("never-existed").await.unwrap();
    store
        .append("doomed", &numbered("reborn", 0..1))
        .await
        .unwrap();
    assert_eq!(store.load("doomed").await.unwrap().len(), 1);
}

/// Every stored session is listed exactly once, and nothing else is.
pub async fn list_returns_every_session_once<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    assert!(store.list_sessions().await.unwrap().is_empty());
    let ids = [
        "user-123",
        "alice@example.com",
        "tenant:42:chat-7",
        "a",
        "B_c+d.e",
    ];
    for id in ids {
        store.append(id, &numbered(id, 0..2)).await.unwrap();
        store.append(id, &numbered(id, 2..3)).await.unwrap();
    }
    store.save("a", &numbered("a", 0..1)).await.unwrap();
    let mut listed = store.list_sessions().await.unwrap();
    listed.sort();
    let mut expected: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
}

/// Writes to one session never show up in another.
pub async fn sessions_are_isolated<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    store.save("one", &numbered("one", 0..3)).await.unwrap();
    store.save("two", &numbered("two", 0..2)).await.unwrap();
    store.append("one", &numbered("one", 3..4)).await.unwrap();
    store.delete("two").await.unwrap();
    assert_eq!(store.load("one").await.unwrap(), numbered("one", 0..4));
    // Prefix-related ids are distinct sessions.
    store.save("one-x", &numbered("x", 0..1)).await.unwrap();
    store.save("on", &numbered("y", 0..1)).await.unwrap();
    assert_eq!(store.load("one").await.unwrap().len(), 4);
    assert_eq!(store.load("one-x").await.unwrap(), numbered("x", 0..1));
}

/// The ids every backend must refuse.
pub fn hostile_ids() -> Vec<String> {
    [
        "",
        ".",
        "..",
        "../x",
        "../../etc/passwd",
        "a/b",
        "a\\b",
        "/abs",
        "a\0b",
        ".hidden",
        "*",
        "a*",
        "{x}",
        "s?",
        "[a]",
        "with space",
        "new\nline",
        "ünï",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(std::iter::once("x".repeat(5000)))
    .collect()
}

fn assert_invalid_id<T: std::fmt::Debug>(result: crate::Result<T>, id: &str, op: &str) {
    match result {
        Err(Error::InvalidSessionId { .. }) => {}
        other => panic!("{op}({id:?}) should be InvalidSessionId, got {other:?}"),
    }
}

/// Hostile ids get `InvalidSessionId` from every method and nothing is stored.
pub async fn hostile_ids_are_rejected_and_nothing_is_written<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let history = numbered("h", 0..2);
    for id in hostile_ids() {
        let id = id.as_str();
        assert_invalid_id(store.save(id, &history).await, id, "save");
        assert_invalid_id(store.append(id, &history).await, id, "append");
        assert_invalid_id(store.append(id, &[]).await, id, "append(empty)");
        assert_invalid_id(store.load(id).await, id, "load");
        assert_invalid_id(store.delete(id).await, id, "delete");
        assert_invalid_id(store.truncate(id, 0).await, id, "truncate");
        assert_invalid_id(store.session_info(id).await, id, "session_info");
        assert_invalid_id(store.load_revision(id).await, id, "load_revision");
        for (change, op) in [
            (Change::Append(&history), "write_if(Append)"),
            (Change::Append(&[]), "write_if(Append(empty))"),
            (Change::Replace(&history), "write_if(Replace)"),
            (Change::Rewrite(&history), "write_if(Rewrite)"),
            (Change::Truncate(0), "write_if(Truncate)"),
        ] {
            let anything = Expect::Generation(0);
            assert_invalid_id(store.write_if(id, anything, change).await, id, op);
        }
        let meta = SessionMeta::new().title("t");
        let created = store.create_session(id, &meta, &history).await;
        assert_invalid_id(created, id, "create_session");
        let epoch = std::time::SystemTime::UNIX_EPOCH;
        let times = SessionTimes::new(epoch, epoch);
        let copied = store.create_session_with_times(id, &meta, &history, times);
        assert_invalid_id(copied.await, id, "create_session_with_times");
        let retitle = MetaUpdate::new().title(Some("t"));
        assert_invalid_id(
            store.update_session(id, &retitle).await,
            id,
            "update_session",
        );
        let nothing = MetaUpdate::new();
        assert_invalid_id(
            store.update_session(id, &nothing).await,
            id,
            "update_session(empty)",
        );
    }
    assert!(store.list_sessions().await.unwrap().is_empty());
}

/// Writers with their own storage instances append to one session at once: nothing is
/// lost or duplicated and each writer's messages keep their order.
pub async fn concurrent_appends_lose_nothing_and_keep_order<H: StorageHarness>(harness: &H) {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 50;
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = open(harness).await;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            for k in 0..PER_WRITER {
                // Mix single-message and two-message appends.
                if k % 2 == 0 {
                    let turn = [ChatMessage::user(format!("w{w}-{k:03}"))];
                    store.append("shared", &turn).await.unwrap();
                } else {
                    let turn = [
                        ChatMessage::user(format!("w{w}-{k:03}")),
                        ChatMessage::assistant(format!("w{w}-{k:03}-reply")),
                    ];
                    store.append("shared", &turn).await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task panicked");
    }
    let loaded = open(harness).await.load("shared").await.unwrap();
    assert_eq!(
        loaded.len(),
        WRITERS * PER_WRITER * 3 / 2,
        "messages lost or duplicated"
    );
    // Each reply must directly follow its own request, or a two-message append was split.
    for (pos, msg) in loaded.iter().enumerate() {
        if msg.content.ends_with("-reply") {
            assert_eq!(
                format!("{}-reply", loaded[pos - 1].content),
                msg.content,
                "a two-message append was split"
            );
        }
    }
    let requests: Vec<ChatMessage> = loaded
        .into_iter()
        .filter(|msg| !msg.content.ends_with("-reply"))
        .collect();
    let writers: Vec<String> = (0..WRITERS).map(|w| format!("w{w}")).collect();
    assert_nothing_lost_in_writer_order(&requests, &writers, PER_WRITER);
}

/// A second storage instance on the same location sees the first one's writes.
pub async fn second_instance_sees_writes<H: StorageHarness>(harness: &H) {
    let first = open(harness).await;
    first.save("shared", &numbered("a", 0..2)).await.unwrap();
    first.append("shared", &numbered("a", 2..3)).await.unwrap();
    first.append("other", &numbered("b", 0..1)).await.unwrap();
    let second = open(harness).await;
    assert_eq!(second.load("shared").await.unwrap(), numbered("a", 0..3));
    let mut listed = second.list_sessions().await.unwrap();
    listed.sort();
    assert_eq!(listed, vec!["other".to_string(), "shared".to_string()]);
    second.delete("other").await.unwrap();
    assert_eq!(
        first.list_sessions().await.unwrap(),
        vec!["shared".to_string()]
    );
}

/// `truncate` keeps the first `len` messages; appends continue after them.
pub async fn truncate_keeps_a_prefix<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    store.save("t", &numbered("m", 0..6)).await.unwrap();
    store.truncate("t", 4).await.unwrap();
    assert_eq!(store.load("t").await.unwrap(), numbered("m", 0..4));
    store.truncate("t", 10).await.unwrap();
    assert_eq!(store.load("t").await.unwrap().len(), 4);
    store.append("t", &numbered("n", 0..1)).await.unwrap();
    let mut expected = numbered("m", 0..4);
    expected.extend(numbered("n", 0..1));
    assert_eq!(store.load("t").await.unwrap(), expected);
    store.truncate("t", 0).await.unwrap();
    assert!(store.load("t").await.unwrap().is_empty());
    assert!(store.list_sessions().await.unwrap().is_empty());
    store.truncate("never-written", 0).await.unwrap();
}

/// `session_info` reports the message count and sensible timestamps.
pub async fn session_info_counts_messages<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    store.save("info", &numbered("m", 0..3)).await.unwrap();
    store.append("info", &numbered("m", 3..5)).await.unwrap();
    let info = store
        .session_info("info")
        .await
        .unwrap()
        .expect("session exists");
    assert_eq!(info.id, "info");
    assert_eq!(info.message_count, 5);
    if let (Some(created), Some(updated)) = (info.created_at, info.updated_at) {
        assert!(created <= updated, "created_at after updated_at");
    }
}

/// A message whose metadata nests `depth` arrays and objects deep (alternating, with
/// siblings at every level), for tests of [`MAX_METADATA_DEPTH`].
pub fn message_with_metadata_depth(depth: usize) -> ChatMessage {
    let tree = (0..depth).fold(json!("leaf"), |inner, level| {
        if level % 2 == 0 {
            json!([level, inner])
        } else {
            json!({"level": level, "inner": inner})
        }
    });
    ChatMessage::user(format!("depth {depth}")).with_metadata("tree", tree)
}

fn assert_refused_too_deep(result: crate::Result<()>, session_id: &str, index: usize, op: &str) {
    let err = match result {
        Err(err @ Error::InvalidMessage { .. }) => err,
        other => panic!("{op}: a message too deep to read back should be refused, got {other:?}"),
    };
    let shown = err.to_string();
    assert!(
        matches!(&err, Error::InvalidMessage { session_id: s, index: i, .. } if s == session_id && *i == index),
        "{op}: the error should name session {session_id:?} and message {index}: {err:?}"
    );
    assert!(
        shown.contains(&MAX_METADATA_DEPTH.to_string()),
        "{op}: the error should name the limit: {shown}"
    );
    assert!(!err.is_retryable(), "{op}: retrying cannot help: {shown}");
}

/// A message nested exactly [`MAX_METADATA_DEPTH`] deep round-trips through `save` and
/// `append`; one level deeper is refused by both with `InvalidMessage` naming the
/// session, the message's index in the batch and the limit, and nothing of the batch is
/// stored, in an existing session or a new one.
pub async fn a_message_too_deep_to_read_back_is_refused_and_nothing_stored<H: StorageHarness>(
    harness: &H,
) {
    let store = open(harness).await;
    let deepest = message_with_metadata_depth(MAX_METADATA_DEPTH);
    let too_deep = message_with_metadata_depth(MAX_METADATA_DEPTH + 1);
    store
        .save("deep", std::slice::from_ref(&deepest))
        .await
        .unwrap();
    store
        .append("deep", &[ChatMessage::user("ok"), deepest.clone()])
        .await
        .unwrap();
    let stored = vec![deepest.clone(), ChatMessage::user("ok"), deepest];
    assert_eq!(store.load("deep").await.unwrap(), stored);

    let batch = [ChatMessage::user("fine"), too_deep.clone()];
    assert_refused_too_deep(store.append("deep", &batch).await, "deep", 1, "append");
    assert_refused_too_deep(store.save("deep", &batch).await, "deep", 1, "save");
    let alone = std::slice::from_ref(&too_deep);
    assert_refused_too_deep(store.append("new", alone).await, "new", 0, "append(new)");
    assert_refused_too_deep(store.save("new", alone).await, "new", 0, "save(new)");

    // Read through a second instance, so nothing cached stands in for storage.
    let second = open(harness).await;
    assert_eq!(second.load("deep").await.unwrap(), stored);
    assert!(second.load("new").await.unwrap().is_empty());
    assert_eq!(
        second.list_sessions().await.unwrap(),
        vec!["deep".to_string()]
    );
}
