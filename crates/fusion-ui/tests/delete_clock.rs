//! Every backend keeps the later of its stored last write and the clock's time, so after
//! the clock was set back (a session last written before, stamped in the future) a rename
//! leaves the session's last write and revision as they were: a delete from a page shown
//! before the rename went ahead. The page carries the session's metadata too now, and a
//! change of it stops the delete, on every backend.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use axum::Router;
use axum::http::StatusCode;
use fusion::ChatMessage;
use fusion::storage::{ConversationStorage, MetaUpdate, SessionInfo, SessionMeta, StorageType};
use fusion_core::{Intercept, Intercepted, Result};
use fusion_ui::{UiConfig, router};

use common::backends::each_backend;
use common::{HOST, bulk_form, confirmation, get, post_form, send};

fn app(storage: Arc<dyn ConversationStorage>) -> Router {
    let address = HOST.parse().unwrap();
    let settings = UiConfig::new(address).settings(address).unwrap();
    router(storage, &settings)
}

/// A storage whose sessions report their last write at `at` or later: as every backend
/// reports a session stamped at `at` (in the future) before the clock was set back, and
/// compares, for a conditional write, a last write earlier than that.
struct StampedAt {
    inner: Arc<dyn ConversationStorage>,
    at: SystemTime,
}

#[async_trait]
impl Intercept for StampedAt {
    fn inner(&self) -> &dyn ConversationStorage {
        self.inner.as_ref()
    }

    async fn session_info(&self, session_id: &str) -> Result<Option<SessionInfo>> {
        let mut info = self.inner.session_info(session_id).await?;
        if let Some(info) = &mut info {
            info.updated_at = info.updated_at.max(Some(self.at));
        }
        Ok(info)
    }
}

const FIRST: [&str; 2] = ["hello", "hi"];

fn first() -> Vec<ChatMessage> {
    vec![
        ChatMessage::user(FIRST[0]),
        ChatMessage::assistant(FIRST[1]),
    ]
}

/// Creates sessions `c1` and `c2`.
async fn create(storage: &dyn ConversationStorage) {
    let meta = SessionMeta::new().title("Kept").owner("amy").tags(["kept"]);
    for id in ["c1", "c2"] {
        storage.create_session(id, &meta, &first()).await.unwrap();
    }
}

/// Sessions `c1` and `c2` of `storage`, last written in the future, are retagged after
/// their single and bulk confirmation pages were read: both deletes are refused, saying
/// the metadata changed; pages read after it delete.
async fn a_retag_stops_the_delete(storage: Arc<dyn ConversationStorage>) {
    let app = app(storage.clone());
    let single = confirmation(&app, "c1").await;
    let bulk = bulk_form(&send(&app, get("/bulk-delete?id=c2")).await.body);

    for id in ["c1", "c2"] {
        let before = storage.session_info(id).await.unwrap().unwrap();
        let retag = MetaUpdate::new().add_tag("meanwhile");
        storage.update_session(id, &retag).await.unwrap();
        let after = storage.session_info(id).await.unwrap().unwrap();
        assert_eq!(
            (after.updated_at, after.generation),
            (before.updated_at, before.generation),
            "{id}: the retag moves neither"
        );
    }
    let changed = "its title, owner, tags, data or expiry were changed";
    let refused = send(&app, post_form("/sessions/c1/delete", &single)).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(refused.body.contains(changed), "{}", refused.body);
    let refused = send(&app, post_form("/bulk-delete", &bulk)).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(refused.body.contains(changed), "{}", refused.body);
    for id in ["c1", "c2"] {
        assert_eq!(storage.load(id).await.unwrap(), first(), "{id} kept");
    }

    // Pages read after the retag show it, and delete: the digest is the same at each read.
    let single = confirmation(&app, "c1").await;
    let deleted = send(&app, post_form("/sessions/c1/delete", &single)).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    let bulk = bulk_form(&send(&app, get("/bulk-delete?id=c2")).await.body);
    let deleted = send(&app, post_form("/bulk-delete", &bulk)).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    for id in ["c1", "c2"] {
        assert!(storage.session_info(id).await.unwrap().is_none(), "{id}");
    }
}

/// On every backend the web tests run on, the sessions report a last write an hour from
/// now, as they do when stamped before the clock was set back an hour (no backend stores
/// a time later than its clock's at the write, so it is reported from outside).
#[tokio::test]
async fn a_rename_after_the_clock_was_set_back_still_stops_the_delete() {
    each_backend(async |storage| {
        create(storage.as_ref()).await;
        let at = SystemTime::now() + Duration::from_secs(3600);
        let stamped = Arc::new(Intercepted(StampedAt { inner: storage, at }));
        a_retag_stops_the_delete(stamped).await;
    })
    .await;
}

/// The same on SQLite with the stamp stored: the sessions' last write set an hour ahead
/// in the database itself.
#[tokio::test]
async fn a_rename_after_the_clock_was_set_back_still_stops_the_delete_on_a_stored_stamp() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ui.db");
    let url = format!("sqlite://{}", file.display());
    let storage = StorageType::Sqlite(url).open().await.unwrap();
    create(storage.as_ref()).await;
    // Last written an hour from now as the clock reads: before it was set back an hour.
    let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
    let in_an_hour_ms = in_an_hour.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let sql = "UPDATE sessions SET updated_at = ?1";
    let db = rusqlite::Connection::open(&file).unwrap();
    db.execute(sql, [in_an_hour_ms.as_millis() as i64]).unwrap();
    drop(db);
    a_retag_stops_the_delete(storage).await;
}
