//! Metadata and listings on disk: a directory written by the last release, damaged
//! metadata, counters and index files, writes cut short, and names no metadata can turn
//! into paths.

mod common;

use std::path::Path;
use std::time::Duration;

use fusion_core::testkit::{all_pages, said};
use fusion_core::{
    ChatMessage, ConversationStorage, Error, LEGACY_GENERATION, MetaUpdate, SessionMeta,
    SessionOrder, SessionQuery, unix_micros,
};
use fusion_storage_fs::FileSystemStorage;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The directory in `tests/fixtures/fs-421d2a2` was written by the released code at commit
/// 421d2a2 (before metadata and the index existed): a worktree of that commit ran this
/// program with `cargo run -p fusion-storage-fs --example make_fixture -- <dir>`:
///
/// ```text
/// storage.append("plain", &[user("hello"), assistant("hi there")]);
/// storage.append("plain", &[user("second turn")]);
/// storage.append("Tenant:42:Chat", &[system("You are terse."), user("list /tmp"),
///                                    assistant("a.txt b.txt")]);           // one batch
/// storage.save("saved@example.com", &[user("one"), assistant("two")]);
/// storage.append("truncated", &[user("keep"), user("drop")]);
/// storage.truncate("truncated", 1);
/// storage.append("deleted", &[user("gone")]);
/// storage.delete("deleted");
/// storage.append(&"L".repeat(120), &[user("a long id")]);                 // base32 name
/// ```
///
/// Git keeps no file times, so the copies' times are those of the checkout.
#[tokio::test]
async fn a_directory_from_the_last_release_keeps_everything_and_is_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fs-421d2a2"),
        &dir,
    );
    let generation_on_disk = std::fs::read_to_string(dir.join(".plain.lock")).unwrap();
    let storage = FileSystemStorage::connect(&dir).await.unwrap();
    let long = "L".repeat(120);
    let mut expected: Vec<(&str, Vec<ChatMessage>)> = vec![
        (
            "plain",
            vec![
                ChatMessage::user("hello"),
                ChatMessage::assistant("hi there"),
                ChatMessage::user("second turn"),
            ],
        ),
        (
            "Tenant:42:Chat",
            vec![
                ChatMessage::system("You are terse."),
                ChatMessage::user("list /tmp"),
                ChatMessage::assistant("a.txt b.txt"),
            ],
        ),
        (
            "saved@example.com",
            vec![ChatMessage::user("one"), ChatMessage::assistant("two")],
        ),
        ("truncated", vec![ChatMessage::user("keep")]),
        (&long, vec![ChatMessage::user("a long id")]),
    ];
    expected.sort_by(|a, b| a.0.cmp(b.0));
    let ids: Vec<&str> = expected.iter().map(|(id, _)| *id).collect();
    let mut listed = storage.list_sessions().await.unwrap();
    listed.sort();
    assert_eq!(listed, ids);

    for (id, history) in &expected {
        assert_eq!(&storage.load(id).await.unwrap(), history, "{id}");
        let info = storage.session_info(id).await.unwrap().unwrap();
        assert_eq!(info.message_count, history.len(), "{id}: counted");
        assert_eq!(info.meta, SessionMeta::new(), "{id}: no metadata yet");
        assert_eq!(info.expires_at, None, "{id}: never expires");
        assert!(info.generation >= LEGACY_GENERATION, "{id}");
        let (created, updated) = (info.created_at.unwrap(), info.updated_at.unwrap());
        assert!(created <= updated, "{id}: from the file times");
    }
    let plain = storage.session_info("plain").await.unwrap().unwrap();
    assert_eq!(
        format!("{:016}", plain.generation),
        generation_on_disk.trim(),
        "the stored generation is kept"
    );

    // The first listing builds the index: every old session once, in both orders.
    let newest = all_pages(&storage, SessionQuery::new().limit(2)).await;
    let mut sorted = newest.clone();
    sorted.sort();
    assert_eq!(sorted, ids);
    let by_id = all_pages(
        &storage,
        SessionQuery::new().order(SessionOrder::Id).limit(2),
    )
    .await;
    assert_eq!(by_id, ids);

    // Old sessions take writes and metadata like new ones, and move to the front.
    storage.append("truncated", &said("more")).await.unwrap();
    let info = storage
        .update_session(
            "plain",
            &MetaUpdate::new().owner(Some("alice")).add_tag("old"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.message_count, 3);
    assert_eq!(
        info.created_at, plain.created_at,
        "created_at kept once stored"
    );
    let first = storage
        .list_page(&SessionQuery::new().limit(2))
        .await
        .unwrap();
    let first: Vec<&str> = first.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(first, ["plain", "truncated"]);
    assert_eq!(
        storage
            .session_info("truncated")
            .await
            .unwrap()
            .unwrap()
            .message_count,
        3
    );
    let owned = all_pages(&storage, SessionQuery::new().owner("alice").tag("old")).await;
    assert_eq!(owned, ["plain"]);
    // Written and indexed by this version, they still never expire: nothing to purge.
    for id in ["plain", "truncated"] {
        let info = storage.session_info(id).await.unwrap().unwrap();
        assert_eq!((info.expires_at, info.meta.expiry), (None, None), "{id}");
    }
    assert_eq!(storage.purge_expired(100).await.unwrap(), 0);
    let mut kept = storage.list_sessions().await.unwrap();
    kept.sort();
    assert_eq!(kept, ids);
    assert_eq!(
        storage.load("plain").await.unwrap(),
        expected_history(&expected, "plain")
    );
}

fn expected_history(expected: &[(&str, Vec<ChatMessage>)], id: &str) -> Vec<ChatMessage> {
    expected.iter().find(|(i, _)| *i == id).unwrap().1.clone()
}

#[tokio::test]
async fn damaged_metadata_is_corrupt_for_that_session_and_hides_no_other() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    let meta = SessionMeta::new().owner("u").tags(["t"]);
    storage
        .create_session("bad", &meta, &said("b"))
        .await
        .unwrap();
    storage
        .create_session("good", &meta, &said("g"))
        .await
        .unwrap();
    let meta_file = tmp.path().join(".bad.meta");
    let text = std::fs::read(&meta_file).unwrap();
    std::fs::write(&meta_file, &text[..text.len() / 2]).unwrap();

    let err = storage.session_info("bad").await.unwrap_err();
    match &err {
        Error::Corrupt {
            session_id, detail, ..
        } => {
            assert_eq!(session_id, "bad");
            assert!(detail.contains(".bad.meta"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let err = storage
        .update_session("bad", &MetaUpdate::new().title(Some("x")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert_eq!(
        storage.load("bad").await.unwrap(),
        said("b"),
        "messages unharmed"
    );
    for query in [
        SessionQuery::new(),
        SessionQuery::new().owner("u"),
        SessionQuery::new().tag("t"),
        SessionQuery::new().order(SessionOrder::Id),
    ] {
        assert_eq!(all_pages(&storage, query).await, ["good"]);
    }
    // Deleting it clears the damage; the id can be created afresh.
    storage.delete("bad").await.unwrap();
    assert!(!meta_file.exists());
    storage
        .create_session("bad", &meta, &said("again"))
        .await
        .unwrap();
    assert_eq!(
        all_pages(
            &storage,
            SessionQuery::new().owner("u").order(SessionOrder::Id)
        )
        .await,
        ["bad", "good"]
    );
}

#[tokio::test]
async fn damaged_counters_are_recounted_from_the_session_file() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    storage.append("s", &said("one")).await.unwrap();
    storage.append("s", &said("two")).await.unwrap();
    let before = storage.session_info("s").await.unwrap().unwrap();
    let lock = tmp.path().join(".s.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    std::fs::write(&lock, text.replace("messages 0", "messages x")).unwrap();
    let after = storage.session_info("s").await.unwrap().unwrap();
    assert_eq!(after.message_count, 4);
    assert_eq!(after.generation, before.generation);
    // The next write stores them again.
    storage.append("s", &said("three")).await.unwrap();
    assert_eq!(
        storage
            .session_info("s")
            .await
            .unwrap()
            .unwrap()
            .message_count,
        6
    );
    let text = std::fs::read_to_string(&lock).unwrap();
    assert!(text.contains("messages 00000000000000000006"), "{text}");
}

#[tokio::test]
async fn a_damaged_or_lost_index_is_rebuilt_from_the_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    for i in 0..30 {
        let meta = SessionMeta::new().owner(["ann", "bob"][i % 2]).tags(["x"]);
        storage
            .create_session(&format!("s{i:02}"), &meta, &said("hi"))
            .await
            .unwrap();
    }
    let expected = all_pages(&storage, SessionQuery::new().limit(7)).await;
    assert_eq!(expected.len(), 30);
    let index = tmp.path().join(".fusion-index");
    let journal = index.join("journal");
    // A rebuild writes the compacted journal and the sorted ids.
    storage.rebuild_index().await.unwrap();

    // Junk inside the compacted journal's valid length.
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[40..60].fill(b'#');
    std::fs::write(&journal, bytes).unwrap();
    assert_eq!(
        all_pages(&storage, SessionQuery::new().limit(7)).await,
        expected
    );

    // A truncated journal and id files.
    std::fs::write(&journal, b"").unwrap();
    std::fs::write(index.join("ids"), b"").unwrap();
    assert_eq!(
        all_pages(&storage, SessionQuery::new().limit(7)).await,
        expected
    );
    let by_id = all_pages(&storage, SessionQuery::new().order(SessionOrder::Id)).await;
    assert_eq!(by_id.len(), 30);

    // The whole index gone, markers included: rebuilt, filters work again.
    std::fs::remove_dir_all(&index).unwrap();
    assert_eq!(
        all_pages(&storage, SessionQuery::new().limit(7)).await,
        expected
    );
    let ann = all_pages(&storage, SessionQuery::new().owner("ann")).await;
    assert_eq!(ann.len(), 15);

    // A damaged state, and an explicit rebuild.
    std::fs::write(index.join("lock"), b"garbage").unwrap();
    storage.rebuild_index().await.unwrap();
    assert_eq!(
        all_pages(&storage, SessionQuery::new().limit(7)).await,
        expected
    );
}

#[tokio::test]
async fn a_write_cut_short_after_its_index_line_is_repaired_by_the_listing() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    storage.append("a", &said("a")).await.unwrap();
    storage.append("b", &said("b")).await.unwrap();
    assert_eq!(all_pages(&storage, SessionQuery::new()).await, ["b", "a"]);
    // What a process killed between the index line and the counters leaves: the lock
    // file still holds the counters of the write before.
    let lock = tmp.path().join(".b.lock");
    let before = std::fs::read_to_string(&lock).unwrap();
    storage.append("b", &said("more")).await.unwrap();
    let after = storage.session_info("b").await.unwrap().unwrap();
    let len = std::fs::metadata(tmp.path().join("b.jsonl")).unwrap().len();
    let old_len = before
        .split("bytes ")
        .nth(1)
        .unwrap()
        .trim()
        .parse::<u64>()
        .unwrap();
    std::fs::write(
        &lock,
        before.replace(&format!("{old_len:020}"), &format!("{len:020}")),
    )
    .unwrap();
    let stale = storage.session_info("b").await.unwrap().unwrap();
    assert!(stale.updated_at < after.updated_at);

    let page = storage.list_page(&SessionQuery::new()).await.unwrap();
    let ids: Vec<&str> = page.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["b", "a"], "listed once, at its last write");
    assert_eq!(page.sessions[0].updated_at, after.updated_at);
    assert_eq!(
        storage.session_info("b").await.unwrap().unwrap().updated_at,
        after.updated_at,
        "repaired"
    );
}

#[tokio::test]
async fn tags_and_owners_never_name_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path().join("sessions"));
    let tags = ["../../escape", "a/b\\c", ".", "..", "ü é 🦀", "*?<>|\""];
    let meta = SessionMeta::new().owner("Owner:1").tags(tags);
    storage
        .create_session("s", &meta, &said("hi"))
        .await
        .unwrap();
    for tag in tags {
        let found = all_pages(&storage, SessionQuery::new().tag(tag)).await;
        assert_eq!(found, ["s"], "{tag}");
    }
    // Nothing was created outside the session directory, and every tag directory is one
    // hex name.
    let mut outside: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    outside.sort();
    assert_eq!(outside, ["sessions"]);
    for entry in std::fs::read_dir(tmp.path().join("sessions/.fusion-index/tag")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(name.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
    }
    for owner in ["../x", "a/b", ""] {
        let err = storage
            .create_session("t", &SessionMeta::new().owner(owner), &said("x"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidMeta(_)), "{owner}: {err:?}");
    }
    let err = storage
        .update_session("s", &MetaUpdate::new().add_tag("a,b"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMeta(_)), "{err:?}");
}

#[tokio::test]
async fn timestamps_are_kept_to_the_microsecond_and_ordered() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    for i in 0..20 {
        storage.append(&format!("s{i}"), &said("x")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    let page = storage
        .list_page(&SessionQuery::new().limit(20))
        .await
        .unwrap();
    let times: Vec<i64> = page
        .sessions
        .iter()
        .map(|s| unix_micros(s.updated_at.unwrap()))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] > w[1]),
        "distinct and newest first: {times:?}"
    );
    for info in &page.sessions {
        assert_eq!(
            storage.session_info(&info.id).await.unwrap().as_ref(),
            Some(info)
        );
    }
}

/// What a power loss can leave of a file written in place without an fsync on ext4 or XFS:
/// its length, with zeros where the data never reached the disk.
fn zero_filled(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::write(path, vec![0u8; usize::try_from(len).unwrap()]).unwrap();
}

#[tokio::test]
async fn id_files_left_zero_filled_by_a_power_loss_are_rebuilt_not_read_as_empty() {
    for name in ["ids", "ids-log"] {
        let tmp = tempfile::tempdir().unwrap();
        let storage = FileSystemStorage::new(tmp.path());
        for i in 0..5 {
            storage
                .append(&format!("merged{i}"), &said("hi"))
                .await
                .unwrap();
        }
        // The ids so far go to the sorted file; the next creations to the log.
        storage.rebuild_index().await.unwrap();
        for i in 0..3 {
            storage
                .append(&format!("logged{i}"), &said("hi"))
                .await
                .unwrap();
        }
        let expected = all_pages(&storage, SessionQuery::new().order(SessionOrder::Id)).await;
        assert_eq!(expected.len(), 8, "{expected:?}");

        zero_filled(&tmp.path().join(".fusion-index").join(name));
        for storage in [storage.clone(), FileSystemStorage::new(tmp.path())] {
            let by_id = all_pages(&storage, SessionQuery::new().order(SessionOrder::Id)).await;
            assert_eq!(by_id, expected, "{name} zero-filled");
            let newest = all_pages(&storage, SessionQuery::new()).await;
            assert_eq!(newest.len(), 8, "{name} zero-filled: {newest:?}");
        }
    }
}

#[tokio::test]
async fn sessions_whose_lock_files_lost_their_counters_stay_listed_in_their_places() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    let meta = SessionMeta::new().owner("ann").title("kept");
    for id in ["a", "b", "c", "d"] {
        storage.create_session(id, &meta, &said(id)).await.unwrap();
        storage.append(id, &said("more")).await.unwrap();
    }
    let expected = all_pages(&storage, SessionQuery::new().limit(2)).await;
    assert_eq!(expected, ["d", "c", "b", "a"]);
    let before = storage.session_info("b").await.unwrap().unwrap();

    // A person clearing what look like stale lock files; a power loss zeroing one written
    // in place.
    std::fs::remove_file(tmp.path().join(".b.lock")).unwrap();
    zero_filled(&tmp.path().join(".c.lock"));
    // Their files were modified after the index recorded the writes, as a file system
    // whose clock is finer than the kernel's tick always shows.
    let later = std::time::SystemTime::now() + Duration::from_secs(1);
    for id in ["b", "c"] {
        common::set_modified(&tmp.path().join(format!("{id}.jsonl")), later);
    }
    for storage in [FileSystemStorage::new(tmp.path()), storage.clone()] {
        let listed = all_pages(&storage, SessionQuery::new().limit(2)).await;
        assert_eq!(listed, expected);
        let owned = all_pages(&storage, SessionQuery::new().owner("ann")).await;
        assert_eq!(owned.len(), 4, "{owned:?}");
    }
    // Recounted from the files, and placed where the index's last write of it was.
    let after = storage.session_info("b").await.unwrap().unwrap();
    assert_eq!(after.message_count, 4);
    assert_eq!(after.updated_at, before.updated_at);
    assert_eq!(after.meta.title.as_deref(), Some("kept"));
}

#[tokio::test]
async fn a_journal_a_power_loss_left_zero_filled_is_rebuilt_from_the_sessions() {
    // Zeros where its last lines were (no line ends there), or over one of its lines.
    for zeros_keep_newlines in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let live = tmp.path().join(".fusion-index").join("live");
        // A process that wrote these sessions, and stopped.
        let stopped = FileSystemStorage::new(tmp.path());
        for id in ["a", "b", "c"] {
            stopped.append(id, &said(id)).await.unwrap();
        }
        drop(stopped);
        let journals: Vec<_> = std::fs::read_dir(&live).unwrap().collect();
        assert_eq!(journals.len(), 1);
        // Some of its lines never reached the disk; the sessions' lines did.
        let journal = journals.into_iter().next().unwrap().unwrap().path();
        let mut bytes = std::fs::read(&journal).unwrap();
        let second_line = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        for byte in &mut bytes[second_line..] {
            if !(zeros_keep_newlines && *byte == b'\n') {
                *byte = 0;
            }
        }
        std::fs::write(&journal, bytes).unwrap();

        let storage = FileSystemStorage::new(tmp.path());
        storage.append("d", &said("d")).await.unwrap();
        let listed = all_pages(&storage, SessionQuery::new().limit(2)).await;
        assert_eq!(
            listed,
            ["d", "c", "b", "a"],
            "newlines kept: {zeros_keep_newlines}"
        );
    }

    // A process killed while writing a line leaves part of it, which placed nothing (the
    // session is written after its line): no rebuild, which would remove the journal.
    let tmp = tempfile::tempdir().unwrap();
    let stopped = FileSystemStorage::new(tmp.path());
    stopped.append("a", &said("a")).await.unwrap();
    drop(stopped);
    let live = tmp.path().join(".fusion-index").join("live");
    let journal = std::fs::read_dir(&live)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes.extend_from_slice(b"1796528744494359 w b");
    std::fs::write(&journal, bytes).unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    assert_eq!(all_pages(&storage, SessionQuery::new()).await, ["a"]);
    assert!(journal.exists(), "not rebuilt");
}

/// Found by a review: the journals' directory removed by hand while no instance was open
/// took the only lines of the sessions written since the last fold, and the index, built,
/// listed them by id but never newest first until `rebuild_index`.
#[tokio::test]
async fn sessions_whose_journals_were_removed_while_no_instance_was_open_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let stopped = FileSystemStorage::new(tmp.path());
    for id in ["a", "b", "c"] {
        stopped.append(id, &said(id)).await.unwrap();
    }
    drop(stopped);
    std::fs::remove_dir_all(tmp.path().join(".fusion-index").join("live")).unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    assert_eq!(
        all_pages(&storage, SessionQuery::new().limit(2)).await,
        ["c", "b", "a"]
    );
    // Rebuilt once: the index made anew has the directory, and writes on.
    storage.append("a", &said("again")).await.unwrap();
    assert_eq!(
        all_pages(&storage, SessionQuery::new()).await,
        ["a", "c", "b"]
    );
}

#[tokio::test]
async fn writes_after_the_index_is_lost_under_a_running_instance_are_listed() {
    // Removed by a person, the index as the docs say it may be, or the whole directory.
    for whole in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sessions");
        let storage = FileSystemStorage::new(&dir);
        for id in ["a", "b", "c"] {
            storage.append(id, &said(id)).await.unwrap();
        }
        let (removed, kept) = match whole {
            false => (dir.join(".fusion-index"), vec!["c", "b", "a"]),
            true => (dir.clone(), vec![]),
        };
        std::fs::remove_dir_all(removed).unwrap();
        // The next listing rebuilds the index (for the whole directory, at the next
        // listing that finds sessions again).
        assert_eq!(all_pages(&storage, SessionQuery::new()).await, kept);
        // The instance writes on: an existing session, then a new one.
        storage.append("a", &said("again")).await.unwrap();
        let listed = all_pages(&storage, SessionQuery::new()).await;
        assert_eq!(listed.first().map(String::as_str), Some("a"), "{listed:?}");
        storage.append("d", &said("d")).await.unwrap();
        storage.append("a", &said("more")).await.unwrap();
        let newest: Vec<&str> = ["a", "d", "c", "b"]
            .into_iter()
            .filter(|id| ["a", "d"].contains(id) || kept.contains(id))
            .collect();
        let mut by_id = newest.clone();
        by_id.sort_unstable();
        let by_id_query = SessionQuery::new().order(SessionOrder::Id);
        for storage in [storage.clone(), FileSystemStorage::new(&dir)] {
            assert_eq!(all_pages(&storage, SessionQuery::new()).await, newest);
            assert_eq!(all_pages(&storage, by_id_query.clone()).await, by_id);
        }
        // And after that listing too.
        storage.append("e", &said("e")).await.unwrap();
        let listed = all_pages(&storage, SessionQuery::new()).await;
        assert_eq!(listed.first().map(String::as_str), Some("e"), "{listed:?}");
    }
}

#[tokio::test]
async fn another_instance_writing_on_after_the_index_is_lost_is_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let (lister, writer) = (
        FileSystemStorage::new(tmp.path()),
        FileSystemStorage::new(tmp.path()),
    );
    for id in ["x", "y"] {
        writer.append(id, &said(id)).await.unwrap();
    }
    std::fs::remove_dir_all(tmp.path().join(".fusion-index")).unwrap();
    assert_eq!(all_pages(&lister, SessionQuery::new()).await, ["y", "x"]);
    // The writer (another process, say) checks once a second that its journal is still
    // in the directory, not at every write: its next write after that finds it gone.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    writer.append("x", &said("again")).await.unwrap();
    assert_eq!(all_pages(&lister, SessionQuery::new()).await, ["x", "y"]);
}

/// A write in the second before the writer next checks its journal goes to the removed
/// file, which nobody reads: when the writer finds it removed, the index is rebuilt from
/// the session files, which hold that write, so the session is listed in its place again.
#[tokio::test]
async fn a_write_into_a_journal_removed_with_the_index_is_listed_once_the_writer_notices() {
    let tmp = tempfile::tempdir().unwrap();
    let (lister, writer) = (
        FileSystemStorage::new(tmp.path()),
        FileSystemStorage::new(tmp.path()),
    );
    for id in ["x", "y", "z"] {
        writer.append(id, &said(id)).await.unwrap();
    }
    std::fs::remove_dir_all(tmp.path().join(".fusion-index")).unwrap();
    assert_eq!(
        all_pages(&lister, SessionQuery::new()).await,
        ["z", "y", "x"]
    );
    // Within the second since the writer last found its journal in place (or not: on a
    // slow machine the check may already run here, and the write is listed at once).
    writer.append("x", &said("again")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The writer's next write, to another session, finds its journal removed.
    writer.append("y", &said("again")).await.unwrap();
    assert_eq!(
        all_pages(&lister, SessionQuery::new()).await,
        ["y", "x", "z"]
    );
}

#[tokio::test]
async fn a_page_after_a_session_lost_its_counters_does_not_show_it_again() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    for id in ["a", "b", "c", "d"] {
        storage.append(id, &said(id)).await.unwrap();
    }
    // `a` has two journal lines: its newest at the top, an older one at the bottom.
    storage.append("a", &said("again")).await.unwrap();
    let query = SessionQuery::new().limit(2);
    let first = storage.list_page(&query).await.unwrap();
    let shown: Vec<_> = first.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(shown, ["a", "d"]);

    // Between the pages `a`'s lock file loses its counters, as an earlier version's
    // rewrite leaves it: the bare generation.
    let lock = tmp.path().join(".a.lock");
    let generation = std::fs::read(&lock).unwrap()[..16].to_vec();
    std::fs::write(&lock, generation).unwrap();
    let rest = all_pages(&storage, query.after(first.next)).await;
    assert_eq!(rest, ["c", "b"], "a session page 1 showed came again");
    // From the top it is where its newest write put it.
    let listed = all_pages(&storage, SessionQuery::new().limit(2)).await;
    assert_eq!(listed, ["a", "d", "c", "b"]);
}

#[tokio::test]
async fn a_page_after_a_session_was_restored_with_its_files_times_does_not_show_it_again() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    storage.append("a", &said("a")).await.unwrap();
    let restored = std::fs::read(tmp.path().join("a.jsonl")).unwrap();
    let first_write = storage.session_info("a").await.unwrap().unwrap().updated_at;
    for id in ["b", "c", "d"] {
        storage.append(id, &said(id)).await.unwrap();
    }
    // `a` has two journal lines: its newest at the top, an older one at the bottom.
    storage.append("a", &said("again")).await.unwrap();
    let query = SessionQuery::new().limit(2);
    let first = storage.list_page(&query).await.unwrap();
    let shown: Vec<_> = first.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(shown, ["a", "d"]);

    // Between the pages `a` is restored as it was after its first write, times kept (a
    // backup restored with `cp -p` or `rsync -a`, as an earlier version left it): no
    // counters, and its file's time is its older line's own.
    let lock = tmp.path().join(".a.lock");
    let generation = std::fs::read(&lock).unwrap()[..16].to_vec();
    std::fs::write(&lock, generation).unwrap();
    let data = tmp.path().join("a.jsonl");
    std::fs::write(&data, restored).unwrap();
    common::set_modified(&data, first_write.unwrap());
    let rest = all_pages(&storage, query.after(first.next)).await;
    assert_eq!(rest, ["c", "b"], "a session page 1 showed came again");
    // From the top it is where its newest line puts it.
    let listed = all_pages(&storage, SessionQuery::new().limit(2)).await;
    assert_eq!(listed, ["a", "d", "c", "b"]);
}
