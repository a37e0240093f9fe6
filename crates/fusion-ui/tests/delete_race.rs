//! Deleting a session deletes what its confirmation page showed, and nothing written
//! since: the page carries the session's revision and the post deletes with one
//! conditional write. Before, the post deleted whatever was stored by then, so messages
//! another writer appended while the page was open (a running agent, `fusion chat`), or a
//! new session made under the same id, were deleted without anyone seeing them.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::http::StatusCode;
use fusion::ChatMessage;
use fusion::storage::{
    ConversationStorage, MetaUpdate, SessionMeta, SessionQuery, SessionTimes, StorageType,
};
use fusion_ui::{UiConfig, router};

use common::backends::each_backend;
use common::{HOST, bulk_form, confirmation, get, post_form, send};

fn app(storage: Arc<dyn ConversationStorage>) -> Router {
    let address = HOST.parse().unwrap();
    let settings = UiConfig::new(address).settings(address).unwrap();
    router(storage, &settings)
}

/// Session `id` is listed nowhere: not by id, owner, tag or title. The conditional delete
/// (`Truncate(0)`) removes it as `delete` does, not only its messages.
async fn gone_from_listings(storage: &dyn ConversationStorage, id: &str) {
    assert!(
        !storage
            .list_sessions()
            .await
            .unwrap()
            .iter()
            .any(|s| s == id)
    );
    for query in [
        SessionQuery::new(),
        SessionQuery::new().owner("amy"),
        SessionQuery::new().tag("kept"),
        SessionQuery::new().search("Kept"),
    ] {
        let page = storage.list_page(&query).await.unwrap();
        let listed = page.sessions.iter().any(|s| s.id == id);
        assert!(!listed, "{id} is listed by {query:?}");
    }
}

async fn create(storage: &dyn ConversationStorage, id: &str, messages: &[ChatMessage]) {
    let meta = SessionMeta::new().title("Kept").owner("amy").tags(["kept"]);
    storage.create_session(id, &meta, messages).await.unwrap();
}

#[tokio::test]
async fn a_delete_confirmed_on_a_page_older_than_a_write_deletes_nothing() {
    each_backend(async |storage| {
        let app = app(storage.clone());
        let first = [ChatMessage::user("hello"), ChatMessage::assistant("hi")];
        create(storage.as_ref(), "s1", &first).await;
        let form = confirmation(&app, "s1").await;

        // Another writer answers while the page is open.
        let late = ChatMessage::assistant("an answer nobody has read yet");
        storage
            .append("s1", std::slice::from_ref(&late))
            .await
            .unwrap();
        let refused = send(&app, post_form("/sessions/s1/delete", &form)).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
        assert!(
            refused.body.contains("Nothing was deleted"),
            "{}",
            refused.body
        );
        assert!(
            refused.body.contains("now holds 3 messages"),
            "{}",
            refused.body
        );
        assert_eq!(storage.load("s1").await.unwrap().len(), 3, "nothing lost");

        // A page showing the session as it is deletes it; its second click is no error.
        let page = send(&app, get("/sessions/s1/delete")).await;
        assert!(
            page.body.contains(
                "If it changes before you confirm (its messages, or its title, owner, tags, \
                 data or expiry), nothing is deleted."
            ),
            "{}",
            page.body
        );
        let form = confirmation(&app, "s1").await;
        for _ in 0..2 {
            let deleted = send(&app, post_form("/sessions/s1/delete", &form)).await;
            assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
            assert_eq!(deleted.header("location"), "/sessions");
        }
        assert!(storage.session_info("s1").await.unwrap().is_none());
        gone_from_listings(storage.as_ref(), "s1").await;

        // A session deleted and made again under the same id is another session.
        create(storage.as_ref(), "s2", &first).await;
        let form = confirmation(&app, "s2").await;
        storage.delete("s2").await.unwrap();
        create(storage.as_ref(), "s2", &first).await;
        let refused = send(&app, post_form("/sessions/s2/delete", &form)).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
        assert_eq!(storage.load("s2").await.unwrap(), first);

        // Without a revision (a program, a damaged session's page) it deletes what is
        // stored; half a revision is a mistake, and so is a last write without one
        // (which deleted whatever was stored, as if no condition had been asked for).
        for half in ["generation=1", "updated=1"] {
            let half = send(&app, post_form("/sessions/s2/delete", half)).await;
            assert_eq!(half.status, StatusCode::BAD_REQUEST, "{}", half.body);
        }
        assert_eq!(storage.load("s2").await.unwrap(), first);
        let plain = send(&app, post_form("/sessions/s2/delete", "")).await;
        assert_eq!(plain.status, StatusCode::SEE_OTHER, "{}", plain.body);
        assert!(storage.session_info("s2").await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn a_bulk_delete_leaves_each_session_written_since_its_confirmation() {
    each_backend(async |storage| {
        let app = app(storage.clone());
        let first = [ChatMessage::user("hello"), ChatMessage::assistant("hi")];
        for id in ["b1", "b2", "b3"] {
            create(storage.as_ref(), id, &first).await;
        }
        let page = send(&app, get("/bulk-delete?id=b1&id=b2&id=b3&id=b4&id=b5")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(
            page.body.contains(
                "A session that changes before you confirm (its messages, or its \
                           title, owner, tags, data or expiry) is left as it is."
            ),
            "{}",
            page.body
        );
        let form = bulk_form(&page.body);

        // While the page is open, b2 gets an answer and b4, listed as not stored, is made;
        // b5, listed as not stored, stays so: it is reported deleted, as before.
        let late = ChatMessage::assistant("an answer nobody has read yet");
        storage
            .append("b2", std::slice::from_ref(&late))
            .await
            .unwrap();
        create(storage.as_ref(), "b4", &first).await;

        // A reload of the report posts the form again: it deletes nothing new.
        for _ in 0..2 {
            let done = send(&app, post_form("/bulk-delete", &form)).await;
            // Sessions that changed since are conflicts, not the server's failure.
            assert_eq!(done.status, StatusCode::CONFLICT, "{}", done.body);
            let (failed, deleted) = done.body.split_once("<h2>Deleted</h2>").unwrap();
            for id in ["b2", "b4"] {
                assert!(
                    failed.contains(&format!("<code>{id}</code>")),
                    "{id}: {failed}"
                );
            }
            assert!(
                failed.contains("changed since the confirmation"),
                "{failed}"
            );
            for id in ["b1", "b3", "b5"] {
                assert!(
                    deleted.contains(&format!("<code>{id}</code>")),
                    "{id}: {deleted}"
                );
                assert!(!failed.contains(&format!("<code>{id}</code>")), "{id}");
            }
            assert_eq!(storage.load("b2").await.unwrap().len(), 3, "nothing lost");
            assert_eq!(storage.load("b4").await.unwrap(), first);
            for id in ["b1", "b3", "b5"] {
                assert!(storage.session_info(id).await.unwrap().is_none(), "{id}");
                gone_from_listings(storage.as_ref(), id).await;
            }
        }

        let garbled = send(&app, post_form("/bulk-delete", "id=b2&revision=x+1+b2")).await;
        assert_eq!(garbled.status, StatusCode::BAD_REQUEST, "{}", garbled.body);
        assert_eq!(storage.load("b2").await.unwrap().len(), 3);

        // A selected id whose revision the form lacks is left as it is, whatever other
        // revisions the form names: b2's, sent for another id, is no condition on it.
        let (_, b2) = storage.load_revision("b2").await.unwrap();
        let form = format!("id=b2&revision={}+{}+b9", b2.generation, b2.len);
        let unnamed = send(&app, post_form("/bulk-delete", &form)).await;
        assert_eq!(unnamed.status, StatusCode::BAD_REQUEST, "{}", unnamed.body);
        assert!(
            unnamed.body.contains("no revision for it"),
            "{}",
            unnamed.body
        );
        assert_eq!(storage.load("b2").await.unwrap().len(), 3, "nothing lost");
    })
    .await;
}

/// Creates session `id` as [`create`] does, last written an hour ago: a write now is at a
/// later instant on every backend (SQLite records milliseconds), whatever the clock's
/// resolution and however fast the test runs.
async fn create_an_hour_ago(storage: &dyn ConversationStorage, id: &str, messages: &[ChatMessage]) {
    let meta = SessionMeta::new().title("Kept").owner("amy").tags(["kept"]);
    let then = SystemTime::now() - Duration::from_secs(3600);
    let times = SessionTimes::new(then, then);
    storage
        .create_session_with_times(id, &meta, messages, times)
        .await
        .unwrap();
}

/// A rename or retag changes no revision (the messages are as they were), so a delete
/// conditional on the revision alone went ahead from a page shown before another tab
/// renamed the session: it was deleted without anyone having seen its new title. The
/// pages now carry the session's last write too, and a write since, of its metadata
/// alone, stops the delete.
#[tokio::test]
async fn a_delete_confirmed_before_a_rename_in_another_tab_deletes_nothing() {
    each_backend(async |storage| {
        let app = app(storage.clone());
        let first = [ChatMessage::user("hello"), ChatMessage::assistant("hi")];
        for id in ["r1", "r2"] {
            create_an_hour_ago(storage.as_ref(), id, &first).await;
        }
        let single = confirmation(&app, "r1").await;
        let bulk = bulk_form(&send(&app, get("/bulk-delete?id=r2")).await.body);

        // While the pages are open, another tab renames one and retags the other.
        let rename = MetaUpdate::new().title(Some("Renamed meanwhile"));
        storage.update_session("r1", &rename).await.unwrap();
        let retag = MetaUpdate::new().add_tag("meanwhile");
        storage.update_session("r2", &retag).await.unwrap();

        let changed = "its title, owner, tags, data or expiry were changed";
        let refused = send(&app, post_form("/sessions/r1/delete", &single)).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
        assert!(refused.body.contains(changed), "{}", refused.body);
        let refused = send(&app, post_form("/bulk-delete", &bulk)).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
        assert!(
            refused.body.contains("<code>r2</code>") && refused.body.contains(changed),
            "{}",
            refused.body
        );
        assert!(
            !refused.body.contains("<h2>Deleted</h2>"),
            "{}",
            refused.body
        );
        for id in ["r1", "r2"] {
            assert_eq!(storage.load(id).await.unwrap(), first, "{id} kept");
        }

        // Pages read after the changes show them, and delete.
        let single = confirmation(&app, "r1").await;
        let deleted = send(&app, post_form("/sessions/r1/delete", &single)).await;
        assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
        let bulk = bulk_form(&send(&app, get("/bulk-delete?id=r2")).await.body);
        let deleted = send(&app, post_form("/bulk-delete", &bulk)).await;
        assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
        for id in ["r1", "r2"] {
            assert!(storage.session_info(id).await.unwrap().is_none(), "{id}");
        }
    })
    .await;
}

/// A session whose lock file holds no counters (written by a release before them, or
/// they were lost) reports its file's modification time as its last write, while the
/// file-system backend's conditional delete takes the last write to be up to 2 s later
/// (a file time may fall that far before the write's own). The page's "not written
/// since" then never held: every delete of such a session, single or bulk, was refused
/// as if it had been renamed, on every reload. Now a refusal where the session still
/// reports what the page read is retried from the instant of that check; a rename since
/// the page (which stores counters again) is still refused.
#[tokio::test]
async fn a_session_without_counters_is_deleted_from_its_page() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("fs");
    let storage = StorageType::FileSystem(root.clone()).open().await.unwrap();
    let app = app(storage.clone());
    write_without_counters(&root, &["old1", "old2", "old3"]);

    let single = confirmation(&app, "old1").await;
    let deleted = send(&app, post_form("/sessions/old1/delete", &single)).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    let bulk = bulk_form(&send(&app, get("/bulk-delete?id=old2")).await.body);
    let deleted = send(&app, post_form("/bulk-delete", &bulk)).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    for id in ["old1", "old2"] {
        assert!(storage.session_info(id).await.unwrap().is_none(), "{id}");
    }

    // Renamed after its page was read, it is kept.
    let single = confirmation(&app, "old3").await;
    let rename = MetaUpdate::new().title(Some("Renamed meanwhile"));
    storage.update_session("old3", &rename).await.unwrap();
    let refused = send(&app, post_form("/sessions/old3/delete", &single)).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(storage.load("old3").await.unwrap().len(), 1);
}

/// Sessions `ids` of one message each in the file-system directory `root`, as a release
/// before counters wrote them: a session file last modified an hour ago, an empty lock
/// file ([`drop_counters`]).
fn write_without_counters(root: &std::path::Path, ids: &[&str]) {
    let line = serde_json::to_string(&ChatMessage::user("old")).unwrap() + "\n";
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::create_dir_all(root).unwrap();
    for id in ids {
        let file = root.join(format!("{id}.jsonl"));
        std::fs::write(&file, &line).unwrap();
        drop_counters(root, id);
        let file = std::fs::File::options().write(true).open(&file).unwrap();
        file.set_modified(an_hour_ago).unwrap();
    }
}

/// Empties session `id`'s lock file, as a release before counters left it.
fn drop_counters(root: &std::path::Path, id: &str) {
    std::fs::write(root.join(format!(".{id}.lock")), "").unwrap();
}

/// A release before counters renamed a file-system session without writing counters or
/// touching its file, so the session still reported the last write (the file's time) and
/// revision its page read; the retry of the refused delete (see above) then deleted it,
/// its new title unseen. The page carries the session's metadata too, and a change of it
/// stops the delete.
#[tokio::test]
async fn a_session_without_counters_renamed_by_an_earlier_release_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("fs");
    let storage = StorageType::FileSystem(root.clone()).open().await.unwrap();
    let app = app(storage.clone());
    write_without_counters(&root, &["old1", "old2"]);
    let single = confirmation(&app, "old1").await;
    let bulk = bulk_form(&send(&app, get("/bulk-delete?id=old2")).await.body);

    for id in ["old1", "old2"] {
        let before = storage.session_info(id).await.unwrap().unwrap();
        let rename = MetaUpdate::new().title(Some("Renamed meanwhile"));
        storage.update_session(id, &rename).await.unwrap();
        drop_counters(&root, id);
        let after = storage.session_info(id).await.unwrap().unwrap();
        assert_eq!(after.meta.title.as_deref(), Some("Renamed meanwhile"));
        assert_eq!(
            (after.updated_at, after.generation, after.message_count),
            (before.updated_at, before.generation, before.message_count),
            "{id}: the earlier release's rename moves nothing else"
        );
    }
    let changed = "its title, owner, tags, data or expiry were changed";
    let refused = send(&app, post_form("/sessions/old1/delete", &single)).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(refused.body.contains(changed), "{}", refused.body);
    let refused = send(&app, post_form("/bulk-delete", &bulk)).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(refused.body.contains(changed), "{}", refused.body);
    for id in ["old1", "old2"] {
        assert_eq!(storage.load(id).await.unwrap().len(), 1, "{id} kept");
    }
}
