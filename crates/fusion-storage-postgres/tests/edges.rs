//! Input at the edges of what PostgreSQL takes, each found by an audit: a schema named by
//! a keyword, a write past the gigabyte one statement can carry, timeouts past the
//! server's longest or of zero, a database that is read-only, and a server certificate
//! that does not verify. Each is either stored as asked or refused, with an error saying
//! what to change.

mod support;

use std::time::{Duration, SystemTime};

use fusion_core::testkit::StorageHarness;
use fusion_core::{ChatMessage, ConversationStorage, Cursor, Error, SessionQuery};
use fusion_storage_postgres::{PostgresOptions, PostgresStorage};
use support::{harness, scratch_database};

/// `user` and `order` are keywords, valid schema names that only a quoted identifier can
/// be: `CREATE SCHEMA user` was a syntax error, so the storage could not open.
#[tokio::test]
async fn a_schema_named_by_a_keyword_opens_and_stores() {
    let Some(database) = scratch_database().await else {
        return;
    };
    for schema in ["user", "order"] {
        let options = PostgresOptions::new(&database.url).schema(schema);
        let storage = PostgresStorage::connect_with(options.clone())
            .await
            .unwrap_or_else(|e| panic!("{schema}: {e}"));
        storage
            .append("s", &[ChatMessage::user(schema)])
            .await
            .unwrap();
        storage.close().await;
        let again = PostgresStorage::connect_existing(options)
            .await
            .unwrap()
            .expect("the storage exists");
        assert_eq!(again.schema(), schema);
        assert_eq!(again.load("s").await.unwrap(), [ChatMessage::user(schema)]);
        again.close().await;
    }
    // A name PostgreSQL keeps for itself is refused before connecting, saying so.
    let options = PostgresOptions::new(&database.url).schema("pg_chat");
    let err = PostgresStorage::connect_with(options).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("reserved"), "{err}");
}

/// One statement binds every message of a write, and PostgreSQL reads at most 1 GiB of
/// it: past that it dropped the connection, reported as a retryable "cannot reach the
/// server", so a retry sent the gigabyte again and failed the same way.
#[tokio::test]
async fn a_write_past_the_gigabyte_a_statement_carries_is_refused_before_it_is_sent() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = PostgresStorage::connect_with(harness.options())
        .await
        .unwrap();
    let kept = [ChatMessage::user("kept")];
    storage.append("s", &kept).await.unwrap();
    // A control character is six bytes of JSON (`\u0001`): 1.08 GB of it.
    let huge = [ChatMessage::user("\u{1}".repeat(180 << 20))];
    // Every write encodes its messages through the same check (`Batch::of`); one is
    // enough, as encoding a gigabyte takes a while in a debug build.
    let err = storage.append("s", &huge).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidMessage { index: 0, .. }),
        "{err}"
    );
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains("1023 MiB in one statement"),
        "{err}"
    );
    assert_eq!(storage.load("s").await.unwrap(), kept, "nothing written");
    storage.close().await;
}

/// `Duration::MAX` made the driver's pool panic adding it to the clock, and a statement
/// timeout past PostgreSQL's int of milliseconds made every connection fail to start
/// ("invalid value for parameter"); both are taken as the server's longest now.
#[tokio::test]
async fn timeouts_past_the_servers_longest_are_taken_as_it() {
    let Some(harness) = harness().await else {
        return;
    };
    for longest in [Duration::MAX, Duration::from_secs(30 * 24 * 3600)] {
        let options = harness
            .options()
            .connect_timeout(longest)
            .statement_timeout(Some(longest));
        let storage = tokio::spawn(PostgresStorage::connect_with(options))
            .await
            .expect("opening does not panic")
            .expect("opening succeeds");
        let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(storage.pool())
            .await
            .unwrap();
        assert_eq!(timeout, "2147483647ms");
        storage
            .append("s", &[ChatMessage::user("hi")])
            .await
            .unwrap();
        storage.close().await;
    }
}

/// A zero statement timeout became 1 ms: every statement was cancelled with a retryable
/// "ran past the statement timeout", opening included, so the storage never opened and
/// a retry never helped. A zero connect timeout failed every open as a retryable "no
/// answer from the PostgreSQL server ... check that it is running".
#[tokio::test]
async fn zero_timeouts_are_refused_saying_what_to_give() {
    let Some(harness) = harness().await else {
        return;
    };
    let options = harness.options().statement_timeout(Some(Duration::ZERO));
    let err = PostgresStorage::connect_with(options).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("cancel every statement"), "{err}");
    let options = harness.options().connect_timeout(Duration::ZERO);
    let err = PostgresStorage::connect_with(options).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("a connect timeout of 0"), "{err}");
    assert!(!harness.exists().await, "nothing was created");
}

/// A standby, or `default_transaction_read_only`, refused an append with "cannot execute
/// SELECT in a read-only transaction": the statement's word, saying nothing of why.
#[tokio::test]
async fn a_read_only_database_refuses_writes_saying_where_to_write() {
    let Some(harness) = harness().await else {
        return;
    };
    let writer = PostgresStorage::connect_with(harness.options())
        .await
        .unwrap();
    writer
        .append("s", &[ChatMessage::user("kept")])
        .await
        .unwrap();
    writer.close().await;
    let url = format!(
        "{}&options[default_transaction_read_only]=on",
        harness.storage_url()
    );
    let reader = PostgresStorage::connect(&url).await.unwrap();
    assert_eq!(reader.load("s").await.unwrap().len(), 1, "reads work");
    let errors = [
        reader
            .append("s", &[ChatMessage::user("lost")])
            .await
            .unwrap_err(),
        reader.save("s", &[]).await.unwrap_err(),
    ];
    for err in errors {
        assert!(!err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(text.contains("the database is read-only"), "{text}");
        assert!(text.contains("point it at the primary"), "{text}");
    }
    assert_eq!(reader.load("s").await.unwrap().len(), 1, "nothing changed");
    reader.close().await;
}

/// A certificate the handshake refused was "cannot reach the PostgreSQL server ... check
/// that it is running", retryable: a retry layer retried a configuration error. A server
/// without TLS fails with the driver's TLS error, which says the same. A test server has
/// no certificate a public root trusts (Debian's is self-signed, a throwaway cluster has
/// none), so the handshake always refuses it here.
#[tokio::test]
async fn a_certificate_that_does_not_verify_is_a_tls_error_not_worth_retrying() {
    let Some(harness) = harness().await else {
        return;
    };
    let url = format!("{}&sslmode=verify-full", harness.storage_url());
    let err = match PostgresStorage::connect(&url).await {
        Ok(storage) => {
            storage.close().await;
            panic!(
                "the test server's certificate verified for {url}; this test needs one that does not"
            );
        }
        Err(err) => err,
    };
    assert!(!err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(text.contains("TLS failed"), "{text}");
    assert!(text.contains("sslmode"), "{text}");
}

/// A cursor holds any whole number of microseconds, and a cursor made for an instant
/// (`Cursor::updated_before`, what `fusion sessions purge --older-than` pages from) can
/// lie thousands of years away. PostgreSQL's timestamps end within a few hundred thousand
/// years of 1970 (and before 4713 BC), so such a cursor failed the listing with "interval
/// out of range" or "timestamp out of range"; it lists as on every other backend: all
/// sessions after a cursor past the end of time, none after one before its start.
#[tokio::test]
async fn a_cursor_past_either_end_of_time_lists_as_any_cursor_does() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    storage
        .append("s", &[ChatMessage::user("hi")])
        .await
        .unwrap();
    let after = |micros: i64| {
        let cursor: Cursor = format!("u.{micros}.zz").parse().unwrap();
        SessionQuery::new().after(Some(cursor))
    };
    for (micros, listed) in [
        (i64::MAX, 1),
        (i64::MAX / 2, 1),
        (i64::MIN, 0),
        (-300_000_000_000_000_000, 0),
    ] {
        let page = storage
            .list_page(&after(micros))
            .await
            .unwrap_or_else(|e| panic!("{micros}: {e}"));
        assert_eq!(page.sessions.len(), listed, "{micros}");
    }
    let long_ago = SystemTime::UNIX_EPOCH - Duration::from_secs(10_000 * 365 * 86_400);
    let before = SessionQuery::new().after(Some(Cursor::updated_before(long_ago)));
    assert!(
        storage
            .list_page(&before)
            .await
            .unwrap()
            .sessions
            .is_empty()
    );
}
