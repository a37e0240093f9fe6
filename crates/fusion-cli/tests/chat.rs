//! `fusion chat` driven through stdin against `MockLlmServer`, a real loopback
//! OpenAI-compatible server, with real file-system storage.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};

use common::{fusion, load_async, text};
use fusion::Role;
use fusion::storage::StorageType;
use fusion_agent::testing::MockLlmServer;

/// Runs `fusion chat ARGS` with `input` on stdin, pointed at `server`, in `data_dir`
/// (which is also the file tools' workspace).
async fn chat(data_dir: &Path, server: &MockLlmServer, args: &[&str], input: &str) -> Output {
    common::chat_with_input(data_dir, server, args, input).await
}

fn storage(dir: &Path) -> (String, StorageType) {
    let url = dir.join("sessions").display().to_string();
    let storage = url.parse().unwrap();
    (url, storage)
}

/// The `content` of every message of one recorded request, as `role: content`.
fn request_messages(body: &serde_json::Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}: {}",
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_turns_then_history_and_the_second_request_carries_the_first_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    server
        .push_text("Nice to meet you, Ada.")
        .push_text("Your name is Ada.");

    let output = chat(
        tmp.path(),
        &server,
        &["--session", "ada", "--storage", &url],
        "My name is Ada.\nWhat is my name?\n/history\n",
    )
    .await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    assert!(stdout.contains("Nice to meet you, Ada.\n"), "{stdout}");
    assert!(stdout.contains("Your name is Ada.\n"), "{stdout}");

    let stored = load_async(&storage, "ada").await;
    let users = stored.iter().filter(|m| m.role == Role::User).count();
    assert_eq!(users, 2, "{stored:?}");
    assert!(
        stdout.contains(&format!("{} messages in session ada", stored.len())),
        "{stdout}"
    );

    assert_eq!(server.request_count(), 2);
    let second = request_messages(&server.requests()[1]);
    let first_user = second
        .iter()
        .position(|m| m == "user: My name is Ada.")
        .expect("first question resent");
    let first_answer = second
        .iter()
        .position(|m| m == "assistant: Nice to meet you, Ada.")
        .expect("first answer resent");
    let second_user = second
        .iter()
        .position(|m| m == "user: What is my name?")
        .unwrap();
    assert!(
        first_user < first_answer && first_answer < second_user,
        "{second:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_calls_are_shown_with_arguments_and_output_and_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _) = storage(tmp.path());
    std::fs::write(
        tmp.path().join("notes.txt"),
        "hello from the file\nsecond line\n",
    )
    .unwrap();
    let server = MockLlmServer::start().await;
    server
        .push_tool_call("read_file", r#"{"path":"notes.txt"}"#)
        .push_text("The file says hello.");

    let output = chat(
        tmp.path(),
        &server,
        &["--session", "tools", "--storage", &url],
        "What does notes.txt say?\n",
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("  -> read_file({\"path\":\"notes.txt\"})\n     <- hello from the file"),
        "{stdout}"
    );
    assert!(stdout.contains("The file says hello."), "{stdout}");

    // The model saw the tool's output, and the transcript keeps call and result.
    let second = request_messages(&server.requests()[1]);
    assert!(
        second
            .iter()
            .any(|m| m.starts_with("tool: ") && m.contains("hello from the file")),
        "{second:?}"
    );
    let shown = common::ok(tmp.path(), ["sessions", "show", "tools", "--storage", &url]);
    assert!(
        shown.contains("-> read_file({\"path\":\"notes.txt\"})"),
        "{shown}"
    );
    assert!(shown.contains("tool result (read_file, call "), "{shown}");
}

/// Found by a review: the tool output bound (`max_tool_output_bytes`) had no flag or
/// variable, so `fusion chat` showed a model with a small context window 1 MiB of output.
#[tokio::test(flavor = "multi_thread")]
async fn a_tool_output_past_the_bound_reaches_the_model_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _) = storage(tmp.path());
    let long = format!("start{}end", "x".repeat(5000));
    std::fs::write(tmp.path().join("long.txt"), &long).unwrap();
    let tool_message = |server: &MockLlmServer| {
        let second = request_messages(&server.requests()[1]);
        second
            .into_iter()
            .find(|m| m.starts_with("tool: "))
            .unwrap()
    };
    let ask = |server: &MockLlmServer| {
        server
            .push_tool_call("read_file", r#"{"path":"long.txt"}"#)
            .push_text("Read.");
    };

    let server = MockLlmServer::start().await;
    ask(&server);
    let args = [
        "--session",
        "flag",
        "--storage",
        &url,
        "--max-tool-output",
        "2000",
    ];
    let output = chat(tmp.path(), &server, &args, "Read long.txt\n").await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let shown = tool_message(&server);
    assert!(
        shown.len() <= "tool: ".len() + 2000,
        "{} bytes",
        shown.len()
    );
    assert!(
        shown.contains("[tool output cut: ") && shown.contains("start"),
        "{shown}"
    );
    assert!(shown.ends_with("end"), "{shown}");

    let server = MockLlmServer::start().await;
    ask(&server);
    let mut command = common::chat_command(tmp.path(), &server.base_url());
    command
        .args(["--session", "variable", "--storage", &url])
        .env("FUSION_MAX_TOOL_OUTPUT_BYTES", "2000");
    let output = common::feed(command, "Read long.txt\n").await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(tool_message(&server).contains("[tool output cut: "));

    let refused = chat(tmp.path(), &server, &["--max-tool-output", "1k"], "").await;
    assert!(!refused.status.success());
    let said = text(&refused.stderr);
    assert!(said.contains("FUSION_MAX_TOOL_OUTPUT_BYTES"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_later_run_resumes_the_stored_conversation() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    server.push_text("Noted: blue.").push_text("Blue.");

    let args = ["-s", "colors", "--storage", &url];
    let first = chat(tmp.path(), &server, &args, "My favorite color is blue.\n").await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    let second = chat(tmp.path(), &server, &args, "What is my favorite color?\n").await;
    assert!(second.status.success(), "{}", text(&second.stderr));

    let resumed = request_messages(&server.requests()[1]);
    assert!(
        resumed.contains(&"user: My favorite color is blue.".to_string()),
        "{resumed:?}"
    );
    assert!(
        resumed.contains(&"assistant: Noted: blue.".to_string()),
        "{resumed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn undo_removes_the_last_turn_from_storage_and_from_later_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    server.push_text("one").push_text("two").push_text("three");

    let output = chat(
        tmp.path(),
        &server,
        &["--session", "u", "--storage", &url],
        "first\nsecond\n/undo\nthird\n",
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("undid your last message"), "{stdout}");

    let third = request_messages(&server.requests()[2]);
    assert!(third.contains(&"user: first".to_string()), "{third:?}");
    assert!(
        !third
            .iter()
            .any(|m| m == "user: second" || m == "assistant: two"),
        "{third:?}"
    );
    let stored: Vec<String> = load_async(&storage, "u")
        .await
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| m.content.clone())
        .collect();
    assert_eq!(stored, ["first", "one", "third", "three"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn summarize_replaces_old_turns_in_later_requests_and_keeps_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    server
        .push_text("one")
        .push_text("two")
        .push_text("three")
        .push_text("SUMMARY: counted to three")
        .push_text("four");

    let output = chat(
        tmp.path(),
        &server,
        &["--session", "s", "--storage", &url],
        "first\nsecond\nthird\n/summarize 2\nfourth\n",
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("SUMMARY: counted to three"), "{stdout}");
    assert!(stdout.contains("stored history is kept"), "{stdout}");

    let last = request_messages(&server.requests()[4]);
    assert!(
        last.iter().any(|m| m.contains("SUMMARY: counted to three")),
        "{last:?}"
    );
    assert!(!last.contains(&"user: first".to_string()), "{last:?}");
    assert!(last.contains(&"user: fourth".to_string()), "{last:?}");
    let stored: Vec<String> = load_async(&storage, "s")
        .await
        .iter()
        .map(|m| m.content.clone())
        .collect();
    for said in [
        "first", "one", "second", "two", "third", "three", "fourth", "four",
    ] {
        assert!(stored.iter().any(|c| c == said), "{said} lost: {stored:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn other_commands_answer_without_calling_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = storage(tmp.path());
    common::seed_async(&storage, "other", &common::conversation(1)).await;
    let server = MockLlmServer::start().await;
    server.push_text("hello");

    let output = chat(
        tmp.path(),
        &server,
        &["--session", "me", "--storage", &url],
        "hi\n/help\n/sessions\n/summarize 4\n/clear\n/history\n/exit\nnever sent\n",
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    // `/help` lists every command, `/quit` too.
    for expected in [
        "/undo",
        "/quit",
        "cleared session me",
        "0 messages in session me",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // `/sessions` prints the table of `fusion sessions list`, with this session marked.
    let row = |prefix: &str| {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no row {prefix:?} in:\n{stdout}"));
        line.split_whitespace()
            .filter(|field| *field != "*")
            .nth(1)
            .unwrap()
            .to_string()
    };
    // The system prompt, "hi" and the answer.
    assert_eq!(row("* me "), "3", "{stdout}");
    assert_eq!(row("  other "), "7", "{stdout}");
    assert_eq!(
        server.request_count(),
        1,
        "commands and lines after /exit must not reach the model"
    );
    assert!(load_async(&storage, "me").await.is_empty());
}

/// `/sessions` lists the storage the chat runs on, not a second connection to it: a second
/// `sqlite::memory:` open would be a new, empty database.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_lists_the_storage_the_chat_runs_on() {
    let tmp = tempfile::tempdir().unwrap();
    let server = MockLlmServer::start().await;
    server.push_text("hello");

    let output = chat(
        tmp.path(),
        &server,
        &["--session", "mem", "--storage", "sqlite::memory:"],
        "hi\n/sessions\n",
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.lines().any(|line| line.starts_with("* mem ")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_turn_in_a_script_is_one_error_line_and_a_non_zero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    server.push_status(401);

    let output = chat(
        tmp.path(),
        &server,
        &["--storage", &url],
        "hello\nnot reached\n",
    )
    .await;
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("fusion: error: ") && stderr.contains("401"),
        "{stderr}"
    );
    assert_eq!(server.request_count(), 1);

    server.push_text("unused");
    let output = chat(tmp.path(), &server, &["--storage", &url], "/nonsense\n").await;
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("unknown command /nonsense"));
}

#[test]
fn chat_without_an_llm_explains_how_to_configure_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = storage(tmp.path());
    let output = fusion(tmp.path())
        .args(["chat", "--storage", &url])
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("fusion: error: no LLM configured"),
        "{stderr}"
    );
    for hint in [
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "Ollama",
        "FUSION_MODEL",
    ] {
        assert!(stderr.contains(hint), "missing {hint} in:\n{stderr}");
    }
    assert!(common::ids(&storage).is_empty());
}

/// What the model writes and what a tool returns are untrusted: escape sequences in them
/// (clear the screen, set the clipboard, overwrite a line with `\r`) reach the terminal as
/// visible text, and the session keeps them as they were.
#[tokio::test(flavor = "multi_thread")]
async fn escape_sequences_from_the_model_and_tools_are_printed_visibly() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = storage(tmp.path());
    std::fs::write(tmp.path().join("note.txt"), "fine\r\x1b[K <- looks fine").unwrap();
    let server = MockLlmServer::start().await;
    server
        .push_tool_call("read_file", r#"{"path":"note.txt"}"#)
        .push_text("\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07Done.\r\nBye.");
    let output = chat(
        tmp.path(),
        &server,
        &["--session", "esc", "--storage", &url, "--approve", "none"],
        "read note.txt\n",
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        !stdout.contains('\x1b') && !stdout.contains('\r'),
        "{stdout:?}"
    );
    assert!(
        stdout.contains(r"\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07Done."),
        "{stdout}"
    );
    assert!(
        stdout.contains(r"<- fine\r\x1b[K <- looks fine"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Done.\nBye."),
        "a CRLF ends a line: {stdout:?}"
    );
    let stored = load_async(&storage, "esc").await;
    assert!(stored.last().unwrap().content.starts_with("\x1b[2J"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_cut_by_the_token_limit_says_so_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    server.push(fusion_agent::testing::MockReply::finished(
        "The first three steps are",
        "length",
    ));
    let output = chat(
        tmp.path(),
        &server,
        &["--storage", &url, "--no-stream"],
        "explain\n",
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(
            "The first three steps are\n(the answer is cut short: the model reached its \
             output token limit)\n"
        ),
        "{stdout}"
    );
}

/// A command that takes no argument, given one, is refused and does nothing: `/clear all`
/// clears nothing, `/exit now` leaves nothing (in a script, the error ends the chat, so no
/// later line is sent); before, the words were dropped and the command ran.
#[tokio::test(flavor = "multi_thread")]
async fn a_command_given_an_argument_it_does_not_take_is_refused_and_does_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    server.push_text("Hello, Ada.");
    let args = ["--session", "ada", "--storage", &url];
    let output = chat(tmp.path(), &server, &args, "I am Ada.\n").await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let held = load_async(&storage, "ada").await;
    assert_eq!(held.len(), 3, "system, user, assistant: {held:?}");

    for (line, name, given) in [
        ("/clear all", "clear", "all"),
        ("/history extra", "history", "extra"),
        ("/exit\tnow", "exit", "now"),
        ("/undo 3", "undo", "3"),
    ] {
        let output = chat(tmp.path(), &server, &args, &format!("{line}\nhi\n")).await;
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{line}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!(
                "fusion: error: /{name} takes no argument, and \"{given}\" was given: nothing \
                 done; type /{name} alone (/help lists the commands)"
            ),
            "{line}"
        );
        assert_eq!(text(&output.stdout), "", "{line}");
        assert_eq!(load_async(&storage, "ada").await, held, "{line}");
    }
    assert_eq!(server.request_count(), 1, "no later line was sent");
}

/// A line starting with `//` is a message, sent with one slash less: a message that starts
/// with a slash (`/help me`, a path) was always taken for a command and never sent.
/// `/help` says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_double_slash_sends_a_message_starting_with_a_slash() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    server.push_text("Sure.").push_text("A path.");
    let args = ["--session", "ada", "--storage", &url];
    let output = chat(
        tmp.path(),
        &server,
        &args,
        "//help me\n///etc/hosts\n/help\n",
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("//help me      sends \"/help me\""),
        "{stdout}"
    );
    assert_eq!(server.request_count(), 2, "{stdout}");
    let sent = request_messages(&server.requests()[1]);
    assert!(sent.contains(&"user: /help me".to_string()), "{sent:?}");
    assert!(sent.contains(&"user: //etc/hosts".to_string()), "{sent:?}");
    let users: Vec<String> = load_async(&storage, "ada")
        .await
        .into_iter()
        .filter(|m| m.role == Role::User)
        .map(|m| m.content)
        .collect();
    assert_eq!(users, ["/help me", "//etc/hosts"]);
}

/// An error that quotes what the LLM endpoint answered (its error body) is as untrusted as
/// the model's text: its control characters are shown as escapes, as the model's are. The
/// error line wrote them as they came, so the endpoint could clear the screen or set the
/// clipboard (OSC 52) through it.
#[tokio::test(flavor = "multi_thread")]
async fn an_error_quoting_the_endpoint_shows_its_control_characters_visibly() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    server.push_raw(
        401,
        r#"{"error":{"message":"bad \u001b[2J\u001b]52;c;aGk=\u0007 request"}}"#,
    );
    let output = chat(tmp.path(), &server, &["--storage", &url], "hello\n").await;
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(!stderr.contains(['\u{1b}', '\u{7}']), "{stderr:?}");
    assert!(
        stderr.contains(r"bad \x1b[2J\x1b]52;c;aGk=\x07 request"),
        "{stderr:?}"
    );
}

/// A message is sent as typed, its line terminator removed: a pasted line of code keeps
/// its indentation and its trailing blanks (every line was trimmed). Commands are still
/// found with blanks around them, and a blank line sends nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_keeps_its_indentation_and_trailing_blanks() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, storage) = storage(tmp.path());
    let server = MockLlmServer::start().await;
    server.push_text("Indented.").push_text("Tabbed.");
    let args = ["--session", "ada", "--storage", &url];
    let input = "    fn main() {}  \r\n   \n\tlet x = 1;\n  /history  \n";
    let output = chat(tmp.path(), &server, &args, input).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("5 messages in session ada"), "{stdout}");
    assert_eq!(server.request_count(), 2, "{stdout}");
    let sent = request_messages(&server.requests()[1]);
    assert!(
        sent.contains(&"user:     fn main() {}  ".to_string()),
        "{sent:?}"
    );
    assert!(sent.contains(&"user: \tlet x = 1;".to_string()), "{sent:?}");
    let users: Vec<String> = load_async(&storage, "ada")
        .await
        .into_iter()
        .filter(|m| m.role == Role::User)
        .map(|m| m.content)
        .collect();
    assert_eq!(users, ["    fn main() {}  ", "\tlet x = 1;"]);
}
