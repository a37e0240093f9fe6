//! The conformance cases of owners: an [`OwnerScope`] never shows one owner another's
//! sessions, and never changes one that another owner took over between its check and its
//! write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::conditional::ChangedAfterCheck;
use super::{StorageHarness, info, open, said};
use crate::{
    ChatMessage, ConversationStorage, Error, Expect, Intercepted, MetaUpdate, OwnerScope,
    SessionQuery,
};

/// An [`OwnerScope`] sees, loads, lists and writes only its owner's sessions, creates
/// sessions with its owner, and of two owners racing to create one id exactly one wins.
pub async fn owners_never_see_each_others_sessions<H: StorageHarness>(harness: &H) {
    let shared: Arc<dyn ConversationStorage> = Arc::new(open(harness).await);
    let alice = OwnerScope::new(shared.clone(), "alice").unwrap();
    let bob = OwnerScope::new(shared.clone(), "bob").unwrap();
    alice.append("a1", &said("alice's")).await.unwrap();
    shared.append("nobody", &said("unowned")).await.unwrap();
    assert_eq!(
        info(shared.as_ref(), "a1").await.meta.owner.as_deref(),
        Some("alice")
    );

    for id in ["a1", "nobody"] {
        assert!(bob.load(id).await.unwrap().is_empty(), "{id}");
        assert_eq!(bob.session_info(id).await.unwrap(), None, "{id}");
        assert!(!bob.load_revision(id).await.unwrap().1.exists(), "{id}");
        let err = bob.append(id, &said("bob's")).await.unwrap_err();
        assert!(matches!(err, Error::NotOwner { .. }), "{id}: {err:?}");
        let err = bob.save(id, &said("bob's")).await.unwrap_err();
        assert!(matches!(err, Error::NotOwner { .. }), "{id}: {err:?}");
        let err = bob
            .update_session(id, &MetaUpdate::new().title(Some("mine")))
            .await;
        assert!(matches!(err, Err(Error::NotOwner { .. })), "{id}: {err:?}");
        let err = bob
            .write_if(id, Expect::Generation(0), crate::Change::Append(&said("x")))
            .await;
        assert!(matches!(err, Err(Error::NotOwner { .. })), "{id}: {err:?}");
        bob.delete(id).await.unwrap();
        bob.truncate(id, 0).await.unwrap();
    }
    assert_eq!(
        alice.load("a1").await.unwrap(),
        said("alice's"),
        "bob changed nothing"
    );
    assert_eq!(shared.load("nobody").await.unwrap(), said("unowned"));

    bob.append("b1", &said("bob's")).await.unwrap();
    assert_eq!(alice.list_sessions().await.unwrap(), ["a1"]);
    assert_eq!(bob.list_sessions().await.unwrap(), ["b1"]);
    let peek = SessionQuery::new().owner("alice");
    assert!(bob.list_page(&peek).await.unwrap().sessions.is_empty());
    let err = alice
        .update_session("a1", &MetaUpdate::new().owner(Some("bob")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMeta(_)), "{err:?}");
    alice
        .update_session("a1", &MetaUpdate::new().add_tag("mine"))
        .await
        .unwrap();
    alice.append("a1", &said("more")).await.unwrap();
    alice.delete("a1").await.unwrap();
    assert_eq!(shared.session_info("a1").await.unwrap(), None);

    let mut racers = Vec::new();
    for owner in ["alice", "bob"] {
        let scope = OwnerScope::new(Arc::new(open(harness).await), owner).unwrap();
        racers.push(tokio::spawn(async move {
            let mut stored = 0;
            for i in 0..10 {
                match scope
                    .append("race", &[ChatMessage::user(format!("{owner}-{i}"))])
                    .await
                {
                    Ok(()) => stored += 1,
                    Err(Error::NotOwner { .. }) => {}
                    Err(other) => panic!("{owner}: {other:?}"),
                }
            }
            (owner, stored)
        }));
    }
    let mut results = Vec::new();
    for racer in racers {
        results.push(racer.await.unwrap());
    }
    let winner = info(shared.as_ref(), "race")
        .await
        .meta
        .owner
        .expect("created with an owner");
    let history = shared.load("race").await.unwrap();
    for (owner, stored) in results {
        let expected = if owner == winner { 10 } else { 0 };
        assert_eq!(
            stored, expected,
            "{owner} stored {stored} (winner {winner})"
        );
    }
    assert!(
        history.iter().all(|m| m.content.starts_with(&winner)),
        "{history:?}"
    );
    assert_eq!(history.len(), 10);
}

/// A scoped metadata update whose session another owner deleted and created again
/// between the scope's check and the update changes nothing of it and shows nothing of
/// it: the owner is checked again in the update's own atomic step
/// ([`MetaUpdate::if_owner`]), which any caller can ask for too.
pub async fn a_scoped_update_never_changes_a_session_another_owner_took_over<H: StorageHarness>(
    harness: &H,
) {
    let shared: Arc<dyn ConversationStorage> = Arc::new(open(harness).await);
    let armed = Arc::new(AtomicBool::new(false));
    let racing = Intercepted(ChangedAfterCheck {
        inner: shared.clone(),
        armed: armed.clone(),
        taken_by: Some("bob"),
    });
    let alice = OwnerScope::new(Arc::new(racing), "alice").unwrap();
    alice.append("s", &said("alice's")).await.unwrap();
    armed.store(true, Ordering::SeqCst);
    let update = MetaUpdate::new()
        .title(Some("set by alice"))
        .expiry(Some(crate::Expiry::At(std::time::SystemTime::UNIX_EPOCH)));
    let updated = alice.update_session("s", &update).await;
    assert!(
        matches!(&updated, Err(Error::NotOwner { owner, .. }) if owner == "alice"),
        "{updated:?}"
    );
    let bobs = info(shared.as_ref(), "s").await;
    assert_eq!(bobs.meta.owner.as_deref(), Some("bob"));
    assert_eq!(bobs.meta.title.as_deref(), Some("bob's own"));
    assert_eq!(bobs.meta.expiry, None, "not expired by alice's update");
    assert_eq!(shared.load("s").await.unwrap(), said("bob's"));

    // Asked for directly, the condition refuses the same way and lets the owner through.
    let direct = shared
        .update_session("s", &MetaUpdate::new().title(Some("x")).if_owner("alice"))
        .await;
    assert!(matches!(direct, Err(Error::NotOwner { .. })), "{direct:?}");
    let bobs_own = MetaUpdate::new().title(Some("renamed")).if_owner("bob");
    let renamed = shared
        .update_session("s", &bobs_own)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.meta.title.as_deref(), Some("renamed"));
    let unowned = MetaUpdate::new().title(Some("y")).if_owner("bob");
    shared
        .update_session("s", &MetaUpdate::new().owner(None::<String>))
        .await
        .unwrap();
    let refused = shared.update_session("s", &unowned).await;
    assert!(
        matches!(refused, Err(Error::NotOwner { .. })),
        "{refused:?}"
    );
    assert_eq!(
        info(shared.as_ref(), "s").await.meta.title.as_deref(),
        Some("renamed")
    );
}
