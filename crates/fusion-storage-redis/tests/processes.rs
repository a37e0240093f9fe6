//! Real OS processes starting one empty session at once (issue #13, case 8): each stores
//! the system prompt with a create-only conditional write, so exactly one does.
//!
//! Child processes are this test binary run again with `--exact child_starter`; the
//! child test does nothing unless [`ROLE_ENV`] is set, so a plain `cargo test` runs it
//! as a no-op. Each child inherits `REDIS_URL` and gets the parent's key prefix.

mod common;

use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdout, Command, Stdio};

use common::harness;
use fusion_core::{Change, ChatMessage, ConversationStorage, Error, Expect};
use fusion_storage_redis::{RedisOptions, RedisStorage};

/// Tells the child test to act; absent in the parent, so the child test returns at once.
const ROLE_ENV: &str = "FUSION_REDIS_TEST_ROLE";
/// The key prefix the children share with the parent's harness.
const PREFIX_ENV: &str = "FUSION_REDIS_TEST_PREFIX";
/// The tag the child puts in its user message.
const TAG_ENV: &str = "FUSION_REDIS_TEST_TAG";

const SESSION: &str = "opened-at-once";
const PROMPT: &str = "You are the shared assistant.";
const STARTERS: usize = 4;
/// Printed by a child once connected, so the parent can start all children together.
const READY: &str = "READY";
/// Printed by a child at the end: `DONE created <generation>` or `DONE joined <generation>`.
const DONE: &str = "DONE ";

/// Kills the child if the parent test fails before reaping it, so no writer outlives us.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The first line of `lines` that contains `marker`, from the marker on. libtest may
/// print `test child_starter ... ` in front of the child's first line.
fn next_marked(lines: &mut Lines<BufReader<ChildStdout>>, marker: &str) -> String {
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(at) = line.find(marker) {
            return line[at..].to_string();
        }
    }
    panic!("the child ended without printing {marker:?}");
}

/// Child: connects, waits for the parent's "go" on stdin, then starts the session with
/// the prompt and its message, create-only; if another process created it first, it
/// appends its message alone under the generation it then reads.
#[test]
fn child_starter() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("starter") {
        return;
    }
    let url = std::env::var("REDIS_URL").expect("the child inherits REDIS_URL");
    let prefix = std::env::var(PREFIX_ENV).expect("the child needs the key prefix");
    let tag = std::env::var(TAG_ENV).expect("the child needs its tag");
    runtime().block_on(async {
        let options = RedisOptions::new().key_prefix(&prefix);
        let store = RedisStorage::connect_with(&url, options).await.unwrap();
        println!("{READY}");
        std::io::stdin()
            .lock()
            .read_line(&mut String::new())
            .unwrap();
        let user = ChatMessage::user(tag.clone());
        let opening = [ChatMessage::system(PROMPT), user.clone()];
        let first = store
            .write_if(SESSION, Expect::Generation(0), Change::Append(&opening))
            .await;
        match first {
            Ok(generation) => println!("{DONE}created {generation}"),
            Err(Error::Conflict { .. }) => {
                // Nothing rewrites the session in this test, so one re-read suffices;
                // a conflict here would be a bug, and unwrap reports it.
                let (_, now) = store.load_revision(SESSION).await.unwrap();
                let generation = store
                    .write_if(
                        SESSION,
                        Expect::Generation(now.generation),
                        Change::Append(std::slice::from_ref(&user)),
                    )
                    .await
                    .unwrap();
                println!("{DONE}joined {generation}");
            }
            Err(other) => panic!("{tag}: {other:?}"),
        }
    });
}

#[test]
fn processes_starting_one_session_at_once_store_the_system_prompt_once() {
    let rt = runtime();
    let Some(h) = rt.block_on(harness()) else {
        return;
    };
    let tags: Vec<String> = (0..STARTERS).map(|p| format!("p{p}")).collect();
    let mut children: Vec<(Reaped, Lines<BufReader<ChildStdout>>)> = tags
        .iter()
        .map(|tag| {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "child_starter",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(ROLE_ENV, "starter")
                .env("REDIS_URL", &h.url)
                .env(PREFIX_ENV, &h.prefix)
                .env(TAG_ENV, tag)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let lines = BufReader::new(child.stdout.take().unwrap()).lines();
            (Reaped(child), lines)
        })
        .collect();
    // Every child is connected before any starts: the writes race, not the connects.
    for (_, lines) in &mut children {
        next_marked(lines, READY);
    }
    for (child, _) in &mut children {
        child.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let mut outcomes = Vec::new();
    for (child, lines) in &mut children {
        outcomes.push(next_marked(lines, DONE));
        assert!(child.0.wait().unwrap().success(), "a starter failed");
    }

    let created = outcomes.iter().filter(|o| o.contains("created")).count();
    assert_eq!(created, 1, "exactly one process created it: {outcomes:?}");
    let store = rt.block_on(h.connect(h.options())).unwrap();
    let (history, revision) = rt.block_on(store.load_revision(SESSION)).unwrap();
    for outcome in &outcomes {
        // Appends keep the generation: every process saw the creator's.
        assert!(
            outcome.ends_with(&format!(" {}", revision.generation)),
            "{outcome} vs {revision:?}"
        );
    }
    assert_eq!(history.len(), STARTERS + 1, "{history:?}");
    assert_eq!(history[0], ChatMessage::system(PROMPT));
    let prompts = history.iter().filter(|m| m.content == PROMPT).count();
    assert_eq!(prompts, 1, "the prompt was stored once: {history:?}");
    for tag in &tags {
        let mine = history.iter().filter(|m| &m.content == tag).count();
        assert_eq!(mine, 1, "{tag}'s message is stored once: {history:?}");
    }
}
