//! The facade's paged listing and metadata functions: `storage::list_sessions_page` and
//! `list_all_pages` on an open storage, `api::session::{list_sessions_page,
//! update_session, session_info}` on a `StorageType`.

use fusion::ChatMessage;
use fusion::api::session;
use fusion::storage::{
    ConversationStorage, InMemoryStorage, MetaUpdate, OwnerScope, SessionMeta, SessionOrder,
    SessionQuery, StorageType, list_all_pages, list_sessions_page,
};

fn ids(sessions: &[fusion::storage::SessionInfo]) -> Vec<&str> {
    sessions.iter().map(|s| s.id.as_str()).collect()
}

#[tokio::test]
async fn pages_follow_their_cursors_and_filters_hold_on_an_open_storage() {
    let storage = std::sync::Arc::new(InMemoryStorage::new());
    for n in 0..7 {
        let owner = if n % 2 == 0 { "even" } else { "odd" };
        let meta = SessionMeta::new()
            .owner(owner)
            .tags([format!("t{}", n % 3)]);
        storage
            .create_session(&format!("s{n}"), &meta, &[ChatMessage::user("hi")])
            .await
            .unwrap();
    }
    let query = SessionQuery::new().owner("even").limit(3);
    let first = list_sessions_page(storage.as_ref(), &query).await.unwrap();
    assert_eq!(ids(&first.sessions), ["s6", "s4", "s2"]);
    let rest = list_sessions_page(storage.as_ref(), &query.clone().after(first.next))
        .await
        .unwrap();
    assert_eq!(ids(&rest.sessions), ["s0"]);
    assert_eq!(rest.next, None);

    let every = list_all_pages(
        storage.as_ref(),
        &SessionQuery::new().order(SessionOrder::Id).limit(2),
    )
    .await
    .unwrap();
    assert_eq!(ids(&every), ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]);
    let tagged = list_all_pages(storage.as_ref(), &SessionQuery::new().tag("t1").limit(1))
        .await
        .unwrap();
    assert_eq!(ids(&tagged), ["s4", "s1"]);

    // The same listing through one owner's scope never shows another owner's sessions.
    let odd = OwnerScope::new(storage.clone(), "odd").unwrap();
    let seen = list_all_pages(&odd, &SessionQuery::new().limit(2))
        .await
        .unwrap();
    assert_eq!(ids(&seen), ["s5", "s3", "s1"]);
}

#[tokio::test]
async fn the_api_lists_and_updates_sessions_on_a_storage_type() {
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageType::FileSystem(dir.path().join("sessions"));
    let store = storage.open().await.unwrap();
    store
        .create_session(
            "a",
            &SessionMeta::new().title("A"),
            &[ChatMessage::user("x")],
        )
        .await
        .unwrap();
    store.append("b", &[ChatMessage::user("y")]).await.unwrap();

    let page = session::list_sessions_page(&storage, &SessionQuery::new())
        .await
        .unwrap();
    assert_eq!(ids(&page.sessions), ["b", "a"]);
    let update = MetaUpdate::new().title(Some("Renamed")).add_tag("kept");
    let after = session::update_session("a", &update, &storage)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.meta.title.as_deref(), Some("Renamed"));
    let info = session::session_info("a", &storage).await.unwrap().unwrap();
    assert_eq!(
        info.meta,
        SessionMeta::new().title("Renamed").tags(["kept"])
    );
    assert_eq!(
        session::update_session("missing", &update, &storage)
            .await
            .unwrap(),
        None
    );
}
