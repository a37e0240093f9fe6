//! The shared conformance suites (histories, then metadata and listing) over a database
//! file, whose writes go through the direct path, and over `sqlite::memory:`, whose writes
//! go through sqlx; plus how URLs and existing pools open.

use async_trait::async_trait;
use fusion_core::testkit::Clones;
use fusion_core::{ChatMessage, ConversationStorage, Result};
use fusion_storage_sqlite::{SqlitePool, SqliteStorage};

/// A fresh database file per case; every `open` is a new pool on that file.
struct FileHarness {
    _dir: tempfile::TempDir,
    url: String,
}

#[async_trait]
impl fusion_core::testkit::StorageHarness for FileHarness {
    type Storage = SqliteStorage;
    async fn open(&self) -> Result<SqliteStorage> {
        SqliteStorage::connect(&self.url).await
    }
}

async fn file_harness() -> Option<FileHarness> {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    Some(FileHarness { _dir: dir, url })
}

/// One in-memory database per case; `open` hands out clones so they share it.
async fn memory_harness() -> Option<Clones<SqliteStorage>> {
    let storage = SqliteStorage::connect("sqlite::memory:").await.unwrap();
    Some(Clones(storage))
}

fusion_core::conformance_suite!(conformance_sqlite, file_harness);
fusion_core::conformance_suite!(conformance_sqlite_memory, memory_harness);

#[tokio::test]
async fn each_memory_url_is_a_separate_database() {
    let a = SqliteStorage::connect("sqlite::memory:").await.unwrap();
    let b = SqliteStorage::connect("sqlite::memory:").await.unwrap();
    a.append("s", &[ChatMessage::user("only in a")])
        .await
        .unwrap();
    assert!(b.list_sessions().await.unwrap().is_empty());
    assert_eq!(a.database(), ":memory:");
    assert_eq!(a.backend_name(), "sqlite");
}

#[tokio::test]
async fn connect_creates_the_file_and_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/sessions.db");
    let storage = SqliteStorage::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    storage
        .append("s", &[ChatMessage::user("hi")])
        .await
        .unwrap();
    assert!(path.is_file());
    assert_eq!(storage.database(), path.display().to_string());
}

#[tokio::test]
async fn from_pool_migrates_a_callers_pool_and_shares_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("own.db"))
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(options).await.unwrap();
    let storage = SqliteStorage::from_pool(pool.clone()).await.unwrap();
    storage
        .append("s", &[ChatMessage::user("hi")])
        .await
        .unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT message_count FROM sessions WHERE id = 's'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    assert!(storage.database().ends_with("own.db"));
}

#[tokio::test]
async fn mode_rw_refuses_to_create_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.db");
    let err = SqliteStorage::connect(&format!("sqlite://{}?mode=rw", path.display()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    assert!(!path.exists());
}
