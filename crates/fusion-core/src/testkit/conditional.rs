//! The conformance cases of conditional writes ([`ConversationStorage::write_if`] and
//! [`ConversationStorage::load_revision`]): generations follow the rules in
//! [`crate::Revision`], a stale expectation writes nothing, and the check and the write
//! are one step even between separate instances.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use std::time::Duration;

use super::{StorageHarness, all_pages, info, open, said, wait_past};
use crate::{
    Change, ChatMessage, ConversationStorage, Error, Expect, Expiry, Intercept, Intercepted,
    OwnerScope, Revision, SessionInfo, SessionMeta, SessionOrder, SessionQuery,
};

fn users(prefix: &str, n: usize) -> Vec<ChatMessage> {
    (0..n)
        .map(|i| ChatMessage::user(format!("{prefix}-{i}")))
        .collect()
}

fn assert_conflict(result: crate::Result<u64>, backend: &str, what: &str) {
    match result {
        Err(Error::Conflict {
            backend: named,
            session_id,
            ..
        }) => {
            assert_eq!(named, backend, "{what}: the conflict names the backend");
            assert!(
                !session_id.is_empty(),
                "{what}: the conflict names the session"
            );
        }
        other => panic!("{what}: expected Error::Conflict, got {other:?}"),
    }
}

async fn revision(store: &impl ConversationStorage, id: &str) -> Revision {
    store.load_revision(id).await.unwrap().1
}

/// Appends keep the generation; save, truncate and delete change it; a session written
/// again after a delete never gets an earlier generation back.
pub async fn generations_change_on_every_rewrite_and_never_on_append<H: StorageHarness>(
    harness: &H,
) {
    let store = open(harness).await;
    let (history, absent) = store.load_revision("gen").await.unwrap();
    assert!(history.is_empty());
    assert_eq!(absent, Revision::ABSENT);

    store.append("gen", &users("a", 2)).await.unwrap();
    let created = revision(&store, "gen").await;
    assert!(created.exists());
    assert_eq!(created.len, 2);
    store.append("gen", &users("b", 3)).await.unwrap();
    let appended = revision(&store, "gen").await;
    assert_eq!(appended.generation, created.generation, "append kept it");
    assert_eq!(appended.len, 5);

    let mut seen = vec![created.generation];
    store.truncate("gen", 4).await.unwrap();
    let truncated = revision(&store, "gen").await;
    assert_eq!(truncated.len, 4);
    assert!(!seen.contains(&truncated.generation), "truncate changed it");
    seen.push(truncated.generation);

    store.save("gen", &users("c", 4)).await.unwrap();
    let saved = revision(&store, "gen").await;
    assert_eq!(saved.len, 4, "a save of the same length...");
    assert!(!seen.contains(&saved.generation), "...still changed it");
    seen.push(saved.generation);

    store.delete("gen").await.unwrap();
    assert_eq!(revision(&store, "gen").await, Revision::ABSENT);
    store.append("gen", &users("c", 4)).await.unwrap();
    let again = revision(&store, "gen").await;
    assert!(again.exists());
    assert!(
        !seen.contains(&again.generation),
        "a re-created session is new"
    );

    let (loaded, at) = open(harness).await.load_revision("gen").await.unwrap();
    assert_eq!(loaded, users("c", 4));
    assert_eq!(at, again, "another instance reads the same revision");
}

/// Each kind of change applies when the expectation holds, returns the generation the
/// session now has, and otherwise fails with `Error::Conflict` and changes nothing.
pub async fn conditional_writes_apply_only_when_expected<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let other = open(harness).await;
    let backend = store.backend_name();

    // Create-only, twice: the second finds the session there.
    let g = store
        .write_if("cw", Expect::Generation(0), Change::Append(&users("a", 2)))
        .await
        .unwrap();
    assert_eq!(
        revision(&store, "cw").await,
        Revision {
            generation: g,
            len: 2
        }
    );
    let again = store
        .write_if(
            "cw",
            Expect::Exactly(Revision::ABSENT),
            Change::Append(&users("x", 1)),
        )
        .await;
    assert_conflict(again, backend, "create-only on an existing session");

    // An append under the generation is fine after someone else appended...
    other.append("cw", &users("b", 1)).await.unwrap();
    let kept = store
        .write_if("cw", Expect::Generation(g), Change::Append(&users("c", 1)))
        .await
        .unwrap();
    assert_eq!(kept, g);
    // ...but an exact expectation is not.
    let stale = Revision {
        generation: g,
        len: 2,
    };
    let result = store
        .write_if("cw", Expect::Exactly(stale), Change::Truncate(1))
        .await;
    assert_conflict(result, backend, "truncate with a stale length");
    let result = store
        .write_if("cw", Expect::Exactly(stale), Change::Append(&users("y", 1)))
        .await;
    assert_conflict(result, backend, "append with a stale length");
    assert_eq!(store.load("cw").await.unwrap().len(), 4, "nothing written");

    // A truncate under the exact revision applies and gives a new generation...
    let now = Revision {
        generation: g,
        len: 4,
    };
    let truncated = store
        .write_if("cw", Expect::Exactly(now), Change::Truncate(3))
        .await
        .unwrap();
    assert_ne!(truncated, g);
    assert_eq!(
        revision(&other, "cw").await,
        Revision {
            generation: truncated,
            len: 3
        }
    );
    // ...after which the old generation no longer admits even an append.
    let result = store
        .write_if("cw", Expect::Generation(g), Change::Append(&users("z", 1)))
        .await;
    assert_conflict(result, backend, "append after a truncate");

    // Replace, then replace with nothing, which deletes.
    let replaced = store
        .write_if(
            "cw",
            Expect::Exactly(Revision {
                generation: truncated,
                len: 3,
            }),
            Change::Replace(&users("r", 2)),
        )
        .await
        .unwrap();
    assert_eq!(other.load("cw").await.unwrap(), users("r", 2));
    let emptied = store
        .write_if("cw", Expect::Generation(replaced), Change::Replace(&[]))
        .await
        .unwrap();
    assert_eq!(emptied, 0);
    assert_eq!(revision(&other, "cw").await, Revision::ABSENT);
    assert!(
        !other
            .list_sessions()
            .await
            .unwrap()
            .contains(&"cw".to_string())
    );
}

/// A turn's append, conditioned on the generation it read, does not bring back a session
/// another instance deleted meanwhile (as a fragment without its beginning).
pub async fn a_deleted_session_is_not_resurrected_by_a_conditional_append<H: StorageHarness>(
    harness: &H,
) {
    let turn = open(harness).await;
    let deleter = open(harness).await;
    turn.append("del", &users("start", 2)).await.unwrap();
    let read = revision(&turn, "del").await;
    deleter.delete("del").await.unwrap();
    let result = turn
        .write_if(
            "del",
            Expect::Generation(read.generation),
            Change::Append(&[ChatMessage::assistant("orphan reply")]),
        )
        .await;
    assert_conflict(result, turn.backend_name(), "append to a deleted session");
    assert!(deleter.load("del").await.unwrap().is_empty());
    assert!(
        !deleter
            .list_sessions()
            .await
            .unwrap()
            .contains(&"del".to_string())
    );
}

/// Writers that all start one empty session at once with a create-only append (say, the
/// system prompt and their first message): exactly one creates it, the others conflict
/// and then append their message alone, so the opening is stored once.
pub async fn concurrent_creators_store_the_opening_once<H: StorageHarness>(harness: &H) {
    const WRITERS: usize = 6;
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = open(harness).await;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let user = ChatMessage::user(format!("w{w}"));
            let opening = [ChatMessage::system("the prompt"), user.clone()];
            match store
                .write_if("start", Expect::Generation(0), Change::Append(&opening))
                .await
            {
                Ok(_) => true,
                Err(Error::Conflict { .. }) => {
                    let (_, now) = store.load_revision("start").await.unwrap();
                    store
                        .write_if(
                            "start",
                            Expect::Generation(now.generation),
                            Change::Append(std::slice::from_ref(&user)),
                        )
                        .await
                        .unwrap();
                    false
                }
                Err(other) => panic!("writer {w}: {other:?}"),
            }
        }));
    }
    let mut created = 0;
    for task in tasks {
        created += usize::from(task.await.expect("writer task panicked"));
    }
    assert_eq!(created, 1, "exactly one writer created the session");
    let history = open(harness).await.load("start").await.unwrap();
    assert_eq!(history.len(), WRITERS + 1);
    assert_eq!(history[0], ChatMessage::system("the prompt"));
    let systems = history.iter().filter(|m| m.content == "the prompt").count();
    assert_eq!(systems, 1, "the opening was stored once: {history:?}");
    for w in 0..WRITERS {
        let tag = format!("w{w}");
        assert_eq!(history.iter().filter(|m| m.content == tag).count(), 1);
    }
}

/// Writers that read the same revision and each try to rewrite the history (say, two
/// undos): exactly one succeeds, the rest conflict, and the result is that one's.
pub async fn racing_rewrites_of_one_revision_let_exactly_one_through<H: StorageHarness>(
    harness: &H,
) {
    const WRITERS: usize = 4;
    let setup = open(harness).await;
    setup.append("race", &users("m", 8)).await.unwrap();
    let read = revision(&setup, "race").await;
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = open(harness).await;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .write_if("race", Expect::Exactly(read), Change::Truncate(7 - w))
                .await
                .map(|_| 7 - w)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("writer task panicked") {
            Ok(kept) => winners.push(kept),
            Err(Error::Conflict { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one rewrite applied: {winners:?}");
    assert_eq!(setup.load("race").await.unwrap(), users("m", winners[0]));
}

/// A conditional write checks its messages like `append` does: a message that could not
/// be read back is refused with `Error::InvalidMessage` and nothing is stored.
pub async fn a_conditional_write_refuses_unstorable_messages<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let too_deep = (0..crate::MAX_METADATA_DEPTH + 1)
        .fold(serde_json::json!(1), |inner, _| serde_json::json!([inner]));
    let bad = [
        ChatMessage::user("fine"),
        ChatMessage::user("no").with_metadata("m", too_deep),
    ];
    for change in [Change::Append(&bad), Change::Replace(&bad)] {
        let result = store.write_if("deep", Expect::Generation(0), change).await;
        assert!(
            matches!(result, Err(Error::InvalidMessage { index: 1, .. })),
            "{result:?}"
        );
    }
    assert_eq!(revision(&store, "deep").await, Revision::ABSENT);
}

/// The storage under an [`OwnerScope`] as another writer would leave it between the
/// scope's check and its write: when armed, `session_info` answers, then the session is
/// deleted and, with `taken_by`, created again as that owner's (with a title, data and a
/// message of theirs).
pub(super) struct ChangedAfterCheck {
    pub(super) inner: Arc<dyn ConversationStorage>,
    pub(super) armed: Arc<AtomicBool>,
    pub(super) taken_by: Option<&'static str>,
}

#[async_trait]
impl Intercept for ChangedAfterCheck {
    fn inner(&self) -> &dyn ConversationStorage {
        self.inner.as_ref()
    }

    async fn session_info(&self, session_id: &str) -> crate::Result<Option<SessionInfo>> {
        let found = self.inner.session_info(session_id).await?;
        if self.armed.swap(false, Ordering::SeqCst) {
            self.inner.delete(session_id).await?;
            if let Some(owner) = self.taken_by {
                let theirs = SessionMeta::new()
                    .owner(owner)
                    .title(format!("{owner}'s own"))
                    .data("secret", owner);
                let said_by = said(&format!("{owner}'s"));
                self.inner
                    .create_session(session_id, &theirs, &said_by)
                    .await?;
            }
        }
        Ok(found)
    }
}

/// A [`Change::Rewrite`] stores the new history under a fresh generation, as a replace
/// does, but keeps the session's times: `created_at`, `updated_at`, an idle expiry's
/// instant and its place in a newest-first listing, which a replace moves. It keeps the
/// metadata, obeys its expectation, creates an absent session and deletes with no
/// messages, as a replace does.
pub async fn a_rewrite_keeps_the_sessions_times<H: StorageHarness>(harness: &H) {
    let store = open(harness).await;
    let meta = SessionMeta::new()
        .owner("rw-owner")
        .title("kept")
        .expiry(Expiry::Idle(Duration::from_secs(3600)));
    store
        .create_session("rw-old", &meta, &users("a", 3))
        .await
        .unwrap();
    let before = info(&store, "rw-old").await;
    // Every write from here on is past the creation's instant at any backend's precision,
    // so a write that moved the times could not go unseen.
    wait_past(before.updated_at.unwrap()).await;
    store
        .create_session("rw-new", &meta, &users("n", 1))
        .await
        .unwrap();
    let newest_first = || {
        let query = SessionQuery::new()
            .owner("rw-owner")
            .order(SessionOrder::UpdatedDesc)
            .limit(10);
        all_pages(&store, query)
    };
    assert_eq!(newest_first().await, ["rw-new", "rw-old"]);

    let (_, read) = store.load_revision("rw-old").await.unwrap();
    let rewritten = users("b", 2);
    let generation = store
        .write_if("rw-old", Expect::Exactly(read), Change::Rewrite(&rewritten))
        .await
        .unwrap();
    assert!(generation != read.generation && generation != 0);
    let other = open(harness).await;
    assert_eq!(other.load("rw-old").await.unwrap(), rewritten);
    let after = info(&other, "rw-old").await;
    assert_eq!(after.generation, generation, "a fresh generation");
    assert_eq!(after.message_count, 2);
    assert_eq!(after.meta, before.meta, "the metadata is kept");
    assert_eq!(
        (after.created_at, after.updated_at, after.expires_at),
        (before.created_at, before.updated_at, before.expires_at),
        "a rewrite keeps the session's times"
    );
    assert_eq!(newest_first().await, ["rw-new", "rw-old"], "and its place");
    // Appends after it count as writes again.
    other.append("rw-old", &users("c", 1)).await.unwrap();
    let appended = info(&other, "rw-old").await;
    assert!(
        appended.updated_at > before.updated_at,
        "an append moves it"
    );
    assert_eq!(newest_first().await, ["rw-old", "rw-new"]);

    assert_conflict(
        store
            .write_if("rw-old", Expect::Exactly(read), Change::Rewrite(&rewritten))
            .await,
        store.backend_name(),
        "a rewrite of a stale revision",
    );
    assert_eq!(
        store.load("rw-old").await.unwrap().len(),
        3,
        "nothing written"
    );

    // An absent session is created, as by a replace; no messages delete it.
    let created = store
        .write_if(
            "rw-absent",
            Expect::Generation(0),
            Change::Rewrite(&users("d", 1)),
        )
        .await
        .unwrap();
    assert_eq!(store.load("rw-absent").await.unwrap(), users("d", 1));
    let deleted = store
        .write_if(
            "rw-absent",
            Expect::Generation(created),
            Change::Rewrite(&[]),
        )
        .await
        .unwrap();
    assert_eq!(deleted, 0);
    assert_eq!(revision(&store, "rw-absent").await, Revision::ABSENT);
}

/// An [`OwnerScope`] whose session is deleted between its check and its write never
/// creates it again without its owner (which would lock the owner out of it): a write
/// that requires the session absent is refused, since the check found it, and an
/// unconditional one starts over and creates it with its owner.
pub async fn a_scope_never_creates_a_session_without_its_owner<H: StorageHarness>(harness: &H) {
    let shared: Arc<dyn ConversationStorage> = Arc::new(open(harness).await);
    let armed = Arc::new(AtomicBool::new(false));
    let racing = Intercepted(ChangedAfterCheck {
        inner: shared.clone(),
        armed: armed.clone(),
        taken_by: None,
    });
    let alice = OwnerScope::new(Arc::new(racing), "alice").unwrap();
    for expected in [Expect::Generation(0), Expect::Exactly(Revision::ABSENT)] {
        alice.append("s", &said("first")).await.unwrap();
        armed.store(true, Ordering::SeqCst);
        let written = alice
            .write_if("s", expected, Change::Append(&said("second")))
            .await;
        assert!(
            matches!(written, Err(Error::Conflict { .. })),
            "{expected:?}: {written:?}"
        );
        assert_eq!(
            shared.session_info("s").await.unwrap(),
            None,
            "{expected:?}: deleted, and not created again without an owner"
        );
    }
    alice.append("s", &said("first")).await.unwrap();
    armed.store(true, Ordering::SeqCst);
    alice.append("s", &said("again")).await.unwrap();
    assert_eq!(
        info(shared.as_ref(), "s").await.meta.owner.as_deref(),
        Some("alice")
    );
    assert_eq!(shared.load("s").await.unwrap(), said("again"));
}
