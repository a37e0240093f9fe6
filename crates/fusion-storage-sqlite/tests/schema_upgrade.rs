//! A database written by the first release (schema version 1, before sessions had
//! generations) opens with this build, is upgraded to the current schema, and keeps every
//! message; its sessions read as [`LEGACY_GENERATION`] until their first rewrite. One of
//! schema version 4 gains message ids and stores each new one once. The
//! fixtures are built by running only a version's migrations
//! ([`database_at_version`]), so each later schema version gets its fixture for free. A
//! database that a build from a CRLF checkout made opens too.

use std::path::{Path, PathBuf};

use fusion_core::{
    Change, ChatMessage, ConversationStorage, Expect, LEGACY_GENERATION, Revision, ToolCall,
};
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

/// A new database at schema version `version`: only the first `version` migrations run,
/// as the release that shipped them would have run them.
async fn database_at_version(path: &Path, version: usize) -> sqlx::SqlitePool {
    database_from_checkout(path, version, "\n").await
}

/// [`database_at_version`] as a build from a checkout whose migration files end their
/// lines with `line_end` would have made it: sqlx records the checksums of the text as
/// the build embedded it (a Windows checkout with `core.autocrlf` makes it CRLF).
async fn database_from_checkout(path: &Path, version: usize, line_end: &str) -> sqlx::SqlitePool {
    let dir = tempfile::tempdir().unwrap();
    for file in &migration_files()[..version] {
        let text = std::fs::read_to_string(file).unwrap();
        let copy = dir.path().join(file.file_name().unwrap());
        std::fs::write(copy, text.replace('\n', line_end)).unwrap();
    }
    let migrator = Migrator::new(dir.path()).await.unwrap();
    assert_eq!(migrator.iter().count(), version);
    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
    migrator.run(&pool).await.unwrap();
    pool
}

/// Stores a session of `rows` the way release 0.1 did (schema version 1 has no
/// generation column).
async fn insert_v1_session(pool: &sqlx::SqlitePool, id: &str, rows: &[&str]) {
    sqlx::query(
        "INSERT INTO sessions (id, created_at, updated_at, message_count) \
         VALUES (?1, 1700000000000, 1700000060000, ?2)",
    )
    .bind(id)
    .bind(i64::try_from(rows.len()).unwrap())
    .execute(pool)
    .await
    .unwrap();
    for (seq, row) in rows.iter().enumerate() {
        sqlx::query("INSERT INTO messages (session_id, seq, message) VALUES (?1, ?2, ?3)")
            .bind(id)
            .bind(i64::try_from(seq).unwrap())
            .bind(*row)
            .execute(pool)
            .await
            .unwrap();
    }
}

/// A schema-version-1 database holding the session `user-123` as release 0.1 stored it.
async fn create_v1_database(path: &Path) {
    let pool = database_at_version(path, 1).await;
    insert_v1_session(&pool, "user-123", &V1_ROWS).await;
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

#[tokio::test]
async fn version_1_sessions_read_as_legacy_until_their_first_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    create_v1_database(&path).await;
    let pool = SqlitePoolOptions::new()
        .connect_with(SqliteConnectOptions::new().filename(&path))
        .await
        .unwrap();
    insert_v1_session(&pool, "short", &V1_ROWS[..2]).await;
    pool.close().await;

    let storage = SqliteStorage::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let legacy = |len| Revision {
        generation: LEGACY_GENERATION,
        len,
    };
    let (history, at) = storage.load_revision("user-123").await.unwrap();
    assert_eq!(history, v1_history());
    assert_eq!(at, legacy(4));
    let (history, at) = storage.load_revision("short").await.unwrap();
    assert_eq!(history, v1_history()[..2]);
    assert_eq!(at, legacy(2));

    // An append, plain or conditional on the legacy generation, keeps it.
    storage
        .append("short", &[ChatMessage::user("more")])
        .await
        .unwrap();
    let kept = storage
        .write_if(
            "short",
            Expect::Generation(LEGACY_GENERATION),
            Change::Append(&[ChatMessage::user("still more")]),
        )
        .await
        .unwrap();
    assert_eq!(kept, LEGACY_GENERATION);
    assert_eq!(storage.load_revision("short").await.unwrap().1, legacy(4));

    // A truncate, plain or conditional, gives each session a fresh generation.
    storage.truncate("short", 3).await.unwrap();
    let (history, truncated) = storage.load_revision("short").await.unwrap();
    assert_eq!(history.len(), 3);
    assert!(truncated.generation > LEGACY_GENERATION, "{truncated:?}");
    assert_eq!(truncated.len, 3);

    let fresh = storage
        .write_if("user-123", Expect::Exactly(legacy(4)), Change::Truncate(3))
        .await
        .unwrap();
    assert!(fresh > LEGACY_GENERATION && fresh != truncated.generation);
    let (history, at) = storage.load_revision("user-123").await.unwrap();
    assert_eq!(history, v1_history()[..3]);
    assert_eq!(
        at,
        Revision {
            generation: fresh,
            len: 3
        }
    );
    // The legacy generation no longer admits a write.
    let stale = storage
        .write_if(
            "user-123",
            Expect::Generation(LEGACY_GENERATION),
            Change::Append(&[ChatMessage::user("late")]),
        )
        .await;
    assert!(
        matches!(stale, Err(fusion_core::Error::Conflict { .. })),
        "{stale:?}"
    );
    storage.close().await;
}

/// A database at every schema version up to this build's own opens and reads its
/// sessions' generations as stored: 1 for the versions before the column existed, the
/// stored value from version 2 on (so reopening never resets one); none of them expires.
#[tokio::test]
async fn a_database_at_each_schema_version_opens_with_its_generations() {
    const STORED: u64 = 4_503_599_627_370_497; // 2^52 + 1: below 2^53, as every generation
    for version in 1..=migration_files().len() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("v{version}.db"));
        let pool = database_at_version(&path, version).await;
        insert_v1_session(&pool, "s", &V1_ROWS).await;
        let expected = if version >= 2 {
            sqlx::query("UPDATE sessions SET generation = ?1 WHERE id = 's'")
                .bind(i64::try_from(STORED).unwrap())
                .execute(&pool)
                .await
                .unwrap();
            STORED
        } else {
            LEGACY_GENERATION
        };
        pool.close().await;

        for _reopened in 0..2 {
            let storage = SqliteStorage::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let (history, at) = storage.load_revision("s").await.unwrap();
            assert_eq!(history, v1_history(), "version {version}");
            assert_eq!(
                at,
                Revision {
                    generation: expected,
                    len: 4
                },
                "version {version}"
            );
            let info = storage.session_info("s").await.unwrap().unwrap();
            assert_eq!(
                (info.expires_at, info.meta.expiry),
                (None, None),
                "version {version}: no expiry"
            );
            storage.close().await;
        }
    }
}

/// A database of schema version 4 (the release before message ids) opens on either path,
/// gains the `message_id` column (NULL on every old row) and its index, keeps every
/// message, and stores each new message with an id once.
#[tokio::test]
async fn a_version_4_database_upgrades_and_stores_new_ids_once() {
    for pooled in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v4.db");
        let pool = database_at_version(&path, 4).await;
        insert_v1_session(&pool, "user-123", &V1_ROWS).await;
        pool.close().await;

        let storage = open(&path, pooled).await;
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(storage.pool())
                .await
                .unwrap();
        assert_eq!(versions, [1, 2, 3, 4, 5], "pooled: {pooled}");
        let (history, at) = storage.load_revision("user-123").await.unwrap();
        assert_eq!(history, v1_history(), "pooled: {pooled}");
        assert_eq!(at.len, 4);
        let recent: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT recent_ids FROM sessions WHERE id = 'user-123'")
                .fetch_one(storage.pool())
                .await
                .unwrap();
        assert_eq!(recent, None, "not known until the first append with ids");

        let batch = fusion_core::testkit::exactly_once::with_ids("new", 2);
        storage.append("user-123", &batch).await.unwrap();
        storage.append("user-123", &batch).await.unwrap();
        let generation = storage
            .write_if(
                "user-123",
                Expect::Generation(at.generation),
                Change::Append(&batch[1..]),
            )
            .await
            .unwrap();
        assert_eq!(generation, LEGACY_GENERATION, "an append keeps it");
        let mut expected = v1_history();
        expected.extend(batch.iter().cloned());
        let (history, at) = storage.load_revision("user-123").await.unwrap();
        assert_eq!(history, expected, "pooled: {pooled}");
        assert_eq!(at.len, 6, "pooled: {pooled}");

        let recent: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT recent_ids FROM sessions WHERE id = 'user-123'")
                .fetch_one(storage.pool())
                .await
                .unwrap();
        assert_eq!(
            recent,
            Some(fusion_core::RecentIds::of(&history).to_bytes()),
            "pooled: {pooled}"
        );
        storage.close().await;
    }
}

/// A storage on the database at `path`, opened on a pool of the caller's (`pooled`) or by
/// URL (the direct path).
async fn open(path: &Path, pooled: bool) -> SqliteStorage {
    if pooled {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .connect_with(options)
            .await
            .unwrap();
        SqliteStorage::from_pool(pool).await.unwrap()
    } else {
        SqliteStorage::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap()
    }
}

/// The checksums `_sqlx_migrations` of `pool` records, in version order.
async fn recorded_checksums(pool: &sqlx::SqlitePool) -> Vec<Vec<u8>> {
    sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// A database made by a build from a CRLF checkout, before this crate turned CRLF back
/// into LF, recorded the checksums of the CRLF text: at this build's version it opens as
/// it is, and at the version before it is upgraded, its old records kept as they were;
/// on either path, keeping its session and taking writes.
#[tokio::test]
async fn a_database_a_crlf_build_made_opens_and_upgrades() {
    let latest = migration_files().len();
    for (version, pooled) in [
        (latest, false),
        (latest, true),
        (latest - 1, false),
        (latest - 1, true),
    ] {
        let case = format!("version {version}, pooled: {pooled}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crlf.db");
        let pool = database_from_checkout(&path, version, "\r\n").await;
        insert_v1_session(&pool, "user-123", &V1_ROWS).await;
        let crlf = recorded_checksums(&pool).await;
        pool.close().await;
        let lf_path = dir.path().join("lf.db");
        let lf_pool = database_at_version(&lf_path, latest).await;
        let lf = recorded_checksums(&lf_pool).await;
        lf_pool.close().await;
        assert!(
            crlf.iter().zip(&lf).all(|(c, l)| c != l),
            "{case}: CRLF sums"
        );

        let storage = open(&path, pooled).await;
        assert_eq!(
            storage.load("user-123").await.unwrap(),
            v1_history(),
            "{case}"
        );
        storage
            .append("user-123", &[ChatMessage::user("more")])
            .await
            .unwrap();
        let recorded = recorded_checksums(storage.pool()).await;
        assert_eq!(recorded.len(), latest, "{case}: upgraded");
        assert_eq!(recorded[..version], crlf[..], "{case}: records kept");
        assert_eq!(recorded[version..], lf[version..], "{case}: new ones LF");
        storage.close().await;
    }
}
