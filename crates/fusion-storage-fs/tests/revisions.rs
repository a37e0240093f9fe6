//! What the file-system backend keeps on disk for conditional writes and crash safety:
//! the generation in the lock file, lock files removed with their session, and batches
//! that a torn write cannot split.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fusion_core::{
    Change, ChatMessage, ConversationStorage, Error, Expect, LEGACY_GENERATION, Revision,
};
use fusion_storage_fs::FileSystemStorage;

fn numbered(prefix: &str, n: usize) -> Vec<ChatMessage> {
    (0..n)
        .map(|i| ChatMessage::user(format!("{prefix}-{i}")))
        .collect()
}

/// The generation field of a lock file: its first 64 bytes, trimmed, where earlier
/// versions read it (the counters follow on the next line).
fn stored_generation(dir: &Path, stem: &str) -> String {
    let text = std::fs::read_to_string(dir.join(format!(".{stem}.lock"))).unwrap();
    text[..text.len().min(64)].trim().to_string()
}

#[tokio::test]
async fn the_generation_is_stored_in_the_lock_file() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    storage.append("s", &numbered("m", 2)).await.unwrap();
    let (_, created) = storage.load_revision("s").await.unwrap();
    assert_eq!(
        stored_generation(tmp.path(), "s"),
        format!("{:016}", created.generation)
    );

    storage.append("s", &numbered("n", 1)).await.unwrap();
    assert_eq!(
        stored_generation(tmp.path(), "s"),
        format!("{:016}", created.generation),
        "an append leaves it alone"
    );

    let after = storage
        .write_if(
            "s",
            Expect::Exactly(Revision {
                generation: created.generation,
                len: 3,
            }),
            Change::Truncate(1),
        )
        .await
        .unwrap();
    assert_ne!(after, created.generation);
    assert_eq!(stored_generation(tmp.path(), "s"), format!("{after:016}"));
    assert_eq!(
        storage.load_revision("s").await.unwrap(),
        (
            numbered("m", 1),
            Revision {
                generation: after,
                len: 1
            }
        )
    );
}

#[tokio::test]
async fn a_session_written_before_generations_reports_the_legacy_one() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    // As an earlier version left it: the session file and an empty lock file.
    let lines: String = numbered("old", 2)
        .iter()
        .map(|m| serde_json::to_string(m).unwrap() + "\n")
        .collect();
    std::fs::write(tmp.path().join("old.jsonl"), lines).unwrap();
    std::fs::write(tmp.path().join(".old.lock"), "").unwrap();
    let legacy = Revision {
        generation: LEGACY_GENERATION,
        len: 2,
    };
    assert_eq!(storage.load_revision("old").await.unwrap().1, legacy);

    let kept = storage
        .write_if(
            "old",
            Expect::Generation(LEGACY_GENERATION),
            Change::Append(&numbered("new", 1)),
        )
        .await
        .unwrap();
    assert_eq!(kept, LEGACY_GENERATION, "an append keeps it");
    let conflict = storage
        .write_if("old", Expect::Exactly(legacy), Change::Truncate(1))
        .await;
    assert!(
        matches!(conflict, Err(Error::Conflict { .. })),
        "{conflict:?}"
    );

    storage.truncate("old", 1).await.unwrap();
    let (history, now) = storage.load_revision("old").await.unwrap();
    assert_eq!(history, numbered("old", 1));
    assert!(
        now.generation > LEGACY_GENERATION,
        "the rewrite gave it one"
    );
}

#[tokio::test]
async fn a_lock_file_without_a_session_file_is_no_session() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    // What a crash between removing the session file and its lock file leaves.
    std::fs::write(tmp.path().join(".left.lock"), "0000000000000042").unwrap();
    assert_eq!(
        storage.load_revision("left").await.unwrap().1,
        Revision::ABSENT
    );
    let created = storage
        .write_if(
            "left",
            Expect::Generation(0),
            Change::Append(&numbered("m", 1)),
        )
        .await
        .unwrap();
    assert_ne!(created, 42, "a created session gets a fresh generation");
    storage.delete("left").await.unwrap();
    if cfg!(unix) {
        assert!(!tmp.path().join(".left.lock").exists());
    }
}

/// Every way of emptying a session removes its lock file (on Unix, where the lock
/// protocol can tell a removed lock file from the current one).
#[cfg(unix)]
#[tokio::test]
async fn emptying_a_session_removes_its_lock_file() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    let lock = tmp.path().join(".s.lock");
    for way in 0..4 {
        storage.append("s", &numbered("m", 2)).await.unwrap();
        assert!(lock.exists());
        match way {
            0 => storage.delete("s").await.unwrap(),
            1 => storage.truncate("s", 0).await.unwrap(),
            2 => storage.save("s", &[]).await.unwrap(),
            _ => {
                let g = storage.load_revision("s").await.unwrap().1.generation;
                let after = storage
                    .write_if("s", Expect::Generation(g), Change::Replace(&[]))
                    .await
                    .unwrap();
                assert_eq!(after, 0);
            }
        }
        assert!(!lock.exists(), "way {way} left the lock file");
        assert!(storage.list_sessions().await.unwrap().is_empty());
    }
    // A conditional write that finds no session leaves no lock file either.
    let result = storage
        .write_if(
            "s",
            Expect::Generation(7),
            Change::Append(&numbered("x", 1)),
        )
        .await;
    assert!(matches!(result, Err(Error::Conflict { .. })), "{result:?}");
    assert!(!lock.exists());
}

/// Writers append, each conditioned on the generation it just read, while a deleter
/// removes the session (and its lock file) once per round. Whoever had opened the removed
/// lock file must not act under it: an append must land in the incarnation of the session
/// it was conditioned on (or conflict), and one that starts after the round's delete has
/// returned must be there at the end of the round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_racing_deletes_are_never_lost_into_an_unlinked_file() {
    const WRITERS: usize = 3;
    const ROUNDS: usize = 40;
    const PER_ROUND: usize = 6;
    let tmp = tempfile::tempdir().unwrap();
    let deletes_done = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS + 2));

    let deleter = {
        let storage = FileSystemStorage::new(tmp.path());
        let (barrier, deletes_done) = (barrier.clone(), deletes_done.clone());
        tokio::spawn(async move {
            for _ in 0..ROUNDS {
                barrier.wait().await;
                storage.delete("hammer").await.unwrap();
                deletes_done.fetch_add(1, Ordering::SeqCst);
                barrier.wait().await;
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let storage = FileSystemStorage::new(tmp.path());
            let (barrier, deletes_done) = (barrier.clone(), deletes_done.clone());
            tokio::spawn(async move {
                // Per round, the messages whose append started after that round's delete.
                let mut after_delete = Vec::new();
                for round in 0..ROUNDS {
                    barrier.wait().await;
                    let mut must_stay = Vec::new();
                    for k in 0..PER_ROUND {
                        loop {
                            let started_after = deletes_done.load(Ordering::SeqCst) > round;
                            let (_, read) = storage.load_revision("hammer").await.unwrap();
                            // The generation it is conditioned on rides in the message.
                            let content = format!("w{w}-r{round}-{k}@{}", read.generation);
                            let message = ChatMessage::user(content.clone());
                            match storage
                                .write_if(
                                    "hammer",
                                    Expect::Generation(read.generation),
                                    Change::Append(&[message]),
                                )
                                .await
                            {
                                Ok(_) => {
                                    if started_after {
                                        must_stay.push(content);
                                    }
                                    break;
                                }
                                Err(Error::Conflict { .. }) => continue,
                                Err(other) => panic!("{other:?}"),
                            }
                        }
                    }
                    after_delete.push(must_stay);
                    barrier.wait().await;
                }
                after_delete
            })
        })
        .collect();

    // The main task checks each round between the two barriers' releases.
    let reader = FileSystemStorage::new(tmp.path());
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        barrier.wait().await;
        barrier.wait().await;
        let (loaded, now) = reader.load_revision("hammer").await.unwrap();
        let contents: Vec<String> = loaded.into_iter().map(|m| m.content).collect();
        let unique: HashSet<&String> = contents.iter().collect();
        assert_eq!(unique.len(), contents.len(), "a message stored twice");
        // Created after the delete: the first writer conditioned it on absence (0).
        for (i, content) in contents.iter().enumerate() {
            let (_, generation) = content.rsplit_once('@').unwrap();
            let expected = if i == 0 { 0 } else { now.generation };
            assert_eq!(
                generation.parse::<u64>().unwrap(),
                expected,
                "round {round}: {content} landed in another incarnation: {contents:?}"
            );
        }
        rounds.push(contents);
    }
    deleter.await.unwrap();
    let mut checked = 0;
    for writer in writers {
        let after_delete = writer.await.unwrap();
        for (round, must_stay) in after_delete.iter().enumerate() {
            for content in must_stay {
                assert!(
                    rounds[round].contains(content),
                    "round {round}: {content} was acknowledged after the delete, then lost"
                );
                checked += 1;
            }
        }
    }
    // Most appends start after the delete they race; the check above is not vacuous.
    assert!(checked > 0, "no append started after a delete");
}

/// The bytes `append` writes for `batch`, as stored in a scratch directory.
async fn batch_bytes(batch: &[ChatMessage]) -> Vec<u8> {
    let scratch = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(scratch.path());
    storage.append("b", batch).await.unwrap();
    std::fs::read(storage.session_path("b").unwrap()).unwrap()
}

/// A process killed mid-`write()` of a batch leaves some prefix of its bytes; whatever the
/// cut, the batch loads whole or not at all, and the next append cuts what is left of it.
#[tokio::test]
async fn a_torn_batch_is_all_or_nothing_and_cut_by_the_next_append() {
    let batch = vec![
        ChatMessage::user("question"),
        ChatMessage::assistant("thinking"),
        ChatMessage::tool_result("result", "call_1"),
    ];
    let written = batch_bytes(&batch).await;
    let line_ends: Vec<usize> = written
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .map(|(i, _)| i + 1)
        .collect();
    // After one whole line, after two, inside the third, and only its `\n` missing.
    let cuts = [
        line_ends[0],
        line_ends[1],
        line_ends[1] + 5,
        written.len() - 1,
    ];
    for cut in cuts {
        let tmp = tempfile::tempdir().unwrap();
        let storage = FileSystemStorage::new(tmp.path());
        storage.append("s", &numbered("before", 2)).await.unwrap();
        let (_, before) = storage.load_revision("s").await.unwrap();
        let path = storage.session_path("s").unwrap();
        let clean = std::fs::read(&path).unwrap();
        std::fs::write(&path, [clean.as_slice(), &written[..cut]].concat()).unwrap();

        let whole = cut == written.len() - 1;
        let mut expected = numbered("before", 2);
        if whole {
            expected.extend(batch.iter().cloned());
        }
        let (loaded, now) = storage.load_revision("s").await.unwrap();
        assert_eq!(loaded, expected, "cut at {cut}");
        assert_eq!(now.generation, before.generation, "cut at {cut}");

        let after = ChatMessage::assistant("after the crash");
        storage
            .append("s", std::slice::from_ref(&after))
            .await
            .unwrap();
        expected.push(after);
        assert_eq!(storage.load("s").await.unwrap(), expected, "cut at {cut}");
    }
}

#[tokio::test]
async fn a_truncate_inside_a_batch_keeps_a_loadable_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    storage.append("s", &numbered("one", 1)).await.unwrap();
    storage.append("s", &numbered("batch", 4)).await.unwrap();
    storage.truncate("s", 3).await.unwrap();
    let mut expected = numbered("one", 1);
    expected.extend(numbered("batch", 2));
    assert_eq!(storage.load("s").await.unwrap(), expected);
    // Still loadable after a later append, whose repair must not take it for a torn tail.
    storage.append("s", &numbered("later", 1)).await.unwrap();
    expected.extend(numbered("later", 1));
    assert_eq!(storage.load("s").await.unwrap(), expected);
}

/// A session created by a torn first batch holds nothing: it is absent, so a create-only
/// write succeeds, and the torn bytes do not come back.
#[tokio::test]
async fn a_session_whose_only_batch_is_torn_is_absent() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    let written = batch_bytes(&numbered("lost", 3)).await;
    let two_lines = written.iter().rposition(|&b| b == b'\n').unwrap();
    let two_lines = written[..two_lines]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    std::fs::write(storage.session_path("s").unwrap(), &written[..two_lines]).unwrap();
    assert_eq!(
        storage.load_revision("s").await.unwrap(),
        (Vec::new(), Revision::ABSENT)
    );
    storage
        .write_if(
            "s",
            Expect::Generation(0),
            Change::Append(&numbered("new", 1)),
        )
        .await
        .unwrap();
    assert_eq!(storage.load("s").await.unwrap(), numbered("new", 1));
}
