//! `SqliteStorage` in the environments a deployment meets that are not its own: a file
//! that is not a database or is damaged, another application's database, a directory
//! it cannot write, a full disk, another process holding the write lock, odd URLs and
//! symbolic links. Each gives a clear error naming the file, says whether retrying can
//! help, and leaves what was stored as it was.

use std::path::Path;

use fusion_core::{ChatMessage, ConversationStorage, Error};
use fusion_storage_sqlite::SqliteStorage;

fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

fn turn(text: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::user(text),
        ChatMessage::assistant(format!("{text}-reply")),
    ]
}

/// The names of the tables and indexes of the database at `path`, read with a plain
/// connection that changes nothing.
fn schema_names(path: &Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut names = conn
        .prepare("SELECT name FROM sqlite_master ORDER BY name")
        .unwrap();
    names
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Asserts that `err` is the refusal of another application's database at `path`.
fn assert_refused_as_foreign(err: &Error, path: &Path, table: &str) {
    let text = err.to_string();
    assert!(text.contains(&*path.to_string_lossy()), "{text}");
    assert!(text.contains("not a Fusion database"), "{text}");
    assert!(text.contains(table), "{text}");
    assert!(!err.is_retryable(), "{text}");
}

/// A database of another application, whatever its tables are called (even `sessions` or
/// `messages` with columns of its own, or its own sqlx migrations), is refused before
/// anything is written: no Fusion table is added, its journal mode is not switched to WAL
/// (the file is the same byte for byte), no half-applied migration is left.
#[tokio::test]
async fn another_applications_database_is_refused_and_left_byte_for_byte_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let other_sqlx_app = "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, \
         description TEXT NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, \
         success BOOLEAN NOT NULL, checksum BLOB NOT NULL, execution_time BIGINT NOT NULL); \
         INSERT INTO _sqlx_migrations VALUES (1, 'init', '2024-01-01', 1, x'00', 0); \
         CREATE TABLE invoices (id INTEGER PRIMARY KEY);";
    for (name, schema, table) in [
        (
            "shop.db",
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); \
             INSERT INTO customers VALUES (1, 'Ada');",
            "customers",
        ),
        (
            "web.db",
            "CREATE TABLE sessions (token TEXT PRIMARY KEY, user TEXT); \
             INSERT INTO sessions VALUES ('t', 'u');",
            "sessions",
        ),
        (
            "mail.db",
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT);",
            "messages",
        ),
        ("billing.db", other_sqlx_app, "invoices"),
    ] {
        let path = dir.path().join(name);
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(schema)
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        let names = schema_names(&path);

        let err = SqliteStorage::connect(&url(&path)).await.unwrap_err();
        assert_refused_as_foreign(&err, &path, table);
        let read_only = format!("{}?mode=ro", url(&path));
        let err = SqliteStorage::connect(&read_only).await.unwrap_err();
        assert_refused_as_foreign(&err, &path, table);
        // Not `assert_eq!`: the file's bytes would fill the report.
        assert!(
            std::fs::read(&path).unwrap() == before,
            "{name} was changed"
        );

        // A caller's pool (its settings are its own) is refused as well, before migrating.
        let pool = fusion_storage_sqlite::SqlitePool::connect(&url(&path))
            .await
            .unwrap();
        let err = SqliteStorage::from_pool(pool.clone()).await.unwrap_err();
        assert_refused_as_foreign(&err, &path, table);
        pool.close().await;
        assert_eq!(schema_names(&path), names, "{name} was migrated");
    }
}

/// An empty file, or a database with no tables yet, is a new database: it opens and
/// gets Fusion's schema, and a database Fusion created opens again.
#[tokio::test]
async fn an_empty_file_or_a_database_without_tables_is_a_new_database() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let blank = dir.path().join("blank.db");
    rusqlite::Connection::open(&blank)
        .unwrap()
        .execute_batch("PRAGMA user_version = 7; VACUUM;")
        .unwrap();
    for path in [empty, blank] {
        for _ in 0..2 {
            let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
            storage.append("s", &turn("one")).await.unwrap();
            storage.close().await;
        }
        let storage = SqliteStorage::connect(&url(&path)).await.unwrap();
        let mut expected = turn("one");
        expected.extend(turn("one"));
        assert_eq!(storage.load("s").await.unwrap(), expected);
        storage.close().await;
    }
}
