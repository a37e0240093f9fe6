//! Upgrading in place (issue #16): a keyspace written by the release before session
//! metadata opens, and lists and keeps every session, without an expiry, on one server
//! and on a cluster.
//!
//! The keyspace is `fixtures/keyspace-421d2a2.json`: every key that the RedisStorage of
//! commit 421d2a2 left after appends, a save, a truncate, a delete and a conditional
//! write (the SET index `PREFIX:sessions`, meta hashes with timestamps and `gen` but no
//! metadata), plus the two older formats it still read (a session without a meta hash, one
//! whose hash has no `gen`, appended to by that release), produced by running
//! `fixtures/make_keyspace_421d2a2.rs` against that commit (its header says how). Each
//! case restores the keys under a fresh prefix.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Harness, Raw, cluster_harness, harness};
use fusion_core::{
    ChatMessage, ConversationStorage, Expiry, LEGACY_GENERATION, MetaUpdate, SessionOrder,
    SessionQuery,
};
use redis::AsyncCommands;
use serde_json::Value;

const FIXTURE: &str = include_str!("fixtures/keyspace-421d2a2.json");

/// The sessions of the fixture, newest first by their stored `updated_at` (the one
/// without a meta hash has none and sorts as the epoch).
const NEWEST_FIRST: [&str; 6] = [
    "chat-a",
    "chat-d",
    "chat-c",
    "chat-b",
    "legacy-stamped",
    "legacy-bare",
];

/// The fixture's keys: (key under `PREFIX`, type, value).
fn fixture_keys() -> Vec<(String, String, Value)> {
    let fixture: Value = serde_json::from_str(FIXTURE).expect("the fixture is JSON");
    fixture["keys"]
        .as_array()
        .expect("a list of keys")
        .iter()
        .map(|key| {
            (
                key["key"].as_str().unwrap().to_string(),
                key["type"].as_str().unwrap().to_string(),
                key["value"].clone(),
            )
        })
        .collect()
}

/// The fixture's value of `key` (under `PREFIX`).
fn fixture_value(key: &str) -> Option<Value> {
    fixture_keys()
        .into_iter()
        .find(|(k, _, _)| k == key)
        .map(|(_, _, value)| value)
}

/// Writes the fixture's keys under the harness's prefix, as the old release left them.
async fn restore(h: &Harness) -> Raw {
    let mut raw = h.raw_any().await;
    for (key, kind, value) in fixture_keys() {
        let key = key.replacen("PREFIX", &h.prefix, 1);
        match kind.as_str() {
            "list" => {
                let items: Vec<String> = serde_json::from_value(value).unwrap();
                let _: () = raw.rpush(&key, items).await.unwrap();
            }
            "hash" => {
                let fields: Vec<(String, String)> = value
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(f, v)| (f.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                let _: () = raw.hset_multiple(&key, &fields).await.unwrap();
            }
            "set" => {
                let members: Vec<String> = serde_json::from_value(value).unwrap();
                let _: () = raw.sadd(&key, members).await.unwrap();
            }
            other => panic!("the fixture has a {other} at {key}"),
        }
    }
    raw
}

async fn all_pages(store: &dyn ConversationStorage, query: SessionQuery) -> Vec<String> {
    let mut ids = Vec::new();
    let mut query = query;
    loop {
        let page = store.list_page(&query).await.unwrap();
        ids.extend(page.sessions.into_iter().map(|s| s.id));
        match page.next {
            Some(next) => query = query.after(Some(next)),
            None => return ids,
        }
    }
}

/// Everything the old release stored is listed, loaded and reported as it was, the SET
/// index is gone into the ZSETs, and the sessions take new writes and metadata.
async fn an_old_keyspace_opens_lists_and_keeps_everything(h: Harness) {
    let mut raw = restore(&h).await;
    let store = h.open().await;
    let mut by_id: Vec<&str> = NEWEST_FIRST.to_vec();
    by_id.sort_unstable();
    assert_eq!(store.list_sessions().await.unwrap(), by_id);
    let legacy_left: bool = raw.exists(h.legacy_index_key()).await.unwrap();
    assert!(!legacy_left, "the SET index was moved into the ZSETs");
    let indexed: Vec<String> = raw.zrange(h.ids_key(), 0, -1).await.unwrap();
    assert_eq!(indexed, by_id);

    assert_eq!(
        all_pages(&store, SessionQuery::new().limit(4)).await,
        NEWEST_FIRST
    );
    let query = SessionQuery::new().order(SessionOrder::Id).limit(4);
    assert_eq!(all_pages(&store, query).await, by_id);

    for id in NEWEST_FIRST {
        let list: Vec<String> =
            serde_json::from_value(fixture_value(&format!("PREFIX:s:{{{id}}}")).unwrap()).unwrap();
        let expected: Vec<ChatMessage> = list
            .iter()
            .map(|json| serde_json::from_str(json).unwrap())
            .collect();
        assert_eq!(store.load(id).await.unwrap(), expected, "{id}");
        let info = store.session_info(id).await.unwrap().expect("listed");
        assert_eq!(info.message_count, expected.len(), "{id}");
        assert!(
            info.meta.is_empty(),
            "{id}: no metadata before this release"
        );
        assert_eq!(info.expires_at, None, "{id}: no expiry before this release");
        let hash = fixture_value(&format!("PREFIX:m:{{{id}}}")).unwrap_or_default();
        let stamp = |field: &str| {
            hash.get(field)
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms.as_str().unwrap().parse().unwrap()))
        };
        assert_eq!(info.created_at, stamp("created_at"), "{id}");
        assert_eq!(info.updated_at, stamp("updated_at"), "{id}");
        let generation = hash
            .get("gen")
            .map_or(LEGACY_GENERATION, |g| g.as_str().unwrap().parse().unwrap());
        assert_eq!(info.generation, generation, "{id}");
        assert_eq!(
            store.load_revision(id).await.unwrap().1.generation,
            generation
        );
    }

    // New writes and metadata on old sessions, a millisecond apart (the listing's order
    // is by the ms; a tie would put `legacy-bare` first, by id).
    store
        .append("legacy-bare", &[ChatMessage::user("after the upgrade")])
        .await
        .unwrap();
    let appended = store.session_info("legacy-bare").await.unwrap().unwrap();
    let next_ms = appended.updated_at.unwrap() + Duration::from_millis(1);
    while let Ok(left) = next_ms.duration_since(SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_micros(100)).await;
    }
    let retitled = store
        .update_session(
            "chat-b",
            &MetaUpdate::new()
                .title(Some("old, titled"))
                .owner(Some("u1")),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retitled.meta.owner.as_deref(), Some("u1"));
    let first_two = store
        .list_page(&SessionQuery::new().limit(2))
        .await
        .unwrap();
    let ids: Vec<&str> = first_two.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["chat-b", "legacy-bare"]);
    let owned = store
        .list_page(&SessionQuery::new().owner("u1"))
        .await
        .unwrap();
    assert_eq!(owned.sessions.len(), 1);
    assert_eq!(owned.sessions[0].meta.title.as_deref(), Some("old, titled"));

    // Nothing expires, so there is nothing to purge; an old session takes an expiry.
    assert_eq!(store.purge_expired(100).await.unwrap(), 0);
    assert_eq!(store.list_sessions().await.unwrap(), by_id);
    let idle = Duration::from_secs(3600);
    let expiring = store
        .update_session(
            "legacy-stamped",
            &MetaUpdate::new().expiry(Some(Expiry::Idle(idle))),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        expiring.expires_at,
        Some(expiring.updated_at.unwrap() + idle)
    );
    let entries: Vec<String> = raw.zrange(h.expiry_key(), 0, -1).await.unwrap();
    assert_eq!(entries, ["legacy-stamped"]);
}

/// Processes that meet the old index at once all list everything; and a session an old
/// process still running creates afterwards (into the SET) is picked up by the next
/// listing.
async fn concurrent_processes_upgrade_safely_and_late_old_writes_are_picked_up(h: Harness) {
    let mut raw = restore(&h).await;
    let h = Arc::new(h);
    let mut listers = Vec::new();
    for _ in 0..4 {
        let h = h.clone();
        listers.push(tokio::spawn(async move {
            let store = h.open().await;
            all_pages(&store, SessionQuery::new().limit(2)).await
        }));
    }
    for lister in listers {
        assert_eq!(lister.await.unwrap(), NEWEST_FIRST);
    }
    // An old process creates a session the way 421d2a2 did: its script, then SADD.
    let id = "from-an-old-process";
    let list = h.list_key(id);
    let _: () = raw
        .rpush(
            &list,
            serde_json::to_string(&ChatMessage::user("old")).unwrap(),
        )
        .await
        .unwrap();
    let _: () = raw.sadd(h.legacy_index_key(), id).await.unwrap();
    let store = h.open().await;
    let listed: HashSet<String> = all_pages(&store, SessionQuery::new().limit(3))
        .await
        .into_iter()
        .collect();
    assert_eq!(listed.len(), NEWEST_FIRST.len() + 1);
    assert!(listed.contains(id));
}

#[tokio::test]
async fn an_old_keyspace_opens_lists_and_keeps_everything_on_one_server() {
    if let Some(h) = harness().await {
        an_old_keyspace_opens_lists_and_keeps_everything(h).await;
    }
}

#[tokio::test]
async fn an_old_keyspace_opens_lists_and_keeps_everything_on_a_cluster() {
    if let Some(h) = cluster_harness().await {
        an_old_keyspace_opens_lists_and_keeps_everything(h).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_upgrades_are_safe_on_one_server() {
    if let Some(h) = harness().await {
        concurrent_processes_upgrade_safely_and_late_old_writes_are_picked_up(h).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_upgrades_are_safe_on_a_cluster() {
    if let Some(h) = cluster_harness().await {
        concurrent_processes_upgrade_safely_and_late_old_writes_are_picked_up(h).await;
    }
}
