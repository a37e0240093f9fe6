//! How storages open: many at once on a new schema, both URL schemes, schemas keeping
//! applications in one database apart, the pool's first connection ready for the first
//! call, URL parameters checked before connecting, an open that meets another process's
//! creation or upgrade of the schema, and one whose pool waits out the connect timeout.

mod support;

use fusion_core::{ChatMessage, ConversationStorage, Error};
use fusion_storage_postgres::{PostgresOptions, PostgresStorage};
use sqlx::Connection;
use support::{harness, refusing_port, scratch_database, unique_schema};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storages_opening_a_new_schema_at_once_create_it_once() {
    let Some(harness) = harness().await else {
        return;
    };
    let opening: Vec<_> = (0..6)
        .map(|_| tokio::spawn(PostgresStorage::connect_with(harness.options())))
        .collect();
    let mut storages = Vec::new();
    for task in opening {
        storages.push(task.await.unwrap().expect("every storage opens"));
    }
    let mut raw = harness.raw().await;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY 1")
        .fetch_all(&mut raw)
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("reading migrations/")
        .count();
    let each_once: Vec<i64> = (1..).take(files).collect();
    assert_eq!(applied, each_once, "every migration applied once");
    storages[0]
        .append("s", &[ChatMessage::user("hi")])
        .await
        .unwrap();
    assert_eq!(storages[5].load("s").await.unwrap().len(), 1);
    for storage in storages {
        assert_eq!(storage.schema(), harness.schema);
        storage.close().await;
    }
}

#[tokio::test]
async fn schemas_keep_applications_in_one_database_apart() {
    let (Some(a), Some(b)) = (harness().await, harness().await) else {
        return;
    };
    let first = PostgresStorage::connect_with(a.options()).await.unwrap();
    // The other scheme libpq accepts, for the same server.
    let url = b.url.replacen("postgres://", "postgresql://", 1);
    let second = PostgresStorage::connect_with(b.options()).await.unwrap();
    let third = PostgresStorage::connect_with(PostgresOptions::new(url).schema(&b.schema))
        .await
        .unwrap();
    first
        .append("s", &[ChatMessage::user("only in a")])
        .await
        .unwrap();
    assert!(second.list_sessions().await.unwrap().is_empty());
    second
        .append("s", &[ChatMessage::user("in b")])
        .await
        .unwrap();
    assert_eq!(
        third.load("s").await.unwrap(),
        [ChatMessage::user("in b")],
        "postgresql:// reaches the same schema"
    );
    assert_eq!(
        first.load("s").await.unwrap(),
        [ChatMessage::user("only in a")]
    );
    assert_eq!(first.backend_name(), "postgres");
    assert!(!first.database().contains('@') || first.database().contains("***"));
    for storage in [first, second, third] {
        storage.close().await;
    }
}

#[tokio::test]
async fn the_first_call_finds_a_connection_open_in_the_pool() {
    let Some(harness) = harness().await else {
        return;
    };
    // Twice: on a new schema (created) and on an existing one (only checked); default
    // options, so the pool could open up to 8 connections.
    for _ in 0..2 {
        let options = PostgresOptions::new(&harness.url).schema(&harness.schema);
        let storage = PostgresStorage::connect_with(options).await.unwrap();
        let pool = storage.pool();
        assert_eq!(pool.size(), 1, "connect left one connection in the pool");
        assert_eq!(pool.num_idle(), 1, "idle, ready for the first call");
        storage.load("s").await.unwrap();
        assert_eq!(pool.size(), 1, "the first call reused it");
        storage.close().await;
    }
}

/// sqlx would only log a warning for `schma=x` and create the default schema: the URL is
/// refused before any connection is tried (nothing listens on the port, so trying would
/// give a retryable `Backend` error instead). The accepted parameters still connect.
#[tokio::test]
async fn url_parameters_are_checked_before_connecting() {
    let refusing = refusing_port();
    let port = refusing.port;
    for (query, name) in [
        ("schma=x", "`schma`"),
        ("schema=a&schema=a", "`schema` is given 2 times"),
        ("sslmode=disable&ssl_mode=disable", "`ssl_mode`"),
    ] {
        let url = format!("postgres://u:s3cret@127.0.0.1:{port}/app?{query}");
        let err = PostgresStorage::connect(&url).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Config(_)), "{url}: {text}");
        assert!(text.contains(name), "{url}: {text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
    let Some(harness) = harness().await else {
        return;
    };
    let url = format!(
        "{}&sslmode=disable&application_name=fusion-test",
        harness.storage_url()
    );
    let storage = PostgresStorage::connect(&url).await.unwrap();
    assert_eq!(storage.schema(), harness.schema);
    storage.close().await;
}

/// An open that finds the schema to create or upgrade while another connection holds its
/// migration lock (a process upgrading it) waits as long as it waits for any lock, here
/// a statement timeout, or a `lock_timeout` the URL sets when the storage sets no
/// statement timeout; then it fails retryably, naming the schema and saying why, having
/// written nothing. Once the lock is free, it opens. The holder keeps the lock until the
/// failures are in, so how long the waits take plays no part; the statement timeout is
/// still long enough for the open's other statements on a busy server (200 ms, as it
/// was, could end one of them, and the open that creates the schema at the end ran
/// under it too).
#[tokio::test]
async fn an_open_during_another_process_upgrade_fails_retryably_naming_it() {
    let Some(harness) = harness().await else {
        return;
    };
    let mut holder = sqlx::PgConnection::connect(&harness.url).await.unwrap();
    // The lock `crate::migrate` takes: "fusn" and the schema name's hash.
    sqlx::query("SELECT pg_advisory_lock(x'6675736e'::int, hashtext($1))")
        .bind(&harness.schema)
        .execute(&mut holder)
        .await
        .unwrap();
    let timeout = std::time::Duration::from_secs(2);
    let by_statement_timeout = harness.options().statement_timeout(Some(timeout));
    let separator = if harness.url.contains('?') { '&' } else { '?' };
    let by_lock_timeout = PostgresOptions::new(format!(
        "{}{separator}options[lock_timeout]=200",
        harness.url
    ))
    .schema(&harness.schema)
    .statement_timeout(None);
    for options in [by_statement_timeout, by_lock_timeout] {
        let err = PostgresStorage::connect_with(options).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        let text = err.to_string();
        let named = format!(
            "another process is creating or upgrading schema \"{}\"",
            harness.schema
        );
        assert!(text.contains(&named), "{text}");
        assert!(!harness.exists().await, "nothing written: {text}");
    }

    holder.close().await.unwrap();
    let storage = PostgresStorage::connect_with(harness.options())
        .await
        .unwrap();
    storage
        .append("s", &[ChatMessage::user("after")])
        .await
        .unwrap();
    storage.close().await;
}

/// Opening creates or upgrades its schema under a lock on that schema alone: it does not
/// also wait for sqlx's lock on the whole database, which sqlx's migrator takes by
/// default and which any sqlx application migrating another schema of the database (or
/// another storage of this crate creating or upgrading its own) holds meanwhile. It took
/// it, so a new schema's open waited for such a migration and failed at the statement
/// timeout. In a database of its own, since the lock is the whole database's. The
/// timeout is one that the creation's statements do not meet on a busy server (500 ms,
/// as it was, they could).
#[tokio::test]
async fn an_open_waits_for_no_migration_of_another_schema() {
    use sqlx::migrate::Migrate;
    let Some(db) = scratch_database().await else {
        return;
    };
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    holder.lock().await.unwrap();
    let options = PostgresOptions::new(db.url.clone())
        .schema(unique_schema())
        .statement_timeout(Some(std::time::Duration::from_secs(5)));
    let storage = PostgresStorage::connect_with(options).await.unwrap();
    storage
        .append("s", &[ChatMessage::user("created")])
        .await
        .unwrap();
    storage.close().await;
    holder.unlock().await.unwrap();
    holder.close().await.unwrap();
}

/// Found by a review: an open whose pool got no connection within the connect timeout,
/// though a new connection tried then opened at once, gave only the timeout's four
/// guesses, where a call says that the pool could not open one (the server restarting
/// or at its limit, back by then). It says so as a call does. A proxy in front of the
/// server passes the open's first connection (the schema's check) and the new one
/// through, and never answers the pool's, as a stuck or restarting server does.
#[tokio::test]
async fn an_open_whose_pool_waits_out_the_timeout_says_why_as_a_call_does() {
    let Some(harness) = harness().await else {
        return;
    };
    let url = proxy_holding(&harness.url, 2).await;
    let options = PostgresOptions::new(url)
        .schema(&harness.schema)
        .max_connections(1)
        .connect_timeout(std::time::Duration::from_secs(3));
    let err = PostgresStorage::connect_with(options).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("postgres: open of postgres"), "{text}");
    assert!(text.contains("the pool could not open one"), "{text}");
    assert!(
        text.contains("a new connection tried then opened"),
        "{text}"
    );
}

/// `url` with a port of its own in place of the server's: a proxy there passes each
/// connection through to the server, except the `hold`-th (from 1), which it accepts and
/// never answers, for as long as the test runs.
async fn proxy_holding(url: &str, hold: usize) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (format!("{user}@"), host),
        None => (String::new(), authority),
    };
    let server = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        for n in 1.. {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            if n == hold {
                held.push(client);
                continue;
            }
            let server = server.clone();
            tokio::spawn(async move {
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(&server).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    format!("{scheme}://{user}127.0.0.1:{port}{tail}")
}
