//! Session metadata and listing on Redis, on one server and on a cluster: the indexes
//! follow every write, stale index entries are pruned or repaired by the listing that
//! meets them, corrupt metadata is reported as such, and foreign keys stop a write before
//! it writes anything. The cross-backend cases are in `conformance.rs` and `cluster.rs`.

mod common;

use std::time::Duration;

use common::{Harness, Raw, cluster_harness, harness};
use fusion_core::testkit::said;
use fusion_core::{
    Change, ConversationStorage, Error, Expect, MetaUpdate, SessionMeta, SessionQuery, unix_micros,
};
use fusion_storage_redis::RedisStorage;
use redis::AsyncCommands;

/// The ids of a ZSET with their scores, lowest first.
async fn zset(raw: &mut Raw, key: &str) -> Vec<(String, i64)> {
    let entries: Vec<(String, f64)> = raw.zrange_withscores(key, 0, -1).await.unwrap();
    entries
        .into_iter()
        .map(|(id, score)| (id, score as i64))
        .collect()
}

/// `updated_at` of `id` in ms, as `session_info` reports it.
async fn updated_ms(store: &RedisStorage, id: &str) -> i64 {
    let info = store.session_info(id).await.unwrap().unwrap();
    unix_micros(info.updated_at.unwrap()) / 1000
}

async fn ids(store: &RedisStorage, query: SessionQuery) -> Vec<String> {
    let mut all = Vec::new();
    let mut query = query;
    loop {
        let page = store.list_page(&query).await.unwrap();
        all.extend(page.sessions.into_iter().map(|s| s.id));
        match page.next {
            Some(next) => query = query.after(Some(next)),
            None => return all,
        }
    }
}

/// Lets the server's clock pass a millisecond, so the next write's `updated_at` differs.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

/// Every write moves the session's score to its new `updated_at` in every by-update index
/// it is in; creation lists it by id; an owner change moves it between owners' indexes;
/// a delete unindexes it everywhere.
async fn the_indexes_follow_every_write(h: Harness) {
    let store = h.open().await;
    let mut raw = h.raw_any().await;
    let alice = SessionMeta::new().owner("alice");
    store
        .create_session("a", &alice, &said("hi"))
        .await
        .unwrap();
    store.append("b", &said("hi")).await.unwrap();
    let by_id: Vec<String> = raw.zrange(h.ids_key(), 0, -1).await.unwrap();
    assert_eq!(by_id, ["a", "b"]);
    let alices: Vec<String> = raw.zrange(h.owner_ids_key("alice"), 0, -1).await.unwrap();
    assert_eq!(alices, ["a"]);

    let writes: [(&str, &str); 6] = [
        ("append", "a"),
        ("save", "a"),
        ("truncate", "a"),
        ("retitle", "a"),
        ("append", "b"),
        ("conditional append", "b"),
    ];
    for (write, id) in writes {
        tick().await;
        match write {
            "append" => store.append(id, &said("more")).await.unwrap(),
            "save" => store.save(id, &said("saved")).await.unwrap(),
            "truncate" => store.truncate(id, 1).await.unwrap(),
            "retitle" => drop(
                store
                    .update_session(id, &MetaUpdate::new().title(Some("t")))
                    .await
                    .unwrap(),
            ),
            _ => {
                let generation = store.load_revision(id).await.unwrap().1.generation;
                store
                    .write_if(
                        id,
                        Expect::Generation(generation),
                        Change::Append(&said("c")),
                    )
                    .await
                    .unwrap();
            }
        }
        let at = updated_ms(&store, id).await;
        let score: Option<f64> = raw.zscore(h.updated_key(), id).await.unwrap();
        assert_eq!(score, Some(at as f64), "{write} of {id}");
        if id == "a" {
            let score: Option<f64> = raw.zscore(h.owner_updated_key("alice"), id).await.unwrap();
            assert_eq!(score, Some(at as f64), "{write} of {id}, alice's index");
        }
    }

    tick().await;
    store
        .update_session("a", &MetaUpdate::new().owner(Some("bob")))
        .await
        .unwrap();
    for key in [h.owner_ids_key("alice"), h.owner_updated_key("alice")] {
        let left: bool = raw.exists(&key).await.unwrap();
        assert!(!left, "{key} should be gone with its last session");
    }
    let at = updated_ms(&store, "a").await;
    assert_eq!(
        zset(&mut raw, &h.owner_updated_key("bob")).await,
        [("a".to_string(), at)]
    );
    assert_eq!(
        zset(&mut raw, &h.owner_ids_key("bob")).await,
        [("a".to_string(), 0)]
    );

    store.delete("a").await.unwrap();
    let (_, revision) = store.load_revision("b").await.unwrap();
    store
        .write_if("b", Expect::Exactly(revision), Change::Replace(&[]))
        .await
        .unwrap();
    for key in [
        h.ids_key(),
        h.updated_key(),
        h.owner_ids_key("bob"),
        h.owner_updated_key("bob"),
    ] {
        let left: bool = raw.exists(&key).await.unwrap();
        assert!(!left, "{key} should be gone with the last session");
    }
}

#[tokio::test]
async fn the_indexes_follow_every_write_on_one_server() {
    if let Some(h) = harness().await {
        the_indexes_follow_every_write(h).await;
    }
}

#[tokio::test]
async fn the_indexes_follow_every_write_on_a_cluster() {
    if let Some(h) = cluster_harness().await {
        the_indexes_follow_every_write(h).await;
    }
}

/// What a crash between a write and its index update (on a cluster), an expiry, or a
/// clock that stepped back leaves in the indexes is skipped, pruned or repaired by the
/// listing that meets it, and every page still comes in the sessions' own order.
async fn stale_index_entries_are_pruned_or_repaired_by_listing(h: Harness) {
    let store = h.open().await;
    let mut raw = h.raw_any().await;
    let alice = SessionMeta::new().owner("alice");
    for id in ["s1", "s2", "s3"] {
        store.create_session(id, &alice, &said(id)).await.unwrap();
        tick().await;
    }
    let (t1, t2) = (
        updated_ms(&store, "s1").await,
        updated_ms(&store, "s2").await,
    );
    let future = t2 + 3_600_000;
    for key in [h.updated_key(), h.owner_updated_key("alice")] {
        // s1 scored ahead of its session (a clock that stepped back), s2 behind it (an
        // index update that never came).
        let _: () = raw.zadd(&key, "s1", future).await.unwrap();
        let _: () = raw.zadd(&key, "s2", 1).await.unwrap();
    }
    // An id whose session is gone, listed first; a session that vanished on its own; an
    // entry in the indexes of an owner the session does not have.
    let _: () = raw.zadd(h.ids_key(), "ghost", 0).await.unwrap();
    let _: () = raw
        .zadd(h.updated_key(), "ghost", future + 1)
        .await
        .unwrap();
    let _: () = raw.del(h.list_key("s3")).await.unwrap();
    let _: () = raw.del(h.meta_key("s3")).await.unwrap();
    let _: () = raw.zadd(h.owner_ids_key("bob"), "s1", 0).await.unwrap();
    let _: () = raw
        .zadd(h.owner_updated_key("bob"), "s1", t1)
        .await
        .unwrap();

    assert_eq!(
        ids(&store, SessionQuery::new().limit(1)).await,
        ["s2", "s1"]
    );
    assert_eq!(
        zset(&mut raw, &h.updated_key()).await,
        [("s1".to_string(), t1), ("s2".to_string(), t2)],
        "repaired and pruned"
    );
    let by_id: Vec<String> = raw.zrange(h.ids_key(), 0, -1).await.unwrap();
    assert_eq!(by_id, ["s1", "s2"]);

    assert!(
        ids(&store, SessionQuery::new().owner("bob"))
            .await
            .is_empty()
    );
    let bobs: bool = raw.exists(h.owner_updated_key("bob")).await.unwrap();
    assert!(!bobs, "bob's index pruned");
    let query = SessionQuery::new().owner("alice").limit(1);
    assert_eq!(ids(&store, query).await, ["s2", "s1"]);
    assert_eq!(
        zset(&mut raw, &h.owner_updated_key("alice")).await,
        [("s1".to_string(), t1), ("s2".to_string(), t2)]
    );
}

#[tokio::test]
async fn stale_index_entries_are_pruned_or_repaired_on_one_server() {
    if let Some(h) = harness().await {
        stale_index_entries_are_pruned_or_repaired_by_listing(h).await;
    }
}

#[tokio::test]
async fn stale_index_entries_are_pruned_or_repaired_on_a_cluster() {
    if let Some(h) = cluster_harness().await {
        stale_index_entries_are_pruned_or_repaired_by_listing(h).await;
    }
}

/// Tags or data that are not the JSON Fusion writes make the session corrupt for every
/// read of its metadata, naming it and the field; an update refuses it and writes nothing.
#[tokio::test]
async fn corrupt_metadata_is_reported_naming_the_session_and_field() {
    let Some(h) = harness().await else { return };
    let store = h.open().await;
    let mut raw = h.raw_any().await;
    let meta = SessionMeta::new().owner("o").tags(["t"]);
    for (id, field, value) in [("bad-tags", "tags", "[\"t\""), ("bad-data", "data", "[1]")] {
        store.create_session(id, &meta, &said("hi")).await.unwrap();
        let _: () = raw.hset(h.meta_key(id), field, value).await.unwrap();
        let before: Vec<(String, String)> = raw.hgetall(h.meta_key(id)).await.unwrap();
        let reads = [
            store.session_info(id).await.map(drop),
            store.list_page(&SessionQuery::new()).await.map(drop),
            store
                .list_page(&SessionQuery::new().owner("o"))
                .await
                .map(drop),
            store
                .update_session(id, &MetaUpdate::new().add_tag("x"))
                .await
                .map(drop),
        ];
        for result in reads {
            match result {
                Err(Error::Corrupt {
                    backend: "redis",
                    session_id,
                    detail,
                }) => {
                    assert_eq!(session_id, id);
                    assert!(detail.contains(&format!("`{field}`")), "{detail}");
                    assert!(detail.contains(&h.meta_key(id)), "{detail}");
                }
                other => panic!("{id}: expected Corrupt, got {other:?}"),
            }
        }
        let after: Vec<(String, String)> = raw.hgetall(h.meta_key(id)).await.unwrap();
        assert_eq!(after, before, "{id}: the refused update wrote nothing");
        // The messages are intact, and a delete clears the session.
        assert_eq!(store.load(id).await.unwrap().len(), 2);
        store.delete(id).await.unwrap();
    }
}

/// A key of another type where a session's keys or an index go stops `create_session`,
/// `update_session` and an append before they write anything.
#[tokio::test]
async fn foreign_keys_stop_metadata_writes_before_anything_is_written() {
    let Some(h) = harness().await else { return };
    let store = h.open().await;
    let mut raw = h.raw_any().await;
    let meta = SessionMeta::new().owner("o").title("t");

    let _: () = raw.set(h.list_key("squatted"), "not a list").await.unwrap();
    let err = store
        .create_session("squatted", &meta, &said("hi"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("wrong type"), "{err}");
    let meta_exists: bool = raw.exists(h.meta_key("squatted")).await.unwrap();
    assert!(!meta_exists);

    store
        .create_session("crowded", &meta, &said("hi"))
        .await
        .unwrap();
    let _: () = raw.del(h.meta_key("crowded")).await.unwrap();
    let _: () = raw.set(h.meta_key("crowded"), "not a hash").await.unwrap();
    let err = store
        .update_session("crowded", &MetaUpdate::new().title(Some("new")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("wrong type"), "{err}");
    let value: String = raw.get(h.meta_key("crowded")).await.unwrap();
    assert_eq!(value, "not a hash");

    // A foreign value where the index of every session by update time goes: an append
    // to an existing session and a creation fail before writing a message.
    store.append("fine", &said("hi")).await.unwrap();
    let _: () = raw.del(h.updated_key()).await.unwrap();
    let _: () = raw.set(h.updated_key(), "not a zset").await.unwrap();
    for id in ["fine", "new"] {
        let err = store.append(id, &said("more")).await.unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("wrong type") && shown.contains(&h.updated_key()),
            "{shown}"
        );
    }
    assert_eq!(store.load("fine").await.unwrap().len(), 2);
    let created: bool = raw.exists(h.list_key("new")).await.unwrap();
    assert!(!created);
    let _: () = raw.del(h.updated_key()).await.unwrap();
}
