//! A database written by the release before session metadata (schema version 2) opens
//! with this build, is upgraded in place to the current schema and keeps every message,
//! id, count, timestamp and generation; its sessions have no metadata and no expiry until
//! some is set, and then metadata, expiry and listing work on them as on new sessions.
//!
//! # The fixture
//!
//! `tests/fixtures/schema_v2.sqlite` (5.5 KB) was written by that release's own code, at
//! commit 421d2a2, through its public API only: a test run in a worktree of that commit
//! called, on `SqliteStorage::connect("sqlite://…/schema_v2.sqlite")`, with a 5 ms pause
//! after each step so every session has distinct timestamps:
//!
//! 1. `append("user-123", [system, user])`, then `append("user-123", [assistant with a
//!    tool call, tool result, assistant])`, so its `created_at` < `updated_at`;
//! 2. `save("rewritten", 2 messages)`, `save("rewritten", 4 messages)`,
//!    `truncate("rewritten", 3)`;
//! 3. `write_if("conditional", Expect::Generation(0), Change::Append([user with a name
//!    and non-ASCII text, assistant with a metadata entry]))`;
//! 4. `append("deleted", ..)` then `delete("deleted")`; `save("emptied", ..)` then
//!    `truncate("emptied", 0)`: two sessions that must stay gone;
//! 5. `close()`.
//!
//! The file was then repacked with the `sqlite3` shell to keep it small
//! (`PRAGMA journal_mode = DELETE; PRAGMA page_size = 512; VACUUM; PRAGMA journal_mode =
//! WAL;`): the same schema, rows and bytes in every cell, in 512-byte pages instead of
//! 4 KiB ones. The test works on a copy; the checked-in file is never opened for writing.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use fusion_core::{
    ChatMessage, ConversationStorage, Expiry, MetaUpdate, SessionMeta, SessionOrder, SessionQuery,
    ToolCall,
};
use fusion_storage_sqlite::SqliteStorage;
use serde_json::json;
use sqlx::SqlitePool;
use sqlx::sqlite::SqliteConnectOptions;

/// A `sessions` row of schema version 2: id, created_at, updated_at, message_count,
/// generation.
type V2Session = (String, i64, i64, i64, i64);

/// The histories the fixture's release stored, by id.
fn histories() -> Vec<(&'static str, Vec<ChatMessage>)> {
    vec![
        (
            "conditional",
            vec![
                ChatMessage::user("héllo 🦀").with_name("ana"),
                ChatMessage::assistant("hi").with_metadata("model", json!("m-1")),
            ],
        ),
        (
            "rewritten",
            vec![
                ChatMessage::user("draft 2"),
                ChatMessage::assistant("v2"),
                ChatMessage::user("more"),
            ],
        ),
        (
            "user-123",
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
                ChatMessage::assistant("a.txt is there."),
            ],
        ),
    ]
}

/// A copy of the fixture in `dir`.
fn copy_fixture(dir: &Path, name: &str) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema_v2.sqlite");
    let path = dir.join(name);
    std::fs::copy(fixture, &path).unwrap();
    path
}

fn plain_pool_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new().filename(path)
}

/// What the file holds, read with plain SQL: the recorded migrations, the sessions rows
/// and every message row as stored.
async fn raw_contents(path: &Path) -> (Vec<i64>, Vec<V2Session>, Vec<(String, i64, String)>) {
    let pool = SqlitePool::connect_with(plain_pool_options(path))
        .await
        .unwrap();
    let versions = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&pool)
        .await
        .unwrap();
    let sessions = sqlx::query_as(
        "SELECT id, created_at, updated_at, message_count, generation FROM sessions ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let messages =
        sqlx::query_as("SELECT session_id, seq, message FROM messages ORDER BY session_id, seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    (versions, sessions, messages)
}

/// The `(expires_at, expiry_idle)` columns of every session, by id.
async fn stored_expiries(pool: &SqlitePool) -> Vec<(Option<i64>, Option<i64>)> {
    sqlx::query_as("SELECT expires_at, expiry_idle FROM sessions ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Opens `path` through the direct path (`connect`) or through a caller's pool
/// (`from_pool`, where every write goes through sqlx).
async fn open(path: &Path, pooled: bool) -> SqliteStorage {
    if pooled {
        let options = plain_pool_options(path).foreign_keys(true);
        SqliteStorage::from_pool(SqlitePool::connect_with(options).await.unwrap())
            .await
            .unwrap()
    } else {
        SqliteStorage::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap()
    }
}

fn at_millis(ms: i64) -> Option<std::time::SystemTime> {
    Some(UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap()))
}

#[tokio::test]
async fn a_version_2_database_upgrades_in_place_and_keeps_every_session() {
    for pooled in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = copy_fixture(dir.path(), "v2.sqlite");
        let (versions, sessions, messages) = raw_contents(&path).await;
        assert_eq!(versions, [1, 2], "the fixture is at schema version 2");
        let ids: Vec<&str> = sessions.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(ids, ["conditional", "rewritten", "user-123"]);

        let storage = open(&path, pooled).await;
        let (versions_after, _, messages_after) = raw_contents(&path).await;
        assert_eq!(versions_after, [1, 2, 3, 4, 5], "upgraded to version 5");
        assert_eq!(
            messages_after, messages,
            "every message row kept, byte for byte"
        );

        assert_eq!(storage.list_sessions().await.unwrap(), ids);
        for (id, created, updated, count, generation) in &sessions {
            let info = storage.session_info(id).await.unwrap().unwrap();
            assert_eq!(info.message_count, usize::try_from(*count).unwrap(), "{id}");
            assert_eq!(info.created_at, at_millis(*created), "{id}");
            assert_eq!(info.updated_at, at_millis(*updated), "{id}");
            assert_eq!(info.generation, generation.cast_unsigned(), "{id}");
            assert_eq!(info.meta, SessionMeta::new(), "{id}: no metadata yet");
            assert_eq!(info.expires_at, None, "{id}: no expiry");
        }
        assert_eq!(
            stored_expiries(storage.pool()).await,
            [(None, None); 3],
            "every upgraded row reads as never expiring"
        );
        assert_eq!(storage.purge_expired(100).await.unwrap(), 0);
        for (id, history) in histories() {
            let (loaded, revision) = storage.load_revision(id).await.unwrap();
            assert_eq!(loaded, history, "{id}");
            assert_eq!(revision.len, history.len(), "{id}");
        }
        for gone in ["deleted", "emptied"] {
            assert_eq!(storage.session_info(gone).await.unwrap(), None, "{gone}");
        }

        // The upgraded sessions list newest first by their stored `updated_at`.
        let mut newest_first = sessions.clone();
        newest_first.sort_by(|a, b| (b.2, &b.0).cmp(&(a.2, &a.0)));
        let page = storage
            .list_page(&SessionQuery::new().limit(2))
            .await
            .unwrap();
        let first: Vec<&str> = page.sessions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(first, [&newest_first[0].0, &newest_first[1].0]);
        let rest = storage
            .list_page(&SessionQuery::new().limit(2).after(page.next))
            .await
            .unwrap();
        assert_eq!(rest.sessions.len(), 1);
        assert_eq!(rest.sessions[0].id, newest_first[2].0);
        assert_eq!(rest.next, None);

        metadata_works_on_upgraded_sessions(&storage, &sessions).await;
        storage.close().await;

        // Reopening applies nothing again and finds the metadata where it was left.
        let again = open(&path, pooled).await;
        let info = again.session_info("user-123").await.unwrap().unwrap();
        assert_eq!(info.meta.owner.as_deref(), Some("alice"));
        assert_eq!(info.meta.tags, ["upgraded"]);
        again.close().await;
        assert_eq!(raw_contents(&path).await.0, [1, 2, 3, 4, 5]);
    }
}

/// Sets metadata on an upgraded session, creates a new one beside it, and lists both.
async fn metadata_works_on_upgraded_sessions(storage: &SqliteStorage, sessions: &[V2Session]) {
    let created_ms = sessions.iter().find(|s| s.0 == "user-123").unwrap().1;
    let update = MetaUpdate::new()
        .owner(Some("alice"))
        .title(Some("Listing /tmp"))
        .add_tag("upgraded")
        .set_data("source", "v2");
    let updated = storage
        .update_session("user-123", &update)
        .await
        .unwrap()
        .expect("the upgraded session exists");
    assert_eq!(updated.meta.title.as_deref(), Some("Listing /tmp"));
    assert_eq!(updated.message_count, 5);
    assert_eq!(
        updated.created_at,
        at_millis(created_ms),
        "created_at never moves"
    );
    assert_eq!(
        storage.session_info("user-123").await.unwrap(),
        Some(updated)
    );

    // A new session of the same owner, then an append to the upgraded one, which keeps
    // its metadata and brings it to the front (in the same millisecond, its id wins).
    let meta = SessionMeta::new().owner("alice").tags(["new"]);
    storage
        .create_session("fresh", &meta, &[ChatMessage::user("hi")])
        .await
        .unwrap();
    storage
        .append("user-123", &[ChatMessage::user("and /var?")])
        .await
        .unwrap();

    let alices = storage
        .list_page(&SessionQuery::new().owner("alice"))
        .await
        .unwrap();
    let ids: Vec<&str> = alices.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["user-123", "fresh"]);
    assert_eq!(alices.sessions[0].message_count, 6);
    assert_eq!(alices.sessions[0].meta.data["source"], "v2");
    let tagged = storage
        .list_page(&SessionQuery::new().tag("upgraded").order(SessionOrder::Id))
        .await
        .unwrap();
    assert_eq!(tagged.sessions.len(), 1);
    assert_eq!(tagged.sessions[0].id, "user-123");
    let unowned = storage
        .list_page(&SessionQuery::new().order(SessionOrder::Id))
        .await
        .unwrap();
    assert_eq!(unowned.sessions.len(), 4);

    // An upgraded session takes an idle expiry like a new one, and its next write moves it.
    let hour = Duration::from_secs(3600);
    let idle = storage
        .update_session(
            "rewritten",
            &MetaUpdate::new().expiry(Some(Expiry::Idle(hour))),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(idle.expires_at, Some(idle.updated_at.unwrap() + hour));
    storage
        .append("rewritten", &[ChatMessage::user("later")])
        .await
        .unwrap();
    let moved = storage.session_info("rewritten").await.unwrap().unwrap();
    assert_eq!(moved.expires_at, Some(moved.updated_at.unwrap() + hour));
    assert_eq!(moved.meta.expiry, Some(Expiry::Idle(hour)));
}
