//! A storage still open while a newer release upgrades its schema (a rolling upgrade, or
//! an old process left running): a call the newer schema breaks says so, and what to do,
//! instead of calling it a change made outside Fusion.

use fusion_core::testkit::StorageHarness;
use fusion_core::{ChatMessage, ConversationStorage, Error, MetaUpdate, SessionMeta, SessionQuery};
use fusion_storage_postgres::PostgresStorage;
use fusion_storage_postgres::testing::harness;

/// What a newer release's migration does to the schema: one that this build's statements
/// no longer fit (a column renamed), recorded as sqlx records a migration.
const NEWER_MIGRATION: [&str; 2] = [
    "ALTER TABLE sessions RENAME COLUMN title TO subject",
    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
     VALUES (9999, 'a newer release', true, '\\x00', 0)",
];

/// Found by a review: the call failed with "the schema was changed outside Fusion
/// (SQLSTATE 42703)", wrong about who changed it and silent on what to do.
#[tokio::test]
async fn a_call_the_newer_schema_breaks_says_a_newer_release_upgraded_it() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    storage.save("s", &[ChatMessage::user("a")]).await.unwrap();
    let mut raw = harness.raw().await;
    for sql in NEWER_MIGRATION {
        sqlx::query(sql).execute(&mut raw).await.unwrap();
    }
    let retitle = MetaUpdate::new().title(Some("t"));
    let history = [ChatMessage::user("b")];
    let calls = [
        (
            "update_session",
            storage.update_session("s", &retitle).await.map(drop),
        ),
        ("session_info", storage.session_info("s").await.map(drop)),
        (
            "create_session",
            storage
                .create_session("t", &SessionMeta::new(), &history)
                .await
                .map(drop),
        ),
        (
            "list_page",
            storage.list_page(&SessionQuery::default()).await.map(drop),
        ),
    ];
    for (call, result) in calls {
        let err = result.unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(
                err,
                Error::Backend {
                    retryable: false,
                    ..
                }
            ),
            "{call}: {err:?}"
        );
        assert!(
            message.contains("upgraded to schema version 9999 by a newer Fusion release")
                && message.contains("restart this process on that release")
                && !message.contains("outside Fusion"),
            "{call}: {message}"
        );
    }
    // Opening the storage again is refused as before, naming the version.
    let reopened = harness.open().await.unwrap_err().to_string();
    assert!(reopened.contains("schema version 9999"), "{reopened}");
    storage.close().await;
}

/// A schema changed by hand (no migration recorded) is still reported as changed outside
/// Fusion.
#[tokio::test]
async fn a_call_a_hand_edit_of_the_schema_breaks_still_says_so() {
    let Some(harness) = harness().await else {
        return;
    };
    let storage = harness.open().await.unwrap();
    storage.save("s", &[ChatMessage::user("a")]).await.unwrap();
    let mut raw = harness.raw().await;
    sqlx::query(NEWER_MIGRATION[0])
        .execute(&mut raw)
        .await
        .unwrap();
    let retitle = MetaUpdate::new().title(Some("t"));
    let message = storage
        .update_session("s", &retitle)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("outside Fusion") && !message.contains("newer"),
        "{message}"
    );
    storage.close().await;
}

/// Found by a review: a column changed to a type this build still reads (`text` to
/// `varchar`, by a newer release or by hand) made every pooled connection that had
/// prepared a statement returning it fail that call for good ("cached plan must not
/// change result type", not retryable) until the process restarted. Now the call fails
/// retryably, saying so, and the next call works on a connection prepared afresh.
#[tokio::test]
async fn a_column_whose_type_changed_under_prepared_statements_fails_one_call_retryably() {
    let Some(harness) = harness().await else {
        return;
    };
    // One connection: the one that prepared the statement serves the next call.
    let options = harness.options().max_connections(1);
    let storage = PostgresStorage::connect_with(options).await.unwrap();
    storage.save("s", &[ChatMessage::user("a")]).await.unwrap();
    assert!(storage.session_info("s").await.unwrap().is_some());
    let mut raw = harness.raw().await;
    sqlx::query("ALTER TABLE sessions ALTER COLUMN title TYPE varchar(200)")
        .execute(&mut raw)
        .await
        .unwrap();
    let err = storage.session_info("s").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("the schema changed under this storage") && message.contains("retry"),
        "{message}"
    );
    for _ in 0..3 {
        assert!(storage.session_info("s").await.unwrap().is_some());
    }
    storage.close().await;
}
