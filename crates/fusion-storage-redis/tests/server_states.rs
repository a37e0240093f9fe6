//! Server states a real deployment meets, each on a throwaway `redis-server` of its own
//! configured into it (the shared server at `REDIS_URL` is never reconfigured): out of
//! memory, evicting keys, a read-only replica and a failover behind one name, passwords
//! and ACL users, scripts flushed,
//! loading and busy, killed and paused clients, foreign values under the prefix, and a
//! message over the server's bulk limit.
//!
//! What each pins: a clear error naming the server (password hidden) with the right
//! `is_retryable()`, nothing half-written, and the next call after the state clears
//! succeeding. Needs `redis-server` on `PATH` (skips without it, or fails under
//! `FUSION_REQUIRE_BACKENDS`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{NO_HANG, Throwaway, wait_until};
use fusion_core::testkit::assert_nothing_lost_in_writer_order;
use fusion_core::testkit::faults::FaultProxy;
use fusion_core::testkit::logs::Logs;
use fusion_core::{ChatMessage, ConversationStorage, Error, SessionMeta, SessionQuery};
use fusion_storage_redis::{RedisOptions, RedisStorage};
use futures::StreamExt;
use redis::aio::MultiplexedConnection;

/// A plain connection to `url` without a response timeout, for commands that block
/// (`DEBUG RELOAD`, a script that loops) the way an administrator's would.
async fn admin(url: &str) -> MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

/// Sends `args` as one command on `conn`.
async fn run(conn: &mut MultiplexedConnection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(conn).await
}

/// The contents of `id`'s messages.
async fn contents(store: &RedisStorage, id: &str) -> Vec<String> {
    let loaded = tokio::time::timeout(NO_HANG, store.load(id)).await;
    let loaded = loaded.expect("no hang").unwrap();
    loaded.into_iter().map(|m| m.content).collect()
}

/// The ids of the first page of every session, newest first.
async fn listed(store: &RedisStorage) -> Vec<String> {
    let page = store.list_page(&SessionQuery::default()).await.unwrap();
    page.sessions
        .into_iter()
        .map(|s| s.id.to_string())
        .collect()
}

/// Connects to `url`, returning the storage and what `connect` logged at warn and above.
async fn connect_logged(url: &str) -> (RedisStorage, String) {
    use tracing::instrument::WithSubscriber;
    let logs = Logs::new();
    let subscriber = logs.subscriber(tracing::Level::WARN);
    let store = RedisStorage::connect(url).with_subscriber(subscriber).await;
    (store.unwrap(), logs.text())
}

/// Asserts that `err` is a non-retryable error whose message says `what` and names
/// the server at `url`, and shows no password.
fn assert_permanent(err: &Error, what: &str, url: &str) {
    let shown = err.to_string();
    assert!(!err.is_retryable(), "{shown}");
    assert!(shown.contains(what), "{shown}");
    assert!(shown.contains(url), "{shown}");
    for shown in [shown, format!("{err:?}")] {
        assert!(!shown.contains("hunter2"), "password leaked: {shown}");
    }
}

/// Under `maxmemory` with `noeviction` a write is refused whole (Redis checks memory
/// at a script's first write, so a refused script wrote nothing), the error says so and
/// is not retryable, and reads still work: a `MULTI` is refused too, so `load` reads
/// through a script instead. Once memory is freed, writes go through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_refuses_writes_whole_and_reads_still_work() {
    let config = ["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"];
    let Some(server) = Throwaway::with_config(&config) else {
        return;
    };
    let _running = server.start().await;
    let (store, logged) = connect_logged(&server.url).await;
    assert!(
        !logged.contains("evicts"),
        "noeviction evicts nothing: {logged}"
    );
    let big = "x".repeat(64 * 1024);
    let mut stored = Vec::new();
    let refused = loop {
        assert!(stored.len() < 200, "3 MB never filled up");
        let content = format!("{}{big}", stored.len());
        match store.append("s", &[ChatMessage::user(&content)]).await {
            Ok(()) => stored.push(content),
            Err(err) => break err,
        }
    };
    assert_permanent(&refused, "out of memory", &server.url);
    // Whether the server is still over the limit after refusing depends on what its
    // buffers hold: a limit below what the sessions take keeps it there.
    let mut raw = admin(&server.url).await;
    run(&mut raw, &["CONFIG", "SET", "maxmemory", "2mb"])
        .await
        .unwrap();
    let err = store
        .append("s", &[ChatMessage::user("x")])
        .await
        .unwrap_err();
    assert_permanent(&err, "out of memory", &server.url);
    assert_eq!(
        contents(&store, "s").await,
        stored,
        "whole, through a script"
    );
    let (history, revision) = store.load_revision("s").await.unwrap();
    assert_eq!((history.len(), revision.len), (stored.len(), stored.len()));

    let history: Vec<ChatMessage> = (0..40)
        .map(|i| ChatMessage::user(format!("{i}{big}")))
        .collect();
    let err = store.save("s", &history).await.unwrap_err();
    assert_permanent(&err, "out of memory", &server.url);
    let meta = SessionMeta::default();
    let err = store
        .create_session("c", &meta, &[ChatMessage::user("hi")])
        .await
        .unwrap_err();
    assert_permanent(&err, "out of memory", &server.url);
    assert_eq!(
        contents(&store, "s").await,
        stored,
        "the save changed nothing"
    );
    assert!(store.session_info("c").await.unwrap().is_none());
    assert_eq!(listed(&store).await, ["s"]);

    // Deleting frees memory (DEL is allowed out of memory), below the limit: then
    // everything works.
    store.delete("s").await.unwrap();
    store.save("s", &history[..2]).await.unwrap();
    store
        .create_session("c", &meta, &[ChatMessage::user("hi")])
        .await
        .unwrap();
    assert_eq!(store.load("s").await.unwrap(), history[..2]);
    assert_eq!(contents(&store, "c").await, ["hi"]);
}

/// `allkeys-*` eviction drops whole keys, any of them: a session's list, its meta hash,
/// an index. Whatever it dropped, every read agrees with the others: a session is its
/// list (a meta hash without one is absent to every reader and a new write starts it
/// afresh), and nothing listed fails to load. What it cannot do is find a session whose
/// index entry was evicted (documented: use `noeviction` or `volatile-*`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_server_drops_whole_keys_and_reads_stay_consistent() {
    let config = ["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"];
    let Some(server) = Throwaway::with_config(&config) else {
        return;
    };
    let _running = server.start().await;
    // Nothing else would tell until sessions are missing, so `connect` warns.
    let (store, logged) = connect_logged(&server.url).await;
    assert!(
        logged.contains("evicts any key") && logged.contains("allkeys-lru"),
        "{logged}"
    );
    let big = "e".repeat(16 * 1024);
    let ids: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
    let mut meta = SessionMeta::default();
    meta.owner = Some("alice".into());
    for id in &ids {
        let first = [ChatMessage::user(&big)];
        store.create_session(id, &meta, &first).await.unwrap();
        store
            .append(id, &[ChatMessage::user("second")])
            .await
            .unwrap();
    }
    let mut raw = admin(&server.url).await;
    let evicted = run(&mut raw, &["INFO", "stats"]).await.unwrap();
    let evicted: String = redis::FromRedisValue::from_redis_value(evicted).unwrap();
    assert!(!evicted.contains("evicted_keys:0\r"), "nothing was evicted");
    // Every command over the limit evicts more, reads too: lift it to look at a state
    // that holds still.
    run(&mut raw, &["CONFIG", "SET", "maxmemory", "0"])
        .await
        .unwrap();

    let listed_ids: Vec<String> = store.list_sessions().await.unwrap();
    for id in &ids {
        let loaded = store.load(id).await.unwrap();
        let info = store.session_info(id).await.unwrap();
        // Redis evicts whole keys: a list holds both messages, or none, or only the
        // second (its list went between the two writes, and the append started anew).
        let contents: Vec<&str> = loaded.iter().map(|m| m.content.as_str()).collect();
        let whole = [big.as_str(), "second"];
        assert!(
            [&whole[..], &whole[1..], &[]].contains(&contents.as_slice()),
            "{id}: {} messages",
            contents.len()
        );
        assert_eq!(info.map_or(0, |i| i.message_count), loaded.len(), "{id}");
        if listed_ids.contains(id) {
            assert!(!loaded.is_empty(), "{id} is listed but has no messages");
        }
    }
    // A session whose list went but whose meta hash stayed starts afresh, without the
    // owner the leftover hash names.
    let _: () = redis::AsyncCommands::del(&mut raw, "fusion:s:{s0}")
        .await
        .unwrap();
    store
        .append("s0", &[ChatMessage::user("anew")])
        .await
        .unwrap();
    let info = store.session_info("s0").await.unwrap().unwrap();
    assert_eq!((info.message_count, info.meta.owner), (1, None));
}

/// Whether `err` is the replica's clear refusal of a write.
fn refused_as_replica(err: &Error) -> bool {
    let shown = err.to_string();
    shown.contains("read-only replica") && shown.contains("point it at the primary")
}

/// A replica refuses writes with `READONLY`: retryable (see the failover test below),
/// saying to point the URL at the primary, nothing written; reads work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_replica_refuses_writes_clearly_and_serves_reads() {
    let Some(primary) = Throwaway::new() else {
        return;
    };
    let _primary = primary.start().await;
    let port = primary.port.to_string();
    let Some(replica) = Throwaway::with_config(&["--replicaof", "127.0.0.1", &port]) else {
        return;
    };
    let _replica = replica.start().await;
    let writer = RedisStorage::connect(&primary.url).await.unwrap();
    writer
        .append("s", &[ChatMessage::user("one")])
        .await
        .unwrap();
    let store = RedisStorage::connect(&replica.url).await.unwrap();
    let synced = wait_until(NO_HANG, || async {
        store.load("s").await.is_ok_and(|loaded| loaded.len() == 1)
    })
    .await;
    assert!(synced, "the replica never caught up");

    let meta = SessionMeta::default();
    let two = [ChatMessage::user("two")];
    for write in 0..5 {
        let call = || async {
            match write {
                0 => store.append("s", &two).await,
                1 => store.save("s", &two).await,
                2 => store.truncate("s", 0).await,
                3 => store.delete("s").await,
                _ => store.create_session("n", &meta, &two).await.map(drop),
            }
        };
        let err = call().await.expect_err("a replica takes no writes");
        let err = match refused_as_replica(&err) {
            true => err,
            // Each refusal closes the connection with `QUIT` (`storage/replica.rs`). A
            // `QUIT` (or the `PING` after it) that a stalled run let time out made the
            // manager open no new connection, and the server closed the old one once it
            // read the `QUIT`: the next write met it closed ("broken pipe"). That is a
            // retryable failure, and it made the manager reconnect, so the retry gets the
            // replica's refusal. Any other failure fails here.
            false => {
                let lost = "connection to the server failed or was lost";
                assert!(
                    err.is_retryable() && err.to_string().contains(lost),
                    "{err}"
                );
                call().await.expect_err("a replica takes no writes")
            }
        };
        assert!(err.is_retryable(), "{err}");
        assert!(refused_as_replica(&err), "{err}");
    }
    assert_eq!(contents(&store, "s").await, ["one"]);
    assert_eq!(listed(&store).await, ["s"]);
    assert_eq!(store.list_sessions().await.unwrap(), ["s"]);
    assert_eq!(contents(&writer, "s").await, ["one"]);
}

/// A failover behind a name that follows the primary (here a proxy sending new
/// connections to the new primary, as DNS or a managed endpoint would): the open
/// connection still reaches the demoted primary, whose `READONLY` is retryable and makes
/// the storage open a new connection, so a retry reaches the new primary. Nothing is
/// written twice or lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_behind_one_name_a_retried_write_reaches_the_new_primary() {
    let Some(first) = Throwaway::new() else {
        return;
    };
    let _first = first.start().await;
    let port = first.port.to_string();
    let Some(second) = Throwaway::with_config(&["--replicaof", "127.0.0.1", &port]) else {
        return;
    };
    let _second = second.start().await;
    let name = FaultProxy::start(format!("127.0.0.1:{}", first.port)).await;
    let store = RedisStorage::connect(&format!("redis://{}", name.addr()))
        .await
        .unwrap();
    store
        .append("s", &[ChatMessage::user("before")])
        .await
        .unwrap();
    let synced = wait_until(NO_HANG, || async {
        let info = run(&mut admin(&first.url).await, &["INFO", "replication"]).await;
        let info: String = redis::FromRedisValue::from_redis_value(info.unwrap()).unwrap();
        info.contains("state=online")
    })
    .await;
    assert!(synced, "the replica never caught up");
    run(&mut admin(&first.url).await, &["FAILOVER"])
        .await
        .unwrap();
    let promoted = wait_until(NO_HANG, || async {
        let role = run(&mut admin(&second.url).await, &["ROLE"]).await.unwrap();
        let role: Vec<redis::Value> = redis::FromRedisValue::from_redis_value(role).unwrap();
        matches!(&role[0], redis::Value::BulkString(b) if b == b"master")
    })
    .await;
    assert!(promoted, "the failover never completed");
    name.redirect(format!("127.0.0.1:{}", second.port));

    let first_try = store.append("s", &[ChatMessage::user("after")]).await;
    let err = first_try.expect_err("the open connection reaches the demoted primary");
    assert!(err.is_retryable(), "{err}");
    let stored = wait_until(NO_HANG, || async {
        let retry = store.append("s", &[ChatMessage::user("after")]).await;
        retry
            .inspect_err(|err| assert!(err.is_retryable(), "{err}"))
            .is_ok()
    })
    .await;
    assert!(stored, "no retry reached the new primary");
    assert_eq!(contents(&store, "s").await, ["before", "after"]);
}

/// A server that wants a password: connecting without one fails at once with a clear,
/// non-retryable error (not a protocol error at the first write, nor a dropped
/// connection that looks retryable); a wrong one too; neither shows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_password_fails_connect_clearly() {
    let Some(server) = Throwaway::with_config(&["--requirepass", "hunter2-right"]) else {
        return;
    };
    let _running = server.start().await;
    let err = RedisStorage::connect(&server.url).await.unwrap_err();
    assert_permanent(&err, "requires a password", &server.url);
    let wrong = server.url.replace("redis://", "redis://:hunter2-wrong@");
    let err = RedisStorage::connect(&wrong).await.unwrap_err();
    let shown_url = server.url.replace("redis://", "redis://:***@");
    assert_permanent(&err, "authentication failed", &shown_url);

    let right = server.url.replace("redis://", "redis://:hunter2-right@");
    let store = RedisStorage::connect(&right).await.unwrap();
    store.append("s", &[ChatMessage::user("in")]).await.unwrap();
    assert!(!format!("{store:?}").contains("hunter2"), "{store:?}");
}

/// Found by a review of 9f8bdee, which refuses a `?`, `#` or `/` written as it is in a
/// URL's credentials: written percent-encoded they reach the server as they are, so the
/// password connects, also an ACL user's whose name holds an `@` (written as it is or as
/// %40); written as they are they are refused, naming the character, before connecting,
/// with no piece of the password shown (a user name holding an `@` let it through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percent_encoded_password_connects_and_one_written_as_it_is_is_refused() {
    let Some(server) = Throwaway::with_config(&["--requirepass", "kiwi?mango#pear/fig"]) else {
        return;
    };
    let _running = server.start().await;
    let at = |credentials: &str| {
        server
            .url
            .replace("redis://", &format!("redis://{credentials}@"))
    };
    let store = RedisStorage::connect(&at(":kiwi%3Fmango%23pear%2Ffig"))
        .await
        .unwrap();
    store.append("s", &[ChatMessage::user("in")]).await.unwrap();
    let mut raw = admin(&at(":kiwi%3Fmango%23pear%2Ffig")).await;
    let rules = ["on", ">plum?lime#date/yam", "~*", "&*", "+@all"];
    run(
        &mut raw,
        &[["ACL", "SETUSER", "me@corp"].as_slice(), &rules].concat(),
    )
    .await
    .unwrap();
    for (user, id) in [("me@corp", "s1"), ("me%40corp", "s2")] {
        let url = format!(
            "{}?key_prefix=a@b",
            at(&format!("{user}:plum%3Flime%23date%2Fyam"))
        );
        let store = RedisStorage::connect(&url).await.unwrap();
        store.append(id, &[ChatMessage::user(user)]).await.unwrap();
        assert_eq!(store.load(id).await.unwrap().len(), 1, "{user}");
    }
    for (credentials, held) in [
        (":kiwi?mango", "`?`; percent-encode it as %3F"),
        ("me@corp:plum?lime", "`?`; percent-encode it as %3F"),
        ("me@corp:plum#lime", "`#`; percent-encode it as %23"),
        ("me@corp:plum/lime", "`/`; percent-encode it as %2F"),
    ] {
        let err = RedisStorage::connect(&at(credentials)).await.unwrap_err();
        let shown = err.to_string();
        assert!(matches!(err, Error::Config(_)), "{shown}");
        assert!(shown.contains(held), "{shown}");
        for secret in ["kiwi", "mango", "plum", "lime"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}

/// ACL users short of what the storage needs get a clear `NOPERM` error at their first
/// call, never retryable. One that may not publish on the changes channel (Redis 7's
/// default for a new user) writing with `publish_changes` is refused before its script
/// writes anything, where the script's `PUBLISH` used to fail after storing the messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_users_short_of_a_permission_get_clear_errors_and_write_nothing() {
    let Some(server) = Throwaway::new() else {
        return;
    };
    let _running = server.start().await;
    let mut raw = admin(&server.url).await;
    let users = [
        ("no-channels", "resetchannels ~* +@all", "PUBLISH"),
        ("no-evalsha", "allchannels ~* +@all -evalsha", "evalsha"),
        ("other-keys", "allchannels ~other:* +@all", "keys"),
    ];
    for (user, rules, what) in users {
        let mut args = vec!["ACL", "SETUSER", user, "on", ">hunter2-acl"];
        args.extend(rules.split(' '));
        run(&mut raw, &args).await.unwrap();
        // Each user must load the scripts itself (the write is its first call).
        run(&mut raw, &["SCRIPT", "FLUSH"]).await.unwrap();
        let url = server
            .url
            .replace("redis://", &format!("redis://{user}:hunter2-acl@"));
        let options = RedisOptions::new().publish_changes(true);
        let store = RedisStorage::connect_with(&url, options).await.unwrap();
        let shown_url = url.replace("hunter2-acl", "***");
        for result in [
            store.append(user, &[ChatMessage::user("m")]).await,
            store.save(user, &[ChatMessage::user("m")]).await,
        ] {
            let err = result.expect_err(user);
            assert_permanent(&err, "permission", &shown_url);
            assert!(err.to_string().contains(what), "{user}: {err}");
        }
        let stored: i64 = redis::AsyncCommands::exists(&mut raw, format!("fusion:s:{{{user}}}"))
            .await
            .unwrap();
        assert_eq!(stored, 0, "{user}: a refused write stored its messages");
    }
    // `SCRIPT` is not needed: a server that does not know a script is sent its text.
    let mut args = vec!["ACL", "SETUSER", "no-script", "on", ">hunter2-acl"];
    args.extend("allchannels ~* +@all -script".split(' '));
    run(&mut raw, &args).await.unwrap();
    run(&mut raw, &["SCRIPT", "FLUSH"]).await.unwrap();
    let url = server
        .url
        .replace("redis://", "redis://no-script:hunter2-acl@");
    let store = RedisStorage::connect(&url).await.unwrap();
    store.append("s", &[ChatMessage::user("m")]).await.unwrap();
    assert_eq!(contents(&store, "s").await, ["m"]);
    assert_eq!(listed(&store).await, ["s"]);
    // The channel is all the first user lacked: with it, writes and subscriptions work.
    run(&mut raw, &["ACL", "SETUSER", "no-channels", "allchannels"])
        .await
        .unwrap();
    let url = server
        .url
        .replace("redis://", "redis://no-channels:hunter2-acl@");
    let options = RedisOptions::new().publish_changes(true);
    let store = RedisStorage::connect_with(&url, options).await.unwrap();
    let mut changes = store.subscribe_changes().await.unwrap();
    store.append("t", &[ChatMessage::user("m")]).await.unwrap();
    let change = tokio::time::timeout(NO_HANG, changes.next()).await.unwrap();
    assert_eq!(change.unwrap().unwrap().session_id.as_str(), "t");
}

/// How many times the server ran `SCRIPT LOAD` since its stats were reset.
async fn script_loads(raw: &mut MultiplexedConnection) -> u64 {
    script_load_stat(raw, "calls").await
}

/// `field` (`calls`, `rejected_calls`, ...) of `SCRIPT LOAD`'s line in `INFO
/// commandstats`: 0 while the server has not seen the command since its stats were reset.
async fn script_load_stat(raw: &mut MultiplexedConnection, field: &str) -> u64 {
    let stats = run(raw, &["INFO", "commandstats"]).await.unwrap();
    let stats: String = redis::FromRedisValue::from_redis_value(stats).unwrap();
    let Some(line) = stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_script|load:"))
    else {
        return 0;
    };
    line.split(',')
        .find_map(|pair| pair.strip_prefix(field)?.strip_prefix('='))
        .map_or(0, |value| value.parse().unwrap())
}

/// After a `NOSCRIPT` the script goes as its text (`EVAL`), and is pinned with a `SCRIPT
/// LOAD` by the same call (Redis 7.4+ evicts what `EVAL` cached, never what `SCRIPT LOAD`
/// did): one load for a write's script and one for a read's, none while the server
/// knows them. A least-privilege user allowed `EVALSHA` and `SCRIPT` but not `EVAL`
/// keeps writing and reading across `SCRIPT FLUSH`es: the script is loaded, then run by
/// its sha. (A user without `SCRIPT` is the ACL test's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_sent_as_text_are_pinned_and_a_user_without_eval_keeps_writing() {
    let Some(server) = Throwaway::new() else {
        return;
    };
    let _running = server.start().await;
    let mut raw = admin(&server.url).await;
    let store = RedisStorage::connect(&server.url).await.unwrap();
    run(&mut raw, &["SCRIPT", "FLUSH"]).await.unwrap();
    run(&mut raw, &["CONFIG", "RESETSTAT"]).await.unwrap();
    store.append("s", &[ChatMessage::user("a")]).await.unwrap();
    assert_eq!(
        script_loads(&mut raw).await,
        1,
        "the write script was pinned"
    );
    store.append("s", &[ChatMessage::user("b")]).await.unwrap();
    assert!(store.session_info("s").await.unwrap().is_some());
    assert_eq!(script_loads(&mut raw).await, 2, "and the read's, once each");
    store.append("s", &[ChatMessage::user("c")]).await.unwrap();
    assert_eq!(
        store
            .session_info("s")
            .await
            .unwrap()
            .unwrap()
            .message_count,
        3
    );
    assert_eq!(
        script_loads(&mut raw).await,
        2,
        "known scripts are not loaded again"
    );

    let rules = "allchannels ~* +@all -eval -eval_ro";
    let mut args = vec!["ACL", "SETUSER", "no-eval", "on", ">hunter2-acl"];
    args.extend(rules.split(' '));
    run(&mut raw, &args).await.unwrap();
    let url = server
        .url
        .replace("redis://", "redis://no-eval:hunter2-acl@");
    let store = RedisStorage::connect(&url).await.unwrap();
    for content in ["d", "e"] {
        run(&mut raw, &["SCRIPT", "FLUSH"]).await.unwrap();
        store
            .append("s", &[ChatMessage::user(content)])
            .await
            .unwrap();
        run(&mut raw, &["SCRIPT", "FLUSH"]).await.unwrap();
        let info = store.session_info("s").await.unwrap().unwrap();
        assert_eq!(info.message_count, contents(&store, "s").await.len());
    }
    assert_eq!(contents(&store, "s").await, ["a", "b", "c", "d", "e"]);
    assert_eq!(listed(&store).await, ["s"]);
}

/// `SCRIPT FLUSH` over and over while 8 tasks append 200 turns each: every `NOSCRIPT`
/// is met by sending the script's text, nothing is lost or stored twice. Each turn
/// carries 16 KiB, so a request spans more than one of the server's reads and a flush
/// may come between a `SCRIPT LOAD` and the `EVALSHA` behind it, which used to fail the
/// append.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn script_flushes_during_a_burst_lose_and_double_nothing() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 200;
    let Some(server) = Throwaway::new() else {
        return;
    };
    let _running = server.start().await;
    let store = RedisStorage::connect(&server.url).await.unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let mut raw = admin(&server.url).await;
    // Flushed once before the first append, so the burst starts on NOSCRIPT.
    run(&mut raw, &["SCRIPT", "FLUSH"]).await.unwrap();
    let flushing = done.clone();
    let flusher = tokio::spawn(async move {
        while !flushing.load(Ordering::Relaxed) {
            run(&mut raw, &["SCRIPT", "FLUSH"]).await.unwrap();
        }
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for k in 0..PER_WRITER {
                    let turn = [ChatMessage::user(format!("w{w}-{k:03}"))];
                    let pad = [ChatMessage::assistant("p".repeat(16 * 1024))];
                    store.append("burst", &turn).await.expect("append");
                    store.append("padded", &pad).await.expect("append");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer task panicked");
    }
    done.store(true, Ordering::Relaxed);
    flusher.await.unwrap();
    let loaded = store.load("burst").await.unwrap();
    let names: Vec<String> = (0..WRITERS).map(|w| format!("w{w}")).collect();
    assert_nothing_lost_in_writer_order(&loaded, &names, PER_WRITER);
    let padded = store.session_info("padded").await.unwrap().unwrap();
    assert_eq!(padded.message_count, WRITERS * PER_WRITER);
}

/// A server loading its dataset answers `LOADING`, one running a long script `BUSY`, to
/// writes and reads alike: retryable errors that stored nothing, then, once the state
/// clears, success. A server that does not answer at all (`DEBUG SLEEP`, all clients
/// paused) fails the call within the response timeout, retryably, and the calls after
/// it succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loading_and_busy_servers_give_retryable_errors_then_serve() {
    // DEBUG RELOAD saves the dataset and loads it again, in the server's own directory.
    let config = [
        "--enable-debug-command",
        "yes",
        "--busy-reply-threshold",
        "50",
        "--loading-process-events-interval-bytes",
        "1024",
    ];
    let Some(server) = Throwaway::with_config(&config) else {
        return;
    };
    let _running = server.start().await;
    let options = RedisOptions::new().response_timeout(Duration::from_secs(1));
    let store = RedisStorage::connect_with(&server.url, options)
        .await
        .unwrap();
    let mut stored = Vec::new();
    let mut raw = admin(&server.url).await;
    run(&mut raw, &["DEBUG", "POPULATE", "20000", "filler", "10"])
        .await
        .unwrap();
    // 1 ms per key: loading takes 20 s unless the test ends it sooner (`CONFIG SET` works
    // while the server loads), so the state lasts until a call has met it.
    run(&mut raw, &["CONFIG", "SET", "key-load-delay", "1000"])
        .await
        .unwrap();

    for (state, mut blocker) in [
        ("loading", vec!["DEBUG", "RELOAD"]),
        ("busy", vec!["EVAL", "while true do end", "0"]),
    ] {
        let mut conn = admin(&server.url).await;
        let blocking = tokio::spawn(async move {
            let args = std::mem::take(&mut blocker);
            run(&mut conn, &args).await
        });
        // Append until the server refuses: before it does, appends are stored.
        let refused = loop {
            assert!(
                !blocking.is_finished(),
                "{state}: over before a call met it"
            );
            let content = format!("{state}-{}", stored.len());
            let turn = [ChatMessage::user(&content)];
            let sent = store.append("s", &turn);
            match tokio::time::timeout(NO_HANG, sent).await.expect("no hang") {
                Ok(()) => stored.push(content),
                Err(err) if err.to_string().contains("temporarily unavailable") => break err,
                // A reply that did not come within the response timeout (the server
                // blocked while saving before it reloads) may still be applied.
                Err(err) if err.to_string().contains("timed out") => {}
                Err(err) => panic!("{state}: {err}"),
            }
        };
        assert!(refused.is_retryable(), "{refused}");
        assert!(refused.to_string().contains(&server.url), "{refused}");
        // Reads too: a `MULTI`'s commands are refused like the scripts.
        let read = store.load("s").await.unwrap_err();
        assert!(read.is_retryable(), "{state}: {read}");
        assert!(
            read.to_string().contains("temporarily unavailable"),
            "{read}"
        );
        let end = match state {
            "loading" => ["CONFIG", "SET", "key-load-delay", "0"].as_slice(),
            _ => ["SCRIPT", "KILL"].as_slice(),
        };
        run(&mut raw, end).await.unwrap();
        let _ = blocking.await.unwrap();
        store
            .append("s", &[ChatMessage::user(state)])
            .await
            .unwrap();
        stored.push(state.to_string());
        let loaded = contents(&store, "s").await;
        assert!(loaded.ends_with(&stored[stored.len() - 1..]), "{loaded:?}");
        assert_eq!(loaded.iter().filter(|c| *c == state).count(), 1);
    }

    // A server that does not answer at all (all clients paused, as `DEBUG SLEEP` would
    // hold them): the call ends with the response timeout, and the late reply it leaves
    // on the connection is not taken for the next call's.
    run(&mut raw, &["CLIENT", "PAUSE", "3000", "ALL"])
        .await
        .unwrap();
    let during = tokio::time::timeout(NO_HANG, store.load("s"))
        .await
        .expect("no hang");
    if let Err(err) = during {
        assert!(
            err.is_retryable() && err.to_string().contains("timed out"),
            "{err}"
        );
    }
    run(&mut raw, &["CLIENT", "UNPAUSE"]).await.unwrap();
    store
        .append("s", &[ChatMessage::user("awake")])
        .await
        .unwrap();
    stored.push("awake".to_string());
    assert!(
        contents(&store, "s")
            .await
            .ends_with(&stored[stored.len() - 1..])
    );
}

/// A connection the server kills between calls costs at most the next write, which fails
/// retryably and stored nothing; one killed mid-call (its write held by `CLIENT PAUSE
/// WRITE`, which the kill discards) fails that call retryably, and stored nothing. Reads
/// go on during the pause. A subscriber the server disconnects (its output buffer over
/// `client-output-buffer-limit pubsub`) sees its stream end, and subscribing again works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_and_paused_clients_fail_one_call_and_store_nothing_twice() {
    let config = ["--client-output-buffer-limit", "pubsub 64kb 32kb 60"];
    let Some(server) = Throwaway::with_config(&config) else {
        return;
    };
    let _running = server.start().await;
    let options = RedisOptions::new().publish_changes(true);
    let store = RedisStorage::connect_with(&server.url, options)
        .await
        .unwrap();
    let mut raw = admin(&server.url).await;
    let kill = ["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"];
    let mut stored = vec!["first".to_string()];
    store
        .append("s", &[ChatMessage::user("first")])
        .await
        .unwrap();

    run(&mut raw, &kill).await.unwrap();
    for content in ["after-kill-1", "after-kill-2"] {
        match store.append("s", &[ChatMessage::user(content)]).await {
            Ok(()) => stored.push(content.to_string()),
            Err(err) => assert!(err.is_retryable(), "{err}"),
        }
    }
    assert_eq!(contents(&store, "s").await, stored);

    run(&mut raw, &["CLIENT", "PAUSE", "60000", "WRITE"])
        .await
        .unwrap();
    assert_eq!(
        contents(&store, "s").await,
        stored,
        "reads go on while writes pause"
    );
    let writer = store.clone();
    let held = tokio::spawn(async move { writer.append("s", &[ChatMessage::user("held")]).await });
    // Wait until the server holds the paused write, then kill its client.
    let waiting = wait_until(NO_HANG, || {
        let mut raw = raw.clone();
        async move {
            let list = run(&mut raw, &["CLIENT", "LIST", "TYPE", "normal"])
                .await
                .unwrap();
            let list: String = redis::FromRedisValue::from_redis_value(list).unwrap();
            // The paused client is blocked (`flags=b`) on its script.
            list.lines()
                .any(|client| client.contains(" flags=b ") && client.contains(" cmd=eval"))
        }
    })
    .await;
    assert!(waiting, "the paused write never reached the server");
    run(&mut raw, &kill).await.unwrap();
    let err = tokio::time::timeout(NO_HANG, held)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    run(&mut raw, &["CLIENT", "UNPAUSE"]).await.unwrap();
    store
        .append("s", &[ChatMessage::user("last")])
        .await
        .unwrap();
    stored.push("last".to_string());
    assert_eq!(
        contents(&store, "s").await,
        stored,
        "the killed write stored nothing"
    );

    // A subscriber whose pending output passes the hard limit is disconnected.
    let mut changes = store.subscribe_changes().await.unwrap();
    let flood = "f".repeat(256 * 1024);
    run(&mut raw, &["PUBLISH", "fusion:changes", &flood])
        .await
        .unwrap();
    loop {
        let next = tokio::time::timeout(NO_HANG, changes.next()).await;
        match next.expect("a disconnected subscription ends, it does not go silent") {
            None => break,
            Some(item) => assert!(item.is_err(), "{item:?}"),
        }
    }
    let mut changes = store.subscribe_changes().await.unwrap();
    store
        .append("s", &[ChatMessage::user("seen")])
        .await
        .unwrap();
    let change = tokio::time::timeout(NO_HANG, changes.next()).await.unwrap();
    assert_eq!(change.unwrap().unwrap().len, stored.len() + 1);
}

/// A foreign value where a session's key belongs fails that session's calls with an
/// error naming the key and changes nothing; listings and purges skip that session and
/// serve the others. A foreign value on an index key, which every write updates, fails
/// every write naming that key, until it is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_value_fails_its_own_session_and_listings_skip_it() {
    let Some(server) = Throwaway::new() else {
        return;
    };
    let _running = server.start().await;
    let store = RedisStorage::connect(&server.url).await.unwrap();
    for id in ["a", "b", "c"] {
        store.append(id, &[ChatMessage::user(id)]).await.unwrap();
    }
    let mut raw = admin(&server.url).await;
    run(&mut raw, &["DEL", "fusion:s:{b}"]).await.unwrap();
    run(&mut raw, &["SET", "fusion:s:{b}", "foreign"])
        .await
        .unwrap();
    let err = store
        .append("b", &[ChatMessage::user("x")])
        .await
        .unwrap_err();
    assert_permanent(&err, "fusion:s:{b}", &server.url);
    assert!(err.to_string().contains("\"b\""), "{err}");
    assert_eq!(listed(&store).await, ["c", "a"]);
    assert_eq!(store.list_sessions().await.unwrap(), ["a", "c"]);
    assert_eq!(store.purge_expired(100).await.unwrap(), 0);
    let value: String = redis::AsyncCommands::get(&mut raw, "fusion:s:{b}")
        .await
        .unwrap();
    assert_eq!(value, "foreign");

    run(&mut raw, &["SET", "fusion:updated", "foreign"])
        .await
        .unwrap();
    let err = store
        .append("a", &[ChatMessage::user("x")])
        .await
        .unwrap_err();
    assert_permanent(&err, "fusion:updated", &server.url);
    assert_eq!(contents(&store, "a").await, ["a"], "nothing written");
    run(&mut raw, &["DEL", "fusion:updated"]).await.unwrap();
    store.append("a", &[ChatMessage::user("x")]).await.unwrap();
    assert_eq!(contents(&store, "a").await, ["a", "x"]);
}

/// A message larger than the server's `proto-max-bulk-len` is refused before it is sent,
/// naming the message, the session and the limit, not retryable, nothing written. (Sent,
/// the server would refuse it and close the connection mid-request, which the client
/// may see as a reset connection: retryable, wrongly.) A history larger than the limit
/// in all, of messages each under it, saves whole: the limit is per value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_bulk_limit_is_refused_and_a_large_history_saves() {
    let Some(server) = Throwaway::with_config(&["--proto-max-bulk-len", "1mb"]) else {
        return;
    };
    let _running = server.start().await;
    let store = RedisStorage::connect(&server.url).await.unwrap();
    store
        .append("s", &[ChatMessage::user("small")])
        .await
        .unwrap();
    let huge = ChatMessage::user("h".repeat(2 * 1024 * 1024));
    for _ in 0..3 {
        let turn = [ChatMessage::user("fits"), huge.clone()];
        let sent = tokio::time::timeout(NO_HANG, store.append("s", &turn)).await;
        let err = sent.expect("no hang").unwrap_err();
        assert!(
            matches!(&err, Error::InvalidMessage { session_id, index: 1, .. } if session_id == "s"),
            "{err:?}"
        );
        assert_permanent(&err, "proto-max-bulk-len", &server.url);
    }
    assert_eq!(contents(&store, "s").await, ["small"]);

    let history: Vec<ChatMessage> = (0..3)
        .map(|i| ChatMessage::user(format!("{i}{}", "y".repeat(700 * 1024))))
        .collect();
    store.save("s", &history).await.unwrap();
    assert_eq!(store.load("s").await.unwrap(), history);
}

/// Found by a review: a server that refuses `PING` at connect (`MISCONF` after a failed
/// save; `LOADING` after a restart) still answers `CONFIG GET`, but `connect` read
/// nothing of it, so a message over its `proto-max-bulk-len` was sent, refused with the
/// connection closed, once the server took writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_ping_at_connect_still_gives_its_bulk_limit() {
    let Some(server) = Throwaway::with_config(&["--proto-max-bulk-len", "1mb"]) else {
        return;
    };
    let _running = server.start().await;
    let mut raw = admin(&server.url).await;
    // A snapshot that cannot be written (its directory gone) makes the server refuse
    // writes, and `PING`, with `MISCONF` while a save point is set.
    let dir: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query_async(&mut raw)
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir[1]).unwrap();
    run(&mut raw, &["CONFIG", "SET", "save", "3600 1"])
        .await
        .unwrap();
    run(&mut raw, &["BGSAVE"]).await.unwrap();
    let refusing = wait_until(NO_HANG, || {
        let mut raw = raw.clone();
        async move {
            let ping = run(&mut raw, &["PING"]).await;
            ping.is_err_and(|err| err.code() == Some("MISCONF"))
        }
    })
    .await;
    assert!(
        refusing,
        "the failed save never made the server refuse PING"
    );

    let store = RedisStorage::connect(&server.url).await.unwrap();
    let huge = ChatMessage::user("h".repeat(2 * 1024 * 1024));
    let sent = tokio::time::timeout(NO_HANG, store.append("s", &[huge])).await;
    let err = sent.expect("no hang").unwrap_err();
    assert!(
        matches!(&err, Error::InvalidMessage { session_id, index: 0, .. } if session_id == "s"),
        "{err:?}"
    );
    assert_permanent(&err, "proto-max-bulk-len", &server.url);
}

/// Found by a review: after a write whose connection dropped (here a message over a
/// `proto-max-bulk-len` lowered since connect, which the server refuses by closing the
/// connection), the limit was read again before the write's error was returned, and that
/// read waited for the connection to be made again: the error came a reconnect's backoff
/// later, and not before the response timeout while new connections got no answer. The
/// error is returned at once; the limit is read before the next write, so the retry is
/// still refused before it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_write_fails_without_waiting_for_the_limit_to_be_read_again() {
    let Some(server) = Throwaway::new() else {
        return;
    };
    let _running = server.start().await;
    let upstream = format!("127.0.0.1:{}", server.port);
    let proxy = FaultProxy::start(upstream.clone()).await;
    let url = format!("redis://{}", proxy.addr());
    // Waiting out either is the failure (`NO_HANG` comes first).
    let options = RedisOptions::new()
        .connect_timeout(Duration::from_secs(600))
        .response_timeout(Duration::from_secs(600));
    let store = RedisStorage::connect_with(&url, options).await.unwrap();
    store
        .append("s", &[ChatMessage::user("small")])
        .await
        .unwrap();
    let mut raw = admin(&server.url).await;
    run(&mut raw, &["CONFIG", "SET", "proto-max-bulk-len", "1mb"])
        .await
        .unwrap();
    // From here a new connection reaches a listener that takes it and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    proxy.redirect(silent.local_addr().unwrap().to_string());
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });

    let huge = [ChatMessage::user("h".repeat(2 * 1024 * 1024))];
    let sent = tokio::time::timeout(NO_HANG, store.append("s", &huge)).await;
    sent.expect("the error waited for a connection made again")
        .expect_err("the server refused the message");

    // New connections reach the server again (those held are closed).
    holding.abort();
    let _ = holding.await;
    proxy.redirect(upstream);
    let sent = tokio::time::timeout(NO_HANG, store.append("s", &huge)).await;
    let err = sent.expect("no hang").unwrap_err();
    assert!(
        matches!(&err, Error::InvalidMessage { session_id, index: 0, .. } if session_id == "s"),
        "{err:?}"
    );
    assert_permanent(&err, "proto-max-bulk-len", &url);
    assert_eq!(contents(&store, "s").await, ["small"]);
}

/// Found by a review of 2f039e4: once the limit was read again only before the next
/// write, a write meeting that read under way (started by another task's write) passed
/// it by and was checked against the limit as it was: the retry of a message over a
/// limit lowered since connect, on another task, was sent again (and its connection
/// dropped again) rather than refused, what reading the limit again is for. Here the
/// other task's read is held at a relay until the retry shows what it sends: another
/// read of the limit (it waits for one of its own), or the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_meeting_the_limit_read_under_way_reads_it_too() {
    let Some(server) = Throwaway::new() else {
        return;
    };
    let _running = server.start().await;
    let upstream = format!("127.0.0.1:{}", server.port);
    let proxy = FaultProxy::start(upstream.clone()).await;
    let url = format!("redis://{}", proxy.addr());
    let store = RedisStorage::connect(&url).await.unwrap();
    store
        .append("s", &[ChatMessage::user("small")])
        .await
        .unwrap();
    let mut raw = admin(&server.url).await;
    run(&mut raw, &["CONFIG", "SET", "proto-max-bulk-len", "1mb"])
        .await
        .unwrap();
    // New connections go through the relay, which holds what follows the first read of
    // the limit until a second read or the message comes.
    let (relay, mut holding) = holding_relay(upstream).await;
    proxy.redirect(relay);

    let huge = [ChatMessage::user("h".repeat(2 * 1024 * 1024))];
    let sent = tokio::time::timeout(NO_HANG, store.append("s", &huge)).await;
    sent.expect("no hang")
        .expect_err("the server refused the message");
    let other = store.clone();
    let other = tokio::spawn(async move { other.append("t", &[ChatMessage::user("other")]).await });
    let held = tokio::time::timeout(NO_HANG, holding.recv()).await;
    held.expect("the other write read the limit").unwrap();

    let sent = tokio::time::timeout(NO_HANG, store.append("s", &huge)).await;
    let err = sent.expect("no hang").unwrap_err();
    assert!(
        matches!(&err, Error::InvalidMessage { session_id, index: 0, .. } if session_id == "s"),
        "the retry was sent rather than refused: {err:?}"
    );
    assert_permanent(&err, "proto-max-bulk-len", &url);
    let other = tokio::time::timeout(NO_HANG, other).await;
    other.expect("no hang").unwrap().unwrap();
    assert_eq!(contents(&store, "s").await, ["small"]);
    assert_eq!(contents(&store, "t").await, ["other"]);
}

/// A relay to a server that forwards every connection, except that once a client sends
/// a read of `proto-max-bulk-len` it holds that and what follows, telling the test so,
/// until a second read of it or a run of the `h`s of a huge message comes; then it
/// forwards everything held and relays freely.
async fn holding_relay(upstream: String) -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const LIMIT: &[u8] = b"proto-max-bulk-len";
    let count = |held: &[u8], what: &[u8]| held.windows(what.len()).filter(|w| *w == what).count();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tell, told) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let tell = tell.clone();
            tokio::spawn(async move {
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                });
                let (mut held, mut holding, mut done) = (Vec::new(), false, false);
                let mut buf = vec![0; 64 * 1024];
                while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                    let chunk = &buf[..n];
                    if done || (!holding && count(chunk, LIMIT) == 0) {
                        if to_server.write_all(chunk).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    if !holding {
                        holding = true;
                        let _ = tell.send(());
                    }
                    held.extend_from_slice(chunk);
                    if count(&held, LIMIT) >= 2 || count(chunk, &[b'h'; 64]) > 0 {
                        done = true;
                        if to_server.write_all(&held).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    (addr, told)
}

/// The ids of the clients connected, other than `conn`'s own.
async fn other_clients(conn: &mut MultiplexedConnection) -> Vec<String> {
    let me: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(conn)
        .await
        .unwrap();
    let list = run(conn, &["CLIENT", "LIST", "TYPE", "normal"])
        .await
        .unwrap();
    let list: String = redis::FromRedisValue::from_redis_value(list).unwrap();
    list.lines()
        .filter_map(|client| client.strip_prefix("id=")?.split(' ').next())
        .filter(|id| *id != me.to_string())
        .map(str::to_string)
        .collect()
}

/// Waits until the server closed every connection in `clients`.
async fn dropped(raw: &MultiplexedConnection, clients: &[String]) -> bool {
    wait_until(NO_HANG, || {
        let mut raw = raw.clone();
        async move {
            let now = other_clients(&mut raw).await;
            !clients.iter().any(|id| now.contains(id))
        }
    })
    .await
}

/// A server that closes idle connections (its `timeout`, as managed services set): the
/// driver finds the connection closed at the next call. A read is sent again on a new
/// connection and succeeds. A write fails retryably (RESP2): the driver reports "broken
/// pipe" both for a request it never sent and for one whose reply it lost, so the write
/// is not sent again; it stored nothing, and the next one goes through. Over RESP3
/// (`?protocol=resp3`) the driver learns of the close as it happens and reconnects at
/// once, so the write goes on the new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_the_server_closed_costs_no_read_and_stores_nothing_twice() {
    let Some(server) = Throwaway::new() else {
        return;
    };
    let _running = server.start().await;
    let mut raw = admin(&server.url).await;
    let resp3 = format!("{}/?protocol=resp3", server.url);
    for (url, id) in [(&server.url, "resp2"), (&resp3, "resp3")] {
        run(&mut raw, &["CONFIG", "SET", "timeout", "0"])
            .await
            .unwrap();
        let store = RedisStorage::connect(url).await.unwrap();
        store.append(id, &[ChatMessage::user("a")]).await.unwrap();
        let mut stored = vec!["a".to_string()];
        // The admin connection polls, so it never idles out.
        run(&mut raw, &["CONFIG", "SET", "timeout", "1"])
            .await
            .unwrap();
        for call in ["load", "session_info", "append"] {
            let before = other_clients(&mut raw).await;
            assert!(dropped(&raw, &before).await, "the server closed {before:?}");
            if id == "resp3" {
                let reconnected = wait_until(NO_HANG, || {
                    let (mut raw, before) = (raw.clone(), before.clone());
                    async move {
                        other_clients(&mut raw)
                            .await
                            .iter()
                            .any(|c| !before.contains(c))
                    }
                })
                .await;
                assert!(reconnected, "over RESP3 the driver reconnects by itself");
            }
            match call {
                "load" => {
                    let loaded = store.load(id).await.expect("a read is sent again");
                    assert_eq!(loaded.len(), stored.len());
                }
                "session_info" => {
                    let info = store.session_info(id).await.expect("a read is sent again");
                    assert_eq!(info.unwrap().message_count, stored.len());
                }
                _ => match store.append(id, &[ChatMessage::user("b")]).await {
                    Ok(()) => stored.push("b".to_string()),
                    Err(err) => {
                        assert_eq!(id, "resp2", "{err}");
                        assert!(err.is_retryable(), "{err}");
                        assert!(err.to_string().contains("lost"), "{err}");
                    }
                },
            }
        }
        run(&mut raw, &["CONFIG", "SET", "timeout", "0"])
            .await
            .unwrap();
        store.append(id, &[ChatMessage::user("c")]).await.unwrap();
        stored.push("c".to_string());
        assert_eq!(contents(&store, id).await, stored, "{id}");
    }
}

/// `CLIENT PAUSE WRITE` (a failover: `FAILOVER`, `CLUSTER FAILOVER`) holds every
/// `EVALSHA` until the pause ends; the scripts that only read go as `EVALSHA_RO` on
/// Redis 7, which it does not hold, so `session_info` and listings go on, as `load` (a
/// `MULTI` of reads) does. A user the server's ACL denies `EVALSHA_RO` reads through
/// `EVALSHA` instead (as on Redis 6.2, which lacks it), once refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_through_scripts_go_on_while_writes_pause() {
    let Some(server) = Throwaway::new() else {
        return;
    };
    let _running = server.start().await;
    let mut raw = admin(&server.url).await;
    let rules = "allchannels ~* +@all -evalsha_ro -eval_ro";
    let mut args = vec!["ACL", "SETUSER", "no-ro", "on", ">hunter2-acl"];
    args.extend(rules.split(' '));
    run(&mut raw, &args).await.unwrap();
    let no_ro = server.url.replace("redis://", "redis://no-ro:hunter2-acl@");
    let store = RedisStorage::connect(&server.url).await.unwrap();
    let mut meta = SessionMeta::default();
    meta.owner = Some("alice".into());
    let first = [ChatMessage::user("a")];
    store.create_session("s", &meta, &first).await.unwrap();

    // No timing bound: a read the pause holds fails with the storage's response timeout
    // (`PATIENT`), before the pause ends.
    let paused = patient(&server.url).await;
    run(&mut raw, &["CLIENT", "PAUSE", PAUSE_MS, "WRITE"])
        .await
        .unwrap();
    let reads = async {
        let info = paused.session_info("s").await.unwrap().unwrap();
        assert_eq!(info.message_count, 1);
        assert_eq!(listed(&paused).await, ["s"]);
        let mut query = SessionQuery::default();
        query.owner = Some("alice".into());
        let page = paused.list_page(&query).await.unwrap();
        assert_eq!(page.sessions.len(), 1);
        assert_eq!(paused.list_sessions().await.unwrap(), ["s"]);
        assert_eq!(contents(&paused, "s").await, ["a"]);
    };
    reads.await;
    run(&mut raw, &["CLIENT", "UNPAUSE"]).await.unwrap();

    let store = RedisStorage::connect(&no_ro).await.unwrap();
    for _ in 0..2 {
        let info = store.session_info("s").await.unwrap().unwrap();
        assert_eq!(info.message_count, 1);
        assert_eq!(listed(&store).await, ["s"]);
    }
    store.append("s", &[ChatMessage::user("b")]).await.unwrap();
    assert_eq!(contents(&store, "s").await, ["a", "b"]);
}

/// The clients the server holds (`CLIENT PAUSE` postpones a client's write this way).
async fn blocked_clients(raw: &mut MultiplexedConnection) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(raw)
        .await
        .unwrap();
    let flags = |line: &str| {
        let field = line.split(' ').find(|field| field.starts_with("flags="));
        field.is_some_and(|field| field.contains('b'))
    };
    list.lines().filter(|line| flags(line)).count()
}

/// How long the storages of the paused-read tests wait for a reply, far longer than the
/// default 5 s: the write the pause holds waits out the reads, however slow the machine.
const PATIENT: Duration = Duration::from_secs(60);

/// How long [`reads_while_paused`] pauses writes at most: longer than [`PATIENT`], so a
/// read held behind the pause fails (times out) before it ends.
const PAUSE_MS: &str = "120000";

/// A storage on `url` whose calls wait [`PATIENT`] for a reply.
async fn patient(url: &str) -> RedisStorage {
    let options = RedisOptions::new().response_timeout(PATIENT);
    RedisStorage::connect_with(url, options).await.unwrap()
}

/// Pauses the server's writes, starts `held` (a write of this process the pause holds,
/// named `what`) and, once the server holds a client, runs `reads`, then ends the pause.
/// Returns what `held` and `reads` gave. No timing bound: reads held behind the pause
/// fail with the storage's response timeout ([`PATIENT`], before the pause ends), and
/// reads that ended are checked to have ended while the server still held the write.
async fn reads_while_paused<H, R>(
    raw: &mut MultiplexedConnection,
    what: &str,
    held: H,
    reads: R,
) -> (H::Output, R::Output)
where
    H: Future + Send + 'static,
    H::Output: Send + 'static,
    R: Future,
{
    run(raw, &["CLIENT", "PAUSE", PAUSE_MS, "WRITE"])
        .await
        .unwrap();
    let held = tokio::spawn(held);
    let blocked = wait_until(NO_HANG, || {
        let mut raw = raw.clone();
        async move { blocked_clients(&mut raw).await > 0 }
    })
    .await;
    assert!(blocked, "the server never held the {what}");
    let read = reads.await;
    assert!(
        blocked_clients(raw).await > 0,
        "the server no longer held the {what} when the reads ended: they waited for the pause"
    );
    run(raw, &["CLIENT", "UNPAUSE"]).await.unwrap();
    (held.await.unwrap(), read)
}

/// The server reads no more commands from a client whose write `CLIENT PAUSE WRITE`
/// holds: reads sent on the same connection behind a held write of this process would
/// wait for the pause to end too, `EVALSHA_RO` or not. They go on a connection of their
/// own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_not_held_behind_this_processs_paused_write() {
    let Some(server) = Throwaway::new() else {
        return;
    };
    let _running = server.start().await;
    let mut raw = admin(&server.url).await;
    let store = patient(&server.url).await;
    store.append("s", &[ChatMessage::user("a")]).await.unwrap();

    let writing = {
        let store = store.clone();
        async move { store.append("s", &[ChatMessage::user("b")]).await }
    };
    let reads = async {
        let info = store.session_info("s").await.unwrap().unwrap();
        assert_eq!(info.message_count, 1);
        assert_eq!(contents(&store, "s").await, ["a"]);
        assert_eq!(store.list_sessions().await.unwrap(), ["s"]);
        assert_eq!(listed(&store).await, ["s"]);
    };
    let (written, ()) = reads_while_paused(&mut raw, "write", writing, reads).await;
    written.unwrap();
    assert_eq!(contents(&store, "s").await, ["a", "b"]);
}

/// A read whose connection dropped is sent once more on that connection, which its
/// manager opens again; a `PING` beside it shows the writes' connection (idle as long,
/// maybe dropped too) to its manager. The read does not wait for that `PING`: here the
/// writes' connection holds a write `CLIENT PAUSE WRITE` holds, behind which the server
/// reads nothing from it, and the read, its own connection killed, goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_connection_dropped_is_not_held_behind_this_processs_paused_write() {
    let Some(server) = Throwaway::new() else {
        return;
    };
    let _running = server.start().await;
    let mut raw = admin(&server.url).await;
    let mut killer = admin(&server.url).await;
    let store = patient(&server.url).await;
    store.append("s", &[ChatMessage::user("a")]).await.unwrap();

    let writing = {
        let store = store.clone();
        async move { store.append("s", &[ChatMessage::user("b")]).await }
    };
    let mut admins = Vec::new();
    for conn in [&mut raw, &mut killer] {
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(conn)
            .await
            .unwrap();
        admins.push(id.to_string());
    }
    let reads = async {
        // The storage's connection the server does not hold is the reads'.
        let list = run(&mut killer, &["CLIENT", "LIST", "TYPE", "normal"]).await;
        let list: String = redis::FromRedisValue::from_redis_value(list.unwrap()).unwrap();
        let field = |line: &str, name: &str| {
            let field = line.split(' ').find_map(|f| f.strip_prefix(name));
            field.unwrap_or_default().to_string()
        };
        let reads: Vec<String> = list
            .lines()
            .filter(|line| !field(line, "flags=").contains('b'))
            .map(|line| field(line, "id="))
            .filter(|id| !admins.contains(id))
            .collect();
        assert_eq!(
            reads.len(),
            1,
            "one connection of the storage is not held: {list}"
        );
        run(&mut killer, &["CLIENT", "KILL", "ID", &reads[0]])
            .await
            .unwrap();
        assert_eq!(contents(&store, "s").await, ["a"]);
    };
    let (written, ()) = reads_while_paused(&mut raw, "write", writing, reads).await;
    written.unwrap();
    assert_eq!(contents(&store, "s").await, ["a", "b"]);
}

/// A listing that meets an index entry of a deleted session removes it, a write the
/// pause holds; it goes on the writes' connection, so the reads of the process, which
/// the server would hold behind it on their own, go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_not_held_behind_this_processs_paused_index_repair() {
    let Some(server) = Throwaway::new() else {
        return;
    };
    let _running = server.start().await;
    let mut raw = admin(&server.url).await;
    let store = patient(&server.url).await;
    for id in ["s", "gone"] {
        store.append(id, &[ChatMessage::user("a")]).await.unwrap();
    }
    // Its keys gone, its index entries left: the next listing removes them.
    run(&mut raw, &["DEL", "fusion:s:{gone}", "fusion:m:{gone}"])
        .await
        .unwrap();

    let listing = {
        let store = store.clone();
        async move { store.list_sessions().await }
    };
    let (listed, read) =
        reads_while_paused(&mut raw, "index repair", listing, store.load("s")).await;
    let read = read.expect("a read held behind this process's paused index repair");
    assert_eq!(read.len(), 1);
    assert_eq!(listed.unwrap(), ["s"]);
}

/// A listing that meets an index score behind its session sets it (the `REINDEX`
/// script), a write the pause holds; it goes on the writes' connection, as the removal
/// of an index entry does, so the reads of the process go on. It went on the reads'
/// connection, where the server held every read behind it until the pause ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_not_held_behind_this_processs_paused_index_score_repair() {
    let Some(server) = Throwaway::new() else {
        return;
    };
    let _running = server.start().await;
    let mut raw = admin(&server.url).await;
    let store = patient(&server.url).await;
    store.append("s", &[ChatMessage::user("a")]).await.unwrap();
    // A score behind the session's time: the next listing repairs it.
    run(&mut raw, &["ZADD", "fusion:updated", "1", "s"])
        .await
        .unwrap();

    let listing = {
        let store = store.clone();
        async move { store.list_page(&SessionQuery::default()).await }
    };
    let (listed, read) =
        reads_while_paused(&mut raw, "index score repair", listing, store.load("s")).await;
    let read = read.expect("a read held behind this process's paused index score repair");
    assert_eq!(read.len(), 1);
    assert_eq!(listed.unwrap().sessions.len(), 1);
    let score = run(&mut raw, &["ZSCORE", "fusion:updated", "s"]).await;
    let score: String = redis::FromRedisValue::from_redis_value(score.unwrap()).unwrap();
    assert_ne!(score, "1", "the listing repaired the score");
}

/// The refusals the storage answers by sending a call again, `EVALSHA_RO` refused (an
/// ACL, or a server older than Redis 7) and `EVAL` denied after a `NOSCRIPT`, are told in
/// a pipeline as in one command (the redis crate gives a pipeline's error no detail of
/// its own): a listing's reads of many sessions are one pipeline, as is a write followed
/// by the replicas' `WAIT`. Each user's first call is the pipeline, so no earlier single
/// call has turned `EVALSHA_RO` off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_inside_a_pipeline_are_answered_as_in_one_command() {
    let Some(primary) = Throwaway::new() else {
        return;
    };
    let _primary = primary.start().await;
    let port = primary.port.to_string();
    let Some(replica) = Throwaway::with_config(&["--replicaof", "127.0.0.1", &port]) else {
        return;
    };
    let _replica = replica.start().await;
    let mut raw = admin(&primary.url).await;
    for (user, denied) in [
        ("no-ro", "-evalsha_ro -eval_ro"),
        ("no-eval", "-eval -eval_ro"),
    ] {
        let rules = format!("allchannels ~* +@all {denied}");
        let mut args = vec!["ACL", "SETUSER", user, "on", ">hunter2-acl"];
        args.extend(rules.split(' '));
        run(&mut raw, &args).await.unwrap();
    }
    let as_user = |user: &str| {
        primary
            .url
            .replace("redis://", &format!("redis://{user}:hunter2-acl@"))
    };
    let writer = RedisStorage::connect(&primary.url).await.unwrap();
    writer.append("s", &[ChatMessage::user("a")]).await.unwrap();
    let reader = RedisStorage::connect(&replica.url).await.unwrap();
    let synced = wait_until(NO_HANG, || async {
        reader.load("s").await.is_ok_and(|loaded| loaded.len() == 1)
    })
    .await;
    assert!(synced, "the replica never caught up");

    let no_ro = RedisStorage::connect(&as_user("no-ro")).await.unwrap();
    let listed = no_ro.list_sessions().await;
    assert_eq!(listed.expect("EVALSHA_RO refused in a pipeline"), ["s"]);

    let no_eval = RedisStorage::connect(&as_user("no-eval")).await.unwrap();
    run(&mut raw, &["SCRIPT", "FLUSH"]).await.unwrap();
    let listed = no_eval.list_sessions().await;
    assert_eq!(listed.expect("EVAL_RO denied in a pipeline"), ["s"]);

    let options = RedisOptions::new().replica_acks(1, NO_HANG);
    let acked = RedisStorage::connect_with(&as_user("no-eval"), options)
        .await
        .unwrap();
    run(&mut raw, &["SCRIPT", "FLUSH"]).await.unwrap();
    let appended = acked.append("s", &[ChatMessage::user("b")]).await;
    appended.expect("EVAL denied before the replicas' WAIT");
    assert_eq!(contents(&writer, "s").await, ["a", "b"]);
}

/// The `SCRIPT LOAD` that pins a script after a `NOSCRIPT` reaches the server before the
/// script's `EVAL`: Redis 7.4+ evicts the scripts `EVAL` cached, and a `SCRIPT LOAD` of
/// one already cached so changes nothing (it stays evictable), while one loaded first is
/// kept, and the `EVAL` behind it runs it. Seen in the server's slow log, which records
/// every command in the order it ran when its threshold is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_is_pinned_before_its_text_runs() {
    let Some(server) = Throwaway::new() else {
        return;
    };
    let _running = server.start().await;
    let mut raw = admin(&server.url).await;
    let store = RedisStorage::connect(&server.url).await.unwrap();
    for setting in [
        ["slowlog-log-slower-than", "0"],
        ["slowlog-max-len", "1024"],
    ] {
        run(&mut raw, &["CONFIG", "SET", setting[0], setting[1]])
            .await
            .unwrap();
    }
    for (call, eval) in [("append", "EVAL"), ("session_info", "EVAL_RO")] {
        run(&mut raw, &["SCRIPT", "FLUSH"]).await.unwrap();
        run(&mut raw, &["SLOWLOG", "RESET"]).await.unwrap();
        match call {
            "append" => store.append("s", &[ChatMessage::user("a")]).await.unwrap(),
            _ => assert!(store.session_info("s").await.unwrap().is_some()),
        }
        let log = run(&mut raw, &["SLOWLOG", "GET", "-1"]).await.unwrap();
        let log: Vec<(i64, i64, i64, Vec<String>)> =
            redis::FromRedisValue::from_redis_value(match log {
                // Each entry also names the client (address, name): left out.
                redis::Value::Array(entries) => redis::Value::Array(
                    entries
                        .into_iter()
                        .map(|entry| match entry {
                            redis::Value::Array(fields) => {
                                redis::Value::Array(fields.into_iter().take(4).collect())
                            }
                            other => other,
                        })
                        .collect(),
                ),
                other => other,
            })
            .unwrap();
        let id_of = |name: &[&str]| {
            log.iter()
                .filter(|(_, _, _, args)| args.len() >= name.len() && args[..name.len()] == *name)
                .map(|(id, _, _, _)| *id)
                .min()
        };
        let loaded = id_of(&["SCRIPT", "LOAD"]).expect("the script was loaded");
        let ran = id_of(&[eval]).expect("the script went as its text");
        assert!(
            loaded < ran,
            "{call}: SCRIPT LOAD ({loaded}) after {eval} ({ran})"
        );
    }
}

/// How many times the server refused `SCRIPT LOAD` (an ACL) since its stats were reset.
async fn script_loads_refused(raw: &mut MultiplexedConnection) -> u64 {
    script_load_stat(raw, "rejected_calls").await
}

/// A user the server's ACL denies `SCRIPT` (least privilege: `EVALSHA` and `EVAL` do)
/// gets the pin after a `NOSCRIPT` refused once; the storage then stops asking, so each
/// later `NOSCRIPT` costs the script's text once (its `EVAL`), not twice, and the
/// server's error stats and ACL log no count of refusals growing with every flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_script_is_not_asked_to_load_again() {
    let Some(server) = Throwaway::new() else {
        return;
    };
    let _running = server.start().await;
    let mut raw = admin(&server.url).await;
    let rules = "allchannels ~* +@all -script";
    let mut args = vec!["ACL", "SETUSER", "no-script", "on", ">hunter2-acl"];
    args.extend(rules.split(' '));
    run(&mut raw, &args).await.unwrap();
    let url = server
        .url
        .replace("redis://", "redis://no-script:hunter2-acl@");
    let store = RedisStorage::connect(&url).await.unwrap();
    run(&mut raw, &["CONFIG", "RESETSTAT"]).await.unwrap();
    for content in ["a", "b", "c"] {
        run(&mut raw, &["SCRIPT", "FLUSH"]).await.unwrap();
        store
            .append("s", &[ChatMessage::user(content)])
            .await
            .unwrap();
        assert!(store.session_info("s").await.unwrap().is_some());
    }
    assert_eq!(contents(&store, "s").await, ["a", "b", "c"]);
    assert_eq!(script_loads_refused(&mut raw).await, 1);
}

/// A user allowed `EVALSHA` but not `EVAL` whose `SCRIPT LOAD` was refused once (its ACL
/// short of `SCRIPT` for a while) writes again once the ACL grants `SCRIPT`: the load
/// that call needs is asked whatever was refused before. It failed every `NOSCRIPT`
/// until the process connected again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_eval_loads_again_once_its_acl_grants_script() {
    let Some(server) = Throwaway::new() else {
        return;
    };
    let _running = server.start().await;
    let mut raw = admin(&server.url).await;
    let rules = "allchannels ~* +@all -eval -eval_ro -script";
    let mut args = vec!["ACL", "SETUSER", "no-eval", "on", ">hunter2-acl"];
    args.extend(rules.split(' '));
    run(&mut raw, &args).await.unwrap();
    let url = server
        .url
        .replace("redis://", "redis://no-eval:hunter2-acl@");
    let store = RedisStorage::connect(&url).await.unwrap();
    run(&mut raw, &["SCRIPT", "FLUSH"]).await.unwrap();
    let refused = store.append("s", &[ChatMessage::user("a")]).await;
    assert!(refused.is_err(), "{refused:?}");
    run(&mut raw, &["ACL", "SETUSER", "no-eval", "+script"])
        .await
        .unwrap();
    for content in ["b", "c"] {
        run(&mut raw, &["SCRIPT", "FLUSH"]).await.unwrap();
        store
            .append("s", &[ChatMessage::user(content)])
            .await
            .unwrap();
    }
    assert_eq!(contents(&store, "s").await, ["b", "c"]);
}

/// Found by a review: a server short of the replicas its `min-replicas-to-write` asks
/// for (`NOREPLICAS`) and one at its `maxclients` refused retryably-passing states as
/// permanent errors, so the retry layer gave up on them. Both are retryable now, name
/// the server and say what to do; the refused write stored nothing, and once the state
/// clears the next call succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_replicas_and_too_many_clients_are_retryable() {
    let Some(server) = Throwaway::with_config(&["--min-replicas-to-write", "1"]) else {
        return;
    };
    let _running = server.start().await;
    let store = RedisStorage::connect(&server.url).await.unwrap();
    let refused = store
        .append("s", &[ChatMessage::user("one")])
        .await
        .unwrap_err();
    assert!(refused.is_retryable(), "{refused}");
    let shown = refused.to_string();
    assert!(
        shown.contains("min-replicas-to-write") && shown.contains(&server.url),
        "{shown}"
    );
    assert!(contents(&store, "s").await.is_empty());
    let mut raw = admin(&server.url).await;
    run(&mut raw, &["CONFIG", "SET", "min-replicas-to-write", "0"])
        .await
        .unwrap();
    store
        .append("s", &[ChatMessage::user("one")])
        .await
        .unwrap();
    assert_eq!(contents(&store, "s").await, ["one"]);

    // Every connection the server takes is in use: `raw` and the storage's.
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut raw)
        .await
        .unwrap();
    let count = clients.lines().count().to_string();
    run(&mut raw, &["CONFIG", "SET", "maxclients", &count])
        .await
        .unwrap();
    at_max_clients(&server.url, &mut raw).await;
}

/// A storage connecting to the server at `url`, which is at its `maxclients`: refused
/// retryably, naming the server; then `raw` raises the limit, and a
/// storage connects.
async fn at_max_clients(url: &str, raw: &mut MultiplexedConnection) {
    let refused = tokio::time::timeout(NO_HANG, RedisStorage::connect(url))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(refused.is_retryable(), "{refused}");
    // The server writes its refusal and closes: the driver meets either, whichever it
    // reads first (the unit tests of `error.rs` pin the refusal's message).
    let shown = refused.to_string();
    let either = shown.contains("maxclients") || shown.contains("failed or was lost");
    assert!(either && shown.contains(url), "{shown}");
    run(raw, &["CONFIG", "SET", "maxclients", "100"])
        .await
        .unwrap();
    let store = RedisStorage::connect(url).await.unwrap();
    assert_eq!(contents(&store, "s").await, ["one"]);
}
