//! A database written by the first release (schema version 1) opens with this build,
//! is upgraded to the current schema, and keeps every message.

use std::path::{Path, PathBuf};

use fusion_core::{ChatMessage, ConversationStorage, ToolCall};
use fusion_storage_sqlite::SqliteStorage;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

/// The migration files shipped in this crate, sorted by version.
fn migration_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    files
}

/// Messages exactly as release 0.1 stored them: the OpenAI chat-message JSON.
const V1_ROWS: [&str; 4] = [
    r#"{"role":"system","content":"You are terse."}"#,
    r#"{"role":"user","content":"list /tmp"}"#,
    r#"{"role":"assistant","content":"","tool_calls":[{"id":"call_1","type":"function","function":{"name":"list_directory","arguments":"{\"path\":\"/tmp\"}"}}]}"#,
    r#"{"role":"tool","content":"a.txt","tool_call_id":"call_1"}"#,
];

fn v1_history() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You are terse."),
        ChatMessage::user("list /tmp"),
        ChatMessage::assistant_with_tool_calls(
            "",
            vec![ToolCall::new(
                "call_1",
                "list_directory",
                r#"{"path":"/tmp"}"#,
            )],
        ),
        ChatMessage::tool_result("call_1", "a.txt"),
    ]
}

/// Builds a schema-version-1 database by running only the first migration, then fills it
/// the way release 0.1 did.
async fn create_v1_database(path: &Path) {
    let v1_dir = tempfile::tempdir().unwrap();
    let first = &migration_files()[0];
    std::fs::copy(first, v1_dir.path().join(first.file_name().unwrap())).unwrap();
    let v1 = Migrator::new(v1_dir.path()).await.unwrap();
    assert_eq!(v1.iter().count(), 1);

    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
    v1.run(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO sessions (id, created_at, updated_at, message_count) \
         VALUES ('user-123', 1700000000000, 1700000060000, 4)",
    )
    .execute(&pool)
    .await
    .unwrap();
    for (seq, row) in V1_ROWS.iter().enumerate() {
        sqlx::query("INSERT INTO messages (session_id, seq, message) VALUES ('user-123', ?1, ?2)")
            .bind(i64::try_from(seq).unwrap())
            .bind(*row)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

#[tokio::test]
async fn a_version_1_database_opens_upgrades_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    create_v1_database(&path).await;

    let storage = SqliteStorage::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(storage.pool())
        .await
        .unwrap();
    assert_eq!(
        usize::try_from(applied).unwrap(),
        migration_files().len(),
        "every migration is applied after opening"
    );

    assert_eq!(storage.load("user-123").await.unwrap(), v1_history());
    assert_eq!(storage.list_sessions().await.unwrap(), vec!["user-123"]);
    let info = storage.session_info("user-123").await.unwrap().unwrap();
    assert_eq!(info.message_count, 4);
    assert_eq!(
        info.created_at,
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_000))
    );

    // Appends continue the old sequence.
    let reply = ChatMessage::assistant("a.txt is there.");
    storage
        .append("user-123", std::slice::from_ref(&reply))
        .await
        .unwrap();
    let mut expected = v1_history();
    expected.push(reply);
    assert_eq!(storage.load("user-123").await.unwrap(), expected);

    // Opening again is a no-op: nothing is re-applied.
    storage.close().await;
    let again = SqliteStorage::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(again.load("user-123").await.unwrap(), expected);
}
