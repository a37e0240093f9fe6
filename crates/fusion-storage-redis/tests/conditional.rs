//! Redis-specific behaviour of conditional writes against a real server: sessions stored
//! before generations existed, a TTL that expires mid-turn, a foreign `gen` field, and
//! [`Expect::UnwrittenSince`] against `updated_at` as the scripts keep it (whole ms),
//! through the write script as well as the truncate.
//!
//! The cross-backend cases are in the conformance suite; these need the key layout or
//! the server's expiry.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Harness, cluster_harness, harness};
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, LEGACY_GENERATION, Revision,
    SessionMeta, SessionTimes,
};
use redis::AsyncCommands;

fn users(prefix: &str, n: usize) -> Vec<ChatMessage> {
    (0..n)
        .map(|i| ChatMessage::user(format!("{prefix}-{i}")))
        .collect()
}

/// Stores `history` under `id` the way the release before generations did: the list,
/// and (if `with_meta`) a meta hash holding only the timestamps, plus the index entry.
async fn store_as_previous_release(
    h: &Harness,
    id: &str,
    history: &[ChatMessage],
    with_meta: bool,
) {
    let mut raw = h.raw().await;
    let json: Vec<String> = history
        .iter()
        .map(|m| serde_json::to_string(m).unwrap())
        .collect();
    let _: () = raw.rpush(h.list_key(id), &json).await.unwrap();
    if with_meta {
        let stamps = [
            ("created_at", "1700000000000"),
            ("updated_at", "1700000000000"),
        ];
        let _: () = raw.hset_multiple(h.meta_key(id), &stamps).await.unwrap();
    }
    let _: () = raw.sadd(h.legacy_index_key(), id).await.unwrap();
}

fn assert_conflict(result: fusion_core::Result<u64>, what: &str) -> String {
    match result {
        Err(err @ Error::Conflict { .. }) => err.to_string(),
        other => panic!("{what}: expected Error::Conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn a_session_stored_without_a_generation_reads_as_legacy_until_a_truncate_gives_it_one() {
    let Some(h) = harness().await else { return };
    let store = h.open().await;
    let mut raw = h.raw().await;
    let old = users("old", 3);
    store_as_previous_release(&h, "old", &old, true).await;

    let (history, revision) = store.load_revision("old").await.unwrap();
    assert_eq!(history, old);
    let legacy = Revision {
        generation: LEGACY_GENERATION,
        len: 3,
    };
    assert_eq!(revision, legacy);

    // An append keeps the generation, so a legacy session stays legacy: no `gen` written.
    let reply = [ChatMessage::assistant("new")];
    let after = store
        .write_if("old", Expect::Exactly(legacy), Change::Append(&reply))
        .await
        .unwrap();
    assert_eq!(after, LEGACY_GENERATION);
    let stored: Option<String> = raw.hget(h.meta_key("old"), "gen").await.unwrap();
    assert_eq!(stored, None);

    // A truncate is a rewrite: a fresh generation, stored in the meta hash, timestamps kept.
    let now = Revision {
        generation: LEGACY_GENERATION,
        len: 4,
    };
    let truncated = store
        .write_if("old", Expect::Exactly(now), Change::Truncate(2))
        .await
        .unwrap();
    assert!(truncated > LEGACY_GENERATION, "{truncated}");
    let stored: Option<u64> = raw.hget(h.meta_key("old"), "gen").await.unwrap();
    assert_eq!(stored, Some(truncated));
    let created: String = raw.hget(h.meta_key("old"), "created_at").await.unwrap();
    assert_eq!(created, "1700000000000");
    let (history, revision) = store.load_revision("old").await.unwrap();
    assert_eq!(history, old[..2]);
    assert_eq!(
        revision,
        Revision {
            generation: truncated,
            len: 2
        }
    );
    // Whoever still holds the legacy generation now conflicts, even for an append.
    let stale = store
        .write_if(
            "old",
            Expect::Generation(LEGACY_GENERATION),
            Change::Append(&reply),
        )
        .await;
    assert_conflict(stale, "append under the legacy generation after a truncate");

    // A list without any meta hash is legacy too, and the plain `truncate` rewrites it.
    store_as_previous_release(&h, "bare", &users("bare", 3), false).await;
    let (_, revision) = store.load_revision("bare").await.unwrap();
    assert_eq!(
        revision,
        Revision {
            generation: LEGACY_GENERATION,
            len: 3
        }
    );
    store.truncate("bare", 1).await.unwrap();
    let (history, revision) = store.load_revision("bare").await.unwrap();
    assert_eq!(history, users("bare", 1));
    assert!(revision.generation > LEGACY_GENERATION, "{revision:?}");
    assert_eq!(revision.len, 1);
}

#[tokio::test]
async fn a_ttl_expiring_between_a_read_and_a_conditional_append_makes_the_append_a_conflict() {
    let Some(h) = harness().await else { return };
    let turn = h.open().await; // no TTL: only the other writer's short one applies
    let brief = h
        .connect(h.options().ttl(Duration::from_millis(300)))
        .await
        .unwrap();
    let opening = [ChatMessage::system("prompt"), ChatMessage::user("question")];
    turn.append("t", &opening).await.unwrap();
    let (_, read) = turn.load_revision("t").await.unwrap();
    // Another writer appends under the same generation (which its append keeps) and
    // sets the short TTL, so the session expires after the read, while the turn waits
    // for its model.
    let aside = [ChatMessage::user("aside")];
    let kept = brief
        .write_if(
            "t",
            Expect::Generation(read.generation),
            Change::Append(&aside),
        )
        .await
        .unwrap();
    assert_eq!(kept, read.generation);

    assert!(
        h.wait_until_expired("t").await,
        "the session's keys never expired"
    );

    let orphan = [ChatMessage::assistant("the answer")];
    let result = turn
        .write_if(
            "t",
            Expect::Generation(read.generation),
            Change::Append(&orphan),
        )
        .await;
    let shown = assert_conflict(result, "append to an expired session");
    assert!(shown.contains("does not exist"), "{shown}");
    // Nothing was resurrected: no keys, no messages, not listed.
    let mut raw = h.raw().await;
    let n: usize = raw
        .exists(&[h.list_key("t"), h.meta_key("t")])
        .await
        .unwrap();
    assert_eq!(n, 0, "a fragment of the session was stored");
    assert_eq!(
        turn.load_revision("t").await.unwrap(),
        (vec![], Revision::ABSENT)
    );
    assert!(
        !turn
            .list_sessions()
            .await
            .unwrap()
            .contains(&"t".to_string())
    );
}

#[tokio::test]
async fn a_generation_field_that_is_not_a_number_makes_the_session_corrupt() {
    let Some(h) = harness().await else { return };
    let store = h.open().await;
    store.append("odd", &users("m", 2)).await.unwrap();
    let mut raw = h.raw().await;
    let _: () = raw.hset(h.meta_key("odd"), "gen", "seven").await.unwrap();

    let err = store.load_revision("odd").await.unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { backend: "redis", session_id, detail }
            if session_id == "odd" && detail.contains("`gen`")),
        "{err:?}"
    );
    let result = store
        .write_if("odd", Expect::Generation(7), Change::Append(&users("x", 1)))
        .await;
    assert!(matches!(result, Err(Error::Corrupt { .. })), "{result:?}");
    assert_eq!(
        store.load("odd").await.unwrap(),
        users("m", 2),
        "nothing written"
    );
    // A rewrite replaces the foreign value with a generation of its own.
    store.save("odd", &users("n", 1)).await.unwrap();
    assert!(store.load_revision("odd").await.unwrap().1.generation > LEGACY_GENERATION);
}

/// The common append (no expectation) takes the script's shortest path, which reads the
/// generation without `LLEN`: a session stored before generations existed, with or
/// without a meta hash, stays at the legacy generation, and only `updated_at` is written.
#[tokio::test]
async fn a_plain_append_keeps_a_legacy_session_legacy() {
    let Some(h) = harness().await else { return };
    let store = h.open().await;
    let mut raw = h.raw().await;
    for (id, with_meta) in [("with-meta", true), ("no-meta", false)] {
        store_as_previous_release(&h, id, &users(id, 2), with_meta).await;
        store
            .append(id, &[ChatMessage::assistant("new")])
            .await
            .unwrap();
        let (history, revision) = store.load_revision(id).await.unwrap();
        assert_eq!(history.len(), 3, "{id}");
        assert_eq!(revision.generation, LEGACY_GENERATION, "{id}");
        let stored: Option<String> = raw.hget(h.meta_key(id), "gen").await.unwrap();
        assert_eq!(stored, None, "{id}: an append wrote a generation");
        let updated: Option<String> = raw.hget(h.meta_key(id), "updated_at").await.unwrap();
        assert!(
            updated.is_some_and(|at| at != "1700000000000"),
            "{id}: updated_at not refreshed"
        );
    }
}

/// A copy last written at a known whole ms `at` meets `UnwrittenSince` for any instant
/// past that ms, a nanosecond past included (the stored ms is earlier), and not for `at`
/// itself; an append or a replace under it (the write script, not the truncate the
/// conformance case uses) moves `updated_at`, so the same instant then fails it.
async fn unwritten_since_compares_the_whole_ms_of_the_last_write(h: Harness) {
    let store = h.open().await;
    let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let times = SessionTimes::new(at, at);
    store
        .create_session_with_times("copy", &SessionMeta::new(), &users("copy", 2), times)
        .await
        .unwrap();
    let (_, revision) = store.load_revision("copy").await.unwrap();
    let unwritten = |revision, since| Expect::UnwrittenSince { revision, since };

    let reply = users("reply", 1);
    let written_then = store
        .write_if("copy", unwritten(revision, at), Change::Append(&reply))
        .await;
    let text = assert_conflict(written_then, "written in the very ms");
    assert!(text.contains("written since"), "{text}");
    let just_after = at + Duration::from_nanos(1);
    let generation = store
        .write_if(
            "copy",
            unwritten(revision, just_after),
            Change::Append(&reply),
        )
        .await
        .unwrap();
    assert_eq!(generation, revision.generation);

    let appended = Revision { len: 3, ..revision };
    let later = store
        .write_if(
            "copy",
            unwritten(appended, just_after),
            Change::Replace(&reply),
        )
        .await;
    assert_conflict(later, "the append moved updated_at");
    let now = SystemTime::now() + Duration::from_secs(1);
    store
        .write_if("copy", unwritten(appended, now), Change::Replace(&reply))
        .await
        .unwrap();
    assert_eq!(store.load("copy").await.unwrap(), reply);
}

#[tokio::test]
async fn unwritten_since_compares_the_whole_ms_of_the_last_write_on_one_server() {
    if let Some(h) = harness().await {
        unwritten_since_compares_the_whole_ms_of_the_last_write(h).await;
    }
}

#[tokio::test]
async fn unwritten_since_compares_the_whole_ms_of_the_last_write_on_a_cluster() {
    if let Some(h) = cluster_harness().await {
        unwritten_since_compares_the_whole_ms_of_the_last_write(h).await;
    }
}

/// A session whose `updated_at` is not recorded (stored before meta hashes) or not a
/// number (which readers report as not recorded too) was not written since any instant.
#[tokio::test]
async fn unwritten_since_takes_an_updated_at_missing_or_foreign_for_none() {
    let Some(h) = harness().await else { return };
    let store = h.open().await;
    let mut raw = h.raw().await;
    let legacy = Revision {
        generation: LEGACY_GENERATION,
        len: 2,
    };
    let since = UNIX_EPOCH + Duration::from_millis(1);
    let unwritten = Expect::UnwrittenSince {
        revision: legacy,
        since,
    };
    store_as_previous_release(&h, "bare", &users("bare", 2), false).await;
    store
        .write_if("bare", unwritten, Change::Truncate(0))
        .await
        .unwrap();
    assert!(store.load("bare").await.unwrap().is_empty());

    store_as_previous_release(&h, "stamped", &users("stamped", 2), true).await;
    let stamped = store
        .write_if("stamped", unwritten, Change::Truncate(0))
        .await;
    assert_conflict(stamped, "updated_at 1700000000000 is not before 1 ms");
    let _: () = raw
        .hset(h.meta_key("stamped"), "updated_at", "soon")
        .await
        .unwrap();
    store
        .write_if("stamped", unwritten, Change::Truncate(0))
        .await
        .unwrap();
    assert!(store.load("stamped").await.unwrap().is_empty());
}
