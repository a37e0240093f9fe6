//! A history longer than SQLite's longest string or blob (`SQLITE_MAX_LENGTH`, 10^9 bytes
//! by default) though each of its messages is shorter: appends store it a message at a
//! time, and every load must read it back. On the pool (`sqlite::memory:`, `from_pool`) a
//! load first asks SQLite for the whole history joined into one JSON array, which such a
//! history cannot be; the rows are then read one by one, as the direct path always does.
//! A write binds its messages as one JSON text, so a batch whose JSON passes that limit
//! is refused before anything is written, naming the message that passes it.
//!
//! It holds a few gigabytes for tens of seconds, too much for every CI run, so it is
//! ignored: run it with `cargo test -p fusion-storage-sqlite --test long_histories --
//! --ignored`. The same paths run on every test run at a length limit of a few hundred
//! bytes, which only a rusqlite connection can be given (sqlx has no safe way to set it):
//! the refusal in `src/sql/batch.rs`, the one-array reads failing with `SQLITE_TOOBIG`
//! while the rows read in `src/sql/tests.rs`, and the pool's fall back on that error in
//! `src/pooled.rs`.

use fusion_core::{ChatMessage, ConversationStorage, Error};
use fusion_storage_sqlite::SqliteStorage;

#[tokio::test]
#[ignore = "holds a few GB for tens of seconds; the same paths run cheaply in the crate's unit tests"]
async fn a_history_past_sqlites_longest_string_loads_on_the_pool() {
    let storage = SqliteStorage::connect("sqlite::memory:").await.unwrap();
    // 520 MiB each: two of them pass 10^9 bytes only together.
    let big = ChatMessage::user("x".repeat(520 << 20));
    let both = [big.clone(), big.clone()];
    match storage.append("s", &both).await {
        Err(Error::InvalidMessage { index, detail, .. }) => {
            assert_eq!(index, 1, "{detail}");
            assert!(detail.contains("smaller batches"), "{detail}");
        }
        other => panic!(
            "expected InvalidMessage, got {:?}",
            other.map_err(|e| e.to_string())
        ),
    }
    assert!(
        storage.session_info("s").await.unwrap().is_none(),
        "nothing written"
    );
    for _ in 0..2 {
        storage
            .append("s", std::slice::from_ref(&big))
            .await
            .unwrap();
    }
    let history = storage.load("s").await.unwrap();
    assert!(history.len() == 2 && history.iter().all(|m| *m == big));
    let (history, at) = storage.load_revision("s").await.unwrap();
    assert_eq!((history.len(), at.len), (2, 2));
    assert!(history.iter().all(|m| *m == big));
}
