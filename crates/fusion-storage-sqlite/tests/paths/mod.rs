//! The three ways a storage writes, for the tests that run each case on all of them: a
//! database file this crate opened (the direct path), `sqlite::memory:` and a caller's
//! pool with foreign keys (and so the cascade) off (both through sqlx).

use fusion_storage_sqlite::{SqlitePool, SqliteStorage};
use sqlx::sqlite::SqliteConnectOptions;

/// Storages on a new file, a new in-memory database and a caller's pool with foreign keys
/// off, with what keeps the files.
pub async fn every_path() -> Vec<(Option<tempfile::TempDir>, SqliteStorage)> {
    let file = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", file.path().join("r.db").display());
    let direct = SqliteStorage::connect(&url).await.unwrap();
    let memory = SqliteStorage::connect("sqlite::memory:").await.unwrap();
    let pooled = tempfile::tempdir().unwrap();
    let options = SqliteConnectOptions::new()
        .filename(pooled.path().join("p.db"))
        .create_if_missing(true)
        .foreign_keys(false);
    let pool = SqlitePool::connect_with(options).await.unwrap();
    let caller = SqliteStorage::from_pool(pool).await.unwrap();
    vec![(Some(file), direct), (None, memory), (Some(pooled), caller)]
}
