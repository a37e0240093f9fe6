//! Sessions created with the times they had elsewhere (`create_session_with_times`) keep
//! their place in newest-first listings where the conformance cases cannot look: in
//! another instance (a restart), once their journals are folded, and after the index is
//! rebuilt from the session files; and they keep their times to the microsecond.

use std::time::{Duration, SystemTime};

use fusion_core::{
    ChatMessage, ConversationStorage, SessionMeta, SessionOrder, SessionQuery, SessionTimes,
    from_unix_micros, unix_micros,
};
use fusion_storage_fs::FileSystemStorage;

/// The ids of every page of the newest-first listing, three at a time.
async fn newest_first(storage: &FileSystemStorage) -> Vec<String> {
    let query = SessionQuery::new()
        .order(SessionOrder::UpdatedDesc)
        .limit(3);
    let mut page = storage.list_page(&query).await.unwrap();
    let mut ids: Vec<String> = page.sessions.iter().map(|s| s.id.clone()).collect();
    while page.next.is_some() {
        page = storage
            .list_page(&query.clone().after(page.next))
            .await
            .unwrap();
        ids.extend(page.sessions.iter().map(|s| s.id.clone()));
    }
    ids
}

#[tokio::test]
async fn copies_are_listed_at_their_times_in_another_instance_after_folds_and_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::connect(dir.path()).await.unwrap();
    // Whole microseconds, not milliseconds: kept as given.
    let now = from_unix_micros(unix_micros(SystemTime::now()));
    let at =
        |minutes_ago: u64| now - Duration::from_secs(60 * minutes_ago) - Duration::from_micros(123);
    // Copied newest first, as a listing of the source gives them: every line sorts before
    // the one before it, so each starts a journal, and the folds of those journals run.
    let copies = 40;
    for i in 0..copies {
        let times = SessionTimes::new(at(1000), at(10 + i));
        let id = format!("copy-{i:02}");
        let said = [ChatMessage::user(id.as_str())];
        storage
            .create_session_with_times(&id, &SessionMeta::new(), &said, times)
            .await
            .unwrap();
    }
    storage
        .append("fresh", &[ChatMessage::user("now")])
        .await
        .unwrap();
    let mut expected = vec!["fresh".to_string()];
    expected.extend((0..copies).map(|i| format!("copy-{i:02}")));

    // Another instance, as after a restart, reads what this one wrote.
    let restarted = FileSystemStorage::connect(dir.path()).await.unwrap();
    assert_eq!(newest_first(&restarted).await, expected);
    let info = restarted.session_info("copy-07").await.unwrap().unwrap();
    assert_eq!(
        (info.created_at, info.updated_at),
        (Some(at(1000)), Some(at(17))),
        "kept to the microsecond"
    );

    drop(storage);
    restarted.rebuild_index().await.unwrap();
    assert_eq!(newest_first(&restarted).await, expected, "after a rebuild");

    // A later write moves the copy to the top, its creation kept.
    restarted
        .append("copy-30", &[ChatMessage::user("again")])
        .await
        .unwrap();
    let listed = newest_first(&restarted).await;
    assert_eq!(listed[..2], ["copy-30", "fresh"]);
    let info = restarted.session_info("copy-30").await.unwrap().unwrap();
    assert_eq!(info.created_at, Some(at(1000)));
    assert!(info.updated_at.unwrap() >= now);
}
