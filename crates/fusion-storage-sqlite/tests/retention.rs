//! Session retention in this backend beyond the shared suite: the two columns that store
//! an expiry and how an idle one follows `updated_at`, what an expired session's rows
//! look like to writes that must not revive it, and that a purge removes its rows from
//! every table, even on a pool with foreign keys (and so the cascade) off; and that a
//! write under `Expect::UnwrittenSince` compares the `updated_at` column's millisecond,
//! with ids or not, in the same transaction as a metadata update would write it. Each
//! test runs on a database file (writes through the direct path), on `sqlite::memory:` and
//! on a caller's pool without foreign keys (both through sqlx).

mod paths;

use std::time::{Duration, SystemTime};

use fusion_core::testkit::{now_micros, said, wait_past};
use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, Expiry, MetaUpdate, Revision,
    SessionMeta, from_unix_micros, unix_micros,
};
use fusion_storage_sqlite::SqliteStorage;
use paths::every_path;

const HOUR: Duration = Duration::from_secs(3600);

/// The `(updated_at, expires_at, expiry_idle)` columns of `id`.
async fn columns(storage: &SqliteStorage, id: &str) -> (i64, Option<i64>, Option<i64>) {
    sqlx::query_as("SELECT updated_at, expires_at, expiry_idle FROM sessions WHERE id = ?1")
        .bind(id)
        .fetch_one(storage.pool())
        .await
        .unwrap()
}

/// How many rows of `id` each table holds: sessions, messages, session_meta, session_tags.
async fn rows_of(storage: &SqliteStorage, id: &str) -> [i64; 4] {
    let mut counts = [0; 4];
    let queries = [
        "SELECT count(*) FROM sessions WHERE id = ?1",
        "SELECT count(*) FROM messages WHERE session_id = ?1",
        "SELECT count(*) FROM session_meta WHERE session_id = ?1",
        "SELECT count(*) FROM session_tags WHERE session_id = ?1",
    ];
    for (count, sql) in counts.iter_mut().zip(queries) {
        *count = sqlx::query_scalar(sql)
            .bind(id)
            .fetch_one(storage.pool())
            .await
            .unwrap();
    }
    counts
}

#[tokio::test]
async fn an_expiry_is_stored_in_microseconds_and_an_idle_one_follows_updated_at() {
    for (_dir, storage) in every_path().await {
        let at = now_micros() + HOUR;
        let fixed = SessionMeta::new().expiry(Expiry::At(at));
        storage
            .create_session("fixed", &fixed, &said("a"))
            .await
            .unwrap();
        let (_, expires_at, idle) = columns(&storage, "fixed").await;
        assert_eq!((expires_at, idle), (Some(unix_micros(at)), None));

        let span = i64::try_from(HOUR.as_micros()).unwrap();
        let idle = SessionMeta::new().expiry(Expiry::Idle(HOUR));
        storage
            .create_session("idle", &idle, &said("b"))
            .await
            .unwrap();
        for write in 0..3 {
            match write {
                0 => {}
                1 => storage.append("idle", &said("c")).await.unwrap(),
                _ => storage.save("idle", &said("d")).await.unwrap(),
            }
            let (updated_ms, expires_at, stored_span) = columns(&storage, "idle").await;
            assert_eq!(stored_span, Some(span), "write {write}");
            assert_eq!(expires_at, Some(updated_ms * 1000 + span), "write {write}");
        }
        // A truncate that cuts nothing writes nothing, so the expiry stays.
        let before = columns(&storage, "idle").await;
        storage.truncate("idle", 5).await.unwrap();
        assert_eq!(columns(&storage, "idle").await, before);
        storage.close().await;
    }
}

#[tokio::test]
async fn writes_that_must_not_revive_an_expired_session_leave_it_for_the_purge() {
    for (_dir, storage) in every_path().await {
        let soon = now_micros() + Duration::from_millis(200);
        let meta = SessionMeta::new()
            .owner("o")
            .title("t")
            .tags(["a", "b"])
            .expiry(Expiry::At(soon));
        storage
            .create_session("gone", &meta, &said("old"))
            .await
            .unwrap();
        storage.append("kept", &said("k")).await.unwrap();
        let stored = rows_of(&storage, "gone").await;
        assert_eq!(stored, [1, 2, 1, 2]);
        wait_past(soon).await;

        let update = MetaUpdate::new().title(Some("new")).expiry(None);
        assert_eq!(storage.update_session("gone", &update).await.unwrap(), None);
        storage.truncate("gone", 1).await.unwrap();
        assert_eq!(rows_of(&storage, "gone").await, stored, "nothing written");
        let (_, expires_at, _) = columns(&storage, "gone").await;
        assert_eq!(expires_at, Some(unix_micros(soon)), "still expired");

        assert_eq!(storage.purge_expired(10).await.unwrap(), 1);
        assert_eq!(rows_of(&storage, "gone").await, [0; 4], "every table");
        assert_eq!(rows_of(&storage, "kept").await, [1, 2, 0, 0]);
        assert_eq!(storage.purge_expired(10).await.unwrap(), 0);
        storage.close().await;
    }
}

#[tokio::test]
async fn an_append_to_an_expired_idle_session_starts_it_afresh_in_place() {
    for (_dir, storage) in every_path().await {
        let idle = SessionMeta::new()
            .tags(["t"])
            .expiry(Expiry::Idle(Duration::from_millis(150)));
        let old = storage
            .create_session("s", &idle, &said("old"))
            .await
            .unwrap();
        // The session was written by now, so it has expired 150 ms later. (Its expiry read
        // back with `session_info` found none when the machine was slow to get there: the
        // session had expired already.)
        let written = SystemTime::now();
        wait_past(written + Duration::from_millis(150)).await;

        storage
            .append("s", &[ChatMessage::user("new")])
            .await
            .unwrap();
        assert_eq!(storage.load("s").await.unwrap(), [ChatMessage::user("new")]);
        let info = storage.session_info("s").await.unwrap().unwrap();
        assert_ne!(info.generation, old);
        assert_eq!((info.expires_at, info.meta), (None, SessionMeta::new()));
        assert_eq!(rows_of(&storage, "s").await, [1, 1, 0, 0]);
        assert_eq!(columns(&storage, "s").await.1, None);
        storage.close().await;
    }
}

/// Sets the `updated_at` column of `id` to `ms`, as if last written then.
async fn written_at(storage: &SqliteStorage, id: &str, ms: i64) {
    sqlx::query("UPDATE sessions SET updated_at = ?2 WHERE id = ?1")
        .bind(id)
        .bind(ms)
        .execute(storage.pool())
        .await
        .unwrap();
}

/// `UnwrittenSince` at `revision`, with `since` at `micros` after the epoch.
fn unwritten(revision: Revision, micros: i64) -> Expect {
    Expect::UnwrittenSince {
        revision,
        since: from_unix_micros(micros),
    }
}

/// The column holds whole milliseconds and `since` need not be one: a session written in
/// `since`'s millisecond counts as written since only when that millisecond does not end
/// by `since`, on both runners (the shared suite takes whole milliseconds only).
#[tokio::test]
async fn a_delete_unwritten_since_compares_the_recorded_millisecond() {
    for (_dir, storage) in every_path().await {
        storage.append("s", &said("a")).await.unwrap();
        let (_, listed) = storage.load_revision("s").await.unwrap();
        written_at(&storage, "s", 5_000).await;
        for since in [5_000_000, 4_999_999] {
            let err = storage
                .write_if("s", unwritten(listed, since), Change::Truncate(0))
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Conflict { .. }), "{since}: {err:?}");
            assert!(err.to_string().contains("written since"), "{err}");
        }
        assert_eq!(storage.load("s").await.unwrap(), said("a"));
        let left = storage
            .write_if("s", unwritten(listed, 5_000_001), Change::Truncate(0))
            .await
            .unwrap();
        assert_eq!(left, 0);
        assert_eq!(rows_of(&storage, "s").await, [0; 4]);
        storage.close().await;
    }
}

/// An append with ids under `UnwrittenSince` reads `updated_at` and the session's ids in
/// one lookup: refused when written since, and otherwise storing only the messages whose
/// ids are not stored yet.
#[tokio::test]
async fn an_append_unwritten_since_compares_and_leaves_out_stored_ids() {
    for (_dir, storage) in every_path().await {
        let first = ChatMessage::user("first").with_new_id();
        let next = ChatMessage::user("next").with_new_id();
        storage
            .append("s", std::slice::from_ref(&first))
            .await
            .unwrap();
        let (_, listed) = storage.load_revision("s").await.unwrap();
        written_at(&storage, "s", 5_000).await;
        let batch = [first.clone(), next.clone()];
        let err = storage
            .write_if("s", unwritten(listed, 5_000_000), Change::Append(&batch))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("written since"), "{err}");
        let generation = storage
            .write_if("s", unwritten(listed, 6_000_000), Change::Append(&batch))
            .await
            .unwrap();
        assert_eq!(generation, listed.generation, "an append keeps it");
        assert_eq!(storage.load("s").await.unwrap(), [first, next]);
        storage.close().await;
    }
}

/// A metadata update and a delete under `UnwrittenSince` racing for one session: one
/// transaction runs whole before the other, so either the update lands and the delete is
/// refused, or the delete lands and the update finds no session, never both.
#[tokio::test]
async fn a_metadata_update_racing_a_delete_unwritten_since_is_never_lost() {
    for (_dir, storage) in every_path().await {
        let title = MetaUpdate::new().title(Some("renamed"));
        for round in 0..20 {
            let id = format!("s{round}");
            storage.append(&id, &said("a")).await.unwrap();
            let (_, listed) = storage.load_revision(&id).await.unwrap();
            // Written long before `since`, which the update moves to now, long after.
            written_at(&storage, &id, 5_000).await;
            let delete = storage.write_if(&id, unwritten(listed, 6_000_000), Change::Truncate(0));
            let (updated, deleted) = tokio::join!(storage.update_session(&id, &title), delete);
            match (updated.unwrap(), deleted) {
                (Some(info), Err(Error::Conflict { .. })) => {
                    assert_eq!(info.meta.title.as_deref(), Some("renamed"));
                    assert_eq!(storage.load(&id).await.unwrap(), said("a"));
                }
                (None, Ok(0)) => assert_eq!(rows_of(&storage, &id).await, [0; 4]),
                (updated, deleted) => panic!("round {round}: {updated:?} and {deleted:?}"),
            }
        }
        storage.close().await;
    }
}
