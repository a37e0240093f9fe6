//! The ids an instance remembers between appends must never change what an append
//! stores: each test warms one instance's memory of a session, then changes the session
//! behind its back (another instance in the same directory, as another process would, or
//! a person's tools) and checks that the next append stores exactly what the session's
//! last lines do not hold.
//!
//! Sessions of equal-length lines put the file back at the very length the remembered
//! state had, so that only the generation (or the file's identity) tells it apart.

use fusion_core::{ChatMessage, ConversationStorage, DEDUP_WINDOW, MessageId};
use fusion_storage_fs::FileSystemStorage;

/// A message with id `id`; every id of these tests has the same length, so the lines do.
fn msg(id: &str) -> ChatMessage {
    ChatMessage::user(format!("text of {id}")).with_id(id.parse::<MessageId>().unwrap())
}

fn msgs(ids: &[&str]) -> Vec<ChatMessage> {
    ids.iter().map(|id| msg(id)).collect()
}

/// The ids of the stored messages, in order (`-` for a message without one).
async fn ids(storage: &FileSystemStorage, session: &str) -> Vec<String> {
    storage
        .load(session)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id.as_ref().map_or("-".into(), |id| id.to_string()))
        .collect()
}

fn two_instances() -> (tempfile::TempDir, FileSystemStorage, FileSystemStorage) {
    let tmp = tempfile::tempdir().unwrap();
    let ours = FileSystemStorage::new(tmp.path());
    let theirs = FileSystemStorage::new(tmp.path());
    (tmp, ours, theirs)
}

#[tokio::test]
async fn retries_after_the_ids_are_remembered_store_nothing_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    storage.append("s", &msgs(&["m01", "m02"])).await.unwrap();
    storage.append("s", &msgs(&["m03"])).await.unwrap();
    storage.append("s", &msgs(&["m03"])).await.unwrap();
    storage.append("s", &msgs(&["m01", "m02"])).await.unwrap();
    // Part of it stored: only the rest is written, and remembered for the next retry.
    storage
        .append("s", &msgs(&["m02", "m03", "m04"]))
        .await
        .unwrap();
    storage.append("s", &msgs(&["m04"])).await.unwrap();
    // A clone shares the memory; a new message after all that is still written.
    storage.clone().append("s", &msgs(&["m05"])).await.unwrap();
    storage.append("s", &msgs(&["m05", "m01"])).await.unwrap();
    assert_eq!(
        ids(&storage, "s").await,
        ["m01", "m02", "m03", "m04", "m05"]
    );
}

#[tokio::test]
async fn ids_another_instance_appended_are_found() {
    let (_tmp, ours, theirs) = two_instances();
    ours.append("s", &msgs(&["m01"])).await.unwrap();
    theirs.append("s", &msgs(&["m02", "m03"])).await.unwrap();
    // Remembered before `m02` was written: must not be taken as new.
    ours.append("s", &msgs(&["m02", "m04"])).await.unwrap();
    ours.append("s", &msgs(&["m03"])).await.unwrap();
    theirs.append("s", &msgs(&["m04"])).await.unwrap();
    assert_eq!(ids(&ours, "s").await, ["m01", "m02", "m03", "m04"]);
}

#[tokio::test]
async fn a_truncate_elsewhere_back_to_the_same_length_is_noticed() {
    let (_tmp, ours, theirs) = two_instances();
    // One by one: lines without batch markers, whatever the truncate keeps.
    ours.append("s", &msgs(&["m01"])).await.unwrap();
    ours.append("s", &msgs(&["m02"])).await.unwrap();
    // Same length as before, other ids: only the new generation tells.
    theirs.truncate("s", 1).await.unwrap();
    theirs.append("s", &msgs(&["m03"])).await.unwrap();
    ours.append("s", &msgs(&["m03"])).await.unwrap();
    assert_eq!(ids(&ours, "s").await, ["m01", "m03"]);
    // And what the truncate removed is written again.
    ours.append("s", &msgs(&["m02"])).await.unwrap();
    assert_eq!(ids(&ours, "s").await, ["m01", "m03", "m02"]);
}

#[tokio::test]
async fn a_save_or_a_delete_and_recreation_elsewhere_is_noticed() {
    let (_tmp, ours, theirs) = two_instances();
    ours.append("s", &msgs(&["m01"])).await.unwrap();
    theirs.delete("s").await.unwrap();
    theirs.append("s", &msgs(&["m02"])).await.unwrap();
    ours.append("s", &msgs(&["m02"])).await.unwrap();
    assert_eq!(ids(&ours, "s").await, ["m02"]);

    ours.append("s", &msgs(&["m03"])).await.unwrap();
    // `save` writes no batch markers: the same length again.
    theirs.save("s", &msgs(&["m04", "m05"])).await.unwrap();
    ours.append("s", &msgs(&["m05", "m06"])).await.unwrap();
    assert_eq!(ids(&ours, "s").await, ["m04", "m05", "m06"]);

    // Our own rewrites and deletes forget what we remembered.
    ours.save("s", &msgs(&["m07"])).await.unwrap();
    ours.append("s", &msgs(&["m07", "m06"])).await.unwrap();
    assert_eq!(ids(&ours, "s").await, ["m07", "m06"]);
    ours.delete("s").await.unwrap();
    ours.append("s", &msgs(&["m07"])).await.unwrap();
    assert_eq!(ids(&ours, "s").await, ["m07"]);
}

#[cfg(unix)]
#[tokio::test]
async fn a_file_put_in_place_by_hand_is_noticed() {
    let (tmp, ours, theirs) = two_instances();
    ours.append("s", &msgs(&["m01"])).await.unwrap();
    // Another file of the same length renamed over the session file, lock file untouched
    // (same generation): say, a backup restored.
    let other = tmp.path().join("other");
    theirs.append("other", &msgs(&["m02"])).await.unwrap();
    std::fs::copy(tmp.path().join("other.jsonl"), &other).unwrap();
    std::fs::rename(&other, tmp.path().join("s.jsonl")).unwrap();
    ours.append("s", &msgs(&["m02"])).await.unwrap();
    assert_eq!(ids(&ours, "s").await, ["m02"]);
}

#[tokio::test]
async fn a_session_without_a_generation_is_checked_every_time() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    let line = |id: &str| serde_json::to_string(&msg(id)).unwrap() + "\n";
    // As an earlier version leaves a session: its lines and an empty lock file.
    std::fs::write(tmp.path().join("old.jsonl"), line("m01")).unwrap();
    std::fs::write(tmp.path().join(".old.lock"), "").unwrap();
    // The first append stores the legacy generation in the lock file; the second finds it.
    storage.append("old", &msgs(&["m02"])).await.unwrap();
    storage.append("old", &msgs(&["m03"])).await.unwrap();
    // That earlier version rewrites it in place, same length, same generation.
    let rewritten = line("m04") + &line("m05") + &line("m06");
    std::fs::write(tmp.path().join("old.jsonl"), rewritten).unwrap();
    storage.append("old", &msgs(&["m06"])).await.unwrap();
    assert_eq!(ids(&storage, "old").await, ["m04", "m05", "m06"]);
}

#[tokio::test]
async fn ids_read_from_the_file_cover_the_whole_window_in_order() {
    let (_tmp, ours, theirs) = two_instances();
    let names: Vec<String> = (0..100).map(|i| format!("m{i:02}")).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    theirs.append("s", &msgs(&all)).await.unwrap();
    // Our first append reads the window (m36..m99) and remembers it, with `n01` after.
    ours.append("s", &msgs(&["n01"])).await.unwrap();
    // The window is m37..m99, n01: its oldest, newest and last-read ids are all found.
    for id in ["m37", "m99", "m50", "n01"] {
        ours.append("s", &msgs(&[id])).await.unwrap();
    }
    assert_eq!(ours.load("s").await.unwrap().len(), 101);
    // `m36` has left it, so it is a new message.
    ours.append("s", &msgs(&["m36"])).await.unwrap();
    let stored = ids(&ours, "s").await;
    assert_eq!(stored.len(), 102);
    assert_eq!(stored[100..], ["n01", "m36"]);
}

/// Appends `lines` to session `s`'s file in `dir` as another program would.
fn append_by_hand(dir: &std::path::Path, lines: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("s.jsonl"))
        .unwrap();
    file.write_all(lines).unwrap();
}

#[tokio::test]
async fn ids_the_window_holds_elsewhere_in_a_line_are_remembered() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    storage.save("s", &msgs(&["m01"])).await.unwrap();
    // Appended by hand: the id last, and one with spaces, so only parsing finds them.
    append_by_hand(
        tmp.path(),
        b"{\"role\":\"user\",\"content\":\"b\",\"id\":\"m02\"}\n\
          { \"id\" : \"m03\", \"role\":\"user\",\"content\":\"c\"}\n",
    );
    // Reads the window (the file's first line included) and remembers its ids.
    storage.append("s", &msgs(&["m04"])).await.unwrap();
    for id in ["m01", "m02", "m03", "m04"] {
        storage.append("s", &msgs(&[id])).await.unwrap();
    }
    assert_eq!(ids(&storage, "s").await, ["m01", "m02", "m03", "m04"]);
}

#[tokio::test]
async fn a_search_that_left_a_line_unparsed_remembers_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    storage.save("s", &msgs(&["m01"])).await.unwrap();
    append_by_hand(
        tmp.path(),
        b"{\"role\":\"user\",\"content\":\"b\",\"id\":\"m02\"}\n",
    );
    // Found in the first line: the search has read every line of the window, but
    // had no need to parse the second.
    storage.append("s", &msgs(&["m01"])).await.unwrap();
    storage.append("s", &msgs(&["m02"])).await.unwrap();
    assert_eq!(ids(&storage, "s").await, ["m01", "m02"]);
}

#[tokio::test]
async fn appends_without_ids_move_the_window_on() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    storage.append("s", &msgs(&["m01"])).await.unwrap();
    storage
        .append("s", &[ChatMessage::user("plain")])
        .await
        .unwrap();
    storage.append("s", &msgs(&["m01", "m02"])).await.unwrap();
    assert_eq!(ids(&storage, "s").await, ["m01", "-", "m02"]);
    // `m02` is among the last `DEDUP_WINDOW` lines, `m01` not: a new message again.
    let plain: Vec<ChatMessage> = (0..DEDUP_WINDOW - 1)
        .map(|i| ChatMessage::user(format!("plain {i}")))
        .collect();
    storage.append("s", &plain[..1]).await.unwrap();
    storage.append("s", &plain[1..]).await.unwrap();
    storage.append("s", &msgs(&["m02", "m01"])).await.unwrap();
    let stored = ids(&storage, "s").await;
    assert_eq!(stored.len(), 3 + DEDUP_WINDOW - 1 + 1);
    assert_eq!(stored.last().unwrap(), "m01");
}

#[tokio::test]
async fn instances_racing_the_same_batch_store_it_once() {
    let (_tmp, ours, theirs) = two_instances();
    ours.append("s", &msgs(&["m00"])).await.unwrap();
    let mut tasks = Vec::new();
    for round in 0..20 {
        let batch = msgs(&[&format!("r{round:02}"), &format!("q{round:02}")]);
        for storage in [&ours, &theirs, &ours, &theirs] {
            let (storage, batch) = (storage.clone(), batch.clone());
            tasks.push(tokio::spawn(
                async move { storage.append("s", &batch).await },
            ));
        }
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let mut stored = ids(&ours, "s").await;
    assert_eq!(stored.len(), 41, "{stored:?}");
    stored.sort();
    stored.dedup();
    assert_eq!(stored.len(), 41, "each id once");
}
