//! Session metadata through the `fusion` command, run as a process against real SQLite and
//! file-system storage: paged, filtered listing, `tag` / `retitle` / `set-owner` / `show`,
//! export and import, migrate, and what chat creates.

mod common;

use std::path::Path;

use common::{block_on, conversation, fails, ok, run, text};
use fusion::storage::{SessionMeta, StorageType};

fn sqlite(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("sessions.db").display())
}

fn fs(dir: &Path) -> String {
    format!("file://{}", dir.join("sessions").display())
}

/// Creates session `id` holding two messages with `meta`, as an application would.
fn create(url: &str, id: &str, meta: SessionMeta) {
    block_on(create_async(url, id, meta));
}

/// [`create`] for async tests.
async fn create_async(url: &str, id: &str, meta: SessionMeta) {
    let storage: StorageType = url.parse().unwrap();
    let store = storage.open().await.expect("storage opens");
    store
        .create_session(id, &meta, &conversation(1)[..2])
        .await
        .expect("creates");
}

/// The metadata of session `id`.
fn meta(url: &str, id: &str) -> SessionMeta {
    block_on(meta_async(url, id))
}

/// [`meta`] for async tests.
async fn meta_async(url: &str, id: &str) -> SessionMeta {
    let storage: StorageType = url.parse().unwrap();
    let store = storage.open().await.expect("storage opens");
    store
        .session_info(id)
        .await
        .expect("reads")
        .expect("exists")
        .meta
}

/// The ids in a `sessions list` table, in order.
fn listed(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .take_while(|line| !line.is_empty() && !line.starts_with("next page:"))
        .map(|line| line.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// Five sessions, created oldest first: s1, s3, s5 of alice, s2, s4 of bob; s1, s2 red.
fn seed_five(url: &str) {
    for n in 1..=5 {
        let owner = if n % 2 == 1 { "alice" } else { "bob" };
        let mut meta = SessionMeta::new()
            .owner(owner)
            .title(format!("Session number {n}"));
        if n <= 2 {
            meta = meta.tags(["red"]);
        }
        create(url, &format!("s{n}"), meta);
    }
}

fn list_pages_newest_first_and_filters(url: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    seed_five(url);

    let first = ok(dir, ["sessions", "list", "--limit", "2", "--storage", url]);
    assert_eq!(listed(&first), ["s5", "s4"], "{first}");
    let header = first.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("MESSAGES") && header.ends_with("TITLE"),
        "{first}"
    );
    let row = first.lines().nth(1).unwrap();
    assert!(
        row.contains(" 2 ") && row.contains("alice") && row.ends_with("Session number 5"),
        "{first}"
    );
    // The printed command is the one that gives the next page: run it as printed.
    let page = |output: &str| -> Option<Vec<String>> {
        let line = output.lines().find(|l| l.starts_with("next page: "))?;
        let command = line.trim_start_matches("next page: fusion ");
        Some(command.split_whitespace().map(str::to_string).collect())
    };
    let second_args = page(&first).expect("a next page");
    assert!(second_args.contains(&"--cursor".to_string()), "{first}");
    let second = ok(dir, &second_args);
    assert_eq!(listed(&second), ["s3", "s2"], "{second}");
    let third = ok(dir, page(&second).expect("a third page"));
    assert_eq!(listed(&third), ["s1"], "{third}");
    assert_eq!(page(&third), None, "the last page names no next one");

    let owner = ok(
        dir,
        ["sessions", "list", "--owner", "alice", "--storage", url],
    );
    assert_eq!(listed(&owner), ["s5", "s3", "s1"]);
    let tagged = ok(dir, ["sessions", "list", "--tag", "red", "--storage", url]);
    assert_eq!(listed(&tagged), ["s2", "s1"]);
    let both = ok(
        dir,
        [
            "sessions",
            "list",
            "--owner",
            "bob",
            "--tag",
            "red",
            "--storage",
            url,
        ],
    );
    assert_eq!(listed(&both), ["s2"]);
    // A search of ids and titles, ASCII letters in either case, paged like any filter.
    let searched = ok(
        dir,
        [
            "sessions",
            "list",
            "--search",
            "NUMBER",
            "--owner",
            "alice",
            "--limit",
            "2",
            "--storage",
            url,
        ],
    );
    assert_eq!(listed(&searched), ["s5", "s3"], "{searched}");
    let next = page(&searched).expect("a next page of the search");
    assert!(
        next.windows(2).any(|w| w == ["--search", "NUMBER"]),
        "{searched}"
    );
    assert_eq!(listed(&ok(dir, &next)), ["s1"]);
    let by_id_text = ok(
        dir,
        ["sessions", "list", "--search", "S4", "--storage", url],
    );
    assert_eq!(listed(&by_id_text), ["s4"]);
    let by_id = ok(
        dir,
        [
            "sessions",
            "list",
            "--order",
            "id",
            "--limit",
            "3",
            "--storage",
            url,
        ],
    );
    assert_eq!(listed(&by_id), ["s1", "s2", "s3"]);
    assert!(
        by_id.contains("--order id --limit 3 --cursor i.s3"),
        "{by_id}"
    );

    let none = run(
        dir,
        ["sessions", "list", "--owner", "zed", "--storage", url],
    );
    assert!(none.status.success());
    assert!(text(&none.stdout).is_empty());
    assert!(
        text(&none.stderr).contains("no sessions of owner zed"),
        "{}",
        text(&none.stderr)
    );
    let unmatched = run(
        dir,
        ["sessions", "list", "--search", "50%", "--storage", url],
    );
    assert!(
        text(&unmatched.stderr).contains(r#"no sessions with "50%" in the id or title"#),
        "{}",
        text(&unmatched.stderr)
    );
    let err = fails(dir, ["sessions", "list", "--search", " ", "--storage", url]);
    assert!(err.contains("invalid search text"), "{err}");
    let err = fails(
        dir,
        ["sessions", "list", "--cursor", "garbage", "--storage", url],
    );
    assert!(err.contains("bad --cursor"), "{err}");
    let err = fails(
        dir,
        ["sessions", "list", "--owner", "a/b", "--storage", url],
    );
    assert!(err.contains("invalid owner"), "{err}");
}

fn list_json_is_one_page_and_its_cursor(url: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    seed_five(url);
    let json = |args: &[&str]| -> serde_json::Value {
        let mut argv = vec!["sessions", "list", "--json", "--storage", url];
        argv.extend_from_slice(args);
        serde_json::from_str(&ok(dir, argv)).unwrap()
    };
    let first = json(&["--limit", "2"]);
    let sessions = first["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let newest = &sessions[0];
    assert_eq!(newest["id"], "s5");
    assert_eq!(newest["title"], "Session number 5");
    assert_eq!(newest["owner"], "alice");
    assert_eq!(newest["tags"], serde_json::json!([]));
    assert_eq!(newest["data"], serde_json::json!({}));
    assert_eq!(newest["message_count"], 2);
    assert!(newest["updated_at"].as_str().unwrap().ends_with('Z'));
    let next = first["next"].as_str().unwrap();

    let rest = json(&["--limit", "10", "--cursor", next]);
    let ids: Vec<&str> = rest["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s3", "s2", "s1"]);
    assert_eq!(rest["next"], serde_json::Value::Null);
    assert_eq!(
        json(&["--tag", "red"])["sessions"][1]["tags"],
        serde_json::json!(["red"])
    );
}

fn tag_retitle_set_owner_and_show(url: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    create(url, "chat-1", SessionMeta::new().title("First").tags(["x"]));

    let out = ok(
        dir,
        [
            "sessions",
            "tag",
            "chat-1",
            "--add",
            "b,a",
            "--remove",
            "x",
            "--storage",
            url,
        ],
    );
    assert_eq!(out.trim(), "session chat-1 tags: a, b");
    let out = ok(
        dir,
        [
            "sessions",
            "retitle",
            "chat-1",
            "Clean up logs",
            "--storage",
            url,
        ],
    );
    assert_eq!(out.trim(), "retitled session chat-1: Clean up logs");
    let out = ok(
        dir,
        ["sessions", "set-owner", "chat-1", "carol", "--storage", url],
    );
    assert_eq!(out.trim(), "session chat-1 now belongs to carol");
    assert_eq!(
        meta(url, "chat-1"),
        SessionMeta::new()
            .owner("carol")
            .title("Clean up logs")
            .tags(["a", "b"])
    );

    let shown = ok(dir, ["sessions", "show", "chat-1", "--storage", url]);
    let head: Vec<&str> = shown.lines().take(5).collect();
    assert_eq!(head[0], "session chat-1 (2 messages)");
    assert_eq!(head[1], "title:   Clean up logs");
    assert_eq!(head[2], "owner:   carol");
    assert_eq!(head[3], "tags:    a, b");
    assert!(head[4].starts_with("created: "), "{shown}");
    assert!(shown.contains("[2] user\n"), "{shown}");

    ok(dir, ["sessions", "retitle", "chat-1", "", "--storage", url]);
    ok(
        dir,
        [
            "sessions",
            "set-owner",
            "chat-1",
            "--none",
            "--storage",
            url,
        ],
    );
    assert_eq!(meta(url, "chat-1"), SessionMeta::new().tags(["a", "b"]));

    let err = fails(
        dir,
        ["sessions", "tag", "nope", "--add", "a", "--storage", url],
    );
    assert!(err.contains("session \"nope\" not found"), "{err}");
    let err = fails(
        dir,
        [
            "sessions",
            "tag",
            "chat-1",
            "--add",
            " padded",
            "--storage",
            url,
        ],
    );
    assert!(
        err.contains("invalid session metadata") && err.contains("white space"),
        "{err}"
    );
    let err = fails(dir, ["sessions", "tag", "chat-1", "--storage", url]);
    assert!(err.contains("pass --add TAG or --remove TAG"), "{err}");
    // A tag both added and removed is a contradiction, not a silent removal.
    let both = ["--add", "a,new", "--remove", "b,new", "--storage", url];
    let err = fails(dir, [&["sessions", "tag", "chat-1"][..], &both].concat());
    assert!(
        err.contains("tag \"new\" is both in --add and in --remove"),
        "{err}"
    );
    let err = fails(
        dir,
        ["sessions", "set-owner", "chat-1", "../x", "--storage", url],
    );
    assert!(err.contains("invalid owner"), "{err}");
    assert_eq!(meta(url, "chat-1"), SessionMeta::new().tags(["a", "b"]));
}

fn export_then_import_carries_metadata(url: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let target_url = format!("sqlite://{}", dir.join("target.db").display());
    let original = SessionMeta::new()
        .owner("alice")
        .title("Quarterly report")
        .tags(["finance", "q3"])
        .data("ticket", 7);
    create(url, "report", original.clone());

    let file = dir.join("report.json");
    let file = file.to_str().unwrap();
    ok(
        dir,
        ["sessions", "export", "report", "-o", file, "--storage", url],
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(
        doc["meta"],
        serde_json::json!({"owner": "alice", "title": "Quarterly report",
                           "tags": ["finance", "q3"], "data": {"ticket": 7}})
    );
    ok(dir, ["sessions", "import", file, "--storage", &target_url]);
    assert_eq!(meta(&target_url, "report"), original);

    // --replace makes the session the export's, metadata included.
    create(
        &target_url,
        "taken",
        SessionMeta::new().title("Old").tags(["stale"]).data("x", 1),
    );
    let out = ok(
        dir,
        [
            "sessions",
            "import",
            file,
            "--id",
            "taken",
            "--replace",
            "--storage",
            &target_url,
        ],
    );
    assert!(out.contains("replaced session taken (2 messages)"), "{out}");
    assert_eq!(meta(&target_url, "taken"), original);

    // An export written before sessions had metadata still imports, and replacing with it
    // keeps the session's own metadata.
    let old = dir.join("old.json");
    let doc = serde_json::json!({"id": "legacy", "messages": conversation(2)});
    std::fs::write(&old, doc.to_string()).unwrap();
    let old = old.to_str().unwrap();
    ok(dir, ["sessions", "import", old, "--storage", &target_url]);
    assert!(meta(&target_url, "legacy").is_empty());
    ok(
        dir,
        [
            "sessions",
            "import",
            old,
            "--id",
            "report",
            "--replace",
            "--storage",
            &target_url,
        ],
    );
    assert_eq!(meta(&target_url, "report"), original);

    let markdown = ok(
        dir,
        [
            "sessions",
            "export",
            "report",
            "-f",
            "markdown",
            "--storage",
            url,
        ],
    );
    assert!(
        markdown.contains("Title: Quarterly report") && markdown.contains("Owner: `alice`"),
        "{markdown}"
    );
}

#[test]
fn sqlite_list_pages_newest_first_and_filters() {
    let tmp = tempfile::tempdir().unwrap();
    list_pages_newest_first_and_filters(&sqlite(tmp.path()));
}

#[test]
fn fs_list_pages_newest_first_and_filters() {
    let tmp = tempfile::tempdir().unwrap();
    list_pages_newest_first_and_filters(&fs(tmp.path()));
}

#[test]
fn sqlite_list_json_is_one_page_and_its_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    list_json_is_one_page_and_its_cursor(&sqlite(tmp.path()));
}

#[test]
fn fs_list_json_is_one_page_and_its_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    list_json_is_one_page_and_its_cursor(&fs(tmp.path()));
}

#[test]
fn sqlite_tag_retitle_set_owner_and_show() {
    let tmp = tempfile::tempdir().unwrap();
    tag_retitle_set_owner_and_show(&sqlite(tmp.path()));
}

#[test]
fn fs_tag_retitle_set_owner_and_show() {
    let tmp = tempfile::tempdir().unwrap();
    tag_retitle_set_owner_and_show(&fs(tmp.path()));
}

#[test]
fn sqlite_export_then_import_carries_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    export_then_import_carries_metadata(&sqlite(tmp.path()));
}

#[test]
fn fs_export_then_import_carries_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    export_then_import_carries_metadata(&fs(tmp.path()));
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_titles_a_new_session_after_its_first_message_and_keeps_its_owner_and_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let url = sqlite(dir);
    let server = fusion_agent::testing::MockLlmServer::start().await;
    server.push_text("Sure.").push_text("Done.");

    let args = [
        "--session",
        "c1",
        "--owner",
        "alice",
        "--tag",
        "ops,cli",
        "--storage",
        &url,
    ];
    let first =
        common::chat_with_input(dir, &server, &args, "  Rotate the logs\tin /var/log\n").await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    let expected = SessionMeta::new()
        .owner("alice")
        .title("Rotate the logs in /var/log")
        .tags(["cli", "ops"]);
    assert_eq!(meta_async(&url, "c1").await, expected);

    // Resuming with another title keeps the stored one; /sessions lists alice's only.
    create_async(&url, "bobs", SessionMeta::new().owner("bob")).await;
    let again = [
        "--session",
        "c1",
        "--owner",
        "alice",
        "--title",
        "Other",
        "--storage",
        &url,
    ];
    let second =
        common::chat_with_input(dir, &server, &again, "and compress them\n/sessions\n").await;
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert_eq!(meta_async(&url, "c1").await, expected);
    let stdout = text(&second.stdout);
    assert!(
        stdout.contains("* c1 ") && stdout.contains("Rotate the logs in /var/log"),
        "{stdout}"
    );
    assert!(!stdout.contains("bobs"), "{stdout}");

    // Another owner's session is refused before anything is sent.
    let bob = ["--session", "c1", "--owner", "bob", "--storage", &url];
    let refused = common::chat_with_input(dir, &server, &bob, "let me in\n").await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("session \"c1\" belongs to another owner"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(
        server.request_count(),
        2,
        "bob's message never reached the model"
    );
}
