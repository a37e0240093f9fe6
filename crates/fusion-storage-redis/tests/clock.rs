//! Time on a real Redis server: the TTL every write sets (or removes), and the
//! timestamps the scripts take from the server's clock.
//!
//! Cases skip without the server at `REDIS_URL` (and fail when the backends are
//! required).

mod common;

use std::time::Duration;

use common::{NO_HANG, harness};
use fusion_core::{Change, ChatMessage, ConversationStorage, Error, Expect};
use fusion_storage_redis::MAX_TTL;
use redis::AsyncCommands;

/// An hour in ms: the expiry `every_write_refreshes_the_ttl_of_list_and_meta` sets by hand.
const HAND_SET_MS: i64 = 3_600_000;

/// The storage's TTL is an hour, so nothing expires while the session is listed first
/// however slow the machine (a TTL of one second expired it before that listing on a busy
/// one); its expiry is then brought forward by hand, as the TTL's end would come.
#[tokio::test]
async fn an_expired_session_loads_empty_and_is_not_listed() {
    let Some(h) = harness().await else { return };
    let store = h
        .connect(h.options().ttl(Duration::from_secs(3600)))
        .await
        .unwrap();
    store
        .append("brief", &[ChatMessage::user("soon gone")])
        .await
        .unwrap();
    let keeper = h.open().await; // no TTL: its sessions stay
    keeper
        .append("lasting", &[ChatMessage::user("stays")])
        .await
        .unwrap();
    let mut listed = store.list_sessions().await.unwrap();
    listed.sort();
    assert_eq!(listed, ["brief", "lasting"]);
    let mut raw = h.raw().await;
    for key in [h.list_key("brief"), h.meta_key("brief")] {
        let _: () = raw.pexpire(&key, 1).await.unwrap();
    }

    assert!(
        h.wait_until_expired("brief").await,
        "the session's keys never expired"
    );

    assert!(store.load("brief").await.unwrap().is_empty());
    assert!(store.session_info("brief").await.unwrap().is_none());
    assert_eq!(store.list_sessions().await.unwrap(), ["lasting"]);
    // list_sessions also dropped the ghost from the index itself.
    let indexed: Option<f64> = raw.zscore(h.ids_key(), "brief").await.unwrap();
    assert_eq!(indexed, None);
}

#[tokio::test]
async fn the_largest_ttl_is_set_by_every_write_and_one_millisecond_more_is_refused_at_connect() {
    let Some(h) = harness().await else { return };
    let store = h.connect(h.options().ttl(MAX_TTL)).await.unwrap();
    let mut raw = h.raw().await;
    let max_ms = i64::try_from(MAX_TTL.as_millis()).unwrap();
    let turn = [ChatMessage::user("a"), ChatMessage::assistant("b")];
    for step in ["append", "save", "truncate"] {
        match step {
            "append" => store.append("s", &turn).await.unwrap(),
            "save" => store.save("s", &turn).await.unwrap(),
            _ => store.truncate("s", 1).await.unwrap(),
        }
        for key in [h.list_key("s"), h.meta_key("s")] {
            let pttl: i64 = raw.pttl(&key).await.unwrap();
            assert!(
                pttl > max_ms - NO_HANG.as_millis() as i64 && pttl <= max_ms,
                "{step}: {key} has PTTL {pttl}, not about {max_ms}"
            );
        }
    }
    assert_eq!(store.load("s").await.unwrap(), turn[..1]);

    for too_long in [
        MAX_TTL + Duration::from_millis(1),
        Duration::from_millis(1 << 63),
    ] {
        let refused = h.connect(h.options().ttl(too_long)).await;
        let err = refused.expect_err("a TTL past MAX_TTL must be refused at connect");
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(err.to_string().contains("TTL"), "{err}");
    }
    // The refused configuration wrote nothing: the session is as the last write left it.
    assert_eq!(store.load("s").await.unwrap(), turn[..1]);
}

#[tokio::test]
async fn every_write_refreshes_the_ttl_of_list_and_meta() {
    let Some(h) = harness().await else { return };
    // The expiry set by hand, an hour, below the storage's TTL of two: long enough that no
    // key expires before the write after it however slow the machine (five seconds could
    // run out on a busy one, a truncate or rewrite then finding no session), short enough
    // that a refresh shows.
    let ttl = Duration::from_secs(2 * 3600);
    let store = h.connect(h.options().ttl(ttl)).await.unwrap();
    let mut raw = h.raw().await;
    let (list, meta) = (h.list_key("s"), h.meta_key("s"));
    let turn = [ChatMessage::user("a"), ChatMessage::assistant("b")];

    // After each kind of write both keys carry a fresh TTL, above the short one set by hand.
    for step in ["save", "append", "truncate"] {
        if step != "save" {
            for key in [&list, &meta] {
                let _: () = raw.pexpire(key, HAND_SET_MS).await.unwrap();
            }
        }
        match step {
            "save" => store.save("s", &turn).await.unwrap(),
            "append" => store.append("s", &turn).await.unwrap(),
            _ => store.truncate("s", 1).await.unwrap(),
        }
        for key in [&list, &meta] {
            let pttl: i64 = raw.pttl(key).await.unwrap();
            assert!(
                pttl > HAND_SET_MS && pttl <= 2 * HAND_SET_MS,
                "{step}: {key} has PTTL {pttl}"
            );
        }
    }
    // A rewrite (`Change::Rewrite`) is not a write to refresh the TTL for: the list,
    // written anew, gets the expiry both keys had. So does the meta hash the rewrite
    // makes for a session from before generations, which has none.
    for step in ["rewrite", "legacy rewrite"] {
        if step == "rewrite" {
            for key in [&list, &meta] {
                let _: () = raw.pexpire(key, HAND_SET_MS).await.unwrap();
            }
        } else {
            let _: () = raw.del(&meta).await.unwrap();
        }
        let (_, read) = store.load_revision("s").await.unwrap();
        store
            .write_if("s", Expect::Exactly(read), Change::Rewrite(&turn))
            .await
            .unwrap();
        for key in [&list, &meta] {
            let pttl: i64 = raw.pttl(key).await.unwrap();
            assert!(
                pttl > 0 && pttl <= HAND_SET_MS,
                "{step}: {key} has PTTL {pttl}"
            );
        }
    }
    // A storage without TTL makes the keys persistent again on its next write.
    let untimed = h.open().await;
    untimed.append("s", &turn).await.unwrap();
    for key in [&list, &meta] {
        let pttl: i64 = raw.pttl(key).await.unwrap();
        assert_eq!(pttl, -1, "{key}");
    }
    // Also when only the list carries an expiry (set by hand): the messages must not go.
    let _: () = raw.pexpire(&list, HAND_SET_MS).await.unwrap();
    untimed.append("s", &turn).await.unwrap();
    for key in [&list, &meta] {
        let pttl: i64 = raw.pttl(key).await.unwrap();
        assert_eq!(pttl, -1, "{key} after an expiry on the list alone");
    }
}

/// `created_at` and `updated_at` are the server's clock in milliseconds (the server runs
/// on this machine, so its clock is ours): each lies between the moments just before and
/// just after the write that set it, give or take the millisecond it is cut to.
#[tokio::test]
async fn timestamps_are_the_servers_clock_in_milliseconds() {
    let Some(h) = harness().await else { return };
    let store = h.open().await;
    let millis = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    let mut raw = h.raw().await;
    for (step, field) in [("created", "created_at"), ("appended", "updated_at")] {
        let before = millis();
        store
            .append("clock", &[ChatMessage::user(step)])
            .await
            .unwrap();
        let after = millis();
        let stored: String = raw.hget(h.meta_key("clock"), field).await.unwrap();
        let stored: u128 = stored.parse().unwrap();
        assert!(
            before.saturating_sub(1) <= stored && stored <= after + 1,
            "{field} = {stored}, written between {before} and {after}"
        );
    }
}
