//! `PostgresStorage::connect_existing`: a schema that holds no storage opens as `None` and
//! is left as it was (no schema, no table made); one that does opens as with
//! `connect_with`, errors included. Its upgrade of an older schema is in `upgrade.rs`.

mod support;

use std::time::Duration;

use fusion_core::{ChatMessage, ConversationStorage};
use fusion_storage_postgres::{PostgresOptions, PostgresStorage};
use sqlx::Executor;
use support::{harness, refusing_port};

/// The tables of `schema`, by name, as the server's catalog lists them.
async fn tables(raw: &mut sqlx::PgConnection, schema: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1")
        .bind(schema)
        .fetch_all(raw)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_schema_that_does_not_exist_opens_as_none_and_is_not_created() {
    let Some(harness) = harness().await else {
        return;
    };
    let opened = PostgresStorage::connect_existing(harness.options())
        .await
        .unwrap();
    assert!(opened.is_none(), "nothing to open");
    assert!(!harness.exists().await, "schema {} created", harness.schema);
    // The same through the URL's `schema` parameter, as `StorageType` and the CLI give it.
    let options = PostgresOptions::new(harness.storage_url());
    let opened = PostgresStorage::connect_existing(options).await.unwrap();
    assert!(opened.is_none());
    assert!(!harness.exists().await, "schema {} created", harness.schema);
}

#[tokio::test]
async fn a_schema_holding_other_tables_only_opens_as_none_and_gains_none_of_ours() {
    let Some(harness) = harness().await else {
        return;
    };
    let mut raw = harness.raw().await;
    let schema = &harness.schema;
    raw.execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .unwrap();
    raw.execute(format!("CREATE TABLE {schema}.theirs (id int)").as_str())
        .await
        .unwrap();
    let opened = PostgresStorage::connect_existing(harness.options())
        .await
        .unwrap();
    assert!(opened.is_none(), "no storage in it");
    assert_eq!(tables(&mut raw, schema).await, ["theirs"]);
}

#[tokio::test]
async fn a_storage_connect_with_created_opens_with_what_was_written() {
    let Some(harness) = harness().await else {
        return;
    };
    let writer = PostgresStorage::connect_with(harness.options())
        .await
        .unwrap();
    let history = [ChatMessage::user("hello"), ChatMessage::assistant("hi")];
    writer.append("s", &history).await.unwrap();
    writer.close().await;

    let reader = PostgresStorage::connect_existing(harness.options())
        .await
        .unwrap()
        .expect("the storage exists");
    assert_eq!(reader.schema(), harness.schema);
    assert_eq!(reader.list_sessions().await.unwrap(), ["s"]);
    assert_eq!(reader.load("s").await.unwrap(), history);
    reader
        .append("s", &[ChatMessage::user("again")])
        .await
        .unwrap();
    assert_eq!(reader.load("s").await.unwrap().len(), 3, "it writes too");
    reader.close().await;
}

#[tokio::test]
async fn a_storage_from_a_newer_release_is_refused_as_connect_with_refuses_it() {
    let Some(harness) = harness().await else {
        return;
    };
    PostgresStorage::connect_with(harness.options())
        .await
        .unwrap()
        .close()
        .await;
    let mut raw = harness.raw().await;
    raw.execute(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', true, '\\x00', 0)",
    )
    .await
    .unwrap();
    let err = PostgresStorage::connect_existing(harness.options())
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(text.contains("schema version 9999"), "{text}");
    assert!(text.contains(&harness.schema), "{text}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_error_not_a_missing_storage() {
    let refusing = refusing_port();
    let url = format!("postgres://fusion:s3cret@127.0.0.1:{}/app", refusing.port);
    let options = PostgresOptions::new(&url).connect_timeout(Duration::from_secs(3));
    let err = PostgresStorage::connect_existing(options)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(text.contains("cannot reach"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}
