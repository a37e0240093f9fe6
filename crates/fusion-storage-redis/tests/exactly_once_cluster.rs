//! Exactly once when replies are lost, on a Redis Cluster reached through a
//! [`FaultProxy`]: a write that reaches its node but whose reply is lost fails with a
//! retryable error (it is not sent again behind the caller's back, which would store an
//! append twice or turn a conditional write into a conflict with its own first copy), and
//! the retry layer's check of what a lost reply applied makes every write land once.
//!
//! Each case starts its own throwaway one-node cluster behind the proxy
//! (`common::proxied_cluster`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::proxied_cluster::proxied_cluster as harness;
use fusion_core::testkit::StorageHarness;
use fusion_core::testkit::faults::ReplyFault;
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, SessionMeta, SessionOrder,
    SessionQuery, StorageExt,
};
use fusion_layers::RetryLayer;
use fusion_storage_redis::{RedisOptions, RedisStorage};

fn retry() -> RetryLayer {
    RetryLayer::new()
        .max_attempts(10)
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
}

fusion_core::lost_reply_suite!(harness, retry());

fn contents(history: &[ChatMessage]) -> Vec<&str> {
    history.iter().map(|m| m.content.as_str()).collect()
}

/// Without a retry layer: an append without ids and a conditional append whose replies
/// were lost each fail with a retryable error (not `Ok`, not a conflict), and each was
/// applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_is_a_retryable_error_and_the_write_is_applied_once() {
    let Some(h) = harness().await else { return };
    let store = h.open().await.expect("connecting through the proxy");
    const ID: &str = "lost-on-a-cluster";
    store.append(ID, &[ChatMessage::user("a")]).await.unwrap();

    h.lose_next_reply(ID);
    let err = store
        .append(ID, &[ChatMessage::user("b")])
        .await
        .expect_err("the reply was lost");
    assert!(err.is_retryable(), "a lost reply is retryable: {err}");
    assert_eq!(h.replies_lost(), 1);
    let (history, revision) = store.load_revision(ID).await.unwrap();
    assert_eq!(contents(&history), ["a", "b"], "applied once, not twice");

    h.lose_next_reply(ID);
    let expected = Expect::Exactly(revision);
    let err = store
        .write_if(ID, expected, Change::Append(&[ChatMessage::user("c")]))
        .await
        .expect_err("the reply was lost");
    assert!(
        !matches!(err, Error::Conflict { .. }),
        "the write met its own first copy: {err}"
    );
    assert!(err.is_retryable(), "a lost reply is retryable: {err}");
    assert_eq!(h.replies_lost(), 2);
    let history = store.load(ID).await.unwrap();
    assert_eq!(contents(&history), ["a", "b", "c"], "applied once");
}

/// The ids `query` lists, over every page.
async fn ids_listed(store: &dyn ConversationStorage, query: SessionQuery) -> Vec<String> {
    let (mut ids, mut query) = (Vec::new(), query.limit(2));
    loop {
        let page = store.list_page(&query).await.expect("listing");
        ids.extend(page.sessions.into_iter().map(|info| info.id));
        match page.next {
            Some(next) => query = query.after(Some(next)),
            None => return ids,
        }
    }
}

/// Asserts that every listing shows `id`: by id and newest first, of every session and
/// (with `owner`) of its owner's, and `list_sessions`.
async fn assert_listed(store: &dyn ConversationStorage, id: &str, owner: Option<&str>) {
    let mut queries = vec![("all, newest first", SessionQuery::new())];
    queries.push(("all, by id", SessionQuery::new().order(SessionOrder::Id)));
    if let Some(owner) = owner {
        queries.push((
            "its owner's, newest first",
            SessionQuery::new().owner(owner),
        ));
        let by_id = SessionQuery::new().owner(owner).order(SessionOrder::Id);
        queries.push(("its owner's, by id", by_id));
    }
    for (what, query) in queries {
        let ids = ids_listed(store, query).await;
        assert!(
            ids.iter().any(|listed| listed == id),
            "{id} missing from {what}: {ids:?}"
        );
    }
    let all = store.list_sessions().await.unwrap();
    assert!(
        all.iter().any(|listed| listed == id),
        "{id} missing from list_sessions: {all:?}"
    );
}

/// A neighbour in every index, so a listing has more than the one session to walk.
async fn neighbour(store: &dyn ConversationStorage) {
    let meta = SessionMeta::new().owner("alice");
    store
        .create_session("neighbour", &meta, &[ChatMessage::user("hi").with_new_id()])
        .await
        .unwrap();
}

/// A creation whose script's reply was lost on a cluster (the session stored, its index
/// requests never sent) and that the retry layer then reports applied: the session is
/// listed by id and newest first, and under its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_whose_reply_was_lost_is_listed_once_the_retry_layer_reports_it() {
    let Some(h) = harness().await else { return };
    let store = (Arc::new(h.open().await.unwrap()) as Arc<dyn ConversationStorage>).layer(retry());
    neighbour(&*store).await;
    const ID: &str = "created-unheard";
    let opening = [ChatMessage::user("first").with_new_id()];
    let meta = SessionMeta::new().owner("alice").title("t");
    h.lose_next_reply(ID);
    store
        .create_session(ID, &meta, &opening)
        .await
        .expect("the retry layer finds its own creation");
    assert_eq!(h.replies_lost(), 1);
    assert_eq!(store.load(ID).await.unwrap(), opening, "created once");
    assert_listed(&*store, ID, Some("alice")).await;
}

/// An append creating a session, its reply lost, then sent again by the caller (the same
/// messages, so their ids make the second copy a no-op): stored once and listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_created_a_session_and_lost_its_reply_is_listed_after_the_callers_retry() {
    let Some(h) = harness().await else { return };
    let store = h.open().await.unwrap();
    neighbour(&store).await;
    const ID: &str = "appended-unheard";
    let batch = [ChatMessage::user("first").with_new_id()];
    h.lose_next_reply(ID);
    let err = store
        .append(ID, &batch)
        .await
        .expect_err("the reply was lost");
    assert!(err.is_retryable(), "{err}");
    store.append(ID, &batch).await.expect("the caller's retry");
    assert_eq!(store.load(ID).await.unwrap(), batch, "stored once");
    assert_listed(&store, ID, None).await;
}

/// Found by a review: the repair that follows a write whose reply was lost (its index
/// requests never sent) was cut at the connect timeout, though it waits for replies, not
/// for a connection attempt: a request of it sent again after a dropped connection waits
/// for the backoff (100 ms at least, twice the connect timeout here), so such a repair
/// was cut, and the session stayed unlisted until a retry that may never come. It gets
/// the response timeout now, as the take-up's second look does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_whose_reply_was_lost_is_listed_without_a_retry_under_a_short_connect_timeout() {
    let Some(h) = harness().await else { return };
    let options = RedisOptions::new()
        .connect_timeout(Duration::from_millis(50))
        .response_timeout(common::NO_HANG);
    let store = RedisStorage::connect_with(&h.url, options).await.unwrap();
    neighbour(&store).await;
    const ID: &str = "created-unheard-slowly";
    let opening = [ChatMessage::user("first").with_new_id()];
    // The script's reply is lost, and so is the first reply to the repair's read of the
    // session (the only `lenient` read here): seed 49 throws a cut, then none.
    h.lose_next_reply(ID);
    h.proxy.cut_randomly_containing("lenient", 0.2, 49);
    let err = store
        .create_session(ID, &SessionMeta::new().owner("alice"), &opening)
        .await
        .expect_err("the reply was lost");
    h.proxy.stop_cutting();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(h.replies_lost(), 2, "the script's reply and the read's");
    assert_listed(&store, ID, Some("alice")).await;
}

/// When every request about the session fails for a while (the script's reply lost, then
/// the repair that follows at once cut too), the retry that comes once the cluster
/// answers again repairs the indexes: the creation's retry meets its own session (a
/// conflict), an append's retry finds its messages stored (a no-op).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_that_meets_its_own_write_repairs_the_indexes_the_lost_reply_left_unwritten() {
    let Some(h) = harness().await else { return };
    let options = RedisOptions::new().reconnect_retries(1);
    let store = RedisStorage::connect_with(&h.url, options).await.unwrap();
    neighbour(&store).await;

    const CREATED: &str = "created-in-the-dark";
    let opening = [ChatMessage::user("first").with_new_id()];
    let meta = SessionMeta::new().owner("bob");
    h.proxy.cut_randomly_containing(CREATED, 1.0, 7);
    let err = store
        .create_session(CREATED, &meta, &opening)
        .await
        .expect_err("every reply about the session is lost");
    assert!(err.is_retryable(), "{err}");
    h.proxy.stop_cutting();
    let ids = ids_listed(&store, SessionQuery::new().order(SessionOrder::Id)).await;
    assert!(
        !ids.iter().any(|id| id == CREATED),
        "nothing repaired it yet: {ids:?}"
    );
    let err = store
        .create_session(CREATED, &meta, &opening)
        .await
        .expect_err("the session exists");
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(store.load(CREATED).await.unwrap(), opening);
    assert_listed(&store, CREATED, Some("bob")).await;

    const APPENDED: &str = "appended-in-the-dark";
    let batch = [ChatMessage::user("first").with_new_id()];
    h.proxy.cut_randomly_containing(APPENDED, 1.0, 7);
    store.append(APPENDED, &batch).await.expect_err("lost");
    h.proxy.stop_cutting();
    store
        .append(APPENDED, &batch)
        .await
        .expect("the caller's retry");
    assert_eq!(store.load(APPENDED).await.unwrap(), batch, "stored once");
    assert_listed(&store, APPENDED, None).await;
}

/// An owner change whose reply was lost, retried by the retry layer (which applies it
/// again: the session already has the new owner), lists the session under its new owner
/// and no longer under the old; a delete whose reply was lost lists it nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_change_or_a_delete_whose_reply_was_lost_is_listed_as_it_applied() {
    let Some(h) = harness().await else { return };
    let store = (Arc::new(h.open().await.unwrap()) as Arc<dyn ConversationStorage>).layer(retry());
    neighbour(&*store).await;
    const ID: &str = "moved-unheard";
    let meta = SessionMeta::new().owner("alice");
    store
        .create_session(ID, &meta, &[ChatMessage::user("hi").with_new_id()])
        .await
        .unwrap();
    // The node knows the update and delete scripts before a reply is lost (a lost
    // `NOSCRIPT` would be a write that did not apply).
    let warm = fusion_core::MetaUpdate::new().title(Some("n"));
    store.update_session("neighbour", &warm).await.unwrap();
    store.delete("never-was").await.unwrap();
    // The update reads the session first: the reply lost is the script's, which alone
    // names the new owner's value.
    h.proxy.cut_after_reply_to("+carol");
    let update = fusion_core::MetaUpdate::new().owner(Some("carol"));
    let info = store.update_session(ID, &update).await.unwrap().unwrap();
    assert_eq!(info.meta.owner.as_deref(), Some("carol"));
    assert_eq!(h.replies_lost(), 1);
    assert_listed(&*store, ID, Some("carol")).await;
    for order in [SessionOrder::UpdatedDesc, SessionOrder::Id] {
        let query = SessionQuery::new().owner("alice").order(order);
        assert_eq!(ids_listed(&*store, query).await, ["neighbour"]);
    }

    h.lose_next_reply(ID);
    store.delete(ID).await.unwrap();
    assert_eq!(h.replies_lost(), 2);
    for query in [
        SessionQuery::new(),
        SessionQuery::new().order(SessionOrder::Id),
        SessionQuery::new().owner("carol"),
        SessionQuery::new().owner("carol").order(SessionOrder::Id),
    ] {
        let ids = ids_listed(&*store, query.clone()).await;
        assert!(!ids.iter().any(|id| id == ID), "{query:?}: {ids:?}");
    }
    assert_eq!(store.list_sessions().await.unwrap(), ["neighbour"]);
}

/// A conditional hand-over (`if_owner`) whose reply was lost, with the repair that
/// follows at once cut too: retried, it is refused (`NotOwner`: the session already has
/// the new owner), and that refusal repairs the indexes the lost reply left unwritten, so
/// the session is listed under its new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_retried_after_its_reply_was_lost_is_listed_under_the_new_owner() {
    let Some(h) = harness().await else { return };
    let options = RedisOptions::new().reconnect_retries(1);
    let store = RedisStorage::connect_with(&h.url, options).await.unwrap();
    neighbour(&store).await;
    const ID: &str = "handed-over-in-the-dark";
    let meta = SessionMeta::new().owner("alice");
    store
        .create_session(ID, &meta, &[ChatMessage::user("hi").with_new_id()])
        .await
        .unwrap();
    let warm = fusion_core::MetaUpdate::new().title(Some("n"));
    store.update_session("neighbour", &warm).await.unwrap();

    let hand_over = fusion_core::MetaUpdate::new()
        .owner(Some("carol"))
        .if_owner("alice");
    // The script's reply is lost (it alone names the new owner's value), and so is the
    // reply to the repair's read of the session (the only `lenient` read here).
    h.proxy.cut_after_reply_to("+carol");
    h.proxy.cut_randomly_containing("lenient", 1.0, 11);
    let err = store
        .update_session(ID, &hand_over)
        .await
        .expect_err("the reply was lost");
    assert!(err.is_retryable(), "{err}");
    h.proxy.stop_cutting();
    let by_id = SessionQuery::new().owner("carol").order(SessionOrder::Id);
    assert!(
        ids_listed(&store, by_id).await.is_empty(),
        "nothing repaired it yet"
    );
    let info = store.session_info(ID).await.unwrap().unwrap();
    assert_eq!(info.meta.owner.as_deref(), Some("carol"), "it applied");

    let err = store
        .update_session(ID, &hand_over)
        .await
        .expect_err("the owner is carol now");
    assert!(matches!(err, Error::NotOwner { .. }), "{err}");
    assert_listed(&store, ID, Some("carol")).await;
}
