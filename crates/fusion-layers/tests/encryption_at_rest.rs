//! The bytes a backend stores under the encryption layer hold none of the plaintext: a
//! marker written in every field of a message is nowhere in the JSONL files, the SQLite
//! database (with its WAL) or the Redis values, while the encrypted form is.

#![cfg(feature = "encryption")]

use std::path::Path;
use std::sync::Arc;

use fusion_core::testkit::unavailable;
use fusion_core::{
    ChatMessage, ConversationStorage, SessionMeta, SessionTimes, StorageExt, ToolCall,
};
use fusion_layers::encryption::{EncryptionKeys, EncryptionLayer};
use fusion_storage_fs::FileSystemStorage;
use fusion_storage_redis::{RedisOptions, RedisStorage};
use fusion_storage_sqlite::SqliteStorage;

const MARKER: &str = "PLAINTEXT-MARKER-q7Zk";

fn layer() -> EncryptionLayer {
    EncryptionLayer::new(EncryptionKeys::new("k1", &[0x42; 32]).unwrap())
}

/// Messages carrying the marker in content, tool calls, tool call id, name and metadata.
fn secret_messages() -> Vec<ChatMessage> {
    let mut named = ChatMessage::user(format!("my password is {MARKER}"));
    named.name = Some(format!("{MARKER}-name"));
    vec![
        named,
        ChatMessage::assistant_with_tool_calls(
            "",
            vec![ToolCall::new(
                format!("{MARKER}-id"),
                "lookup",
                format!("{{\"q\":\"{MARKER}\"}}"),
            )],
        ),
        ChatMessage::tool_result(format!("{MARKER}-id"), "found")
            .with_metadata("note", serde_json::json!({ "m": MARKER })),
    ]
}

/// Writes the secret messages through every call that carries messages, then checks
/// they read back.
async fn write_secrets(storage: &Arc<dyn ConversationStorage>) {
    let messages = secret_messages();
    storage.save("saved", &messages).await.unwrap();
    storage.append("appended", &messages).await.unwrap();
    storage
        .create_session("created", &SessionMeta::default(), &messages)
        .await
        .unwrap();
    let now = std::time::SystemTime::now();
    let minutes = |n: u64| std::time::Duration::from_secs(60 * n);
    let times = SessionTimes::new(now - minutes(60), now - minutes(1));
    storage
        .create_session_with_times("copied", &SessionMeta::default(), &messages, times)
        .await
        .unwrap();
    for id in ["saved", "appended", "created", "copied"] {
        assert_eq!(storage.load(id).await.unwrap(), messages, "{id}");
    }
}

/// The bytes of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            bytes.extend(all_bytes(&path));
        } else {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn the_jsonl_files_hold_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FileSystemStorage::connect(dir.path().join("sessions"))
        .await
        .unwrap();
    let storage = Arc::new(fs).layer(layer());
    write_secrets(&storage).await;
    let bytes = all_bytes(dir.path());
    assert!(
        contains(&bytes, "fusion:enc:v1:k1:"),
        "no encrypted message found"
    );
    assert!(!contains(&bytes, MARKER));
}

#[tokio::test]
async fn the_sqlite_file_holds_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    let sqlite = SqliteStorage::connect(&url).await.unwrap();
    let storage = Arc::new(sqlite.clone()).layer(layer());
    write_secrets(&storage).await;
    // Closed, and awaited: a pool dropped instead closes its connections on their own
    // threads while the files are read, and the last to close checkpoints the WAL into
    // the database and deletes it, between the listing of the directory and the read of
    // the file (NotFound), or after the database was read (the encrypted form then in
    // neither copy read). Once closed, nothing touches the files: every page is in them.
    sqlite.close().await;
    let bytes = all_bytes(dir.path());
    assert!(
        contains(&bytes, "fusion:enc:v1:k1:"),
        "no encrypted message found"
    );
    assert!(!contains(&bytes, MARKER));
}

#[tokio::test]
async fn the_redis_values_hold_no_plaintext() {
    let Some(url) = std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    else {
        let _: Option<()> = unavailable(
            "redis",
            "set REDIS_URL=redis://127.0.0.1:6379 to run this test",
        );
        return;
    };
    let prefix = format!(
        "fusion-test-enc:{}-{}",
        std::process::id(),
        fusion_core::new_generation()
    );
    let redis = RedisStorage::connect_with(&url, RedisOptions::new().key_prefix(&prefix))
        .await
        .unwrap();
    let storage = Arc::new(redis).layer(layer());
    write_secrets(&storage).await;

    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut raw)
        .await
        .unwrap();
    let mut values = Vec::new();
    for key in &keys {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut raw)
            .await
            .unwrap();
        let read = match kind.as_str() {
            "list" => redis::cmd("LRANGE").arg(key).arg(0).arg(-1).clone(),
            "hash" => redis::cmd("HGETALL").arg(key).clone(),
            "zset" => redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).clone(),
            "set" => redis::cmd("SMEMBERS").arg(key).clone(),
            _ => redis::cmd("GET").arg(key).clone(),
        };
        let items: Vec<Vec<u8>> = read.query_async(&mut raw).await.unwrap();
        values.extend(items.concat());
    }
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        contains(&values, "fusion:enc:v1:k1:"),
        "no encrypted message found"
    );
    assert!(!contains(&values, MARKER));
}
