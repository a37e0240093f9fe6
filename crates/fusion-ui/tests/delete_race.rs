//! Deleting a session deletes what its confirmation page showed, and nothing written
//! since: the page carries the session's revision and the post deletes with one
//! conditional write. Before, the post deleted whatever was stored by then, so messages
//! another writer appended while the page was open (a running agent, `fusion chat`), or a
//! new session made under the same id, were deleted without anyone seeing them.

mod common;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use fusion::ChatMessage;
use fusion::storage::{ConversationStorage, InMemoryStorage, SessionMeta, StorageType};
use fusion_ui::{UiConfig, router};

use common::{HOST, get, post_form, send};

fn app(storage: Arc<dyn ConversationStorage>) -> Router {
    let address = HOST.parse().unwrap();
    let settings = UiConfig::new(address).settings(address).unwrap();
    router(storage, &settings)
}

/// The form fields of the confirmation page of session `id`, as its button posts them.
async fn confirmation(app: &Router, id: &str) -> String {
    let page = send(app, get(&format!("/sessions/{id}/delete"))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let field = |name: &str| {
        page.body
            .split(&format!("name=\"{name}\" value=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no field {name} in {}", page.body))
            .to_string()
    };
    format!("generation={}&len={}", field("generation"), field("len"))
}

async fn each_backend(check: impl AsyncFn(Arc<dyn ConversationStorage>)) {
    check(Arc::new(InMemoryStorage::new())).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ui.db").display());
    check(StorageType::Sqlite(url).open().await.unwrap()).await;
}

async fn create(storage: &dyn ConversationStorage, id: &str, messages: &[ChatMessage]) {
    let meta = SessionMeta::new().title("Kept");
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
        let form = confirmation(&app, "s1").await;
        for _ in 0..2 {
            let deleted = send(&app, post_form("/sessions/s1/delete", &form)).await;
            assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
            assert_eq!(deleted.header("location"), "/sessions");
        }
        assert!(storage.session_info("s1").await.unwrap().is_none());

        // A session deleted and made again under the same id is another session.
        create(storage.as_ref(), "s2", &first).await;
        let form = confirmation(&app, "s2").await;
        storage.delete("s2").await.unwrap();
        create(storage.as_ref(), "s2", &first).await;
        let refused = send(&app, post_form("/sessions/s2/delete", &form)).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
        assert_eq!(storage.load("s2").await.unwrap(), first);

        // Without a revision (a program, a damaged session's page) it deletes what is
        // stored; half a revision is a mistake.
        let half = send(&app, post_form("/sessions/s2/delete", "generation=1")).await;
        assert_eq!(half.status, StatusCode::BAD_REQUEST, "{}", half.body);
        let plain = send(&app, post_form("/sessions/s2/delete", "")).await;
        assert_eq!(plain.status, StatusCode::SEE_OTHER, "{}", plain.body);
        assert!(storage.session_info("s2").await.unwrap().is_none());
    })
    .await;
}
