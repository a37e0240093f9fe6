//! A schema written by the first release (schema version 1 of this crate) opens, upgrades
//! in place to the current version (4) and keeps every message, id, count, generation and
//! timestamp; no session expires; its sessions then list, take metadata, an expiry and
//! writes (message ids included) like new ones. `connect_existing` upgrades it the same way.
//!
//! The fixture, `fixtures/schema_v1.sql`, was produced with the released code: at commit
//! 421d2a2 (schema version 1), a throwaway test opened `PostgresStorage` on the schema
//! `fusion_v1_fixture` of a PostgreSQL 15 server and wrote five sessions there (two
//! appends with a tool call and its result; a save then an append; six unicode,
//! escaped and metadata-carrying messages truncated to four; a session deleted and
//! written again; an upper-case id), then
//! `pg_dump --schema=fusion_v1_fixture --inserts --no-owner --no-privileges` wrote the
//! file, unedited. The test restores it into a fresh schema of its own: the schema name
//! replaced, and psql's `\restrict` lines (which only psql understands) left out.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use fusion_core::testkit::StorageHarness;
use fusion_core::{
    ChatMessage, ConversationStorage, Expiry, MetaUpdate, Role, SessionMeta, SessionOrder,
    SessionQuery, unix_micros,
};
use sqlx::Connection;
use support::{Harness, harness};

const FIXTURE: &str = include_str!("fixtures/schema_v1.sql");
/// The schema name the fixture was dumped from.
const DUMPED_SCHEMA: &str = "fusion_v1_fixture";

/// What version 1 stored for a session: `(created µs, updated µs, count, generation)`.
type Row = (i64, i64, i64, i64);

/// Restores the fixture into the harness's schema with a plain connection, as an older
/// release's schema sits on a server before this build opens it.
async fn restore(harness: &Harness) {
    let script: String = FIXTURE
        .lines()
        .filter(|line| !line.starts_with('\\'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(DUMPED_SCHEMA, &harness.schema);
    let mut conn = sqlx::PgConnection::connect(&harness.url)
        .await
        .expect("connecting");
    sqlx::raw_sql(&script)
        .execute(&mut conn)
        .await
        .expect("restoring the fixture");
    conn.close().await.expect("closing");
}

/// Every session row and message body, as the tables hold them.
async fn stored(harness: &Harness) -> (BTreeMap<String, Row>, BTreeMap<String, Vec<String>>) {
    let mut raw = harness.raw().await;
    let sessions: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT id, (extract(epoch FROM created_at) * 1000000)::int8, \
             (extract(epoch FROM updated_at) * 1000000)::int8, message_count, generation \
         FROM sessions",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    let bodies: Vec<(String, String)> =
        sqlx::query_as("SELECT session_id, body FROM messages ORDER BY session_id, seq")
            .fetch_all(&mut raw)
            .await
            .unwrap();
    let mut messages: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, body) in bodies {
        messages.entry(id).or_default().push(body);
    }
    let sessions = sessions
        .into_iter()
        .map(|(id, created, updated, count, generation)| {
            (id, (created, updated, count, generation))
        })
        .collect();
    (sessions, messages)
}

/// The versions of the migrations recorded as applied in the harness's schema.
async fn applied(harness: &Harness) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&mut harness.raw().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_version_1_schema_upgrades_in_place_and_keeps_every_session() {
    let Some(harness) = harness().await else {
        return;
    };
    restore(&harness).await;
    let (before, bodies) = stored(&harness).await;
    assert_eq!(before.len(), 5, "the fixture holds five sessions");

    let storage = harness.open().await.expect("opening upgrades the schema");
    assert_eq!(applied(&harness).await, [1, 2, 3, 4]);
    let mut raw = harness.raw().await;
    let collation: String = sqlx::query_scalar(
        "SELECT c.collname::text FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation \
         WHERE a.attrelid = 'sessions'::regclass AND a.attname = 'id'",
    )
    .fetch_one(&mut raw)
    .await
    .unwrap();
    assert_eq!(collation, "C", "ids compare byte by byte");

    // Every id, count, generation, timestamp and message, exactly as version 1 left them.
    let ids: Vec<String> = before.keys().cloned().collect();
    assert_eq!(storage.list_sessions().await.unwrap(), ids);
    for (id, &(created, updated, count, generation)) in &before {
        let info = storage.session_info(id).await.unwrap().expect(id);
        assert_eq!(info.message_count, usize::try_from(count).unwrap(), "{id}");
        assert_eq!(info.generation, generation.cast_unsigned(), "{id}");
        assert_eq!(unix_micros(info.created_at.unwrap()), created, "{id}");
        assert_eq!(unix_micros(info.updated_at.unwrap()), updated, "{id}");
        assert_eq!(info.meta, SessionMeta::new(), "{id}: no metadata yet");
        assert_eq!(info.expires_at, None, "{id}: no expiry");
        let history = storage.load(id).await.unwrap();
        let reencoded: Vec<String> = history
            .iter()
            .map(|m| serde_json::to_string(m).unwrap())
            .collect();
        assert_eq!(reencoded, bodies[id], "{id}: every message, byte for byte");
        let (_, revision) = storage.load_revision(id).await.unwrap();
        assert_eq!(revision.generation, generation.cast_unsigned(), "{id}");
    }
    let expiries: Vec<(Option<i64>, Option<i64>)> =
        sqlx::query_as("SELECT expires_at, expiry_idle FROM sessions")
            .fetch_all(&mut raw)
            .await
            .unwrap();
    assert_eq!(expiries, [(None, None); 5], "no upgraded session expires");
    let windows: Vec<Option<Vec<i32>>> = sqlx::query_scalar("SELECT recent_ids FROM sessions")
        .fetch_all(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        windows,
        vec![Some(vec![]); 5],
        "no upgraded session holds an id"
    );
    assert_eq!(storage.purge_expired(100).await.unwrap(), 0);
    // What the fixture's writer wrote, so a fixture restored wrongly cannot pass.
    let tool_turn = storage.load("user-123").await.unwrap();
    assert_eq!(tool_turn.len(), 5);
    assert_eq!(tool_turn[2].tool_calls[0].name, "list_files");
    assert_eq!(tool_turn[2].tool_calls[0].arguments, "{\"path\": \".\"}");
    assert_eq!(tool_turn[3].tool_call_id.as_deref(), Some("call_1"));
    let unicode = storage.load("alice@example.com").await.unwrap();
    assert_eq!(unicode[0], ChatMessage::user("héllo wörld — 你好 🦀"));
    assert_eq!(unicode[1].metadata["model"], "m-1");
    assert_eq!(unicode.len(), 4, "the truncate is kept");
    assert_eq!(
        storage.load("back-again").await.unwrap(),
        [ChatMessage::user("returned")]
    );

    // The old sessions list newest first by their stored `updated_at`, ties by id.
    let mut newest_first: Vec<(i64, &String)> =
        before.iter().map(|(id, row)| (row.1, id)).collect();
    newest_first.sort_by(|a, b| b.cmp(a));
    let page = storage
        .list_page(&SessionQuery::new().limit(3))
        .await
        .unwrap();
    let second = storage
        .list_page(&SessionQuery::new().limit(3).after(page.next.clone()))
        .await
        .unwrap();
    assert_eq!(second.next, None);
    let listed: Vec<&String> = page
        .sessions
        .iter()
        .chain(&second.sessions)
        .map(|s| &s.id)
        .collect();
    assert_eq!(
        listed,
        newest_first.iter().map(|(_, id)| *id).collect::<Vec<_>>()
    );
    let by_id = storage
        .list_page(&SessionQuery::new().order(SessionOrder::Id))
        .await
        .unwrap();
    let by_id: Vec<String> = by_id.sessions.into_iter().map(|s| s.id).collect();
    assert_eq!(by_id, ids, "upper case first: byte order");

    // An old session takes metadata and writes; its history and creation time stay.
    let owned = storage
        .update_session(
            "tenant:42:chat-7",
            &MetaUpdate::new().owner(Some("tenant-42")).add_tag("legacy"),
        )
        .await
        .unwrap()
        .expect("the session exists");
    assert_eq!(
        unix_micros(owned.created_at.unwrap()),
        before["tenant:42:chat-7"].0
    );
    storage
        .append(
            "tenant:42:chat-7",
            &[ChatMessage::user("after the upgrade")],
        )
        .await
        .unwrap();
    let mine = storage
        .list_page(&SessionQuery::new().owner("tenant-42").tag("legacy"))
        .await
        .unwrap();
    assert_eq!(mine.sessions.len(), 1);
    assert_eq!(mine.sessions[0].message_count, 5);
    assert_eq!(mine.sessions[0].meta.tags, ["legacy"]);
    let history = storage.load("tenant:42:chat-7").await.unwrap();
    assert_eq!(history[4].role, Role::User);
    assert_eq!(history.len(), 5);

    // An old session takes an idle expiry, which its next write moves.
    let hour = Duration::from_secs(3600);
    let idle = storage
        .update_session(
            "user-123",
            &MetaUpdate::new().expiry(Some(Expiry::Idle(hour))),
        )
        .await
        .unwrap()
        .expect("the session exists");
    assert_eq!(idle.expires_at, Some(idle.updated_at.unwrap() + hour));
    storage
        .append("user-123", &[ChatMessage::user("later")])
        .await
        .unwrap();
    let moved = storage.session_info("user-123").await.unwrap().unwrap();
    assert_eq!(moved.expires_at, Some(moved.updated_at.unwrap() + hour));

    // An old session, which knows no id yet, takes ids like a new one: each stored once.
    let turn = fusion_core::testkit::exactly_once::with_ids("after", 2);
    for _ in 0..2 {
        storage.append("back-again", &turn).await.unwrap();
    }
    let history = storage.load("back-again").await.unwrap();
    assert_eq!(history[1..], turn);

    // A second instance finds the schema current and sees the same.
    let again = harness.open().await.expect("reopening");
    assert_eq!(again.list_sessions().await.unwrap(), ids);
}

/// `connect_existing` upgrades an older storage as every open does: this build could not
/// read version 1's tables otherwise, and the schema exists, so nothing new is made.
#[tokio::test]
async fn connect_existing_upgrades_a_version_1_schema_too() {
    let Some(harness) = harness().await else {
        return;
    };
    restore(&harness).await;
    let (before, _) = stored(&harness).await;
    let storage = fusion_storage_postgres::PostgresStorage::connect_existing(harness.options())
        .await
        .unwrap()
        .expect("the version 1 storage exists");
    assert_eq!(applied(&harness).await, [1, 2, 3, 4]);
    let ids: Vec<String> = before.keys().cloned().collect();
    assert_eq!(storage.list_sessions().await.unwrap(), ids);
    storage.close().await;
}
