//! Real OS processes on one session directory: concurrent writers, processes racing to
//! create a session, and writers killed mid-stream.
//!
//! Child processes are this test binary run again with `--exact <child test>`; the child
//! tests below do nothing unless [`ROLE_ENV`] tells them what to do, so a plain
//! `cargo test` runs them as no-ops.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use fusion_core::testkit::assert_nothing_lost_in_writer_order;
use fusion_core::{Change, ChatMessage, ConversationStorage, Error, Expect, Role};
use fusion_storage_fs::FileSystemStorage;

/// Tells a child test its role; absent in the parent, so the child tests return at once.
const ROLE_ENV: &str = "FUSION_FS_TEST_ROLE";
/// The session directory the child writes to.
const DIR_ENV: &str = "FUSION_FS_TEST_DIR";
/// A tag the child puts in every message it writes.
const TAG_ENV: &str = "FUSION_FS_TEST_TAG";

const SESSION: &str = "shared:Session";
const PER_WRITER: usize = 1000;
/// Printed by the streaming children after each append that returned `Ok`.
const ACK: &str = "ACK ";
/// Printed by a creating child before its outcome.
const RESULT: &str = "RESULT ";
/// How many messages each append of the batching child writes.
const BATCH: usize = 3;

/// Kills the child if the parent test fails before reaping it, so no writer outlives us.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(test: &str, role: &str, dir: &Path, tag: &str, stdout: Stdio) -> Reaped {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir)
        .env(TAG_ENV, tag)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Reaped(child)
}

/// The child's instructions, or `None` when this is not a child process.
fn child_role(role: &str) -> Option<(FileSystemStorage, String)> {
    (std::env::var(ROLE_ENV).ok()? == role).then(|| {
        let dir = std::env::var_os(DIR_ENV).expect("child needs its directory");
        let tag = std::env::var(TAG_ENV).expect("child needs its tag");
        (FileSystemStorage::new(dir), tag)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `(tag, index)` of a message written by a child.
fn origin(message: &ChatMessage) -> (String, usize) {
    let (tag, index) = message.content.rsplit_once('-').unwrap();
    (tag.to_string(), index.parse().unwrap())
}

/// Child: waits for the parent's "go" on stdin, then appends [`PER_WRITER`] messages one
/// append at a time.
#[test]
fn child_writer() {
    let Some((storage, tag)) = child_role("writer") else {
        return;
    };
    // The start line lets both children begin together without sleeping.
    std::io::stdin()
        .lock()
        .read_line(&mut String::new())
        .unwrap();
    runtime().block_on(async {
        for k in 0..PER_WRITER {
            let message = ChatMessage::user(format!("{tag}-{k}"));
            storage.append(SESSION, &[message]).await.unwrap();
        }
    });
}

#[test]
fn two_processes_appending_at_once_lose_nothing_and_keep_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut children: Vec<Reaped> = ["p0", "p1"]
        .into_iter()
        .map(|tag| spawn_child("child_writer", "writer", tmp.path(), tag, Stdio::null()))
        .collect();
    for child in &mut children {
        child.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    for child in &mut children {
        assert!(child.0.wait().unwrap().success(), "a writer failed");
    }

    let loaded = runtime()
        .block_on(FileSystemStorage::new(tmp.path()).load(SESSION))
        .unwrap();
    assert_nothing_lost_in_writer_order(&loaded, &["p0", "p1"], PER_WRITER);
}

/// Child: appends large messages until killed, printing [`ACK`] after each `Ok`.
#[test]
fn child_streamer() {
    let Some((storage, tag)) = child_role("streamer") else {
        return;
    };
    // Large messages make it likely that the kill lands inside a `write()`.
    let padding = "x".repeat(64 * 1024);
    runtime().block_on(async {
        // Bounded in case the parent vanished without killing us; printing to a closed
        // pipe also ends this process.
        for k in 0..100_000 {
            // The tag goes in `content`, which `origin` parses; the padding rides along.
            let message = ChatMessage::tool_result(&padding, format!("{tag}-{k}"));
            storage.append(SESSION, &[message]).await.unwrap();
            println!("{ACK}{k}");
        }
    });
}

#[test]
fn append_after_crash_keeps_every_acknowledged_message() {
    const ROUNDS: usize = 3;
    const KILL_AFTER: usize = 100;
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    let rt = runtime();
    // How many messages each earlier round stored; each round's writer appends after
    // whatever the killed one before it left behind, torn tail included.
    let mut stored: Vec<usize> = Vec::new();

    for round in 0..ROUNDS {
        let tag = format!("r{round}");
        let mut child = spawn_child(
            "child_streamer",
            "streamer",
            tmp.path(),
            &tag,
            Stdio::piped(),
        );
        let stdout = BufReader::new(child.0.stdout.take().unwrap());
        let mut acked = None;
        for line in stdout.lines() {
            let line = line.unwrap();
            // libtest may print `test child_streamer ... ` in front of the first ack.
            let Some((_, k)) = line.split_once(ACK) else {
                continue;
            };
            let k: usize = k.trim().parse().unwrap();
            acked = Some(k);
            if k + 1 == KILL_AFTER {
                child.0.kill().unwrap();
            }
            // After the kill, keep reading: acks already in the pipe still count.
        }
        assert!(
            !child.0.wait().unwrap().success(),
            "the writer was not killed"
        );
        let acked = acked.expect("the writer acknowledged nothing") + 1;

        let loaded = rt.block_on(storage.load(SESSION)).unwrap();
        // Whatever the kill interrupted (the index line, the counters, the lines), the
        // session's facts agree with its history and a listing shows it at its place.
        let info = rt.block_on(storage.session_info(SESSION)).unwrap().unwrap();
        assert_eq!(info.message_count, loaded.len(), "round {round}");
        let page = rt
            .block_on(storage.list_page(&fusion_core::SessionQuery::new()))
            .unwrap();
        assert_eq!(page.sessions.len(), 1, "round {round}: listed once");
        assert_eq!(
            page.sessions[0].message_count,
            loaded.len(),
            "round {round}"
        );
        let earlier: usize = stored.iter().sum();
        let this_round = &loaded[earlier..];
        assert!(
            this_round.len() >= acked,
            "round {round}: {acked} acknowledged, {} stored",
            this_round.len()
        );
        for (k, message) in this_round.iter().enumerate() {
            assert_eq!(origin(message), (tag.clone(), k), "round {round}");
        }
        // Earlier rounds are untouched by the crash and repair of later ones.
        for (r, &count) in stored.iter().enumerate() {
            let start: usize = stored[..r].iter().sum();
            let round_tags: Vec<_> = loaded[start..start + count].iter().map(origin).collect();
            let expected: Vec<_> = (0..count).map(|k| (format!("r{r}"), k)).collect();
            assert_eq!(round_tags, expected);
        }
        stored.push(this_round.len());
    }

    // The parent appends too: the file ends on a line boundary again afterwards.
    let last = ChatMessage::assistant("after-0");
    rt.block_on(storage.append(SESSION, std::slice::from_ref(&last)))
        .unwrap();
    let loaded = rt.block_on(storage.load(SESSION)).unwrap();
    assert_eq!(loaded.len(), stored.iter().sum::<usize>() + 1);
    assert_eq!(loaded.last(), Some(&last));
    let file = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .unwrap();
    assert!(std::fs::read(file).unwrap().ends_with(b"\n"));
}

/// Child: waits for "go", then starts the session with a create-only conditional write
/// of the opening (system prompt and its own message); if another process created it
/// first, appends its message alone under the generation it reads. Prints what it did.
#[test]
fn child_creator() {
    let Some((storage, tag)) = child_role("creator") else {
        return;
    };
    std::io::stdin()
        .lock()
        .read_line(&mut String::new())
        .unwrap();
    let user = ChatMessage::user(format!("{tag}-0"));
    let opening = [ChatMessage::system("the prompt"), user.clone()];
    let created = runtime().block_on(async {
        match storage
            .write_if(SESSION, Expect::Generation(0), Change::Append(&opening))
            .await
        {
            Ok(_) => return true,
            Err(Error::Conflict { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
        loop {
            let (_, now) = storage.load_revision(SESSION).await.unwrap();
            match storage
                .write_if(
                    SESSION,
                    Expect::Generation(now.generation),
                    Change::Append(std::slice::from_ref(&user)),
                )
                .await
            {
                Ok(_) => return false,
                Err(Error::Conflict { .. }) => continue,
                Err(other) => panic!("{other:?}"),
            }
        }
    });
    println!("{RESULT}{}", if created { "created" } else { "joined" });
}

#[test]
fn processes_starting_one_session_at_once_store_the_opening_once() {
    const CREATORS: usize = 4;
    let tmp = tempfile::tempdir().unwrap();
    let tags: Vec<String> = (0..CREATORS).map(|c| format!("c{c}")).collect();
    let mut children: Vec<Reaped> = tags
        .iter()
        .map(|tag| spawn_child("child_creator", "creator", tmp.path(), tag, Stdio::piped()))
        .collect();
    for child in &mut children {
        child.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let mut created = 0;
    for child in &mut children {
        // Read to the end: libtest still prints after the result, into this pipe.
        let lines: Vec<String> = BufReader::new(child.0.stdout.take().unwrap())
            .lines()
            .map(Result::unwrap)
            .collect();
        let result = lines
            .iter()
            .find_map(|line| Some(line.split_once(RESULT)?.1.trim()))
            .expect("a creator reported nothing");
        created += usize::from(result == "created");
        assert!(child.0.wait().unwrap().success(), "a creator failed");
    }
    assert_eq!(created, 1, "exactly one process created the session");

    let history = runtime()
        .block_on(FileSystemStorage::new(tmp.path()).load(SESSION))
        .unwrap();
    assert_eq!(history.len(), CREATORS + 1, "{history:?}");
    assert_eq!(history[0], ChatMessage::system("the prompt"));
    assert_eq!(history.iter().filter(|m| m.role == Role::System).count(), 1);
    for tag in &tags {
        let mine = format!("{tag}-0");
        assert_eq!(history.iter().filter(|m| m.content == mine).count(), 1);
    }
}

/// Child: appends batches of [`BATCH`] large messages until killed, printing [`ACK`]
/// after each `Ok`.
#[test]
fn child_batcher() {
    let Some((storage, tag)) = child_role("batcher") else {
        return;
    };
    // Large messages make it likely that the kill lands inside a `write()`.
    let padding = "x".repeat(64 * 1024);
    runtime().block_on(async {
        for k in 0..100_000 {
            let batch: Vec<ChatMessage> = (0..BATCH)
                .map(|j| ChatMessage::tool_result(&padding, format!("{tag}-{}", k * BATCH + j)))
                .collect();
            storage.append(SESSION, &batch).await.unwrap();
            println!("{ACK}{k}");
        }
    });
}

/// Whatever point the kill lands on, each round's messages are whole batches. The kill
/// often lands between two writes rather than inside one, so this only samples cuts;
/// `a_torn_batch_is_all_or_nothing_and_cut_by_the_next_append` (in `revisions.rs`) writes
/// every kind of cut deterministically.
#[test]
fn a_batch_cut_by_kill_is_stored_whole_or_not_at_all() {
    const ROUNDS: usize = 3;
    const KILL_AFTER: usize = 30;
    let tmp = tempfile::tempdir().unwrap();
    let storage = FileSystemStorage::new(tmp.path());
    let rt = runtime();
    let mut stored = 0;
    for round in 0..ROUNDS {
        let tag = format!("b{round}");
        let mut child = spawn_child("child_batcher", "batcher", tmp.path(), &tag, Stdio::piped());
        let stdout = BufReader::new(child.0.stdout.take().unwrap());
        let mut acked = None;
        for line in stdout.lines() {
            let line = line.unwrap();
            let Some((_, k)) = line.split_once(ACK) else {
                continue;
            };
            let k: usize = k.trim().parse().unwrap();
            acked = Some(k);
            if k + 1 == KILL_AFTER {
                child.0.kill().unwrap();
            }
        }
        assert!(
            !child.0.wait().unwrap().success(),
            "the writer was not killed"
        );
        let acked = acked.expect("the writer acknowledged nothing") + 1;

        let loaded = rt.block_on(storage.load(SESSION)).unwrap();
        let this_round = &loaded[stored..];
        assert!(this_round.len() >= acked * BATCH, "round {round}");
        assert_eq!(
            this_round.len() % BATCH,
            0,
            "round {round}: part of a batch was stored"
        );
        for (i, message) in this_round.iter().enumerate() {
            assert_eq!(origin(message), (tag.clone(), i), "round {round}");
        }
        stored = loaded.len();
    }
    let last = ChatMessage::assistant("after-0");
    rt.block_on(storage.append(SESSION, std::slice::from_ref(&last)))
        .unwrap();
    let loaded = rt.block_on(storage.load(SESSION)).unwrap();
    assert_eq!(loaded.len(), stored + 1);
    assert_eq!(loaded.last(), Some(&last));
}
