//! A Redis Cluster changing under a running storage: a slot moved to another primary
//! (the client follows `ASK` and `MOVED`), then a primary killed (calls fail with
//! retryable errors until its replica takes over, then succeed, and every write a replica
//! acknowledged is still there).
//!
//! It kills a node, so it runs on a cluster of its own, `FUSION_REDIS_FAILOVER_CLUSTER_URL`
//! (which `cargo xtask test-all-backends` starts for this test alone), never on the shared
//! one.

mod common;

use std::time::{Duration, Instant};

use common::{ClusterNode, Harness, cluster_nodes_seen_by, env_url, live_primaries, unique_prefix};
use fusion_core::testkit::unavailable;
use fusion_core::{ChatMessage, ConversationStorage};
use fusion_storage_redis::{RedisStorage, cluster_node_urls};

/// Generous: the cluster declares a node failed after its node timeout (2 s in the
/// clusters xtask starts) and then elects a replica; this only stops a hung test.
const FAILOVER_LIMIT: Duration = Duration::from_secs(90);

/// A blocking connection to the node at `url`.
fn node_conn(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap_or_else(|err| panic!("connecting to node {url}: {err}"))
}

/// The primary serving `slot`, once every node that answers agrees on it: a change of
/// owner reaches the nodes by gossip, a moment apart.
fn primary_of(seeds: &[String], slot: u16) -> ClusterNode {
    let deadline = Instant::now() + FAILOVER_LIMIT;
    loop {
        let views: Vec<Option<ClusterNode>> = seeds
            .iter()
            .filter_map(|seed| cluster_nodes_seen_by(seed))
            .map(|nodes| {
                nodes
                    .into_iter()
                    .find(|n| n.primary && !n.failed && n.serves(slot))
            })
            .collect();
        if let Some(Some(first)) = views.first()
            && views
                .iter()
                .all(|v| v.as_ref().is_some_and(|n| n.id == first.id))
        {
            return first.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the nodes never agreed on who serves slot {slot}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn key_slot(seeds: &[String], key: &str) -> u16 {
    let mut conn = node_conn(&seeds[0]);
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut conn)
        .unwrap()
}

/// Moves `slot` from its primary to another one the way `redis-cli --cluster reshard`
/// does, calling `between` after the keys moved but before the slot's owner changes (when
/// the old owner answers `ASK` for them).
async fn move_slot<F: Future<Output = ()>>(seeds: &[String], slot: u16, between: F) {
    let source = primary_of(seeds, slot);
    let target = live_primaries(seeds)
        .into_iter()
        .find(|n| n.id != source.id)
        .expect("a second primary");
    let setslot = |url: &str, args: &[&str]| {
        let mut conn = node_conn(url);
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(args)
            .query(&mut conn)
            .unwrap_or_else(|err| panic!("CLUSTER SETSLOT {slot} {args:?} on {url}: {err}"));
    };
    setslot(&target.url(), &["IMPORTING", &source.id]);
    setslot(&source.url(), &["MIGRATING", &target.id]);
    let mut conn = node_conn(&source.url());
    let keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(1000)
        .query(&mut conn)
        .unwrap();
    let (host, port) = target.addr.rsplit_once(':').unwrap();
    let _: () = redis::cmd("MIGRATE")
        .arg(host)
        .arg(port)
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(&keys)
        .query(&mut conn)
        .unwrap();
    between.await;
    for node in live_primaries(seeds) {
        setslot(&node.url(), &["NODE", &target.id]);
    }
}

fn numbered(history: &[ChatMessage]) -> Vec<u32> {
    history.iter().map(|m| m.content.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_slot_and_a_killed_primary_are_ridden_out_and_acknowledged_writes_survive() {
    let Some(url) = env_url("FUSION_REDIS_FAILOVER_CLUSTER_URL") else {
        unavailable::<()>(
            "redis_cluster",
            "set FUSION_REDIS_FAILOVER_CLUSTER_URL to a cluster this test may kill a primary of \
             (`cargo xtask test-all-backends` starts one)",
        );
        return;
    };
    let seeds = cluster_node_urls(&url)
        .expect("the failover cluster's URL parses")
        .expect("a redis+cluster:// URL");
    let h = Harness {
        publish: false,
        url,
        prefix: unique_prefix(),
    };
    // Writes before the failover wait for the replica, so the failover cannot lose them;
    // the writes during and after it cannot: the promoted replica has no replica of its
    // own until the killed node comes back, which it does not here.
    let acked: RedisStorage = h
        .connect(h.options().replica_acks(1, Duration::from_secs(5)))
        .await
        .expect("connecting to the failover cluster");
    let storage: RedisStorage = h.connect(h.options()).await.unwrap();

    // 1. The primary of a session's slot is killed mid-run.
    let id = "survivor";
    let say = |n: u32| [ChatMessage::user(n.to_string())];
    const BEFORE: u32 = 20;
    for n in 0..BEFORE {
        acked.append(id, &say(n)).await.unwrap();
    }
    let slot = key_slot(&seeds, &h.list_key(id));
    let victim = primary_of(&seeds, slot);
    let mut conn = node_conn(&victim.url());
    let info: String = redis::cmd("INFO").arg("server").query(&mut conn).unwrap();
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .expect("INFO server names the process")
        .trim()
        .to_string();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -9 {pid}");

    let mut acknowledged: Vec<u32> = (0..BEFORE).collect();
    let mut attempted = acknowledged.clone();
    let mut errors = 0;
    let started = Instant::now();
    let mut streak = 0;
    let mut n = BEFORE;
    while streak < 20 {
        assert!(
            started.elapsed() < FAILOVER_LIMIT,
            "no failover within {FAILOVER_LIMIT:?}; {errors} errors"
        );
        attempted.push(n);
        match storage.append(id, &say(n)).await {
            Ok(()) => {
                acknowledged.push(n);
                streak += 1;
            }
            Err(err) => {
                assert!(
                    err.is_retryable(),
                    "a failover error must be retryable: {err}"
                );
                errors += 1;
                streak = 0;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        n += 1;
    }
    let promoted = primary_of(&seeds, slot);
    assert_ne!(
        promoted.id, victim.id,
        "the slot is still on the killed node"
    );
    eprintln!(
        "failover: {errors} retryable errors, then 20 acknowledged writes on {}",
        promoted.addr
    );

    // Every acknowledged write is there, in order; nothing is there that was not sent. A
    // write that failed may or may not have been applied, so it may appear, but once: a
    // write is never sent again after it may have reached a node.
    let stored = numbered(&storage.load(id).await.unwrap());
    let mut rest = stored.iter();
    for want in &acknowledged {
        assert!(
            rest.any(|got| got == want),
            "acknowledged write {want} lost: {stored:?}"
        );
    }
    assert!(stored.iter().all(|n| attempted.contains(n)), "{stored:?}");
    assert!(
        stored.windows(2).all(|w| w[0] < w[1]),
        "out of order or stored twice: {stored:?}"
    );
    storage.delete(id).await.unwrap();

    // 2. Another session's slot moves to another primary under the storage's feet.
    let id = "moving";
    storage.append(id, &say(0)).await.unwrap();
    let slot = key_slot(&seeds, &h.list_key(id));
    let during = async {
        // The keys are on the new primary, the slot still on the old: it answers ASK.
        storage
            .append(id, &say(1))
            .await
            .expect("append during the move");
    };
    move_slot(&seeds, slot, during).await;
    storage
        .append(id, &say(2))
        .await
        .expect("append after the move (MOVED)");
    assert_eq!(numbered(&storage.load(id).await.unwrap()), [0, 1, 2]);
    assert_eq!(storage.list_sessions().await.unwrap(), [id]);
    storage.delete(id).await.unwrap();
}
