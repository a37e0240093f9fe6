//! WAL checkpoints run in the background (see `src/checkpoint.rs`): writes never wait for
//! SQLite's automatic one, and the write-ahead log must still stay bounded under a steady
//! stream of appends, where a passive checkpoint never catches up with the writer.

use fusion_core::{ChatMessage, ConversationStorage};
use fusion_storage_sqlite::SqliteStorage;

/// SQLite's page size for a new database, and the header each log frame adds to a page.
const FRAME_BYTES: u64 = 4096 + 24;

async fn wal_frames(storage: &SqliteStorage, db: &std::path::Path) -> (i64, u64) {
    let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(storage.pool())
        .await
        .unwrap();
    let wal = db.with_extension("db-wal");
    let frames = std::fs::metadata(&wal).map_or(0, |m| m.len() / FRAME_BYTES);
    (autocheckpoint, frames)
}

#[tokio::test]
async fn the_log_stays_bounded_under_a_stream_of_appends() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sessions.db");
    let storage = SqliteStorage::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();

    // Each append changes at least three pages (the session row, the message row and its
    // index entry), so without any checkpoint 3,000 appends leave a log of ≥ 9,000 frames.
    const APPENDS: usize = 3_000;
    for i in 0..APPENDS {
        let message = ChatMessage::user(format!("{i} {}", "x".repeat(200)));
        storage.append("stream", &[message]).await.unwrap();
    }

    let (autocheckpoint, frames) = wal_frames(&storage, &db).await;
    assert_eq!(
        autocheckpoint, 0,
        "the pool's connections leave checkpoints to Fusion"
    );
    // The background task restarts the log above 4,000 frames; a few hundred more can be
    // written while it waits for its turn.
    assert!(
        frames < 6_000,
        "the log grew to {frames} frames: background checkpoints are not bounding it"
    );
    let loaded = storage.load("stream").await.unwrap();
    assert_eq!(loaded.len(), APPENDS);
    assert!(loaded[APPENDS - 1].content.starts_with("2999 "));

    // Closing checkpoints whatever is left; a fresh storage reads everything back.
    storage.close().await;
    let reopened = SqliteStorage::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    assert_eq!(reopened.load("stream").await.unwrap(), loaded);
}

#[tokio::test]
async fn a_callers_pool_keeps_sqlites_own_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("own.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let storage = SqliteStorage::from_pool(pool).await.unwrap();
    storage
        .append("s", &[ChatMessage::user("hi")])
        .await
        .unwrap();
    let (autocheckpoint, _) = wal_frames(&storage, &db).await;
    assert_eq!(autocheckpoint, 1000, "SQLite's default, untouched");
}
