//! Sessions created with the times they had elsewhere (`create_session_with_times`) keep
//! their place in newest-first listings where the conformance cases cannot look: in
//! another instance (a restart), once their journals are folded, and after the index is
//! rebuilt from the session files; and they keep their times to the microsecond. So does
//! a copy created under the id of a session written and deleted (or expired) after the
//! copy's times, whose lines sort after the copy's own.

use std::path::Path;
use std::time::{Duration, SystemTime};

use fusion_core::{
    ChatMessage, ConversationStorage, Expiry, SessionMeta, SessionOrder, SessionQuery,
    SessionTimes, from_unix_micros, unix_micros,
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

/// A clock reading in whole microseconds, what the storage keeps.
fn now() -> SystemTime {
    from_unix_micros(unix_micros(SystemTime::now()))
}

/// `minutes` before `now`, and not a whole millisecond: kept as given all the same.
fn minutes_before(now: SystemTime, minutes: u64) -> SystemTime {
    now - Duration::from_secs(60 * minutes) - Duration::from_micros(123)
}

/// Creates `copy-00`, `copy-01`, … (`count` of them), each last written a minute before
/// the one before, from `from`: copied newest first, as a listing of the source gives
/// them, every line sorts before the one before it, so each starts a journal, and the
/// folds of those journals run. Returns their ids.
async fn copy_newest_first(
    storage: &FileSystemStorage,
    count: u64,
    from: SystemTime,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..count {
        let updated = from - Duration::from_secs(60 * i);
        let times = SessionTimes::new(updated - Duration::from_secs(3600), updated);
        let id = format!("copy-{i:02}");
        let said = [ChatMessage::user(id.as_str())];
        storage
            .create_session_with_times(&id, &SessionMeta::new(), &said, times)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// The lines of the compacted journal that place `id`.
fn folded_lines(dir: &Path, id: &str) -> Vec<String> {
    let journal = std::fs::read_to_string(dir.join(".fusion-index/journal")).unwrap();
    let suffix = format!(" {id}");
    journal
        .lines()
        .filter(|line| line.ends_with(&suffix))
        .map(str::to_string)
        .collect()
}

/// Writes `id`, then deletes it.
async fn write_and_delete(storage: &FileSystemStorage, id: &str) {
    storage
        .append(id, &[ChatMessage::user("earlier")])
        .await
        .unwrap();
    storage.delete(id).await.unwrap();
}

/// Creates `id` with an idle expiry of a millisecond and waits until it has expired.
async fn write_and_let_expire(storage: &FileSystemStorage, id: &str) {
    let brief = SessionMeta::new().expiry(Expiry::Idle(Duration::from_millis(1)));
    storage
        .create_session(id, &brief, &[ChatMessage::user("earlier")])
        .await
        .unwrap();
    while storage.session_info(id).await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Creates `id` as a copy last written at `updated`.
async fn copy(storage: &FileSystemStorage, id: &str, updated: SystemTime) {
    let times = SessionTimes::new(updated - Duration::from_secs(3600), updated);
    let said = [ChatMessage::user(id)];
    storage
        .create_session_with_times(id, &SessionMeta::new(), &said, times)
        .await
        .unwrap();
}

#[tokio::test]
async fn copies_are_listed_at_their_times_in_another_instance_after_folds_and_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::connect(dir.path()).await.unwrap();
    let now = now();
    let at = |minutes| minutes_before(now, minutes);
    let copies = copy_newest_first(&storage, 40, at(10)).await;
    storage
        .append("fresh", &[ChatMessage::user("now")])
        .await
        .unwrap();
    let mut expected = vec!["fresh".to_string()];
    expected.extend(copies);

    // Another instance, as after a restart, reads what this one wrote.
    let restarted = FileSystemStorage::connect(dir.path()).await.unwrap();
    assert_eq!(newest_first(&restarted).await, expected);
    let info = restarted.session_info("copy-07").await.unwrap().unwrap();
    assert_eq!(
        (info.created_at, info.updated_at),
        (Some(at(17) - Duration::from_secs(3600)), Some(at(17))),
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
    assert_eq!(info.created_at, Some(at(40) - Duration::from_secs(3600)));
    assert!(info.updated_at.unwrap() >= now);
}

#[tokio::test]
async fn a_copy_under_the_id_of_an_earlier_session_stays_listed_once_folded_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let earlier = FileSystemStorage::connect(dir.path()).await.unwrap();
    write_and_delete(&earlier, "reused").await;
    write_and_let_expire(&earlier, "lapsed").await;
    // Its journal finished: the next fold takes the earlier sessions' lines, with the
    // copies' lines that sort before them.
    drop(earlier);

    let storage = FileSystemStorage::connect(dir.path()).await.unwrap();
    let now = now();
    let at = |minutes| minutes_before(now, minutes);
    copy(&storage, "reused", at(1)).await;
    copy(&storage, "lapsed", at(2)).await;
    let copies = copy_newest_first(&storage, 40, at(10)).await;
    for id in ["reused", "lapsed"] {
        let lines = folded_lines(dir.path(), id);
        assert_eq!(
            lines.len(),
            1,
            "the fold keeps the copy's line alone: {lines:?}"
        );
    }
    let mut expected = vec!["reused".to_string(), "lapsed".to_string()];
    expected.extend(copies);

    let restarted = FileSystemStorage::connect(dir.path()).await.unwrap();
    for (reader, when) in [(&storage, "here"), (&restarted, "in another instance")] {
        assert_eq!(newest_first(reader).await, expected, "{when}");
        let info = reader.session_info("reused").await.unwrap().unwrap();
        assert_eq!(info.updated_at, Some(at(1)), "{when}");
    }
    drop(storage);
    restarted.rebuild_index().await.unwrap();
    assert_eq!(newest_first(&restarted).await, expected, "after a rebuild");
    let info = restarted.session_info("lapsed").await.unwrap().unwrap();
    assert_eq!(info.updated_at, Some(at(2)), "after a rebuild");
}

#[tokio::test]
async fn a_rebuild_places_a_copy_whose_line_was_lost_over_an_earlier_sessions_delete() {
    let dir = tempfile::tempdir().unwrap();
    // Still open, it keeps its journal, and with it the earlier session's lines, out of
    // the folds.
    let earlier = FileSystemStorage::connect(dir.path()).await.unwrap();
    write_and_delete(&earlier, "reused").await;

    let storage = FileSystemStorage::connect(dir.path()).await.unwrap();
    let now = now();
    copy(&storage, "reused", minutes_before(now, 1)).await;
    let copies = copy_newest_first(&storage, 40, minutes_before(now, 10)).await;
    assert_eq!(folded_lines(dir.path(), "reused").len(), 1, "folded");
    // The compacted journal lost (removed by hand, or damaged): only the copy's files
    // tell that it came after the delete the earlier instance's journal holds.
    std::fs::remove_file(dir.path().join(".fusion-index/journal")).unwrap();
    storage.rebuild_index().await.unwrap();
    let mut expected = vec!["reused".to_string()];
    expected.extend(copies);
    assert_eq!(newest_first(&storage).await, expected);
    drop(earlier);
}

/// Moves the recording of the copy `id` an hour later, in its counters and its journal
/// line alike: as a copy made by an instance on a host whose clock runs an hour ahead of
/// this one's (a directory on a network file system) leaves them. Same widths, in place.
fn record_copy_an_hour_later(dir: &Path, id: &str) {
    const HOUR_US: i64 = 3_600_000_000;
    let lock = dir.join(format!(".{id}.lock"));
    let text = std::fs::read_to_string(&lock).unwrap();
    let (before, after) = text.split_once(" copied ").expect("a copy's counters");
    let recorded: i64 = after[..20].parse().unwrap();
    let later = recorded + HOUR_US;
    let moved = format!("{before} copied {later:+020}{}", &after[20..]);
    std::fs::write(&lock, moved).unwrap();
    let (from, to) = (format!("w@{recorded} {id}\n"), format!("w@{later} {id}\n"));
    let live = dir.join(".fusion-index/live");
    let mut found = 0;
    for entry in std::fs::read_dir(live).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains(&from) {
            std::fs::write(&path, text.replace(&from, &to)).unwrap();
            found += 1;
        }
    }
    assert_eq!(found, 1, "the copy's journal line");
}

#[tokio::test]
async fn copies_recorded_by_a_clock_ahead_stay_listed_once_written_by_another_instance() {
    let dir = tempfile::tempdir().unwrap();
    let ahead = FileSystemStorage::connect(dir.path()).await.unwrap();
    let now = now();
    for (id, minutes) in [("appended", 10), ("updated", 11), ("deleted", 12)] {
        copy(&ahead, id, minutes_before(now, minutes)).await;
        record_copy_an_hour_later(dir.path(), id);
    }
    drop(ahead);

    // Each write of a copy by an instance whose clock is behind is recorded after the
    // copy's creation all the same, so it is the copy's place, and a delete supersedes it.
    let behind = FileSystemStorage::connect(dir.path()).await.unwrap();
    behind
        .append("appended", &[ChatMessage::user("again")])
        .await
        .unwrap();
    let renamed = fusion_core::MetaUpdate::new().title(Some("renamed"));
    behind.update_session("updated", &renamed).await.unwrap();
    behind.delete("deleted").await.unwrap();
    let written = ["updated", "appended"];
    assert_eq!(newest_first(&behind).await, written);
    // Their journals finished and folded, with those of copies made newest first.
    drop(behind);
    let folding = FileSystemStorage::connect(dir.path()).await.unwrap();
    let copies = copy_newest_first(&folding, 40, minutes_before(now, 20)).await;
    assert_eq!(folded_lines(dir.path(), "deleted"), Vec::<String>::new());
    let mut expected = written.map(String::from).to_vec();
    expected.extend(copies);
    assert_eq!(newest_first(&folding).await, expected, "folded");
    folding.rebuild_index().await.unwrap();
    assert_eq!(newest_first(&folding).await, expected, "rebuilt");
}
