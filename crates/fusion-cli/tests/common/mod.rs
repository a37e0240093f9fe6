//! Helpers shared by the CLI tests: run the real `fusion` binary, seed and read storage.

#![allow(dead_code)] // Each test file uses a different subset.

pub mod llm;
pub mod repl;

use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use fusion::storage::StorageType;
use fusion::{ChatMessage, ToolCall};
use fusion_core::testkit::{delete_every_session, unique_name};

/// A stream a command cannot write to: `/dev/full` when `full` (every write fails with
/// ENOSPC), else a pipe whose read end is already closed (every write fails with EPIPE,
/// as after `| head -1`).
pub fn unwritable(full: bool) -> Stdio {
    if full {
        std::fs::File::create("/dev/full").unwrap().into()
    } else {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        writer.into()
    }
}

/// A `fusion` command isolated from the caller's environment: no inherited storage, LLM,
/// encryption key or log settings, and a private data dir so the default storage is never
/// the user's.
pub fn fusion(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fusion"));
    for var in [
        "FUSION_STORAGE",
        "RUST_LOG",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "FUSION_MODEL",
        "FUSION_ENCRYPTION_KEY",
        "FUSION_NO_RETRY",
        "FUSION_APPROVE",
        "FUSION_STREAM",
        "FUSION_NATIVE_TOOLS",
        "FUSION_PORTABLE_CALL_IDS",
        "FUSION_UI_TOKEN",
        "FUSION_MAX_TOOL_OUTPUT_BYTES",
    ] {
        command.env_remove(var);
    }
    command.env("XDG_DATA_HOME", data_dir).env("HOME", data_dir);
    command.stdin(Stdio::null());
    command
}

/// `fusion chat` in `data_dir` (also the file tools' workspace), talking to the
/// OpenAI-compatible server at `llm_url`.
pub fn chat_command(data_dir: &Path, llm_url: &str) -> Command {
    let mut command = fusion(data_dir);
    command
        .current_dir(data_dir)
        .arg("chat")
        .env("OPENAI_BASE_URL", llm_url)
        .env("OPENAI_API_KEY", "test-key")
        .env("FUSION_MODEL", "mock-model")
        // Most tests script the chat through a pipe, which needs an explicit choice; the
        // approval tests pass --approve, which wins over this.
        .env("FUSION_APPROVE", "all");
    command
}

/// Starts `command` (a [`chat_command`], its stdio set) as a child the test owns: killed
/// when dropped, so a failing test leaves no `fusion chat` behind.
pub fn spawn_chat(command: Command) -> tokio::process::Child {
    tokio::process::Command::from(command)
        .kill_on_drop(true)
        .spawn()
        .expect("fusion chat starts")
}

/// `fusion chat ARGS` with `input` on stdin (its end ends the REPL), pointed at `server`.
pub async fn chat_with_input(
    dir: &Path,
    server: &fusion_agent::testing::MockLlmServer,
    args: &[&str],
    input: &str,
) -> Output {
    let mut command = chat_command(dir, &server.base_url());
    command.args(args);
    feed(command, input).await
}

/// Runs `command` (a `fusion chat`) with `input` on stdin, its end ending the REPL, and
/// returns its output.
pub async fn feed(mut command: Command, input: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_chat(command);
    let mut stdin = child.stdin.take().unwrap();
    // A chat that refuses its arguments exits before it reads any input: the pipe is then
    // closed, and what it said is in its output.
    match stdin.write_all(input.as_bytes()).await {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

/// Runs `fusion ARGS` and returns its output.
pub fn run<I, S>(data_dir: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    fusion(data_dir)
        .args(args)
        .output()
        .expect("the fusion binary runs")
}

/// `args` then `--storage url`.
pub fn on<'a>(url: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    args.iter().copied().chain(["--storage", url]).collect()
}

/// Runs every command that reads sessions or changes existing ones on `url`, a storage
/// that does not exist, from `dir`: `list` says there are none, the others that session
/// `a` is not found, purges and a rekey dry run find nothing to do. The caller checks
/// that nothing was created.
pub fn assert_reads_find_nothing(dir: &Path, url: &str) {
    let listed = run(dir, on(url, &["sessions", "list"]));
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert_eq!(text(&listed.stdout), "", "no session listed");
    let stderr = text(&listed.stderr);
    assert!(stderr.starts_with("no sessions in"), "{stderr}");
    for args in [
        vec!["sessions", "show", "a"],
        vec!["sessions", "export", "a"],
        vec!["sessions", "delete", "a"],
        vec!["sessions", "expire", "a", "--never"],
        vec!["sessions", "retitle", "a", "t"],
        vec!["sessions", "tag", "a", "--add", "x"],
    ] {
        let err = fails(dir, args.iter().copied().chain(["--storage", url]));
        assert!(err.contains("session \"a\" not found"), "{args:?}: {err}");
    }
    ok(dir, on(url, &["sessions", "purge", "--older-than", "1d"]));
    ok(dir, on(url, &["sessions", "purge", "--expired"]));
    ok(dir, on(url, &["sessions", "delete", "a", "--force"]));
    let rekey = fusion(dir)
        .env(
            "FUSION_ENCRYPTION_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .args(on(url, &["sessions", "rekey", "--dry-run"]))
        .output()
        .unwrap();
    assert!(rekey.status.success(), "{}", text(&rekey.stderr));
}

/// stdout of a run that must succeed.
pub fn ok<I, S>(data_dir: &Path, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = run(data_dir, args);
    assert!(
        output.status.success(),
        "fusion failed: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// The single stderr line of a run that must fail.
pub fn fails<I, S>(data_dir: &Path, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = run(data_dir, args);
    assert!(
        !output.status.success(),
        "fusion unexpectedly succeeded: {}",
        text(&output.stdout)
    );
    let stderr = text(&output.stderr);
    assert_eq!(
        stderr.lines().count(),
        1,
        "want exactly one error line, got: {stderr}"
    );
    assert!(stderr.starts_with("fusion: error: "), "{stderr}");
    stderr.trim_end().to_string()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs storage code from a synchronous test.
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// A conversation exercising every field: tool calls (one with invalid JSON arguments),
/// tool results, multi-line and non-ASCII text, metadata.
pub fn conversation(n: usize) -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You are a helpful file assistant."),
        ChatMessage::user(format!("Session {n}: what is in /tmp?\nAnd ünïcödé 🦀")),
        ChatMessage::assistant_with_tool_calls(
            "Let me look.",
            vec![
                ToolCall::new("call_1", "list_directory", r#"{"path":"/tmp"}"#),
                ToolCall::new("call_2", "read_file", "{not json"),
            ],
        ),
        ChatMessage::tool_result("call_1", "notes.txt\ntodo.txt"),
        ChatMessage::tool_result("call_2", "error: invalid arguments"),
        ChatMessage::assistant(format!("/tmp holds notes.txt and todo.txt ({n}).")),
        ChatMessage::system("Earlier: the user asked about /tmp.")
            .with_metadata("kind", serde_json::json!("summary")),
    ]
}

/// Saves `messages` as session `id` in `storage`.
pub fn seed(storage: &StorageType, id: &str, messages: &[ChatMessage]) {
    block_on(seed_async(storage, id, messages));
}

/// [`seed`] for async tests (a runtime cannot be started inside another).
pub async fn seed_async(storage: &StorageType, id: &str, messages: &[ChatMessage]) {
    let store = storage.open().await.expect("storage opens");
    store.save(id, messages).await.expect("seed saves");
}

/// The history of session `id` in `storage`.
pub fn load(storage: &StorageType, id: &str) -> Vec<ChatMessage> {
    block_on(load_async(storage, id))
}

/// [`load`] for async tests.
pub async fn load_async(storage: &StorageType, id: &str) -> Vec<ChatMessage> {
    storage
        .open()
        .await
        .expect("storage opens")
        .load(id)
        .await
        .expect("loads")
}

/// The sorted session ids in `storage`.
pub fn ids(storage: &StorageType) -> Vec<String> {
    block_on(fusion::api::session::list_all_sessions(storage)).expect("lists")
}

/// A Redis URL under a key prefix of its own (a [`unique_name`] of `fcli`, then `name`, cut
/// to fit, so runs never collide), or `None` (after saying so) without `REDIS_URL`, or a
/// panic when `FUSION_REQUIRE_BACKENDS` asks for every backend.
pub fn redis_url(name: &str) -> Option<String> {
    prefixed_url("REDIS_URL", name)
}

/// [`redis_url`] on the Redis Cluster at `FUSION_REDIS_CLUSTER_URL`.
pub fn redis_cluster_url(name: &str) -> Option<String> {
    prefixed_url("FUSION_REDIS_CLUSTER_URL", name)
}

fn prefixed_url(variable: &str, name: &str) -> Option<String> {
    let Ok(base) = std::env::var(variable) else {
        assert!(
            std::env::var_os("FUSION_REQUIRE_BACKENDS").is_none(),
            "{variable} is not set and FUSION_REQUIRE_BACKENDS is"
        );
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped: set {variable}");
        return None;
    };
    // Redis prefixes hold at most 64 characters: the name is cut to fit.
    let unique = unique_name("fcli");
    let name: String = name.chars().take(64 - unique.len() - 1).collect();
    let prefix = format!("{unique}-{name}");
    Some(format!(
        "{}?key_prefix={prefix}",
        base.trim_end_matches('/')
    ))
}

/// Deletes every session a Redis test stored under its prefix.
pub fn clean_up(storage: &StorageType) {
    block_on(clean_up_async(storage));
}

/// [`clean_up`] for async tests.
pub async fn clean_up_async(storage: &StorageType) {
    let store = storage.open().await.expect("storage opens");
    delete_every_session(store.as_ref())
        .await
        .expect("deletes every session");
}
