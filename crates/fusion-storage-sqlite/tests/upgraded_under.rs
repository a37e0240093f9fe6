//! A storage still open while a newer release upgrades its database's schema (a process
//! on that release opening the same file): a call the newer schema breaks says so, and
//! what to do, instead of SQLite's bare "no such table".

use fusion_core::{ChatMessage, ConversationStorage, Error, SessionMeta};
use fusion_storage_sqlite::SqliteStorage;

/// What a newer release's migration does to the schema: one that this build's statements
/// no longer fit (a table renamed), recorded as sqlx records a migration.
const NEWER_MIGRATION: [&str; 2] = [
    "ALTER TABLE messages RENAME TO message_rows",
    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
     VALUES (9999, 'a newer release', true, x'00', 0)",
];

/// Found by a review: each call failed with "no such table: messages (SQLite code 1)",
/// which said nothing of why or what to do. On both paths (a file this crate opened, its
/// direct connections; an in-memory database, the pool).
#[tokio::test]
async fn a_call_the_newer_schema_breaks_says_the_schema_changed_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = format!("sqlite://{}", dir.path().join("s.db").display());
    for url in [file.as_str(), "sqlite::memory:"] {
        let storage = SqliteStorage::connect(url).await.unwrap();
        storage.save("s", &[ChatMessage::user("a")]).await.unwrap();
        for sql in NEWER_MIGRATION {
            sqlx::query(sql).execute(storage.pool()).await.unwrap();
        }
        let history = [ChatMessage::user("b")];
        let meta = SessionMeta::new();
        let calls = [
            (
                "create_session",
                storage.create_session("t", &meta, &history).await.map(drop),
            ),
            ("append", storage.append("s", &history).await.map(drop)),
            ("load", storage.load("s").await.map(drop)),
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
                "{url}, {call}: {err:?}"
            );
            assert!(
                message.contains("no such table: messages")
                    && message.contains("a newer Fusion release upgraded its schema")
                    && message.contains("restart this process on that release"),
                "{url}, {call}: {message}"
            );
        }
        storage.close().await;
    }
    // Opening the file again names the version, as the message says.
    let reopened = SqliteStorage::connect(&file).await.unwrap_err().to_string();
    assert!(reopened.contains("schema version 9999"), "{reopened}");
}

/// Found by a review: a table dropped or renamed by hand before the storage opened the
/// file (its migration records untouched, so the open finds the schema current) failed
/// each call saying the schema changed while the storage had it open, and that opening
/// the database again names the version: neither is true there, and a restart changed
/// nothing. The error now says what is missing and both ways it may have gone.
#[tokio::test]
async fn a_table_removed_by_hand_before_the_open_is_said_to_be_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let url = format!("sqlite://{}", path.display());
    let storage = SqliteStorage::connect(&url).await.unwrap();
    storage.save("s", &[ChatMessage::user("a")]).await.unwrap();
    storage.close().await;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(NEWER_MIGRATION[0])
        .unwrap();
    // The open reads the migration records only, so it finds the schema current.
    let storage = SqliteStorage::connect(&url).await.unwrap();
    let err = storage.load("s").await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(
            err,
            Error::Backend {
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        message.contains("no such table: messages")
            && message.contains("is missing from the database")
            && message.contains("dropped or renamed by hand")
            && !message.contains("schema changed while this storage had it open"),
        "{message}"
    );
    storage.close().await;
}
